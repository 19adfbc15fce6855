/**
 * The fetcher's own copy of one revision ({@linkcode VerifiedCopy}): each
 * chunk is hashed and written as it comes, through the receivers' sink
 * (core/sink.ts: a hidden temp file, or stdout for `--out -`), and the file
 * is committed atomically only when the digest equals the publisher's, from
 * the manifest. Disposing an uncommitted copy removes its temp file.
 *
 * @module
 */
import { createDigest, type Digest, toHex } from "../core/digest.ts";
import { VerifyError } from "../core/errors.ts";
import { openSink, type Sink } from "../core/sink.ts";
import type { Manifest } from "./manifest.ts";

/** Where a copy goes. */
export interface CopyOptions {
  /** `--out`: a directory, a file, or `-` for stdout. */
  out?: string;
  /** Replace an existing file. */
  force?: boolean;
}

/** One copy being written and hashed; {@linkcode finish} verifies and commits it. */
export class VerifiedCopy implements Disposable {
  #manifest: Manifest;
  #sink: Sink;
  #digest: Digest;

  private constructor(manifest: Manifest, sink: Sink, digest: Digest) {
    this.#manifest = manifest;
    this.#sink = sink;
    this.#digest = digest;
  }

  /** Opens the sink (a temp file, or stdout) and the digest of the manifest's algorithm. */
  static async create(options: CopyOptions, manifest: Manifest): Promise<VerifiedCopy> {
    const digest = await createDigest(manifest.digest.algorithm);
    const sink = openSink({
      out: options.out,
      name: manifest.name,
      mode: manifest.mode,
      force: options.force,
      kind: "file",
    });
    return new VerifiedCopy(manifest, sink, digest);
  }

  /** Where the copy is, or will be (`-` for stdout). */
  get path(): string {
    return this.#sink.path;
  }

  /** Hashes and writes one chunk (stdout may make it wait, in bounded slices). */
  async write(bytes: Uint8Array): Promise<void> {
    this.#digest.update(bytes);
    await this.#sink.write(bytes);
  }

  /** Throws a VerifyError unless the digest is the publisher's; else commits the file. */
  finish(): void {
    const { algorithm, value } = this.#manifest.digest;
    const actual = toHex(this.#digest.digest());
    if (actual !== value) throw new VerifyError(`${algorithm} ${value}`, actual);
    this.#sink.commit();
  }

  /** Removes the temp file of a copy that was not committed. */
  [Symbol.dispose](): void {
    this.#sink[Symbol.dispose]();
  }
}
