/**
 * Writing a received directory tree so that only a verified, complete tree
 * ever appears under its final name.
 *
 * The tar stream is untrusted. {@linkcode TreeOutput} decodes it with
 * core/tar.ts and builds the tree in a hidden staging directory beside the
 * target (`.p2m-stage-<pid>-<random>`), checking every entry first:
 * no `..`, no absolute path, no NUL or control character, bounded path
 * length (4096 bytes), component length (255 bytes) and depth, bounded
 * entry count and total size, no path through a symlink, no duplicate, no
 * symlink whose target leaves the tree (checked again, with every link in
 * the tree resolved, at commit). Names that are not valid UTF-8 are refused
 * by the decoder. setuid, setgid and sticky bits are dropped (with a
 * warning); owners are never applied. A hostile entry fails the whole
 * tree: nothing of it is kept.
 *
 * {@linkcode TreeOutput.commit} makes every file and directory durable
 * (one `syncfs` of the filesystem: far cheaper than an fsync per file for
 * trees of many small files), then
 * renames the staging directory into place with `renameat2`: without
 * `force` with RENAME_NOREPLACE, so an existing target is never touched;
 * with `force` with RENAME_EXCHANGE, so the target is replaced whole in
 * one step, and the old tree (now under the staging name) is removed.
 *
 * The staging directory is held under an exclusive `flock` of its own
 * directory fd while it exists, as core/output.ts does for temp files.
 * A writer killed by `kill -9` leaves it unlocked, and the next writer in
 * the same directory removes it: {@linkcode sweepStaleStaging}.
 *
 * @module
 */
import { exists, parentOf, syncDirectory } from "./paths.ts";
import { ReceivedOutput } from "./received_output.ts";
import { sweepUnlocked } from "./sweep.ts";
import {
  AT_FDCWD,
  cString,
  EEXIST,
  ENOENT,
  libc,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
} from "../ffi/libc.ts";
import { errno, fail, LibcError } from "../ffi/errors.ts";
import { P2mError } from "./errors.ts";
import { osReason } from "./source.ts";
import { TarDecoder, type TarEntry, type TarEvent } from "./tar.ts";

/** Bounds on what an untrusted tree stream may create. */
export interface TreeLimits {
  /** Most entries (files, directories, links) accepted; default 1 000 000. */
  maxEntries?: number;
  /** Most bytes of file data accepted in all; default 1 TiB. Pass the size the sender announced. */
  maxTotalBytes?: number;
  /** Deepest path, in components; default 64. */
  maxDepth?: number;
  /** Longest path, in UTF-8 bytes; default 4096. */
  maxPathBytes?: number;
  /** Longest path component, in UTF-8 bytes; default 255. */
  maxComponentBytes?: number;
}

/** Where and how a receiver writes a tree. */
export interface TreeOutputOptions {
  /** The final path of the tree; its parent directory must exist. */
  path: string;
  /** Replace an existing target (file or tree) whole and atomically. */
  force?: boolean;
  /**
   * Leading components stripped from every stream path, like
   * `tar --strip-components`. Every entry must then share the first
   * entry's leading components; an entry that is exactly them must be a
   * directory and gives the tree root its mode.
   */
  stripComponents?: number;
  /** Bounds on the stream; see {@linkcode TreeLimits}. */
  limits?: TreeLimits;
}

/** A hostile or unusable entry in a received tree. */
export class TreeError extends P2mError {
  /** What is wrong, without the path ("absolute path"). */
  readonly problem: string;

  /** Creates an error naming the entry and the problem. */
  constructor(path: string, problem: string) {
    super(`refused tree entry ${JSON.stringify(path.slice(0, 300))}: ${problem}`);
    this.name = "TreeError";
    this.problem = problem;
  }
}

const DEFAULT_LIMITS: Required<TreeLimits> = {
  maxEntries: 1_000_000,
  maxTotalBytes: 2 ** 40,
  maxDepth: 64,
  maxPathBytes: 4096,
  maxComponentBytes: 255,
};
/** Most symlinks followed while checking one link target (as the kernel's ELOOP bound). */
const MAX_LINK_HOPS = 40;
const STAGING_PREFIX = ".p2m-stage-";
const STAGING_NAME = /^\.p2m-stage-\d+-[0-9a-z]+$/;
const encoder = new TextEncoder();

