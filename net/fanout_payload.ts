/**
 * The shm sender's payload for `net fetch --fanout shm`: the checked chunks
 * of one revision, queued as they arrive from NATS and read by the sender
 * as a stream ({@linkcode Payload.readSome}), so the ring fills while the
 * download is still under way.
 *
 * The queue is bounded: above {@linkcode HIGH_WATER} bytes, {@linkcode
 * FanoutPayload.push} returns a promise that settles once the sender has
 * drained it to half, and the fetch requests no further chunk meanwhile
 * (net/revision.ts). A failed fetch ({@linkcode FanoutPayload.fail}) is
 * thrown to the sender by the next read, or by `changed()` while it still
 * waits for receivers, so it aborts the ring at once and no receiver keeps
 * anything.
 *
 * @module
 */
import { delay } from "../core/delay.ts";
import { P2mError } from "../core/errors.ts";
import type { Payload } from "../shm/payload.ts";

/** Bytes queued before the fetch is held. */
const HIGH_WATER = 32 << 20;

/** Chunks of one revision on their way from NATS to the ring. */
export class FanoutPayload implements Payload {
  readonly kind = "stream" as const;
  readonly path: string;
  readonly name: string;
  readonly mode: number;
  readonly size = undefined;
  #chunks: Uint8Array[] = [];
  /** Bytes of the first queued chunk already read. */
  #offset = 0;
  #queued = 0;
  #ended = false;
  #closed = false;
  #failure: unknown;
  #arrived = Promise.withResolvers<void>();
  #drained: PromiseWithResolvers<void> | undefined;

  /** A payload named `name` (mode `mode`); `path` names its origin in messages. */
  constructor(path: string, name: string, mode: number) {
    this.path = path;
    this.name = name;
    this.mode = mode;
  }

  /** Queues one chunk; a promise when the queue is full (settles once half is read). */
  push(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#closed) throw new P2mError("the local transfer ended before the fetch did");
    this.#chunks.push(bytes);
    this.#queued += bytes.length;
    this.#arrived.resolve();
    if (this.#queued < HIGH_WATER) return undefined;
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  /** Every chunk is queued: the stream ends once they are read. */
  end(): void {
    this.#ended = true;
    this.#arrived.resolve();
  }

  /** The fetch failed: the sender's next look throws `error`. */
  fail(error: unknown): void {
    this.#failure ??= error;
    this.#arrived.resolve();
  }

  fill(): void {
    throw new Error("a fetched stream is read with readSome()");
  }

  /** Queued bytes into `view`; null if none came within `maxWaitMs`, 0 at the end. */
  async readSome(view: Uint8Array, maxWaitMs: number): Promise<number | null> {
    if (this.#chunks.length === 0 && !this.#ended && this.#failure === undefined) {
      if (maxWaitMs <= 0) return null;
      this.#arrived = Promise.withResolvers<void>();
      await Promise.race([this.#arrived.promise, delay(maxWaitMs)]);
    }
    if (this.#failure !== undefined) throw this.#failure;
    let count = 0;
    while (count < view.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const part = chunk.subarray(this.#offset, this.#offset + view.length - count);
      view.set(part, count);
      count += part.length;
      this.#offset += part.length;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#queued -= count;
    if (this.#drained && this.#queued <= HIGH_WATER / 2) {
      this.#drained.resolve();
      this.#drained = undefined;
    }
    if (count > 0) return count;
    return this.#ended ? 0 : null;
  }

  /** Throws the fetch's failure, so a sender still waiting for receivers stops at once. */
  changed(): undefined {
    if (this.#failure !== undefined) throw this.#failure;
    return undefined;
  }

  rewind(): boolean {
    return false;
  }

  /** Stops taking chunks: a fetch still under way fails at its next one. */
  close(): void {
    this.#closed = true;
    this.#chunks = [];
    this.#drained?.resolve();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
