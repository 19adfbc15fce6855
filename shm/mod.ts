/**
 * The shared-memory transport: a POSIX shm ring read by every receiver
 * while the sender writes it.
 *
 * - {@link ./layout.ts}: the segment layout and its strict validator.
 * - {@link ./segment.ts}: every access to a mapped segment's shared words,
 *   and the one wait ({@linkcode Segment.park}).
 * - {@link ./stale.ts}: create-or-replace, remove-stale and the reaper (who
 *   may unlink a segment name).
 * - {@link ./entry_audit.ts}: the sender's check of every receiver entry.
 * - {@link ./sender.ts}: {@linkcode runSender}.
 * - {@link ./receiver.ts}: {@linkcode runReceiver}.
 *
 * @module
 */
export * from "./entry_audit.ts";
export * from "./layout.ts";
export * from "./receiver.ts";
export * from "./segment.ts";
export * from "./sender.ts";
export * from "./stale.ts";
