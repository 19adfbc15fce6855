/**
 * Waiting for a name to appear in a directory without polling for it:
 * inotify(7) on the directory, and `poll(2)` on its descriptor on Deno's
 * blocking pool, so the event loop (signal handlers included) runs while
 * nothing happens and the process uses no CPU at all.
 *
 * Why: a receiver started before its sender used to look for the segment
 * every 5 ms. Measured here, each waiting receiver used about 75 ms of CPU
 * per second that way: sixteen waiting at once would take more than one of
 * this machine's two cores.
 *
 * inotify reports changes made through the file system (create, rename,
 * truncate, chmod, chown, unlink). It does not report writes through a
 * mapping or lock changes, so a caller whose name exists but is not ready
 * yet still looks again after a short delay.
 *
 * @module
 */
import { errno, LibcError } from "./errors.ts";
import { cString, EAGAIN, EINTR, libc, POLLIN } from "./libc.ts";

/** inotify_init1(2) flag: nonblocking reads. */
const IN_NONBLOCK = 0o4000;
/** inotify_init1(2) flag: close on exec. */
const IN_CLOEXEC = 0o2000000;
/** inotify event: a file's metadata changed (chmod, chown, link count). */
const IN_ATTRIB = 0x4;
/** inotify event: a file was written or truncated. */
const IN_MODIFY = 0x2;
/** inotify event: a name was moved into the directory. */
const IN_MOVED_TO = 0x80;
/** inotify event: a name was created in the directory. */
const IN_CREATE = 0x100;
/** inotify event: a name was removed from the directory. */
const IN_DELETE = 0x200;
/** inotify event: the kernel's queue overflowed; events were lost. */
const IN_Q_OVERFLOW = 0x4000;
/** inotify_add_watch(2) flag: fail unless the path is a directory. */
const IN_ONLYDIR = 0x01000000;
/** Every change {@linkcode DirectoryWatch} wakes for. */
const WATCHED = IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_ATTRIB | IN_DELETE;
/** Fixed part of struct inotify_event: wd, mask, cookie, len. */
const EVENT_HEADER = 16;

/** A directory watched for changes to its names. */
export class DirectoryWatch implements Disposable {
  #fd: number;
  readonly #dir: string;
  // The kernel reads and writes these while a wait is pending on the pool:
  // they live as long as the watch.
  readonly #pollfd = new Uint8Array(8);
  readonly #events = new Uint8Array(4096);

  private constructor(fd: number, dir: string) {
    this.#fd = fd;
    this.#dir = dir;
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /**
   * Watches `dir` (which must be a directory) for names created, renamed
   * into it, written, truncated, chmod'ed, chown'ed or removed. Throws a
   * {@linkcode LibcError} if inotify is not available (its per-user limits
   * reached, say): the caller then falls back to looking every few ms.
   */
  static open(dir: string): DirectoryWatch {
    const fd = libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) throw new LibcError("inotify_init1", errno(), dir);
    if (libc().inotify_add_watch(fd, cString(dir, "directory"), WATCHED | IN_ONLYDIR) < 0) {
      const error = new LibcError("inotify_add_watch", errno(), dir);
      libc().close(fd);
      throw error;
    }
    return new DirectoryWatch(fd, dir);
  }

  /**
   * Waits up to `timeoutMs` for a change to `name` in the directory: true
   * as soon as one comes (or the kernel's queue overflowed, so one may have
   * been lost), false when the time is up. Changes to other names are
   * read and passed over.
   */
  async waitFor(name: string, timeoutMs: number): Promise<boolean> {
    const wanted = new TextEncoder().encode(name);
    const due = performance.now() + Math.max(0, timeoutMs);
    for (;;) {
      if (this.#fd < 0) throw new RangeError(`the watch of ${this.#dir} is closed`);
      if (this.#drain(wanted)) return true;
      const left = Math.ceil(due - performance.now());
      if (left <= 0) return false;
      // On the pool: errno is not ours to read, and a failure (EINTR)
      // is one more turn of this loop.
      await libc().poll_nonblocking(Deno.UnsafePointer.of(this.#pollfd), 1n, left);
    }
  }

  /** Reads every queued event; whether one was about `wanted` or events were lost. */
  #drain(wanted: Uint8Array): boolean {
    let found = false;
    for (;;) {
      const n = Number(libc().read(this.#fd, this.#events, BigInt(this.#events.length)));
      if (n <= 0) {
        const code = n < 0 ? errno() : 0;
        if (n === 0 || code === EAGAIN || code === EINTR) return found;
        throw new LibcError("read", code, `the inotify watch of ${this.#dir}`);
      }
      const view = new DataView(this.#events.buffer, 0, n);
      for (let at = 0; at + EVENT_HEADER <= n;) {
        const mask = view.getUint32(at + 4, true);
        const length = view.getUint32(at + 12, true);
        if (mask & IN_Q_OVERFLOW || sameName(this.#events, at + EVENT_HEADER, length, wanted)) {
          found = true;
        }
        at += EVENT_HEADER + length;
      }
    }
  }

  /** Stops watching (idempotent). Not while a {@linkcode waitFor} is pending. */
  close(): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Whether the NUL-padded name at `at` (`length` bytes with padding) is `wanted`. */
function sameName(bytes: Uint8Array, at: number, length: number, wanted: Uint8Array): boolean {
  if (length < wanted.length + 1 || bytes[at + wanted.length] !== 0) return false;
  for (let i = 0; i < wanted.length; i++) if (bytes[at + i] !== wanted[i]) return false;
  return true;
}
