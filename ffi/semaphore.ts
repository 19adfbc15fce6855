/**
 * An unnamed process-shared POSIX semaphore living inside a mapping.
 *
 * Placed in the shared segment with `sem_init(pshared=1)`, so unlinking the
 * segment removes it too. Waits are synchronous and always timed
 * (`sem_clockwait` on CLOCK_MONOTONIC): errno is trustworthy, no pool
 * thread is parked, and the caller gets control back within the slice to
 * check liveness, abort flags and signals.
 *
 * @module
 */
import { errno, fail, LibcError } from "./errors.ts";
import { CLOCK_MONOTONIC, EAGAIN, EINTR, ETIMEDOUT, libc, SEM_T_SIZE } from "./libc.ts";
import type { SharedMemory } from "./shared_memory.ts";

const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);

/** A sem_t at a fixed offset of a shared mapping. */
export class Semaphore {
  #memory: SharedMemory;
  #offset: number;

  /** Refers to the semaphore at `offset` (32 bytes) of a mapped segment. */
  constructor(memory: SharedMemory, offset: number) {
    if (offset % 8 !== 0) throw new RangeError("sem_t must be 8-byte aligned");
    this.#memory = memory;
    this.#offset = offset;
    memory.pointer(offset + SEM_T_SIZE - 1); // bounds check
  }

  /** Initialises it as process-shared with `value`. */
  init(value = 0): void {
    if (libc().sem_init(this.#ptr(), 1, value) !== 0) fail("sem_init");
  }

  /** Destroys it (nobody may be waiting). */
  destroy(): void {
    if (libc().sem_destroy(this.#ptr()) !== 0) fail("sem_destroy");
  }

  /** Increments it, waking one waiter. */
  post(): void {
    if (libc().sem_post(this.#ptr()) !== 0) fail("sem_post");
  }

  /** Decrements it if positive; returns false if it was zero. */
  tryWait(): boolean {
    if (libc().sem_trywait(this.#ptr()) === 0) return true;
    const code = errno();
    if (code === EAGAIN || code === EINTR) return false;
    throw new LibcError("sem_trywait", code);
  }

  /**
   * Waits up to `ms` milliseconds to decrement it. Returns true if it did,
   * false on timeout or signal (the caller re-checks shared state either way).
   */
  wait(ms: number): boolean {
    const ts = new BigInt64Array(2);
    if (libc().clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) {
      fail("clock_gettime");
    }
    const ns = ts[1] + BigInt(Math.max(0, Math.round(ms * 1e6)));
    timespec[0] = ts[0] + ns / 1_000_000_000n;
    timespec[1] = ns % 1_000_000_000n;
    if (libc().sem_clockwait(this.#ptr(), CLOCK_MONOTONIC, timespecBytes) === 0) return true;
    const code = errno();
    if (code === ETIMEDOUT || code === EINTR) return false;
    throw new LibcError("sem_clockwait", code);
  }

  /** The current count. */
  value(): number {
    const out = new Int32Array(1);
    if (libc().sem_getvalue(this.#ptr(), new Uint8Array(out.buffer)) !== 0) fail("sem_getvalue");
    return out[0];
  }

  #ptr(): Deno.PointerObject {
    // Throws once the segment is unmapped: never touch freed memory.
    return this.#memory.pointer(this.#offset);
  }
}
