/**
 * The file a socket server serves ({@linkcode ServedFile}): opened once
 * through core/source.ts and kept open, with its read lease, for the whole
 * serving time; hashed once in the background (`digestFile`, core/digest.ts)
 * while peers are already served; and watched every
 * {@linkcode SOURCE_CHECK_MS}, so a writer that breaks the lease is let go
 * at once and the server stops serving a file that is no longer the one it
 * hashed.
 *
 * @module
 */
import { type DigestAlgorithm, digestFile } from "../core/digest.ts";
import { P2mError } from "../core/errors.ts";
import type { Reporter } from "../core/report.ts";
import { Source, type SourceInfo } from "../core/source.ts";

/** How often the server looks for a change to the file it serves (ms). */
export const SOURCE_CHECK_MS = 200;

/** The served file, its digest and its watch. */
export class ServedFile implements Disposable {
  /** What it was at open time. */
  readonly info: SourceInfo;
  /** The hex digest, once computed ("" for `none` and `--raw`). */
  readonly digest: Promise<string>;
  #source: Source;
  #digestHex: string | null = null;
  #watch: ReturnType<typeof setInterval> | undefined;

  /** Opens `path` (warning when only the identity check guards it) and starts hashing. */
  constructor(path: string, algorithm: DigestAlgorithm | "skip", reporter: Reporter) {
    this.#source = Source.open(path);
    this.info = this.#source.info;
    const weak = this.#source.weakGuardWarning;
    if (weak) reporter.warn(weak);
    this.digest = algorithm === "skip" ? Promise.resolve("") : digestFile(this.#source, algorithm);
    this.digest.then((hex) => this.#digestHex = hex, () => {});
  }

  /** The digest if it is ready, else null (it then follows `digest`). */
  get digestHex(): string | null {
    return this.#digestHex;
  }

  /**
   * Calls `onFailure` once: if hashing fails, or when the file changes
   * (checked every {@linkcode SOURCE_CHECK_MS} until {@linkcode close}).
   */
  watch(onFailure: (error: unknown) => void): void {
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      this.unwatch();
      onFailure(error);
    };
    this.digest.catch(fail);
    this.#watch = setInterval(() => {
      const changed = this.#source.changed();
      if (!changed) return;
      const path = this.info.path;
      fail(
        new P2mError(`${path} changed while it was sent; unfinished transfers fail (${changed})`),
      );
    }, SOURCE_CHECK_MS);
  }

  /** Stops watching (the file stays open, for a digest still being computed). */
  unwatch(): void {
    clearInterval(this.#watch);
  }

  /** Stops watching and closes the file (dropping the lease). */
  close(): void {
    this.unwatch();
    this.#source.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
