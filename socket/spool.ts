/**
 * The spool ({@linkcode Spool}): the disk file a socket server reads a
 * stream (stdin, a FIFO) or a tree's tar stream into, once, while its
 * workers `sendfile(2)` from it as it grows. So no byte passes through the
 * parent to a peer, a slow peer never holds up the producer or the other
 * peers, and memory stays bounded whatever the stream's length: the bytes
 * live on disk (`--spool DIR`, default `$TMPDIR` or `/tmp`, not the runtime
 * dir, which is often a small tmpfs), not in RAM.
 *
 * The file never has a name: it is created with `O_TMPFILE` (mode 0600) in
 * the spool directory, so nothing is left behind however the server ends,
 * even by `kill -9`. A file system without `O_TMPFILE` gets an `O_EXCL`
 * file that is unlinked at once. Workers, which are the same user's
 * processes, open it through `/proc/<server pid>/fd/<fd>` with libc
 * `open(2)` (ffi/read_only_file.ts; Deno's own file API refuses /proc
 * without `-A`), which opens the very file the server writes, for as long
 * as the server lives. Late peers are thus served from the spool too.
 *
 * @module
 */
import { closeFd, cString, libc, O_CLOEXEC, O_CREAT, O_EXCL, O_RDWR } from "../ffi/libc.ts";
import { errno, fail, LibcError } from "../ffi/errors.ts";
import { P2mError } from "../core/errors.ts";

/** open(2) flag: an unnamed file in the given directory (includes O_DIRECTORY). */
const O_TMPFILE = 0o20200000;
/** errno: the file system has no O_TMPFILE. */
const EOPNOTSUPP = 95;
/** errno: the kernel predates O_TMPFILE (it then sees O_DIRECTORY only). */
const EISDIR = 21;
/** errno: a partial write interrupted by a signal. */
const EINTR = 4;

/** The spool directory by default: the system temp dir. */
export function defaultSpoolDir(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

/** An unnamed, private, append-only disk file that workers read while it grows. */
export class Spool implements Disposable {
  #fd: number;
  #size = 0;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Creates the spool in `dir`; throws a P2mError saying why not. */
  static create(dir: string): Spool {
    const fd = libc().open(cString(dir, "spool dir"), O_TMPFILE | O_RDWR | O_CLOEXEC, 0o600);
    if (fd >= 0) return new Spool(fd);
    const code = errno();
    if (code !== EOPNOTSUPP && code !== EISDIR) {
      throw new P2mError(`cannot create a spool file in ${dir}: ${new LibcError("open", code)}`);
    }
    const suffix = crypto.getRandomValues(new Uint32Array(2)).join("");
    const path = `${dir}/.p2m-spool-${Deno.pid}-${suffix}`;
    const named = libc().open(cString(path, "spool"), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600);
    if (named < 0) fail("open", path);
    if (libc().unlink(cString(path, "spool")) < 0) {
      const error = new LibcError("unlink", errno(), path); // before close() touches errno
      libc().close(named);
      throw error;
    }
    return new Spool(named);
  }

  /** The path a worker of this server opens the spool by. */
  get path(): string {
    return `/proc/${Deno.pid}/fd/${this.#live()}`;
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#size;
  }

  /** Appends every byte of `bytes` (a full disk throws a LibcError). */
  write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) {
      const rest = bytes.subarray(done);
      const n = Number(libc().write(this.#live(), rest, BigInt(rest.length)));
      if (n < 0) {
        const code = errno();
        if (code === EINTR) continue;
        throw new LibcError("write", code, "spool");
      }
      done += n;
    }
    this.#size += bytes.length;
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Closes the spool: its disk space is freed once no worker holds it. */
  close(): void {
    this.#fd = closeFd(this.#fd);
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #live(): number {
    if (this.#fd < 0) throw new RangeError("spool is closed");
    return this.#fd;
  }
}