/**
 * Checks one untrusted stream path and returns its components (an empty
 * list is the tree root). `.` and empty components are dropped; anything
 * else unsafe throws a {@linkcode TreeError}.
 */
export function sanitizeTreePath(path: string, limits: TreeLimits = {}): string[] {
  const bounds = { ...DEFAULT_LIMITS, ...limits };
  checkText(path, path, "path");
  if (encoder.encode(path).length > bounds.maxPathBytes) {
    throw new TreeError(path, `path is longer than ${bounds.maxPathBytes} bytes`);
  }
  if (path.startsWith("/")) throw new TreeError(path, "absolute path");
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  for (const part of parts) {
    if (part === "..") throw new TreeError(path, `".." in path`);
    if (encoder.encode(part).length > bounds.maxComponentBytes) {
      throw new TreeError(path, `a component is longer than ${bounds.maxComponentBytes} bytes`);
    }
  }
  if (parts.length > bounds.maxDepth) {
    throw new TreeError(path, `deeper than ${bounds.maxDepth} levels`);
  }
  return parts;
}

/**
 * Checks the target of the symlink at `path` (components `parts`, from
 * {@linkcode sanitizeTreePath}): clean text, bounded, relative, and never
 * above the tree root when read lexically from the link's directory.
 * Throws a {@linkcode TreeError}. Links through other links are checked
 * once the whole tree is known, at commit.
 */
export function checkLinkTarget(
  path: string,
  parts: string[],
  target: string,
  limits: TreeLimits = {},
): void {
  const maxPathBytes = limits.maxPathBytes ?? DEFAULT_LIMITS.maxPathBytes;
  if (target === "") throw new TreeError(path, "symlink target is empty");
  checkText(path, target, "symlink target");
  if (encoder.encode(target).length > maxPathBytes) {
    throw new TreeError(path, `symlink target is longer than ${maxPathBytes} bytes`);
  }
  if (target.startsWith("/")) throw new TreeError(path, "symlink target is an absolute path");
  let depth = parts.length - 1;
  for (const part of target.split("/")) {
    if (part === "" || part === ".") continue;
    depth += part === ".." ? -1 : 1;
    if (depth < 0) {
      throw new TreeError(path, `symlink target ${JSON.stringify(target)} leaves the tree`);
    }
  }
}

/** Refuses NUL, C0/C1 control characters, DEL and lone surrogates. */
function checkText(path: string, text: string, what: string): void {
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code === 0) throw new TreeError(path, `NUL byte in ${what}`);
    if (code < 0x20 || (code >= 0x7f && code < 0xa0)) {
      throw new TreeError(
        path,
        `control character U+${code.toString(16).padStart(4, "0")} in ${what}`,
      );
    }
    if (code >= 0xd800 && code <= 0xdfff) throw new TreeError(path, `${what} is not valid UTF-8`);
  }
}

/** What the staging directory holds at a relative path. */
type Node =
  | { kind: "directory"; mode: number; mtime: number }
  | { kind: "file"; mode: number }
  | { kind: "symlink"; target: string };

const live = new Set<ReceivedOutput>();

/** Removes the staging directories of every unfinished tree (for signal handlers). */
export function abortAllTreeOutputs(): void {
  ReceivedOutput.abortAll(live);
}

/** A tree being received: staging directory now, final name after {@linkcode commit}. */
export class TreeOutput extends ReceivedOutput {
  /** The final path, reached only by a complete, checked tree. */
  readonly path: string;
  /** The hidden staging directory that holds the tree until commit. */
  readonly stagingPath: string;
  /** Things changed while sanitising (dropped mode bits), for the user. */
  readonly warnings: string[] = [];
  #lock: Deno.FsFile | undefined;
  #force: boolean;
  #strip: number;
  #stripped: string[] | undefined;
  #limits: Required<TreeLimits>;
  #decoder = new TarDecoder();
  #nodes = new Map<string, Node>();
  #rootMode = 0o755;
  #rootMtime = 0;
  #file: Deno.FsFile | undefined;
  #filePath = "";
  #fileMode = 0;
  #fileMtime = 0;
  #entries = 0;
  #fileBytes = 0;
  #written = 0;

