/**
 * Walking a source directory: what a tree transfer puts into its stream.
 *
 * {@linkcode walkTree} lists, in a stable order (depth first, names in
 * code-point order, each directory before what it holds), the regular
 * files (relative path, permission bits, size), the directories (empty
 * ones too) and the symlinks whose target stays inside the tree (kept as
 * links, with a relative target). Everything else is listed apart in
 * {@linkcode Tree.skipped} with a reason, for a warning: symlinks that
 * leave the tree or dangle, devices, sockets, FIFOs, names that are not
 * valid UTF-8, and what a receiver would refuse (control characters, paths
 * too deep or too long; see core/tree_output.ts). Hard links are simply
 * separate files. Directory symlinks
 * are never followed, so a link loop cannot make the walk run forever.
 *
 * Modes carry the permission bits only (`& 0o777`): setuid, setgid and
 * sticky are never sent.
 *
 * {@linkcode TreeStream} turns a walked tree into its tar byte stream,
 * read like a file into the caller's buffer (a ring slot, a socket
 * buffer), opening each file only when its data is due.
 *
 * @module
 */
import { P2mError } from "./errors.ts";
import { osReason } from "./source.ts";
import { archiveLength, TarEncoder, type TarEntry } from "./tar.ts";
import { checkLinkTarget, sanitizeTreePath, TreeError } from "./tree_output.ts";

/** A regular file of the tree. */
export interface TreeFile {
  kind: "file";
  /** Path relative to the root, `/`-separated. */
  path: string;
  /** Permission bits (`& 0o777`). */
  mode: number;
  /** Size in bytes when walked. */
  size: number;
  /** Modification time in seconds (fractional) when walked. */
  mtime: number;
}

/** A directory of the tree (empty ones included). */
export interface TreeDirectory {
  kind: "directory";
  /** Path relative to the root. */
  path: string;
  /** Permission bits (`& 0o777`). */
  mode: number;
  /** Modification time in seconds. */
  mtime: number;
}

/** A symlink whose target stays inside the tree. */
export interface TreeSymlink {
  kind: "symlink";
  /** Path relative to the root. */
  path: string;
  /** Relative target that stays inside the tree when read from the link's directory. */
  target: string;
  /** Modification time in seconds. */
  mtime: number;
}

/** Anything the walk puts into the stream. */
export type TreeEntry = TreeFile | TreeDirectory | TreeSymlink;

/** Something left out of the stream, and why. */
export interface TreeSkip {
  /** Path relative to the root. */
  path: string;
  /** Why it is left out, e.g. "symlink points out of the tree". */
  reason: string;
}

/** What {@linkcode walkTree} found under a root. */
export interface Tree {
  /** The root as given. */
  root: string;
  /** Permission bits of the root directory itself. */
  rootMode: number;
  /** Entries in stream order. */
  entries: TreeEntry[];
  /** Entries left out, with reasons, in walk order. */
  skipped: TreeSkip[];
  /** Sum of the sizes of the regular files. */
  fileBytes: number;
}

/** Lists what a tree transfer of `root` sends; throws a P2mError if part of it cannot be read. */
export function walkTree(root: string): Tree {
  let rootInfo: Deno.FileInfo;
  let realRoot: string;
  try {
    rootInfo = Deno.statSync(root);
    realRoot = Deno.realPathSync(root);
  } catch (error) {
    throw new P2mError(`cannot read ${root}: ${osReason(error)}`, { cause: error });
  }
  if (!rootInfo.isDirectory) throw new P2mError(`${root} is not a directory`);
  const tree: Tree = {
    root,
    rootMode: (rootInfo.mode ?? 0o755) & 0o777,
    entries: [],
    skipped: [],
    fileBytes: 0,
  };
  walkDirectory(tree, root, realRoot, "");
  return tree;
}

/**
 * The tar entry for a tree entry, with its path placed under `prefix`
 * (e.g. the tree's name). Times are cut to whole seconds, so an entry with
 * a short ASCII path needs one 512-byte header and no pax header.
 */
export function tarEntryOf(entry: TreeEntry, prefix = ""): TarEntry {
  const path = prefix === "" ? entry.path : `${prefix}/${entry.path}`;
  const mtime = Math.max(0, Math.floor(entry.mtime));
  switch (entry.kind) {
    case "file":
      return { path, kind: "file", mode: entry.mode, size: entry.size, mtime };
    case "directory":
      return { path, kind: "directory", mode: entry.mode, size: 0, mtime };
    case "symlink":
      return {
        path,
        kind: "symlink",
        mode: 0o777,
        size: 0,
        linkTarget: entry.target,
        mtime,
      };
  }
}

