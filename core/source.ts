/**
 * The file to send: opened without blocking, described exactly, and
 * watched, so that a file that changes while it is read is never
 * delivered as verified.
 *
 * Two checks guard a transfer, strongest first:
 *
 * 1. **A read lease** (`F_SETLEASE`, see {@link ../ffi/read_only_file.ts}).
 *    The kernel grants it only while nobody has the file open for writing
 *    (a writable shared mapping counts), and breaks it when anyone opens it
 *    for writing or truncates it. So while the lease holds, the bytes cannot
 *    change by any means. The writer's `open` waits until we let go, which
 *    {@linkcode Source.changed} does as soon as it sees the break.
 * 2. **The file's identity**, from `fstat` to the nanosecond: device, inode,
 *    size, mtime and ctime. ctime moves on every write, truncate and
 *    `utime`, and cannot be set back, so restoring mtime does not hide an
 *    edit. This is the check when no lease can be had (someone already had
 *    the file open for writing, we neither own it nor run as root, or the
 *    file system has no leases), and it is what a worker process compares
 *    with the identity its parent recorded.
 *
 * What neither catches: without a lease, a writer that already had a
 * writable shared mapping of the file when the transfer began can change
 * its pages without moving ctime. {@linkcode Source.guard} says which
 * check is in force, and the senders warn when it is only the second.
 *
 * @module
 */
import { P2mError } from "./errors.ts";
import {
  type LeaseRefusal,
  LibcError,
  ReadOnlyFile,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
} from "../ffi/mod.ts";
import type { StatInfo } from "../ffi/mod.ts";

/** What the sender knows about its file when it starts (JSON-safe). */
export interface SourceInfo {
  /** Path as the user gave it. */
  path: string;
  /** Base name offered to receivers (they sanitise it again). */
  name: string;
  /** Size in bytes at open time. */
  size: number;
  /** Permission bits. */
  mode: number;
  /** Device, inode, mtime and ctime at open time, as decimal strings. */
  identity: SourceIdentity;
}

/** The exact identity of a file's contents as fstat sees them. */
export interface SourceIdentity {
  /** Device number. */
  dev: string;
  /** Inode number. */
  ino: string;
  /** Modification time in ns. */
  mtimeNs: string;
  /** Status-change time in ns. */
  ctimeNs: string;
}

/** Which check guards a source: see the module note. */
export type SourceGuard = "lease" | "identity";

const LEASE_TEXT: Record<LeaseRefusal, string> = {
  "open-for-writing": "another process has it open for writing",
  "not-permitted": "leases need the file's owner or root",
  "unsupported": "its file system has no leases",
};

/** An open source file; close it (or `using`) when done. */
export class Source implements Disposable {
  /** What it was at open time. */
  readonly info: SourceInfo;
  /** The check in force. */
  readonly guard: SourceGuard;
  /** Why there is no lease (undefined when there is one). */
  readonly noLeaseReason: string | undefined;
  #file: ReadOnlyFile;
  #change: string | undefined;

  private constructor(file: ReadOnlyFile, info: SourceInfo, leaseRefusal?: LeaseRefusal) {
    this.#file = file;
    this.info = info;
    this.guard = leaseRefusal ? "identity" : "lease";
    this.noLeaseReason = leaseRefusal ? LEASE_TEXT[leaseRefusal] : undefined;
  }

  /**
   * Opens a regular file for reading without blocking (a FIFO or a device
   * is refused at once, never waited on) and takes a read lease if it can.
   * Throws a P2mError saying why not.
   */
  static open(path: string, options: { lease?: boolean } = {}): Source {
    let file: ReadOnlyFile;
    try {
      file = ReadOnlyFile.open(path);
    } catch (error) {
      throw new P2mError(`cannot open ${path}: ${osReason(error)}`, { cause: error });
    }
    try {
      const stat = file.stat();
      const type = stat.mode & S_IFMT;
      if (type === S_IFDIR) throw new P2mError(`cannot send ${path}: it is a directory`);
      if (type !== S_IFREG) throw new P2mError(`cannot send ${path}: not a regular file`);
      const refusal = options.lease === false ? "unsupported" : file.takeReadLease();
      // Describe the file only once the lease holds: a write that slipped in
      // between fstat and the lease would otherwise go unseen.
      const held = refusal ? stat : file.stat();
      const info: SourceInfo = {
        path,
        name: path.split("/").filter((p) => p !== "").pop() ?? "file",
        size: held.size,
        mode: held.mode & 0o7777,
        identity: identityOf(held),
      };
      return new Source(file, info, refusal);
    } catch (error) {
      file.close();
      throw error;
    }
  }

