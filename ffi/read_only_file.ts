/**
 * A file opened read-only through libc, for the sending side of both
 * transports: `read`/`pread` into any view (a slot of the shared ring
 * included), `fstat` to the nanosecond, a read lease, and the fd that
 * `sendfile(2)` needs ({@link ./unix_socket.ts}).
 *
 * The open is `O_NONBLOCK`, so opening a FIFO with no writer returns at
 * once instead of parking the process where no signal handler can run;
 * the flag is cleared again for regular files.
 *
 * A read lease (`F_SETLEASE`, `F_RDLCK`) is the kernel's own "tell me
 * before anyone writes": it can be taken only while nobody has the file
 * open for writing (a writable shared mapping counts), and any later open
 * for writing or truncate breaks it. The breaker's `open` waits until the
 * holder lets go (at most `/proc/sys/fs/lease-break-time`, 45 s by default)
 * and the holder is sent a signal; this class sets that signal to SIGURG,
 * whose default action is to be ignored, and callers poll
 * {@linkcode ReadOnlyFile.leaseBroken}.
 *
 * A stream input (a FIFO, or stdin borrowed with
 * {@linkcode ReadOnlyFile.inherited}) is waited on with
 * {@linkcode ReadOnlyFile.poll} and read with
 * {@linkcode ReadOnlyFile.readNow}, so that no read blocks for long.
 * A FIFO keeps its `O_NONBLOCK`; an inherited descriptor's flags are never
 * changed, since its open file description is shared with the shell.
 *
 * @module
 */
import { errno, fail, LibcError } from "./errors.ts";
import {
  cString,
  EACCES,
  EAGAIN,
  EINTR,
  EINVAL,
  EPERM,
  F_GETFL,
  F_GETLEASE,
  F_RDLCK,
  F_SETFL,
  F_SETLEASE,
  F_SETSIG,
  F_UNLCK,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  S_IFMT,
  S_IFREG,
  SIGURG,
} from "./libc.ts";
import { PollSlot } from "./poll.ts";
import { fstatOf, type StatInfo } from "./stat.ts";

/** Why a read lease could not be taken. */
export type LeaseRefusal =
  | "open-for-writing"
  | "not-permitted"
  | "unsupported";

/** A read-only file descriptor owned by this object. */
export class ReadOnlyFile implements Disposable {
  #fd: number;
  #path: string;
  #leased = false;
  #borrowed = false;
  #poll: PollSlot | undefined;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /**
   * Wraps a descriptor this process inherited (0 for stdin) without owning
   * it: {@linkcode close} only forgets it, and its flags are left alone.
   */
  static inherited(fd: number, name: string): ReadOnlyFile {
    const file = new ReadOnlyFile(fd, name);
    file.#borrowed = true;
    return file;
  }

