/**
 * AF_UNIX stream sockets through libc, for data paths
 * that Deno's own APIs make slow.
 *
 * Deno's `UnixConn` has no public fd and no way to set `SO_SNDBUF`, so two
 * processes ping-pong through the default ~208 KiB socket buffer, and a file
 * cannot be `sendfile(2)`d into it. {@linkcode UnixSocket} owns a
 * nonblocking socket fd; every call is synchronous (errno is read at once)
 * and never blocks: a call that would block returns `null`, and
 * {@linkcode UnixSocket.poll} waits with a timeout, so callers can wait in
 * short slices and still give the event loop its turn.
 *
 * @module
 */
import { errno, fail, LibcError } from "./errors.ts";
import type { ReadOnlyFile } from "./read_only_file.ts";
import {
  AF_UNIX,
  closeFd,
  cString,
  EAGAIN,
  EINTR,
  libc,
  SHUT_WR,
  SIOCOUTQ,
  SO_RCVBUF,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOCKADDR_UN_SIZE,
  SOL_SOCKET,
} from "./libc.ts";

const encoder = new TextEncoder();

function sockaddr(path: string): Uint8Array {
  const bytes = encoder.encode(path);
  if (bytes.length === 0 || bytes.length >= SOCKADDR_UN_SIZE - 2 || bytes.includes(0)) {
    throw new RangeError(`bad Unix socket path: ${path}`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  return addr;
}

/** A nonblocking AF_UNIX stream socket owned through its fd. */
export class UnixSocket implements Disposable {
  #fd: number;
  #pollfd = new Uint8Array(8);
  #offset = new BigInt64Array(1);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  static #create(): UnixSocket {
    const fd = libc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) fail("socket");
    return new UnixSocket(fd);
  }

  /**
   * Binds a new socket to `path` with mode 0600 (umask 177 during bind) and
   * listens. Throws LibcError (EADDRINUSE if the path exists).
   */
  static listen(path: string, backlog = 8): UnixSocket {
    const socket = UnixSocket.#create();
    const addr = sockaddr(path);
    const old = libc().umask(0o177);
    const bound = libc().bind(socket.#fd, addr, addr.length);
    const code = bound < 0 ? errno() : 0;
    libc().umask(old);
    try {
      if (bound < 0) throw new LibcError("bind", code, path);
      if (libc().listen(socket.#fd, backlog) < 0) fail("listen", path);
    } catch (error) {
      socket.close();
      throw error;
    }
    return socket;
  }

  /** Connects a new socket to `path`; throws LibcError (ENOENT, ECONNREFUSED, EAGAIN…). */
  static connect(path: string): UnixSocket {
    const socket = UnixSocket.#create();
    const addr = sockaddr(path);
    if (libc().connect(socket.#fd, addr, addr.length) < 0) {
      const error = new LibcError("connect", errno(), path);
      socket.close();
      throw error;
    }
    return socket;
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  #live(fn: string): number {
    if (this.#fd < 0) throw new LibcError(fn, 9, "socket closed");
    return this.#fd;
  }

  /** Accepts one pending connection, or null if none is waiting. */
  accept(): UnixSocket | null {
    const fd = orNullIfBusy(
      "accept4",
      libc().accept4(this.#live("accept4"), null, null, SOCK_CLOEXEC | SOCK_NONBLOCK),
    );
    return fd === null ? null : new UnixSocket(fd);
  }

  /**
   * Waits up to `timeoutMs` for `events` (POLLIN/POLLOUT); returns the
   * events that occurred (0 on timeout; POLLHUP/POLLERR may be set too).
   */
  poll(events: number, timeoutMs: number): number {
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, this.#live("poll"), true);
    view.setInt16(4, events, true);
    view.setInt16(6, 0, true);
    const n = libc().poll(this.#pollfd, 1n, Math.max(0, Math.ceil(timeoutMs)));
    if (n < 0) {
      const code = errno();
      if (code === EINTR) return 0;
      throw new LibcError("poll", code);
    }
    return n === 0 ? 0 : view.getInt16(6, true);
  }

  /** Reads into `buf`: the count, 0 at EOF, or null if nothing is there yet. */
  read(buf: Uint8Array): number | null {
    return orNullIfBusy("read", libc().read(this.#live("read"), buf, BigInt(buf.length)));
  }

  /** Writes some of `bytes`: the count, or null if the buffer is full. */
  write(bytes: Uint8Array): number | null {
    return orNullIfBusy("write", libc().write(this.#live("write"), bytes, BigInt(bytes.length)));
  }

  /**
   * sendfile(2): up to `count` bytes of `file` from `offset`. Returns the
   * count sent (0 means `file` ends at `offset`), or null if the buffer is full.
   */
  sendFile(file: ReadOnlyFile, offset: number, count: number): number | null {
    this.#offset[0] = BigInt(offset);
    return orNullIfBusy(
      "sendfile",
      libc().sendfile(
        this.#live("sendfile"),
        file.fd,
        new Uint8Array(this.#offset.buffer),
        BigInt(count),
      ),
    );
  }

  /** Asks for a send (`SO_SNDBUF`) or receive (`SO_RCVBUF`) buffer; best effort. */
  setBufferSize(which: "send" | "receive", bytes: number): void {
    const value = new Int32Array([bytes]);
    libc().setsockopt(
      this.#live("setsockopt"),
      SOL_SOCKET,
      which === "send" ? SO_SNDBUF : SO_RCVBUF,
      new Uint8Array(value.buffer),
      4,
    );
  }

  /**
   * Bytes written to this socket that the peer has not read yet (SIOCOUTQ).
   * sendfile(2) may queue references to the file's pages rather than
   * copies, so a sender that must vouch for the bytes waits for this to
   * reach 0 before it checks the file again.
   */
  unsentBytes(): number {
    const value = new Int32Array(1);
    if (libc().ioctl(this.#live("ioctl"), BigInt(SIOCOUTQ), new Uint8Array(value.buffer)) < 0) {
      fail("ioctl", "SIOCOUTQ");
    }
    return value[0];
  }

  /** Shuts down the sending side: the peer reads EOF after what was sent. */
  shutdownWrite(): void {
    if (libc().shutdown(this.#live("shutdown"), SHUT_WR) < 0) fail("shutdown");
  }

  /** Closes the socket (idempotent). */
  close(): void {
    this.#fd = closeFd(this.#fd);
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The one reading of a nonblocking call's result, right after the call:
 * the count or fd when it is 0 or more, null when the call would block or
 * was interrupted (try again after a poll), else a LibcError.
 */
function orNullIfBusy(fn: string, result: number | bigint): number | null {
  if (result >= 0) return Number(result);
  const code = errno();
  if (code === EAGAIN || code === EINTR) return null;
  throw new LibcError(fn, code);
}

/** Removes a file with libc unlink(2); false if it failed (e.g. already gone). */
export function unlinkPath(path: string): boolean {
  return libc().unlink(cString(path, "path")) === 0;
}
