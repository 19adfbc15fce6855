/**
 * fstat(2) with nanosecond times, read through the named offsets of
 * x86_64 `struct stat` in {@link ./libc.ts}.
 *
 * Deno's `FileInfo` rounds times to milliseconds and has no ctime on every
 * platform; p2m needs the exact ctime, which the kernel moves on every
 * write, truncate and utime and which no caller can set back.
 *
 * @module
 */
import { fail } from "./errors.ts";
import { libc, STAT, STAT_SIZE } from "./libc.ts";

/** What fstat(2) says about an open file, times to the nanosecond. */
export interface StatInfo {
  /** Device number. */
  dev: bigint;
  /** Inode number. */
  ino: bigint;
  /** Type and permission bits. */
  mode: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Size in bytes. */
  size: number;
  /** Modification time, ns since the epoch. */
  mtimeNs: bigint;
  /** Status-change time, ns since the epoch: moves on every write, truncate and utime. */
  ctimeNs: bigint;
}

/** fstat(2) of `fd`; throws LibcError naming `what`. */
export function fstatOf(fd: number, what?: string): StatInfo {
  const buf = new Uint8Array(STAT_SIZE);
  if (libc().fstat(fd, buf) !== 0) fail("fstat", what);
  const view = new DataView(buf.buffer);
  const ns = (sec: number, nsec: number) =>
    view.getBigInt64(sec, true) * 1_000_000_000n + view.getBigInt64(nsec, true);
  return {
    dev: view.getBigUint64(STAT.dev, true),
    ino: view.getBigUint64(STAT.ino, true),
    mode: view.getUint32(STAT.mode, true),
    uid: view.getUint32(STAT.uid, true),
    gid: view.getUint32(STAT.gid, true),
    size: Number(view.getBigInt64(STAT.size, true)),
    mtimeNs: ns(STAT.mtimeSec, STAT.mtimeNsec),
    ctimeNs: ns(STAT.ctimeSec, STAT.ctimeNsec),
  };
}
