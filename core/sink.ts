/**
 * Where a receiver's bytes go: one interface for every receiver, whatever
 * the transport.
 *
 * - {@linkcode FileSink}: a file (core/output.ts): a locked hidden temp
 *   file, renamed into place by {@linkcode Sink.commit} once verified.
 * - {@linkcode TreeSink}: a directory tree (core/tree_output.ts): the tar
 *   stream is checked and built in a locked hidden staging directory,
 *   renamed into place by {@linkcode Sink.commit}.
 * - {@linkcode StdoutSink}: `--out -`: bytes go to stdout as they arrive.
 *   They cannot be taken back, so commit and abort do nothing and the
 *   exit status is the verdict. Writes never block for long
 *   (ffi/pipe_writer.ts); a reader that went away (EPIPE) fails this
 *   receiver alone with a clear message.
 *
 * {@linkcode openSink} resolves `--out` as for a file: `-` is stdout; an
 * existing directory, or a path ending in `/`, receives `DIR/<name>` (a
 * tree goes to `DIR/<name>/`); any other path is the target itself; no
 * `--out` gives `received-files/pid-<pid>_<name>`.
 *
 * @module
 */
import { EPIPE, POLLOUT } from "../ffi/libc.ts";
import { LibcError } from "../ffi/errors.ts";
import { PipeWriter } from "../ffi/pipe_writer.ts";
import { delay } from "./delay.ts";
import { P2mError } from "./errors.ts";
import { OutputFile, resolveOutputPath } from "./output.ts";
import { osReason } from "./source.ts";
import { STREAM_SLICE_MS } from "./stream_source.ts";
import { type TreeLimits, TreeOutput } from "./tree_output.ts";

/** What a payload is: one file's bytes, or a tar stream of a tree. */
export type SinkKind = "file" | "tree";

/** A receiver's destination. */
export interface Sink extends Disposable {
  /** `file`, `tree` or `stdout`. */
  readonly kind: "file" | "tree" | "stdout";
  /** Where the copy ends up (`-` for stdout), for messages. */
  readonly path: string;
  /** Bytes taken so far. */
  readonly bytesWritten: number;
  /** Things the user should know that did not fail the copy (e.g. dropped mode bits). */
  readonly warnings: readonly string[];
  /** Takes the next bytes; throws a P2mError (and discards what it holds) on failure. */
  write(bytes: Uint8Array): Promise<void>;
  /** Makes the verified copy visible under its final name (stdout: nothing to do). */
  commit(): void;
  /** Discards an unfinished copy (stdout: bytes already written stay written). Idempotent. */
  abort(): void;
}

/** How {@linkcode openSink} picks and opens a sink. */
export interface SinkOptions {
  /** `--out`: `-`, a directory (existing, or ending in `/`), or a path. */
  out?: string;
  /** The sender's untrusted name (sanitised here). */
  name: string;
  /** Permission bits for a file copy. */
  mode: number;
  /** Replace an existing target. */
  force?: boolean;
  /** Whether the bytes are a file or a tar stream of a tree. */
  kind: SinkKind;
  /** Bounds on a tree (pass the announced size as maxTotalBytes when known). */
  limits?: TreeLimits;
  /**
   * Called between bounded waits while stdout cannot take more (e.g. the
   * receiver's liveness checks); whatever it throws ends the write.
   */
  onWait?: () => Promise<void> | void;
}

/** Opens the sink for `options`, or throws a P2mError saying why not. */
export function openSink(options: SinkOptions): Sink {
  if (options.out === "-") return StdoutSink.open(options.onWait);
  if (options.kind === "tree") return TreeSink.create(options);
  return FileSink.create(options);
}

/** A file copy: temp file, renamed into place after verify. */
export class FileSink implements Sink {
  /** Always `file`. */
  readonly kind = "file" as const;
  /** Nothing to warn about for a file. */
  readonly warnings: readonly string[] = [];
  #output: OutputFile;

  private constructor(output: OutputFile) {
    this.#output = output;
  }

  /** Creates the temp file (see core/output.ts). */
  static create(options: Pick<SinkOptions, "out" | "name" | "mode" | "force">): FileSink {
    return new FileSink(OutputFile.create(options));
  }

  /** The final path. */
  get path(): string {
    return this.#output.path;
  }

  /** The temp path that holds the bytes until commit. */
  get tempPath(): string {
    return this.#output.tempPath;
  }

  /** Bytes written. */
  get bytesWritten(): number {
    return this.#output.bytesWritten;
  }

