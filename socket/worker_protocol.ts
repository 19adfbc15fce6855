/**
 * The worker's stdio protocol: every message between the server parent and
 * a worker subprocess, both directions, typed and validated field by field
 * before it is trusted (no bare `JSON.parse` elsewhere).
 *
 * - **parent → worker (stdin)**: {@linkcode ParentMessage} lines. A
 *   {@linkcode WorkerConfig} line (JSON; never argv, so the token is not
 *   visible in `ps`) starts a session; then `notified` once the peer was
 *   sent `connect`, and `digest <hex>` if the digest was not ready at
 *   configure time. After a `missed` session the parent may send another
 *   configuration. EOF means the parent died.
 * - **worker → parent (stdout)**: {@linkcode WorkerReport} JSON lines:
 *   `ready` (listening), then one of `done`, `missed` (its peer did not
 *   present its token in time: the parent may give the peer another turn)
 *   or `error`.
 *
 * @module
 */
import { type DigestAlgorithm, isDigestAlgorithm } from "../core/digest.ts";
import { P2mError } from "../core/errors.ts";
import { isSourceInfo, type SourceInfo } from "../core/source.ts";
import { oneLine, TOKEN_HEX_LENGTH } from "./protocol.ts";

/** A spool to send from instead of the source file (socket/spool.ts). */
export interface WorkerSpool {
  /** Where the worker opens it: /proc/<server pid>/fd/<fd>. */
  path: string;
  /** Its final size if known in advance (a tree), null for a stream. */
  size: number | null;
  /** The payload is a tree's pax tar stream. */
  tree: boolean;
}

/** What the parent tells a worker in its first stdin line. */
export interface WorkerConfig {
  /** The source as the parent opened and hashed it. */
  source: SourceInfo;
  /** Digest algorithm of the header. */
  digest: DigestAlgorithm;
  /**
   * Hex digest the parent computed (empty for `none`), or null while the
   * parent is still hashing: it then sends a `digest` message.
   */
  digestHex: string | null;
  /** The one-time token the peer must present. */
  token: string;
  /** Where to listen for the peer. */
  socketPath: string;
  /** Seconds the peer may take to take the next chunk. */
  stallSeconds: number;
  /** Bytes per second; 0 for no limit. */
  limitRate: number;
  /**
   * A growing spool to send instead of the source (a stream or a tree); its
   * bytes are all there once the digest arrives.
   */
  spool?: WorkerSpool;
}

/** A parent → worker line. */
export type ParentMessage =
  | { type: "configure"; config: WorkerConfig }
  | { type: "notified" }
  | { type: "digest"; hex: string };

/** A worker's report on stdout. */
export type WorkerReport =
  | { type: "ready" }
  | { type: "done"; bytes: number; seconds: number }
  | { type: "missed"; seconds: number }
  | { type: "error"; message: string };

/** The stdin line that says the peer was sent `connect`. */
export const NOTIFIED = "notified";
/** Starts the stdin line `digest <hex>` that brings a digest computed late. */
export const DIGEST_LINE = "digest";

const HEX = /^([0-9a-f]{2})*$/;
const encoder = new TextEncoder();

/** Encodes the configuration line. */
export function encodeConfig(config: WorkerConfig): Uint8Array {
  return encoder.encode(JSON.stringify(config) + "\n");
}

/** Parses and validates the configuration line (null: stdin closed first). */
export function parseConfig(line: string | null): WorkerConfig {
  if (line === null) throw new P2mError("worker got no configuration on stdin");
  let config: WorkerConfig;
  try {
    config = JSON.parse(line);
  } catch (error) {
    throw new P2mError("worker got a configuration that is not JSON", { cause: error });
  }
  if (
    !isSourceInfo(config?.source) ||
    typeof config.digest !== "string" || !isDigestAlgorithm(config.digest) ||
    (config.digestHex !== null &&
      (typeof config.digestHex !== "string" || !HEX.test(config.digestHex))) ||
    typeof config.token !== "string" || config.token.length !== TOKEN_HEX_LENGTH ||
    typeof config.socketPath !== "string" || !isSeconds(config.stallSeconds) ||
    !isSeconds(config.limitRate) || (config.spool !== undefined && !isWorkerSpool(config.spool))
  ) {
    throw new P2mError("worker got a bad configuration");
  }
  return config;
}

/** Encodes a parent → worker line. */
export function encodeParentMessage(message: ParentMessage): Uint8Array {
  switch (message.type) {
    case "configure":
      return encodeConfig(message.config);
    case "notified":
      return encoder.encode(NOTIFIED + "\n");
    case "digest":
      return encoder.encode(`${DIGEST_LINE} ${message.hex}\n`);
  }
}

/**
 * Parses a stdin line; undefined for one that is not a valid message. A
 * configuration that does not validate throws: the worker cannot go on.
 */
export function parseParentMessage(line: string): ParentMessage | undefined {
  if (line.startsWith("{")) return { type: "configure", config: parseConfig(line) };
  if (line === NOTIFIED) return { type: "notified" };
  const [word, hex, extra] = line.split(" ");
  if (word === DIGEST_LINE && hex !== undefined && extra === undefined && HEX.test(hex)) {
    return { type: "digest", hex };
  }
  return undefined;
}

/** Encodes a report line. */
export function encodeReport(report: WorkerReport): Uint8Array {
  return encoder.encode(JSON.stringify(report) + "\n");
}

/** Parses and validates a worker's stdout line; undefined for anything else. */
export function parseReport(line: string): WorkerReport | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  switch (value.type) {
    case "ready":
      return { type: "ready" };
    case "done":
      if (!isCount(value.bytes) || !isSeconds(value.seconds)) return undefined;
      return { type: "done", bytes: value.bytes, seconds: value.seconds };
    case "missed":
      if (!isSeconds(value.seconds)) return undefined;
      return { type: "missed", seconds: value.seconds };
    case "error":
      if (typeof value.message !== "string") return undefined;
      return { type: "error", message: oneLine(value.message) };
    default:
      return undefined;
  }
}

function isWorkerSpool(value: unknown): value is WorkerSpool {
  if (typeof value !== "object" || value === null) return false;
  const spool = value as Record<string, unknown>;
  return typeof spool.path === "string" && /^\/proc\/\d+\/fd\/\d+$/.test(spool.path) &&
    (spool.size === null || isCount(spool.size)) && typeof spool.tree === "boolean";
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isSeconds(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}
