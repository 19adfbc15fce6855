/**
 * poll(2) on one descriptor, for wrappers that wait in short slices
 * ({@link ./read_only_file.ts}, {@link ./pipe_writer.ts}), so a caller can
 * give the event loop its turn between slices and never block unbounded.
 *
 * @module
 */
import { errno, LibcError } from "./errors.ts";
import { EINTR, libc } from "./libc.ts";

/** One `struct pollfd` and the call that waits on it. */
export class PollSlot {
  #pollfd = new Uint8Array(8);
  #view = new DataView(this.#pollfd.buffer);

  /**
   * Waits up to `timeoutMs` for `events` on `fd`; returns the events that
   * occurred (0 on timeout or EINTR; POLLHUP/POLLERR/POLLNVAL may be set).
   */
  wait(fd: number, events: number, timeoutMs: number): number {
    this.#view.setInt32(0, fd, true);
    this.#view.setInt16(4, events, true);
    this.#view.setInt16(6, 0, true);
    const n = libc().poll(this.#pollfd, 1n, Math.max(0, Math.ceil(timeoutMs)));
    if (n < 0) {
      const code = errno();
      if (code === EINTR) return 0;
      throw new LibcError("poll", code);
    }
    return n === 0 ? 0 : this.#view.getInt16(6, true);
  }
}