  private constructor(
    path: string,
    stagingPath: string,
    lock: Deno.FsFile,
    options: TreeOutputOptions,
  ) {
    super(live);
    this.path = path;
    this.stagingPath = stagingPath;
    this.#lock = lock;
    this.#force = options.force ?? false;
    this.#strip = options.stripComponents ?? 0;
    this.#limits = { ...DEFAULT_LIMITS, ...options.limits };
  }

  /** Creates the locked staging directory beside `options.path`, or throws a P2mError saying why not. */
  static create(options: TreeOutputOptions): TreeOutput {
    const path = options.path.replace(/(.)\/+$/, "$1");
    const dir = parentOf(path);
    if (!options.force && exists(path)) {
      throw new P2mError(`${path} already exists; use --force to replace it`);
    }
    sweepStaleStaging(dir);
    for (;;) {
      const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
      const stagingPath = `${dir}/${STAGING_PREFIX}${Deno.pid}-${suffix}`;
      let lock: Deno.FsFile;
      try {
        Deno.mkdirSync(stagingPath, { mode: 0o700 });
        lock = Deno.openSync(stagingPath, { read: true });
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) continue;
        throw new P2mError(`cannot write in ${dir}: ${osReason(error)}`, { cause: error });
      }
      lock.lockSync(true);
      // A sweeper may have taken the lock between mkdir and lock, and removed
      // the directory: then it has no link left, so start again.
      if (lock.statSync().nlink !== 0) return new TreeOutput(path, stagingPath, lock, options);
      lock.close();
    }
  }

  /** Bytes of tar stream consumed so far. */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Feeds the next bytes of the tar stream; on any refusal the staging directory is removed. */
  write(bytes: Uint8Array): void {
    this.#check();
    try {
      for (const event of this.#decoder.push(bytes)) this.#apply(event);
    } catch (error) {
      this.abort();
      throw asP2mError(error, this.path);
    }
    this.#written += bytes.length;
  }

  /** Checks the whole tree, makes it durable and puts it under its final name. */
  commit(): void {
    this.#check();
    try {
      this.#decoder.finish();
      if (this.#file !== undefined) throw new P2mError(`${this.#filePath}: stream ended inside it`);
      for (const [path, node] of this.#nodes) {
        if (node.kind === "symlink" && !this.#resolvesInside(path)) {
          throw new TreeError(path, "symlink target leaves the tree once links are followed");
        }
      }
      this.#finishDirectories();
      syncFilesystem(this.stagingPath);
      this.#rename();
    } catch (error) {
      this.abort();
      throw asP2mError(error, this.path, "; tree discarded");
    }
    this.settle();
    this.#lock?.close();
    this.#lock = undefined;
  }

  /** Discards the tree: removes the staging directory. */
  protected discard(): void {
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
    // Removed while still locked, so no sweeper races us for it.
    removeTree(this.stagingPath);
    this.#lock?.close();
    this.#lock = undefined;
  }

  #check(): void {
    if (this.settled) throw new P2mError("tree output already closed");
  }

  #apply(event: TarEvent): void {
    switch (event.type) {
      case "entry":
        return this.#begin(event.entry);
      case "data": {
        const file = this.#file!;
        const bytes = event.bytes;
        let offset = 0;
        while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
        return;
      }
      case "entryEnd":
        return this.#endFile();
      case "end":
        return;
    }
  }

  #begin(entry: TarEntry): void {
    if (++this.#entries > this.#limits.maxEntries) {
      throw new TreeError(entry.path, `more than ${this.#limits.maxEntries} entries`);
    }
    const parts = this.#strip > 0
      ? this.#partsBelowPrefix(entry)
      : sanitizeTreePath(entry.path, this.#limits);
    const mode = this.#sanitizeMode(entry);
    if (parts.length === 0) {
      if (entry.kind !== "directory") {
        throw new TreeError(entry.path, `a ${entry.kind} as the tree root`);
      }
      this.#rootMode = mode;
      this.#rootMtime = entry.mtime ?? 0;
      return;
    }
    const relative = parts.join("/");
    this.#makeParents(entry.path, parts);
    const existing = this.#nodes.get(relative);
    const full = `${this.stagingPath}/${relative}`;
    if (existing !== undefined) {
      // A repeated directory entry only restates its mode; anything else is ambiguous.
      if (existing.kind === "directory" && entry.kind === "directory") {
        existing.mode = mode;
        existing.mtime = entry.mtime ?? 0;
        return;
      }
      throw new TreeError(entry.path, "duplicate entry");
    }
    switch (entry.kind) {
      case "directory":
        Deno.mkdirSync(full, { mode: 0o700 });
        this.#nodes.set(relative, { kind: "directory", mode, mtime: entry.mtime ?? 0 });
        return;
      case "symlink": {
        const target = entry.linkTarget!;
        checkLinkTarget(entry.path, parts, target, this.#limits);
        Deno.symlinkSync(target, full);
        this.#nodes.set(relative, { kind: "symlink", target });
        return;
      }
      case "file": {
        if (this.#fileBytes + entry.size > this.#limits.maxTotalBytes) {
          throw new TreeError(
            entry.path,
            `files total more than ${this.#limits.maxTotalBytes} bytes`,
          );
        }
        this.#fileBytes += entry.size;
        this.#file = Deno.openSync(full, { write: true, createNew: true, mode: 0o600 });
        this.#filePath = relative;
        this.#fileMode = mode;
        this.#fileMtime = entry.mtime ?? 0;
        this.#nodes.set(relative, { kind: "file", mode });
        return;
      }
    }
  }

  /** Components of `entry` below the stripped prefix; the prefix must match the first entry's. */
  #partsBelowPrefix(entry: TarEntry): string[] {
    // The prefix is checked like any path (it is never created); depth is
    // counted below it, and the path's byte bound keeps the split small.
    const parts = sanitizeTreePath(entry.path, { ...this.#limits, maxDepth: Infinity });
    const prefix = parts.slice(0, this.#strip);
    if (prefix.length < this.#strip) {
      throw new TreeError(entry.path, `not under ${this.#strip} leading component(s)`);
    }
    this.#stripped ??= prefix;
    if (prefix.join("/") !== this.#stripped.join("/")) {
      throw new TreeError(entry.path, `not under ${JSON.stringify(this.#stripped.join("/"))}`);
    }
    const rest = parts.slice(this.#strip);
    if (rest.length > this.#limits.maxDepth) {
      throw new TreeError(entry.path, `deeper than ${this.#limits.maxDepth} levels`);
    }
    return rest;
  }

  #sanitizeMode(entry: TarEntry): number {
    if (entry.kind === "symlink") return 0o777;
    if (entry.mode & 0o7000) {
      this.warnings.push(
        `${entry.path}: setuid/setgid/sticky bits dropped (mode ${
          (entry.mode & 0o7777).toString(8)
        })`,
      );
    }
    return entry.mode & 0o777;
  }

  /** Creates missing parent directories (as tar does); refuses a path through a file or link. */
  #makeParents(path: string, parts: string[]): void {
    for (let depth = 1; depth < parts.length; depth++) {
      const relative = parts.slice(0, depth).join("/");
      const node = this.#nodes.get(relative);
      if (node === undefined) {
        Deno.mkdirSync(`${this.stagingPath}/${relative}`, { mode: 0o700 });
        this.#nodes.set(relative, { kind: "directory", mode: 0o755, mtime: 0 });
        if (++this.#entries > this.#limits.maxEntries) {
          throw new TreeError(path, `more than ${this.#limits.maxEntries} entries`);
        }
      } else if (node.kind !== "directory") {
        throw new TreeError(path, `its parent ${JSON.stringify(relative)} is a ${node.kind}`);
      }
    }
  }

  /**
   * Resolves the link at `path` through every link of the tree, as the
   * kernel would, and tells whether it stays inside. A missing component
   * ends the walk inside: the kernel cannot climb out through it either.
   */
  #resolvesInside(path: string): boolean {
    const current = path.split("/").slice(0, -1);
    const pending = [...this.#target(path).split("/")].reverse();
    let hops = 1;
    while (pending.length > 0) {
      const part = pending.pop()!;
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (current.length === 0) return false;
        current.pop();
        continue;
      }
      current.push(part);
      const node = this.#nodes.get(current.join("/"));
      if (node === undefined || node.kind === "file") return true;
      if (node.kind === "symlink") {
        if (++hops > MAX_LINK_HOPS) return false;
        current.pop();
        if (node.target.startsWith("/")) return false;
        pending.push(...node.target.split("/").reverse());
      }
    }
    return true;
  }

  /** The tree is in place by now: a failed fsync of its parent is only a warning. */
  #syncParent(dir: string): void {
    try {
      syncDirectory(dir);
    } catch (error) {
      this.warnings.push(`cannot fsync ${dir}: ${osReason(error)}`);
    }
  }

  #target(path: string): string {
    const node = this.#nodes.get(path);
    return node?.kind === "symlink" ? node.target : "";
  }

  #endFile(): void {
    const file = this.#file;
    if (file === undefined) return;
    this.#file = undefined;
    file.close();
    const full = `${this.stagingPath}/${this.#filePath}`;
    Deno.chmodSync(full, this.#fileMode);
    const mtime = this.#fileMtime;
    if (mtime > 0) Deno.utimeSync(full, mtime, mtime);
  }

  /** Gives directories their modes and times, deepest first (children before parents). */
  #finishDirectories(): void {
    const directories = [...this.#nodes]
      .filter(([, node]) => node.kind === "directory")
      .map(([path, node]) => ({ path, node: node as Node & { kind: "directory" } }))
      .sort((a, b) => b.path.split("/").length - a.path.split("/").length);
    directories.push({
      path: "",
      node: { kind: "directory", mode: this.#rootMode, mtime: this.#rootMtime },
    });
    for (const { path, node } of directories) {
      const full = path === "" ? this.stagingPath : `${this.stagingPath}/${path}`;
      Deno.chmodSync(full, node.mode);
      if (node.mtime > 0) Deno.utimeSync(full, node.mtime, node.mtime);
    }
  }

  /** Moves the staging directory to the final path (NOREPLACE, or EXCHANGE with force). */
  #rename(): void {
    const from = cString(this.stagingPath, "path");
    const to = cString(this.path, "path");
    const dir = parentOf(this.path);
    for (let attempt = 0; attempt < 3; attempt++) {
      const targetExists = exists(this.path);
      if (!targetExists || !this.#force) {
        if (libc().renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) === 0) {
          this.#syncParent(dir);
          return;
        }
        const code = errno();
        if (code === EEXIST && !this.#force) {
          throw new P2mError(`${this.path} appeared while receiving; use --force to replace it`);
        }
        if (code !== EEXIST) throw new LibcError("renameat2", code, this.path);
        continue;
      }
      if (libc().renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE) === 0) {
        this.#syncParent(dir);
        // The old tree now sits under the staging name; if removing it fails
        // it is unlocked there, and the next writer sweeps it.
        removeTree(this.stagingPath);
        return;
      }
      const code = errno();
      if (code !== ENOENT) throw new LibcError("renameat2", code, this.path);
      // The target vanished between the check and the exchange: try NOREPLACE.
    }
    throw new P2mError(`${this.path} kept changing while being replaced`);
  }
}

