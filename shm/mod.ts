/**
 * The shared-memory transport: a POSIX shm ring read by every receiver
 * while the sender writes it.
 *
 * - {@link ./layout.ts}: the segment layout and its strict validator.
 * - {@link ./segment.ts}: typed views over a mapped segment.
 * - {@link ./sender.ts}: {@linkcode runSender}.
 * - {@link ./receiver.ts}: {@linkcode runReceiver}.
 *
 * @module
 */
export * from "./layout.ts";
export * from "./receiver.ts";
export * from "./segment.ts";
export * from "./sender.ts";
