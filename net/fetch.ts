/**
 * `net fetch`: one revision of a key, verified against the publisher's
 * digest, committed atomically.
 *
 * The manifest is read first (the newest message on the key's subject; its
 * stream sequence is the revision). Then an ordered consumer reads the
 * data subject it names, from its first sequence, and every chunk is
 * checked (subject, sequence, length) before it is written to a hidden
 * temp file and hashed. Only when the last chunk is in and the digest
 * equals the publisher's is the file fsynced and linked to its name.
 *
 * The fetcher never computes a digest and then vouches for it: what it
 * compares with is the manifest's. A mixture of two revisions cannot be
 * written, because each revision has its own data subject; if the revision
 * being read is replaced and its data purged, the fetch stops with
 * "revision N was replaced during the fetch". While the server is away
 * (restart, lost link), the client reconnects and the ordered consumer
 * resumes after the last chunk it delivered; the fetch fails only when no
 * chunk arrived for `--timeout` seconds.
 *
 * @module
 */
import { formatBytes, formatRate } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import type { Manifest } from "./manifest.ts";
import { Revision } from "./revision.ts";
import type { NatsSession } from "./session.ts";
import { VerifiedCopy } from "./verified_copy.ts";

/** What to fetch and where to put it. */
export interface FetchOptions {
  /** The key. */
  key: string;
  /** `--out`: a directory, a file, or `-` for stdout. */
  out?: string;
  /** Replace an existing file. */
  force?: boolean;
  /** Wait for the key to be published. */
  watch?: boolean;
}

/** What a fetch delivered. */
export interface FetchResult {
  /** The manifest of the revision delivered. */
  manifest: Manifest;
  /** The revision (stream sequence of its manifest). */
  revision: number;
  /** Where the copy is (`-` for stdout). */
  path: string;
  /** Seconds from the first chunk request to the commit. */
  seconds: number;
}

/** Fetches, verifies and commits one key; throws a P2mError and leaves nothing on failure. */
export async function fetchKey(
  session: NatsSession,
  options: FetchOptions,
  reporter: Reporter,
): Promise<FetchResult> {
  const found = await Revision.find(session, options.key, { watch: options.watch });
  const { manifest, revision } = found;
  using copy = await VerifiedCopy.create(options, manifest);
  reporter.event("start", { key: options.key, revision, size: manifest.size, uuid: manifest.uuid });
  const progress = reporter.progress(`fetch ${options.key}`, manifest.size);
  const start = performance.now();
  await found.stream(async (bytes, done) => {
    await copy.write(bytes);
    progress.update(done);
  });
  copy.finish();
  return {
    manifest,
    revision,
    path: copy.path,
    seconds: (performance.now() - start) / 1000,
  };
}

/** Human line for a finished fetch. */
export function describeFetch(result: FetchResult): string {
  const { manifest, revision, path, seconds } = result;
  return `fetched ${manifest.key} revision ${revision} -> ${path}: ${formatBytes(manifest.size)}, ${
    formatRate(manifest.size, seconds)
  }, ${manifest.digest.algorithm} verified`;
}