/**
 * Removes the staging directories in `dir` left by writers that died;
 * returns how many. One whose `flock` can be taken has no living writer.
 */
export function sweepStaleStaging(dir: string): number {
  return sweepUnlocked(
    dir,
    (entry) => entry.isDirectory && STAGING_NAME.test(entry.name),
    removeTree,
  );
}

/** Removes a tree, first making its directories writable if a mode keeps us out. */
function removeTree(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
    return;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
  }
  try {
    makeWritable(path);
    Deno.removeSync(path, { recursive: true });
  } catch { /* left for the next sweep */ }
}

function makeWritable(path: string): void {
  const info = Deno.lstatSync(path);
  if (!info.isDirectory) return;
  Deno.chmodSync(path, 0o700);
  for (const entry of Deno.readDirSync(path)) {
    if (entry.isDirectory) makeWritable(`${path}/${entry.name}`);
  }
}

/**
 * Makes every file and directory of the staging tree durable with one
 * `syncfs(2)` of its filesystem. Measured on ext4 here: 10 000 files of
 * 1 KiB took 17 s with an fsync each, and a fraction of that with one
 * syncfs; for one large file both cost the same.
 */
function syncFilesystem(path: string): void {
  const fd = libc().open(cString(path, "path"), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) fail("open", path);
  try {
    if (libc().syncfs(fd) !== 0) fail("syncfs", path);
  } finally {
    libc().close(fd);
  }
}

function asP2mError(error: unknown, path: string, suffix = "; tree discarded"): P2mError {
  if (error instanceof P2mError) {
    return new P2mError(`${path}: ${error.message}${suffix}`, { cause: error });
  }
  return new P2mError(`cannot write ${path}: ${osReason(error)}${suffix}`, { cause: error });
}