  /** The open file, for sendfile(2). */
  get file(): ReadOnlyFile {
    return this.#file;
  }

  /** One-line warning when only the identity check guards this source. */
  get weakGuardWarning(): string | undefined {
    if (this.guard === "lease") return undefined;
    return `no read lease on ${this.info.path} (${this.noLeaseReason}): a change through a ` +
      `writable mapping opened before this transfer could go unseen`;
  }

  /** read(2) into `view`: bytes read, 0 at end of file. */
  read(view: Uint8Array): number {
    return this.#file.read(view);
  }

  /** pread(2) into `view` from `offset`: bytes read, 0 at end of file. */
  pread(view: Uint8Array, offset: number): number {
    return this.#file.pread(view, offset);
  }

  /**
   * Returns why the file is no longer what {@linkcode info} describes, or
   * undefined. Once it says so it always will. A broken lease is let go at
   * once, so the writer that broke it is not kept waiting. Cheap (one fcntl
   * and one fstat): call it from housekeeping and once after the last byte.
   */
  changed(): string | undefined {
    if (this.#change) return this.#change;
    if (this.#file.leaseBroken()) {
      this.#file.releaseLease();
      return this.#change = "another process opened it for writing or truncated it";
    }
    return this.#change = identityChange(this.#file.stat(), this.info);
  }

  /**
   * Compares this open file with an identity recorded elsewhere (a worker
   * against its parent's): why they differ, or undefined.
   */
  differsFrom(expected: SourceInfo): string | undefined {
    return identityChange(this.#file.stat(), expected);
  }

  /** Closes the file and drops the lease (idempotent). */
  close(): void {
    this.#file.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function identityOf(stat: StatInfo): SourceIdentity {
  return {
    dev: String(stat.dev),
    ino: String(stat.ino),
    mtimeNs: String(stat.mtimeNs),
    ctimeNs: String(stat.ctimeNs),
  };
}

function identityChange(stat: StatInfo, info: SourceInfo): string | undefined {
  const now = identityOf(stat);
  const was = info.identity;
  if (now.dev !== was.dev || now.ino !== was.ino) return "it was replaced by another file";
  if (stat.size !== info.size) return `size changed from ${info.size} to ${stat.size} bytes`;
  if (now.mtimeNs !== was.mtimeNs) return "it was modified";
  if (now.ctimeNs !== was.ctimeNs) return "it was modified (its ctime moved)";
  return undefined;
}

/** Whether a JSON value is a well-formed {@linkcode SourceInfo}. */
export function isSourceInfo(value: unknown): value is SourceInfo {
  const s = value as SourceInfo;
  const id = s?.identity;
  const decimal = (x: unknown) => typeof x === "string" && /^-?[0-9]{1,25}$/.test(x);
  return typeof s?.path === "string" && typeof s.name === "string" &&
    Number.isSafeInteger(s.size) && s.size >= 0 && Number.isInteger(s.mode) &&
    decimal(id?.dev) && decimal(id.ino) && decimal(id.mtimeNs) && decimal(id.ctimeNs);
}

/** Short reason text for an OS error, without Deno's decoration. */
export function osReason(error: unknown): string {
  if (error instanceof LibcError) return error.reason;
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.AlreadyExists) return "it already exists";
  if (error instanceof Error) return error.message.replace(/\s*\(os error \d+\).*$/, "");
  return String(error);
}
