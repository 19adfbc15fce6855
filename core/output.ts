/**
 * Writing a received file so that only verified copies ever appear.
 *
 * Bytes go to a hidden temporary file in the target directory. Only after
 * the digest matches is it fsynced, given the sender's mode and linked or
 * renamed to its final name. A failed, aborted or interrupted transfer
 * removes the temporary file, so no half-written or unverified file is
 * ever seen under a final name.
 *
 * @module
 */
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

const live = new Set<OutputFile>();

/** Removes the temp files of every unfinished output (for signal handlers). */
export function abortAllOutputs(): void {
  for (const output of [...live]) output.abort();
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
export class OutputFile implements Disposable {
  /** The final path, reached only by a verified copy. */
  readonly path: string;
  /** The hidden temporary path that holds bytes until commit. */
  readonly tempPath: string;
  #file: Deno.FsFile | undefined;
  #mode: number;
  #force: boolean;
  #written = 0;
  #done = false;

  private constructor(path: string, tempPath: string, file: Deno.FsFile, options: OutputOptions) {
    this.path = path;
    this.tempPath = tempPath;
    this.#file = file;
    this.#mode = options.mode & 0o777;
    this.#force = options.force ?? false;
    live.add(this);
  }

  /** Creates the temp file for a copy, or throws a P2mError saying why not. */
  static create(options: OutputOptions): OutputFile {
    const path = resolveOutputPath(options);
    const slash = path.lastIndexOf("/");
    const dir = slash < 0 ? "." : path.slice(0, slash) || "/";
    const base = path.slice(slash + 1);
    if (options.out === undefined || options.out.endsWith("/")) {
      try {
        Deno.mkdirSync(dir, { recursive: true });
      } catch (error) {
        throw new P2mError(`cannot create ${dir}: ${osReason(error)}`);
      }
    }
    if (!options.force && exists(path)) {
      throw new P2mError(`${path} already exists; use --force to replace it`);
    }
    if (isDirectory(path)) throw new P2mError(`${path} is a directory`);
    const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    const tempPath = `${dir}/.${base.slice(0, 180)}.p2m-${Deno.pid}-${suffix}.part`;
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(tempPath, { write: true, createNew: true, mode: 0o600 });
    } catch (error) {
      throw new P2mError(`cannot write in ${dir}: ${osReason(error)}`);
    }
    return new OutputFile(path, tempPath, file, options);
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
      throw new P2mError(`cannot write ${this.path}: ${osReason(error)}; copy discarded`);
    }
    this.#written += bytes.length;
  }

  /** Makes the verified copy durable and visible under its final name. */
  commit(): void {
    const file = this.#open();
    try {
      file.syncSync();
      file.close();
      this.#file = undefined;
      Deno.chmodSync(this.tempPath, this.#mode);
      if (this.#force) {
        Deno.renameSync(this.tempPath, this.path);
      } else {
        // link() fails if the name was taken meanwhile: never clobber.
        Deno.linkSync(this.tempPath, this.path);
        Deno.removeSync(this.tempPath);
      }
    } catch (error) {
      this.abort();
      const reason = error instanceof Deno.errors.AlreadyExists
        ? "it appeared while receiving; use --force to replace it"
        : osReason(error);
      throw new P2mError(`cannot finish ${this.path}: ${reason}; copy discarded`);
    }
    this.#done = true;
    live.delete(this);
  }

  /** Discards the copy: closes and removes the temp file. Safe to call twice. */
  abort(): void {
    if (this.#done) return;
    this.#done = true;
    live.delete(this);
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
    try {
      Deno.removeSync(this.tempPath);
    } catch { /* already gone */ }
  }

  /** Same as {@linkcode abort}: an output that was not committed is discarded. */
  close(): void {
    this.abort();
  }

  /** Discards the copy unless it was committed. */
  [Symbol.dispose](): void {
    this.abort();
  }

  #open(): Deno.FsFile {
    if (this.#done || this.#file === undefined) throw new P2mError("output already closed");
    return this.#file;
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}
