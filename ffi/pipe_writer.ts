/**
 * Writing to an inherited output (stdout) without ever blocking for long.
 *
 * Inherited stdio shares its open file description with the shell and any
 * sibling process, so setting `O_NONBLOCK` on fd 1 would change it for them
 * too. When stdout is a pipe or a FIFO, {@linkcode PipeWriter.stdout}
 * instead opens `/proc/self/fd/1` again: for a pipe that gives this process
 * a new, private description of the same pipe, made nonblocking, so a
 * write takes what fits and returns. A pipe whose reader is gone already
 * refuses the open (ENXIO), which is reported as EPIPE.
 *
 * Any other stdout (a regular file, a terminal, a socket) is written
 * through fd 1 itself, after poll(2) says it is writable, in pieces of at
 * most {@linkcode MAX_BLOCKING_WRITE} bytes.
 *
 * SIGPIPE is ignored by the Deno runtime, so a reader that goes away makes
 * `write` fail with EPIPE, thrown as a LibcError.
 *
 * @module
 */
import { errno, LibcError } from "./errors.ts";
import {
  cString,
  EAGAIN,
  EINTR,
  ENXIO,
  EPIPE,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_WRONLY,
  S_IFIFO,
  S_IFMT,
} from "./libc.ts";
import { PollSlot } from "./poll.ts";
import { fstatOf } from "./stat.ts";

/** Largest piece written at once to an output that may block. */
export const MAX_BLOCKING_WRITE = 64 * 1024;

/** An output descriptor written without unbounded blocking. */
export class PipeWriter implements Disposable {
  #fd: number;
  #owned: boolean;
  #what: string;
  #poll = new PollSlot();

  private constructor(fd: number, owned: boolean, what: string) {
    this.#fd = fd;
    this.#owned = owned;
    this.#what = what;
  }

  /** The writer for this process's stdout; throws LibcError (EPIPE if a pipe has no reader). */
  static stdout(): PipeWriter {
    return PipeWriter.inherited(1, "stdout");
  }

  /** The writer for inherited descriptor `fd` (see the module comment). */
  static inherited(fd: number, what: string): PipeWriter {
    const type = fstatOf(fd, what).mode & S_IFMT;
    if (type !== S_IFIFO) return new PipeWriter(fd, false, what);
    const own = libc().open(
      cString(`/proc/self/fd/${fd}`, "path"),
      O_WRONLY | O_NONBLOCK | O_CLOEXEC,
      0,
    );
    if (own < 0) {
      const code = errno();
      throw new LibcError("open", code === ENXIO ? EPIPE : code, what);
    }
    return new PipeWriter(own, true, what);
  }

  /** Whether writes can never block (a private nonblocking description). */
  get nonblocking(): boolean {
    return this.#owned;
  }

  /**
   * Writes what fits now: the count, or null if nothing could be written
   * (EAGAIN/EINTR). Throws LibcError (EPIPE: the reader is gone).
   */
  write(view: Uint8Array): number | null {
    const piece = this.#owned ? view : view.subarray(0, MAX_BLOCKING_WRITE);
    const n = Number(libc().write(this.#live(), piece, BigInt(piece.length)));
    if (n >= 0) return n;
    const code = errno();
    if (code === EAGAIN || code === EINTR) return null;
    throw new LibcError("write", code, this.#what);
  }

  /** Waits up to `timeoutMs` for `events` (POLLOUT); returns what occurred. */
  poll(events: number, timeoutMs: number): number {
    return this.#poll.wait(this.#live(), events, timeoutMs);
  }

  /** Closes a private description (idempotent); an inherited fd is left open. */
  close(): void {
    if (this.#fd < 0) return;
    if (this.#owned) libc().close(this.#fd);
    this.#fd = -1;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #live(): number {
    if (this.#fd < 0) throw new LibcError("write", 9, `${this.#what} (closed)`);
    return this.#fd;
  }
}