/** Reads one file's bytes for a {@linkcode TreeStream} (e.g. through core/source.ts). */
export interface TreeFileReader {
  /** Reads into `buffer`; returns the count, 0 at end of file. */
  read(buffer: Uint8Array): number;
  /** Releases the file. */
  close(): void;
}

/** How a {@linkcode TreeStream} names its entries and reads its files. */
export interface TreeStreamOptions {
  /** Path every entry is placed under, e.g. the tree's name ("" for none). */
  prefix?: string;
  /** Opens a file of the tree; by default a plain read-only open. */
  open?: (file: TreeFile, path: string) => TreeFileReader;
}

/**
 * The pax tar stream of a walked tree, read like a file: the root
 * directory entry (`prefix/`, or `./`), then every entry of
 * {@linkcode Tree.entries}, then the end marker. A file that ends before
 * the size it was walked with throws a P2mError; one that grew is cut at
 * that size (catching changes is the opener's job, e.g. a Source lease).
 */
export class TreeStream implements Disposable {
  /** Exact length of the stream, known before the first byte. */
  readonly size: number;
  #tree: Tree;
  #prefix: string;
  #open: (file: TreeFile, path: string) => TreeFileReader;
  #encoder = new TarEncoder();
  #next = -1;
  #reader: TreeFileReader | undefined;
  #readerPath = "";
  #ended = false;

