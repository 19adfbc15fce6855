/**
 * The one rule for "the other side made no progress": {@linkcode StallClock}.
 *
 * A peer is blamed only for time this process was running. If this
 * process's own ticks arrive late (it was stopped by SIGSTOP, or starved of
 * CPU), the clock restarts instead of failing the other side: a stopped
 * worker, client or server is slow, not stalled. Used by every wait on a
 * data socket (socket/data_channel.ts) and by the worker's deadline for
 * its peer to connect (socket/worker.ts).
 *
 * @module
 */

/** Counts the other side's silence, excluding time we ourselves were not running. */
export class StallClock {
  /** Silence allowed, in ms. */
  readonly limitMs: number;
  /** A gap between our own ticks longer than this means we were not running. */
  readonly gapMs: number;
  #last: number;
  #tick: number;

  /** Starts counting at `now`. */
  constructor(limitMs: number, gapMs: number, now = performance.now()) {
    this.limitMs = limitMs;
    this.gapMs = gapMs;
    this.#last = now;
    this.#tick = now;
  }

  /** Records progress by the other side. */
  progress(now = performance.now()): void {
    this.#last = now;
  }

  /**
   * One of our own ticks: restarts the count if the previous tick was
   * more than {@linkcode gapMs} ago. Returns whether the other side has now
   * been silent for more than {@linkcode limitMs}.
   */
  tick(now = performance.now()): boolean {
    if (now - this.#tick > this.gapMs) this.#last = now; // we were not running
    this.#tick = now;
    return now - this.#last > this.limitMs;
  }

  /** Ms of silence counted so far (as of the last tick). */
  get silentMs(): number {
    return this.#tick - this.#last;
  }
}
