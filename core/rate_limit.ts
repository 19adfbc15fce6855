/**
 * `--limit-rate`: caps a sender's throughput, like curl's `--limit-rate` or
 * rsync's `--bwlimit`.
 *
 * Operators use it to keep a fan-out from starving other work on the
 * machine; the fault tests use it to hold a transfer at a known point
 * (50 %, 99 %) long enough to kill a party there.
 *
 * @module
 */
import { delay } from "./delay.ts";

/** Paces a byte stream so that it never runs ahead of a fixed rate. */
export class RateLimit {
  readonly #bytesPerSecond: number;
  #start = 0;
  #sent = 0;

  /** Creates a limit of `bytesPerSecond` (0 or Infinity: no limit). */
  constructor(bytesPerSecond: number) {
    this.#bytesPerSecond = bytesPerSecond > 0 ? bytesPerSecond : Infinity;
  }

  /** Whether this limit ever waits. */
  get enabled(): boolean {
    return Number.isFinite(this.#bytesPerSecond);
  }

  /** Records `bytes` as sent and waits until the rate allows them. */
  async pace(bytes: number): Promise<void> {
    if (!this.enabled) return;
    const now = performance.now();
    if (this.#sent === 0) this.#start = now;
    this.#sent += bytes;
    const due = this.#start + (this.#sent / this.#bytesPerSecond) * 1000;
    if (due > now) await delay(due - now);
  }
}
