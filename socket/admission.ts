/**
 * The server's admission queue: at most `maxActive` peers hold a slot (a
 * worker, or the parent's `--raw` stream); the rest wait in arrival order.
 * A slot is taken with {@linkcode AdmissionQueue.offer} or
 * {@linkcode AdmissionQueue.next} and given back with
 * {@linkcode AdmissionQueue.release} once its worker process has exited,
 * so the number of live workers never exceeds `maxActive` (plus the
 * pre-started spares): the server's memory bound.
 *
 * @module
 */

/** Slots and a FIFO of peers waiting for one. */
export class AdmissionQueue<T> {
  /** Most slots in use at once. */
  readonly maxActive: number;
  #busy = 0;
  #waiting: T[] = [];

  /** Creates an empty queue with `maxActive` slots. */
  constructor(maxActive: number) {
    if (!(Number.isSafeInteger(maxActive) && maxActive >= 1)) {
      throw new RangeError(`maxActive must be a positive integer, not ${maxActive}`);
    }
    this.maxActive = maxActive;
  }

  /** Slots in use. */
  get busy(): number {
    return this.#busy;
  }

  /** Peers waiting, first in line first. */
  get waiting(): readonly T[] {
    return this.#waiting;
  }

  /**
   * A peer asks for a slot: 0 means it got one and starts now; otherwise
   * its 1-based place at the back of the line.
   */
  offer(peer: T): number {
    if (this.#busy < this.maxActive && this.#waiting.length === 0) {
      this.#busy++;
      return 0;
    }
    this.#waiting.push(peer);
    return this.#waiting.length;
  }

  /** The first waiting peer, given a slot, if a slot is free; else undefined. */
  next(): T | undefined {
    if (this.#busy >= this.maxActive || this.#waiting.length === 0) return undefined;
    this.#busy++;
    return this.#waiting.shift();
  }

  /** Takes a waiting peer out of the line; whether it was there. */
  remove(peer: T): boolean {
    const at = this.#waiting.indexOf(peer);
    if (at < 0) return false;
    this.#waiting.splice(at, 1);
    return true;
  }

  /** Gives a slot back. */
  release(): void {
    if (this.#busy === 0) throw new Error("AdmissionQueue.release() without a slot in use");
    this.#busy--;
  }
}
