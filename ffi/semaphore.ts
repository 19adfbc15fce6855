/**
 * An unnamed process-shared POSIX semaphore living inside a mapping.
 *
 * Placed in the shared segment with `sem_init(pshared=1)`, so unlinking the
 * segment removes it too. Waits are synchronous and always timed
 * (`sem_clockwait` on CLOCK_MONOTONIC): errno is trustworthy, no pool
 * thread is parked, and the caller gets control back within the slice to
 * check liveness, abort flags and signals.
 *
 * Another process of the same user can scribble over a `sem_t`, and glibc
 * aborts the whole process ("The futex facility returned an unexpected
 * error code") on a bad one. So every wait and post first checks the words
 * it can: glibc x86_64 `struct new_sem` is a u64 `data` (value in the low 32
 * bits, waiters in the high 32) and an i32 `private`, which sem_init(pshared=1)
 * sets to 128 (measured with glibc 2.36; a process-private one holds 0). A bad one throws a clear error instead. A write
 * between the check and the call can still abort: that much is unavoidable.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { errno, fail, LibcError } from "./errors.ts";
import { CLOCK_MONOTONIC, EAGAIN, EINTR, ETIMEDOUT, libc, SEM_T_SIZE } from "./libc.ts";
import type { SharedMemory } from "./shared_memory.ts";

const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);

/** Largest semaphore value glibc allows (SEM_VALUE_MAX). */
const SEM_VALUE_MAX = 0x7fff_ffff;
/** More waiters than this on one sem_t means it was overwritten (p2m has at most 129 processes). */
const MAX_WAITERS = 4096;
/** i32 index of glibc's `private` word in `struct new_sem`. */
const SEM_PRIVATE_WORD = 2;
/** What sem_init(pshared=1) leaves in `private` (glibc's futex flags for a shared futex). */
const SEM_PROCESS_SHARED = 128;
/** i32 index of the waiter count (high half of `data`). */
const SEM_WAITERS_WORD = 1;

/** A sem_t whose words no glibc would have written: another process overwrote it. */
export class CorruptSemaphoreError extends P2mError {
  constructor(memoryName: string) {
    super(`shared memory ${memoryName.replace(/^\//, "")} is corrupt (semaphore overwritten)`);
    this.name = "CorruptSemaphoreError";
  }
}

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

  /**
   * Throws {@linkcode CorruptSemaphoreError} unless its words are what glibc
   * writes for a process-shared semaphore (checked before every use).
   */
  check(): void {
    this.#ptr(); // a RangeError once unmapped, before any read
    const words = new Int32Array(this.#memory.buffer, this.#offset, SEM_T_SIZE / 4);
    const value = Atomics.load(words, 0) >>> 0;
    const waiters = Atomics.load(words, SEM_WAITERS_WORD) >>> 0;
    const shared = Atomics.load(words, SEM_PRIVATE_WORD);
    if (value > SEM_VALUE_MAX || waiters > MAX_WAITERS || shared !== SEM_PROCESS_SHARED) {
      throw new CorruptSemaphoreError(this.#memory.name);
    }
  }

  /** Increments it, waking one waiter. */
  post(): void {
    this.check();
    if (libc().sem_post(this.#ptr()) !== 0) fail("sem_post");
  }

  /** Decrements it if positive; returns false if it was zero. */
  tryWait(): boolean {
    this.check();
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
    this.check();
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