  /** Prepares the stream of `tree`; nothing is opened yet. */
  constructor(tree: Tree, options: TreeStreamOptions = {}) {
    this.#tree = tree;
    this.#prefix = options.prefix ?? "";
    this.#open = options.open ?? openPlain;
    this.size = archiveLength([
      this.#rootEntry(),
      ...tree.entries.map((e) => tarEntryOf(e, this.#prefix)),
    ]);
  }

  /** Bytes handed out so far. */
  get bytesRead(): number {
    return this.#encoder.bytesWritten;
  }

  /** Fills `buffer` as far as the stream goes; returns the count, 0 once it has ended. */
  read(buffer: Uint8Array): number {
    let used = 0;
    while (used < buffer.length) {
      used += this.#encoder.drain(buffer.subarray(used));
      if (used === buffer.length) break;
      if (this.#encoder.dataRemaining > 0) {
        const want = Math.min(this.#encoder.dataRemaining, buffer.length - used);
        const count = this.#reader!.read(buffer.subarray(used, used + want));
        if (count === 0) {
          throw new P2mError(`${this.#readerPath} shrank while being sent; transfer aborted`);
        }
        this.#encoder.dataWritten(count);
        used += count;
        continue;
      }
      if (!this.#advance()) break;
    }
    return used;
  }

  /** Closes the file being read, if any. */
  close(): void {
    this.#reader?.close();
    this.#reader = undefined;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Starts the next entry (or the end marker); false once everything is queued and drained. */
  #advance(): boolean {
    this.close();
    if (this.#ended) return this.#encoder.pending > 0;
    if (this.#next === -1) {
      this.#encoder.begin(this.#rootEntry());
    } else if (this.#next < this.#tree.entries.length) {
      const entry = this.#tree.entries[this.#next];
      this.#encoder.begin(tarEntryOf(entry, this.#prefix));
      if (entry.kind === "file" && entry.size > 0) {
        this.#readerPath = `${this.#tree.root}/${entry.path}`;
        this.#reader = this.#open(entry, this.#readerPath);
      }
    } else {
      this.#encoder.end();
      this.#ended = true;
    }
    this.#next++;
    return true;
  }

  #rootEntry(): TarEntry {
    return { path: this.#prefix, kind: "directory", mode: this.#tree.rootMode, size: 0 };
  }
}

function openPlain(_file: TreeFile, path: string): TreeFileReader {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (error) {
    throw new P2mError(`cannot open ${path}: ${osReason(error)}`, { cause: error });
  }
  return { read: (buffer) => file.readSync(buffer) ?? 0, close: () => file.close() };
}

function walkDirectory(tree: Tree, root: string, realRoot: string, relative: string): void {
  const dir = relative === "" ? root : `${root}/${relative}`;
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  } catch (error) {
    throw new P2mError(`cannot read ${dir}: ${osReason(error)}`, { cause: error });
  }
  names.sort(compareCodePoints);
  for (const name of names) {
    const path = relative === "" ? name : `${relative}/${name}`;
    const full = `${root}/${path}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(full);
    } catch (error) {
      // Deno turns a name that is not UTF-8 into U+FFFD, which then names nothing.
      if (name.includes("\ufffd") && error instanceof Deno.errors.NotFound) {
        tree.skipped.push({ path, reason: "name is not valid UTF-8" });
        continue;
      }
      throw new P2mError(`cannot read ${full}: ${osReason(error)}`, { cause: error });
    }
    // What the receiver would refuse (control characters, too deep, too
    // long) is skipped here with its reason, rather than failing there.
    let parts: string[];
    try {
      parts = sanitizeTreePath(path);
    } catch (error) {
      if (!(error instanceof TreeError)) throw error;
      tree.skipped.push({ path, reason: error.problem });
      continue;
    }
    const mtime = (info.mtime?.getTime() ?? 0) / 1000;
    const mode = (info.mode ?? 0) & 0o777;
    if (info.isFile) {
      tree.entries.push({ kind: "file", path, mode, size: info.size, mtime });
      tree.fileBytes += info.size;
    } else if (info.isDirectory) {
      tree.entries.push({ kind: "directory", path, mode, mtime });
      walkDirectory(tree, root, realRoot, path);
    } else if (info.isSymlink) {
      let target = insideTarget(full, realRoot, relative);
      if (typeof target === "string") {
        try {
          checkLinkTarget(path, parts, target);
        } catch (error) {
          if (!(error instanceof TreeError)) throw error;
          target = { reason: error.problem };
        }
      }
      if (typeof target === "string") {
        tree.entries.push({ kind: "symlink", path, target, mtime });
      } else {
        tree.skipped.push({ path, reason: target.reason });
      }
    } else {
      const reason = info.isFifo
        ? "FIFO"
        : info.isSocket
        ? "socket"
        : info.isCharDevice
        ? "character device"
        : info.isBlockDevice
        ? "block device"
        : "not a regular file, directory or symlink";
      tree.skipped.push({ path, reason });
    }
  }
}

/**
 * The target to send for the symlink at `full` (in directory `relativeDir`
 * of the tree), or why it is skipped. The stored target is kept when it
 * stays inside the tree read lexically; a target that resolves inside but
 * only through an absolute path or other links is rewritten to the
 * relative path of what it resolves to.
 */
function insideTarget(
  full: string,
  realRoot: string,
  relativeDir: string,
): string | { reason: string } {
  let stored: string;
  let resolved: string;
  try {
    stored = Deno.readLinkSync(full);
  } catch (error) {
    throw new P2mError(`cannot read link ${full}: ${osReason(error)}`, { cause: error });
  }
  try {
    resolved = Deno.realPathSync(full);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { reason: "dangling symlink" };
    return { reason: `symlink cannot be resolved: ${osReason(error)}` };
  }
  if (resolved !== realRoot && !resolved.startsWith(`${realRoot}/`)) {
    return { reason: "symlink points out of the tree" };
  }
  const dirParts = relativeDir === "" ? [] : relativeDir.split("/");
  if (!stored.startsWith("/") && staysInside(dirParts, stored.split("/"))) return stored;
  const targetParts = resolved === realRoot ? [] : resolved.slice(realRoot.length + 1).split("/");
  let common = 0;
  while (
    common < dirParts.length && common < targetParts.length &&
    dirParts[common] === targetParts[common]
  ) common++;
  const up = dirParts.slice(common).map(() => "..");
  return [...up, ...targetParts.slice(common)].join("/") || ".";
}

/** True when `parts`, read from directory `dirParts`, never climbs above the root. */
function staysInside(dirParts: string[], parts: string[]): boolean {
  let depth = dirParts.length;
  for (const part of parts) {
    if (part === "" || part === ".") continue;
    depth += part === ".." ? -1 : 1;
    if (depth < 0) return false;
  }
  return true;
}

function compareCodePoints(a: string, b: string): number {
  // UTF-16 order differs from code-point order only around surrogates;
  // compare code points so the order matches byte order of UTF-8 names.
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const diff = left[i].codePointAt(0)! - right[i].codePointAt(0)!;
    if (diff !== 0) return diff;
  }
  return left.length - right.length;
}
