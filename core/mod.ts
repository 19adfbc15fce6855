/**
 * The shared core of p2m: everything both transports use.
 *
 * - {@link ./wire.ts}: the file header and trailer, with strict decoders.
 * - {@link ./digest.ts}: streaming digests (xxh64, sha256, none).
 * - {@link ./output.ts}: atomic, verified output files.
 * - {@link ./names.ts}: sanitising untrusted file names.
 * - {@link ./source.ts}: opening the file to send.
 * - {@link ./report.ts}: progress, JSON events, messages.
 * - {@link ./cli.ts}: flags, exit codes, signals.
 * - {@link ./format.ts}: sizes, rates, tables.
 * - {@link ./runtime_dir.ts}: the private socket directory.
 * - {@link ./delay.ts}: the one timer promise.
 * - {@link ./lines.ts}: splitting a stream into lines.
 *
 * @module
 */
export * from "./cli.ts";
export * from "./delay.ts";
export * from "./lines.ts";
export * from "./digest.ts";
export * from "./errors.ts";
export * from "./format.ts";
export * from "./names.ts";
export * from "./output.ts";
export * from "./report.ts";
export * from "./runtime_dir.ts";
export * from "./source.ts";
export * from "./wire.ts";
export * from "./permissions.ts";
export * from "./rate_limit.ts";
