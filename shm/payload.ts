/**
 * What a shm sender sends, behind one interface: {@linkcode openPayload}.
 *
 * - a regular file, through {@linkcode Source} (read lease plus identity);
 * - a directory, as the pax tar stream of core/tree.ts's
 *   {@linkcode TreeStream} (entries under the directory's name), produced
 *   once; its size is known before the first byte, so it travels like a
 *   file. Each file is opened through {@linkcode Source} when its data is
 *   due, so the same lease guards it; a file that changed since the walk
 *   or while it was read fails the transfer. Skipped entries (symlinks out
 *   of the tree, devices, FIFOs, sockets) are warned about;
 * - a stream of unknown size (`-` for stdin, a FIFO, any non-seekable
 *   input), through core/stream_source.ts.
 *
 * @module
 */
import { P2mError, type Reporter, Source } from "../core/mod.ts";
import { inputKind, StreamSource } from "../core/stream_source.ts";
import { type TreeFileReader, TreeStream, walkTree } from "../core/tree.ts";

/** The input changed or ended early while it was sent: the transfer is aborted. */
export class PayloadChangedError extends P2mError {
  /** Creates the error with its full message. */
  constructor(message: string) {
    super(message);
    this.name = "PayloadChangedError";
  }
}

/** What a payload is. */
export type PayloadKind = "file" | "tree" | "stream";

/** The bytes a sender sends. */
export interface Payload extends Disposable {
  /** File, tree or stream. */
  readonly kind: PayloadKind;
  /** The path as given, for messages. */
  readonly path: string;
  /** The name receivers are told. */
  readonly name: string;
  /** Permission bits (the tree root's for a tree). */
  readonly mode: number;
  /** Exact byte count, or undefined for a stream. */
  readonly size: number | undefined;
  /**
   * Fills all of `view` (known sizes only); throws a
   * {@linkcode PayloadChangedError} if the input ends early or changed.
   */
  fill(view: Uint8Array): void;
  /** A stream's next bytes: see {@linkcode StreamSource.readSome}. */
  readSome(view: Uint8Array, maxWaitMs: number): Promise<number | null>;
  /**
   * Why the input changed while sent, if it did; call at least every ~200 ms.
   * A payload fed by another task (net/fanout_payload.ts) throws that task's
   * failure here instead, which aborts the transfer at once.
   */
  changed(): string | undefined;
  /** Starts again from the first byte (a file, for `--linger` laps); false if it cannot. */
  rewind(): boolean;
  /** Releases the input. */
  close(): void;
}

/** Opens `path` as a file, a tree or a stream (`-`), or throws a P2mError saying why not. */
export function openPayload(path: string, reporter: Reporter): Payload {
  switch (inputKind(path)) {
    case "stream":
      return new StreamPayload(StreamSource.open(path));
    case "directory":
      return new TreePayload(path, reporter);
    case "file": {
      const source = Source.open(path);
      if (source.weakGuardWarning) reporter.warn(source.weakGuardWarning);
      return new FilePayload(source);
    }
  }
}

class FilePayload implements Payload {
  readonly kind = "file" as const;
  readonly path: string;
  readonly name: string;
  readonly mode: number;
  readonly size: number;
  #source: Source;
  #offset = 0;

  constructor(source: Source) {
    this.#source = source;
    this.path = source.info.path;
    this.name = source.info.name;
    this.mode = source.info.mode;
    this.size = source.info.size;
  }

  fill(view: Uint8Array): void {
    fillFrom(view, (part) => {
      const count = this.#source.pread(part, this.#offset);
      this.#offset += count;
      return count;
    }, this.path);
  }

  rewind(): boolean {
    this.#offset = 0;
    return true;
  }

  readSome(): Promise<number | null> {
    return Promise.reject(new Error("a file is read with fill()"));
  }

  changed(): string | undefined {
    return this.#source.changed();
  }

  close(): void {
    this.#source.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

class TreePayload implements Payload {
  readonly kind = "tree" as const;
  readonly path: string;
  readonly name: string;
  readonly mode: number;
  readonly size: number;
  #stream: TreeStream;
  #current: Source | undefined;
  #reporter: Reporter;
  #warnedWeak = false;
  #closing = false;

  constructor(path: string, reporter: Reporter) {
    this.path = path;
    this.#reporter = reporter;
    const tree = walkTree(path);
    for (const skip of tree.skipped) {
      reporter.warn(`skipped ${path}/${skip.path}: ${skip.reason}`, { skipped: skip.path });
    }
    this.name = path.split("/").filter((part) => part !== "" && part !== ".").pop() ?? "tree";
    this.mode = tree.rootMode;
    this.#stream = new TreeStream(tree, {
      prefix: this.name,
      open: (file, filePath) => this.#open(file.size, filePath),
    });
    this.size = this.#stream.size;
  }

  fill(view: Uint8Array): void {
    fillFrom(view, (part) => this.#stream.read(part), this.path);
  }

  readSome(): Promise<number | null> {
    return Promise.reject(new Error("a tree is read with fill()"));
  }

  rewind(): boolean {
    return false;
  }

  changed(): string | undefined {
    const why = this.#current?.changed();
    return why ? `${this.#current!.info.path}: ${why}` : undefined;
  }

  /** Releases the file being read; a change seen now was already reported, or is moot. */
  close(): void {
    this.#closing = true;
    this.#stream.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(walkedSize: number, path: string): TreeFileReader {
    const source = Source.open(path);
    if (source.weakGuardWarning && !this.#warnedWeak) {
      this.#warnedWeak = true;
      this.#reporter.warn(source.weakGuardWarning);
    }
    if (source.info.size !== walkedSize) {
      source.close();
      throw new PayloadChangedError(
        `${path} changed while the tree was sent (size ${walkedSize} became ` +
          `${source.info.size} bytes); transfer aborted`,
      );
    }
    this.#current = source;
    return {
      // TreeStream asks only for bytes the walk promised: none is a shrink.
      read: (buffer) => {
        const count = source.read(buffer);
        if (count === 0) {
          throw new PayloadChangedError(`${path} shrank while the tree was sent; transfer aborted`);
        }
        return count;
      },
      close: () => {
        const why = source.changed();
        source.close();
        if (this.#current === source) this.#current = undefined;
        if (why && !this.#closing) {
          throw new PayloadChangedError(
            `${path} changed while the tree was sent (${why}); transfer aborted`,
          );
        }
      },
    };
  }
}

class StreamPayload implements Payload {
  readonly kind = "stream" as const;
  readonly path: string;
  readonly name: string;
  readonly mode: number;
  readonly size = undefined;
  #stream: StreamSource;

  constructor(stream: StreamSource) {
    this.#stream = stream;
    this.path = stream.path === "-" ? "stdin" : stream.path;
    this.name = stream.name;
    this.mode = stream.mode;
  }

  fill(): void {
    throw new Error("a stream is read with readSome()");
  }

  readSome(view: Uint8Array, maxWaitMs: number): Promise<number | null> {
    return this.#stream.readSome(view, maxWaitMs);
  }

  changed(): undefined {
    return undefined;
  }

  rewind(): boolean {
    return false;
  }

  close(): void {
    this.#stream.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Fills `view` from `read`; an early end is a PayloadChangedError. */
function fillFrom(view: Uint8Array, read: (part: Uint8Array) => number, path: string): void {
  for (let got = 0; got < view.length;) {
    const count = read(view.subarray(got));
    if (count === 0) {
      throw new PayloadChangedError(`${path} shrank while it was sent; transfer aborted`);
    }
    got += count;
  }
}