  /**
   * Opens `path` read-only without blocking (a FIFO opens at once); throws
   * LibcError. A regular file gets its blocking mode back.
   */
  static open(path: string): ReadOnlyFile {
    const fd = libc().open(cString(path, "path"), O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
    if (fd < 0) fail("open", path);
    const file = new ReadOnlyFile(fd, path);
    try {
      if ((file.stat().mode & S_IFMT) === S_IFREG) {
        const flags = libc().fcntl_int(fd, F_GETFL, 0n);
        if (flags < 0 || libc().fcntl_int(fd, F_SETFL, BigInt(flags & ~O_NONBLOCK)) < 0) {
          fail("fcntl", `${path}, F_SETFL`);
        }
      }
    } catch (error) {
      file.close();
      throw error;
    }
    return file;
  }

  /** The path it was opened by (for messages). */
  get path(): string {
    return this.#path;
  }

  /** The raw descriptor, for other wrappers in ffi/ (sendfile). Do not close it. */
  get fd(): number {
    return this.#live("fd");
  }

  /** fstat(2), times to the nanosecond. */
  stat(): StatInfo {
    return fstatOf(this.#live("fstat"), this.#path);
  }

  /** read(2) into `view`: bytes read, 0 at end of file. Retries EINTR. */
  read(view: Uint8Array): number {
    for (;;) {
      const n = Number(libc().read(this.#live("read"), view, BigInt(view.length)));
      if (n >= 0) return n;
      const code = errno();
      if (code !== EINTR) throw new LibcError("read", code, this.#path);
    }
  }

  /** pread(2) into `view` from `offset`: bytes read, 0 at end of file. Retries EINTR. */
  pread(view: Uint8Array, offset: number): number {
    for (;;) {
      const n = Number(
        libc().pread(this.#live("pread"), view, BigInt(view.length), BigInt(offset)),
      );
      if (n >= 0) return n;
      const code = errno();
      if (code !== EINTR) throw new LibcError("pread", code, this.#path);
    }
  }

  /**
   * read(2) into `view` that reports "nothing yet" instead of waiting:
   * bytes read, 0 at end of file, or null on EAGAIN/EINTR.
   */
  readNow(view: Uint8Array): number | null {
    const n = Number(libc().read(this.#live("read"), view, BigInt(view.length)));
    if (n >= 0) return n;
    const code = errno();
    if (code === EAGAIN || code === EINTR) return null;
    throw new LibcError("read", code, this.#path);
  }

  /**
   * Waits up to `timeoutMs` for `events` (POLLIN); returns the events that
   * occurred (0 on timeout; POLLHUP/POLLERR may be set too).
   */
  poll(events: number, timeoutMs: number): number {
    this.#poll ??= new PollSlot();
    return this.#poll.wait(this.#live("poll"), events, timeoutMs);
  }

  /**
   * Takes a read lease. Returns undefined on success, or why not: someone
   * has the file open for writing (EAGAIN), we neither own it nor have
   * CAP_LEASE (EACCES/EPERM), or the file system or the kernel has no
   * leases (EINVAL).
   */
  takeReadLease(): LeaseRefusal | undefined {
    const fd = this.#live("fcntl");
    // Announce a break with SIGURG (ignored by default), not SIGIO (whose
    // default action would kill this process).
    if (libc().fcntl_int(fd, F_SETSIG, BigInt(SIGURG)) < 0) {
      fail("fcntl", `${this.#path}, F_SETSIG`);
    }
    if (libc().fcntl_int(fd, F_SETLEASE, BigInt(F_RDLCK)) === 0) {
      this.#leased = true;
      return undefined;
    }
    const code = errno();
    if (code === EAGAIN) return "open-for-writing";
    if (code === EACCES || code === EPERM) return "not-permitted";
    if (code === EINVAL) return "unsupported";
    throw new LibcError("fcntl", code, `${this.#path}, F_SETLEASE`);
  }

  /**
   * Whether a lease taken by {@linkcode takeReadLease} is being broken:
   * someone opened the file for writing or truncated it since.
   */
  leaseBroken(): boolean {
    if (!this.#leased) return false;
    const type = libc().fcntl_int(this.#live("fcntl"), F_GETLEASE, 0n);
    if (type < 0) fail("fcntl", `${this.#path}, F_GETLEASE`);
    return type !== F_RDLCK;
  }

  /** Gives the lease up, so that a writer waiting on it goes on at once. */
  releaseLease(): void {
    if (!this.#leased || this.#fd < 0) return;
    this.#leased = false;
    libc().fcntl_int(this.#fd, F_SETLEASE, BigInt(F_UNLCK));
  }

  /** Whether this file holds a lease. */
  get leased(): boolean {
    return this.#leased;
  }

  /** Closes the file (idempotent); this also drops any lease. */
  close(): void {
    if (this.#fd < 0) return;
    if (!this.#borrowed) libc().close(this.#fd);
    this.#fd = -1;
    this.#leased = false;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #live(fn: string): number {
    if (this.#fd < 0) throw new LibcError(fn, 9, `${this.#path} (closed)`);
    return this.#fd;
  }
}