  /** Appends bytes (synchronously; the promise is already settled). */
  write(bytes: Uint8Array): Promise<void> {
    try {
      this.#output.write(bytes);
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.resolve();
  }

  /** fsync, then rename into place. */
  commit(): void {
    this.#output.commit();
  }

  /** Removes the temp file. */
  abort(): void {
    this.#output.abort();
  }

  /** Same as {@linkcode abort} unless committed. */
  [Symbol.dispose](): void {
    this.abort();
  }
}

/** A tree copy: staged, checked, renamed into place after verify. */
export class TreeSink implements Sink {
  /** Always `tree`. */
  readonly kind = "tree" as const;
  #output: TreeOutput;

  private constructor(output: TreeOutput) {
    this.#output = output;
  }

  /**
   * Creates the staging directory for a tree whose stream entries all sit
   * under one leading directory (the sender's tree name), which is replaced
   * by the target path.
   */
  static create(options: Pick<SinkOptions, "out" | "name" | "force" | "limits">): TreeSink {
    const path = resolveOutputPath(options);
    const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
    if (options.out === undefined || options.out.endsWith("/")) {
      try {
        Deno.mkdirSync(parent, { recursive: true });
      } catch (error) {
        throw new P2mError(`cannot create ${parent}: ${osReason(error)}`, { cause: error });
      }
    }
    return new TreeSink(TreeOutput.create({
      path,
      force: options.force,
      stripComponents: 1,
      limits: options.limits,
    }));
  }

  /** The final path of the tree. */
  get path(): string {
    return this.#output.path;
  }

  /** The staging directory that holds the tree until commit. */
  get stagingPath(): string {
    return this.#output.stagingPath;
  }

  /** Bytes of tar stream taken. */
  get bytesWritten(): number {
    return this.#output.bytesWritten;
  }

  /** What sanitising changed (dropped mode bits). */
  get warnings(): readonly string[] {
    return this.#output.warnings;
  }

  /** Feeds tar bytes (synchronously; the promise is already settled). */
  write(bytes: Uint8Array): Promise<void> {
    try {
      this.#output.write(bytes);
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.resolve();
  }

  /** Checks the whole tree, syncs it and renames it into place. */
  commit(): void {
    this.#output.commit();
  }

  /** Removes the staging directory. */
  abort(): void {
    this.#output.abort();
  }

  /** Same as {@linkcode abort} unless committed. */
  [Symbol.dispose](): void {
    this.abort();
  }
}

/** `--out -`: bytes to stdout as they arrive; the exit status is the verdict. */
export class StdoutSink implements Sink {
  /** Always `stdout`. */
  readonly kind = "stdout" as const;
  /** Always `-`. */
  readonly path = "-";
  /** Nothing to warn about. */
  readonly warnings: readonly string[] = [];
  #writer: PipeWriter;
  #onWait: (() => Promise<void> | void) | undefined;
  #written = 0;

  private constructor(writer: PipeWriter, onWait?: () => Promise<void> | void) {
    this.#writer = writer;
    this.#onWait = onWait;
  }

  /** Opens this process's stdout for data; throws a P2mError if it cannot take any. */
  static open(onWait?: () => Promise<void> | void): StdoutSink {
    try {
      return new StdoutSink(PipeWriter.stdout(), onWait);
    } catch (error) {
      throw stdoutError(error);
    }
  }

  /** Bytes written to stdout. */
  get bytesWritten(): number {
    return this.#written;
  }

  /**
   * Writes all of `bytes`, waiting in bounded slices while stdout is full
   * (calling `onWait` and yielding to the event loop between them).
   */
  async write(bytes: Uint8Array): Promise<void> {
    const writer = this.#writer;
    let at = 0;
    while (at < bytes.length) {
      let count: number | null = null;
      try {
        const ready = writer.nonblocking || writer.poll(POLLOUT, 0) !== 0;
        if (ready) count = writer.write(bytes.subarray(at));
        if (count === null || count === 0) writer.poll(POLLOUT, STREAM_SLICE_MS);
      } catch (error) {
        throw stdoutError(error);
      }
      if (count !== null && count > 0) {
        at += count;
        this.#written += count;
        continue;
      }
      await this.#onWait?.();
      await delay(0);
    }
  }

  /** Nothing to do: the bytes are out. Closes the private pipe description. */
  commit(): void {
    this.#writer.close();
  }

  /** Bytes on stdout cannot be taken back: only stops writing. */
  abort(): void {
    this.#writer.close();
  }

  /** Same as {@linkcode abort}. */
  [Symbol.dispose](): void {
    this.abort();
  }
}

function stdoutError(error: unknown): P2mError {
  if (error instanceof LibcError && error.errno === EPIPE) {
    return new P2mError("stdout was closed (its reader went away); copy incomplete", {
      cause: error,
    });
  }
  if (error instanceof P2mError) return error;
  return new P2mError(`cannot write to stdout: ${osReason(error)}`, { cause: error });
}
