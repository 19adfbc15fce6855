/**
 * Reading a non-seekable input: stdin (`-`), a FIFO, a character device
 * or a socket path. Its size is not known until it ends.
 *
 * No read ever blocks for long, so the process stays responsive to
 * SIGINT/SIGTERM: {@linkcode StreamSource.readSome} waits with poll(2) in
 * slices of at most {@linkcode STREAM_SLICE_MS}, reads only once poll says
 * the input is readable (a read of a readable pipe returns what is there
 * at once), and gives the event loop a turn between slices.
 *
 * stdin is inherited: its open file description is shared with the shell,
 * so its flags (`O_NONBLOCK`) are never touched. A FIFO path is opened
 * `O_NONBLOCK` (the open returns at once even with no writer yet) and
 * keeps that flag; until a first writer opens it, poll reports nothing, so
 * the wait goes on instead of seeing an end of file.
 *
 * A pipe's end looks the same whether its producer finished or died. A
 * producer killed with its shell job (Ctrl-C, a signal to the process
 * group) takes p2m with it, which aborts the transfer; a read error aborts
 * it too. Callers abort on anything but a clean end.
 *
 * @module
 */
import { POLLERR, POLLHUP, POLLIN, POLLNVAL } from "../ffi/libc.ts";
import { ReadOnlyFile } from "../ffi/read_only_file.ts";
import { delay } from "./delay.ts";
import { P2mError } from "./errors.ts";
import { osReason } from "./source.ts";

/** Longest single poll(2) wait, so signal handlers run at least this often (ms). */
export const STREAM_SLICE_MS = 100;

/** What a path names, for choosing how to send it. */
export type InputKind = "stream" | "file" | "directory";

/**
 * Classifies a path to send: `-`, a FIFO, a character device or a socket
 * is a stream; a directory a tree; anything else (a regular file, or what
 * does not exist, for Source to report) a file.
 */
export function inputKind(path: string): InputKind {
  if (path === "-") return "stream";
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    return "file";
  }
  if (info.isDirectory) return "directory";
  if (info.isFifo || info.isCharDevice || info.isSocket) return "stream";
  return "file";
}

/** Whether `path` is read as a stream (`-`, a FIFO, a character device, a socket). */
export function isStreamPath(path: string): boolean {
  return inputKind(path) === "stream";
}

/** An input of unknown size, read in bounded waits. */
export class StreamSource implements Disposable {
  /** The path as given (`-` for stdin). */
  readonly path: string;
  /** The name receivers are told (`stdin`, or the FIFO's base name). */
  readonly name: string;
  /** Permission bits receivers give the copy. */
  readonly mode: number;
  #file: ReadOnlyFile;
  #read = 0;
  #ended = false;

  private constructor(path: string, name: string, mode: number, file: ReadOnlyFile) {
    this.path = path;
    this.name = name;
    this.mode = mode;
    this.#file = file;
  }

  /** Opens `-` (stdin, borrowed) or a stream path; throws a P2mError saying why not. */
  static open(path: string): StreamSource {
    if (path === "-") {
      const stdin = ReadOnlyFile.inherited(0, "stdin");
      try {
        stdin.stat();
      } catch (error) {
        throw new P2mError(`cannot read stdin: ${osReason(error)}`, { cause: error });
      }
      return new StreamSource(path, "stdin", 0o644, stdin);
    }
    let file: ReadOnlyFile;
    try {
      file = ReadOnlyFile.open(path);
    } catch (error) {
      throw new P2mError(`cannot open ${path}: ${osReason(error)}`, { cause: error });
    }
    const name = path.split("/").filter((part) => part !== "").pop() ?? "stream";
    return new StreamSource(path, name, 0o644, file);
  }

  /** Bytes read so far. */
  get bytesRead(): number {
    return this.#read;
  }

  /** Whether the end of the input was seen. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Reads what has arrived into `view`, waiting at most `maxWaitMs` (0:
   * only look). Returns the count (at least 1), 0 at the end of the input,
   * or null if nothing arrived in time, so the caller can publish what it
   * has. Throws a P2mError on a read error.
   */
  async readSome(view: Uint8Array, maxWaitMs: number): Promise<number | null> {
    if (this.#ended) return 0;
    const deadline = performance.now() + maxWaitMs;
    for (;;) {
      const left = Math.max(0, deadline - performance.now());
      let events: number;
      let count: number | null = null;
      try {
        events = this.#file.poll(POLLIN, Math.min(STREAM_SLICE_MS, left));
        if (events & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) count = this.#file.readNow(view);
      } catch (error) {
        throw new P2mError(`cannot read ${this.#label()}: ${osReason(error)}`, { cause: error });
      }
      if (count !== null) {
        if (count === 0) this.#ended = true;
        this.#read += count;
        return count;
      }
      if (left === 0) return null;
      await delay(0);
    }
  }

  /** Closes a FIFO path (stdin stays open for the shell); idempotent. */
  close(): void {
    this.#file.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #label(): string {
    return this.path === "-" ? "stdin" : this.path;
  }
}
