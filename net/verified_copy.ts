/**
 * The fetcher's own copy of one revision ({@linkcode VerifiedCopy}): each
 * chunk is hashed and written as it comes (to a hidden temp file, or to
 * stdout for `--out -`), and the file is committed atomically only when the
 * digest equals the publisher's, from the manifest. Disposing an
 * uncommitted copy removes its temp file.
 *
 * @module
 */
import { createDigest, type Digest, toHex } from "../core/digest.ts";
import { P2mError, VerifyError } from "../core/errors.ts";
import { OutputFile } from "../core/output.ts";
import type { Manifest } from "./manifest.ts";
import { messageOf } from "./session.ts";

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
  #output: OutputFile | undefined;
  #digest: Digest;

  private constructor(manifest: Manifest, output: OutputFile | undefined, digest: Digest) {
    this.#manifest = manifest;
    this.#output = output;
    this.#digest = digest;
  }

  /** Creates the temp file (none for stdout) and the digest of the manifest's algorithm. */
  static async create(options: CopyOptions, manifest: Manifest): Promise<VerifiedCopy> {
    const digest = await createDigest(manifest.digest.algorithm);
    const output = options.out === "-" ? undefined : OutputFile.create({
      out: options.out,
      name: manifest.name,
      mode: manifest.mode,
      force: options.force,
    });
    return new VerifiedCopy(manifest, output, digest);
  }

  /** Where the copy is, or will be (`-` for stdout). */
  get path(): string {
    return this.#output?.path ?? "-";
  }

  /** Hashes and writes one chunk. */
  write(bytes: Uint8Array): void {
    this.#digest.update(bytes);
    if (this.#output) this.#output.write(bytes);
    else writeAll(Deno.stdout, bytes);
  }

  /** Throws a VerifyError unless the digest is the publisher's; else commits the file. */
  finish(): void {
    const { algorithm, value } = this.#manifest.digest;
    const actual = toHex(this.#digest.digest());
    if (actual !== value) throw new VerifyError(`${algorithm} ${value}`, actual);
    this.#output?.commit();
  }

  /** Removes the temp file of a copy that was not committed. */
  [Symbol.dispose](): void {
    this.#output?.[Symbol.dispose]();
  }
}

function writeAll(file: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let offset = 0;
  try {
    while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
  } catch (error) {
    throw new P2mError(`cannot write to stdout: ${messageOf(error)}`);
  }
}
