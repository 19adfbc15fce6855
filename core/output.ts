/**
 * Writing a received file so that only verified copies ever appear.
 *
 * Bytes go to a hidden temporary file in the target directory. Only after
 * the digest matches is it fsynced, given the sender's mode and linked or
 * renamed to its final name, and then the directory is fsynced too, so
 * that the name itself survives a power loss right after a reported
 * success (as do the directories that `--out DIR/` made, through their
 * parents): `syncDirectory` in core/paths.ts. A failed, aborted or interrupted
 * transfer removes the temporary file, so no half-written or unverified
 * file is ever seen under a final name.
 *
 * A writer that dies by `kill -9` cannot clean up, so every temp file is
 * held under an exclusive `flock` while it is written. The kernel drops
 * the lock when its process dies, however it dies (no pid to be reused),
 * and the next writer in the same directory removes temp files whose lock
 * it can take: {@linkcode sweepStaleOutputs}.
 *
 * @module
 */
import { exists, isDirectory, parentOf, syncDirectory } from "./paths.ts";
import { ReceivedOutput } from "./received_output.ts";
import { sweepUnlocked } from "./sweep.ts";
import { P2mError } from "./errors.ts";
import { sanitizeName } from "./names.ts";
import { osReason } from "./source.ts";

/** Directory used when the user gives no `--out`. */
export const DEFAULT_OUT_DIR = "received-files";

/** Where and how a receiver writes its copy. */
export interface OutputOptions {
  /** `--out`: a directory (existing, or ending in `/`) or a file path. */
  out?: string;
  /** The sender's untrusted file name. */
  name: string;
  /** Permission bits to give the finished file. */
  mode: number;
  /** Replace an existing file at the final path. */
  force?: boolean;
}

const live = new Set<ReceivedOutput>();

/** Removes the temp files of every unfinished output (for signal handlers). */
export function abortAllOutputs(): void {
  ReceivedOutput.abortAll(live);
}

/** Resolves the final path for a copy, without touching the disk beyond stat. */
export function resolveOutputPath(options: Pick<OutputOptions, "out" | "name">): string {
  const name = sanitizeName(options.name);
  if (options.out === undefined) {
    // Peers in the same directory at the same time must not collide.
    return `${DEFAULT_OUT_DIR}/pid-${Deno.pid}_${name}`;
  }
  const out = options.out;
  if (out.endsWith("/") || isDirectory(out)) return `${out.replace(/\/+$/, "") || "/"}/${name}`;
  return out;
}

/** A copy being written: temp file now, final name after {@linkcode commit}. */
export class OutputFile extends ReceivedOutput {
  /** The final path, reached only by a verified copy. */
  readonly path: string;
  /** The hidden temporary path that holds bytes until commit. */
  readonly tempPath: string;
  #file: Deno.FsFile | undefined;
  #madeDirs: string[];
  #mode: number;
  #force: boolean;
  #written = 0;

  private constructor(
    path: string,
    tempPath: string,
    file: Deno.FsFile,
    options: OutputOptions,
    madeDirs: string[],
  ) {
    super(live);
    this.path = path;
    this.tempPath = tempPath;
    this.#file = file;
    this.#madeDirs = madeDirs;
    this.#mode = options.mode & 0o777;
    this.#force = options.force ?? false;
  }

  /** Creates the temp file for a copy, or throws a P2mError saying why not. */
  static create(options: OutputOptions): OutputFile {
    const path = resolveOutputPath(options);
    const dir = parentOf(path);
    const base = path.slice(path.lastIndexOf("/") + 1);
    const madeDirs = options.out === undefined || options.out.endsWith("/") ? makeDirs(dir) : [];
    if (!options.force && exists(path)) {
      throw new P2mError(`${path} already exists; use --force to replace it`);
    }
    if (isDirectory(path)) throw new P2mError(`${path} is a directory`);
    sweepStaleOutputs(dir);
    for (;;) {
      const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
      const tempPath = `${dir}/.${base.slice(0, 180)}.p2m-${Deno.pid}-${suffix}.part`;
      let file: Deno.FsFile;
      try {
        file = Deno.openSync(tempPath, { write: true, createNew: true, mode: 0o600 });
      } catch (error) {
        throw new P2mError(`cannot write in ${dir}: ${osReason(error)}`, { cause: error });
      }
      file.lockSync(true);
      // A sweeper may have taken the lock between our create and our lock,
      // and removed the file: then it has no link left, so start again.
      if (file.statSync().nlink !== 0) {
        return new OutputFile(path, tempPath, file, options, madeDirs);
      }
      file.close();
    }
  }

  /** Bytes written so far. */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Appends bytes; throws a P2mError (e.g. disk full) after removing the temp file. */
  write(bytes: Uint8Array): void {
    const file = this.#open();
    try {
      let offset = 0;
      while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
    } catch (error) {
      this.abort();
      throw new P2mError(`cannot write ${this.path}: ${osReason(error)}; copy discarded`, {
        cause: error,
      });
    }
    this.#written += bytes.length;
  }

  /** Makes the verified copy durable and visible under its final name. */
  commit(): void {
    const file = this.#open();
    try {
      file.syncSync();
      Deno.chmodSync(this.tempPath, this.#mode);
      // The file stays open, so locked, until its final name exists: a
      // sweeper never sees it unlocked under its temp name.
      if (this.#force) {
        Deno.renameSync(this.tempPath, this.path);
      } else {
        // link() fails if the name was taken meanwhile: never clobber.
        Deno.linkSync(this.tempPath, this.path);
        try {
          Deno.removeSync(this.tempPath);
        } catch { /* the copy is in place; a stray temp name is swept later */ }
      }
      file.close();
      this.#file = undefined;
    } catch (error) {
      this.abort();
      const reason = error instanceof Deno.errors.AlreadyExists
        ? "it appeared while receiving; use --force to replace it"
        : osReason(error);
      throw new P2mError(`cannot finish ${this.path}: ${reason}; copy discarded`, {
        cause: error,
      });
    }
    this.settle();
    const dir = parentOf(this.path);
    // The name is in place; make it, and any directory we made for it,
    // durable. A failure here is reported, but the copy is not discarded:
    // it is complete and verified, only its name may not survive a crash.
    try {
      for (const made of this.#madeDirs) syncDirectory(parentOf(made));
      syncDirectory(dir);
    } catch (error) {
      throw new P2mError(
        `${this.path} is complete, but its directory could not be synced: ${osReason(error)}`,
        { cause: error },
      );
    }
    sweepStaleOutputs(dir);
  }

  /** Discards the copy: closes and removes the temp file. */
  protected discard(): void {
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
    try {
      Deno.removeSync(this.tempPath);
    } catch { /* already gone */ }
  }

  #open(): Deno.FsFile {
    if (this.settled || this.#file === undefined) throw new P2mError("output already closed");
    return this.#file;
  }
}

/** Creates `dir` and its missing parents; returns those it made, outermost first. */
function makeDirs(dir: string): string[] {
  const missing: string[] = [];
  for (let at = dir; !exists(at); at = parentOf(at)) {
    missing.unshift(at);
    if (at === "/" || at === ".") break;
  }
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw new P2mError(`cannot create ${dir}: ${osReason(error)}`, { cause: error });
  }
  return missing;
}

const TEMP_NAME = /^\..*\.p2m-\d+-[0-9a-z]+\.part$/s;

/**
 * Removes the temp files in `dir` left by writers that died; returns how
 * many. A temp file whose `flock` can be taken has no living writer.
 */
export function sweepStaleOutputs(dir: string): number {
  return sweepUnlocked(
    dir,
    (entry) => entry.isFile && TEMP_NAME.test(entry.name),
    (path) => Deno.removeSync(path),
  );
}
