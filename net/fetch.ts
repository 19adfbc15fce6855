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
import { createDigest, toHex } from "../core/digest.ts";
import { delay } from "../core/delay.ts";
import { P2mError, VerifyError } from "../core/errors.ts";
import { formatBytes, formatRate } from "../core/format.ts";
import { OutputFile } from "../core/output.ts";
import type { Reporter } from "../core/report.ts";
import { type Manifest, parseManifest } from "./manifest.ts";
import { messageOf, type NatsSession } from "./session.ts";

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

const WATCH_POLL_MS = 250;
const REPLACED_CHECK_MS = 1000;

/** Fetches, verifies and commits one key; throws a P2mError and leaves nothing on failure. */
export async function fetchKey(
  session: NatsSession,
  options: FetchOptions,
  reporter: Reporter,
): Promise<FetchResult> {
  const { subjects } = session;
  const keySubject = subjects.keySubject(options.key);
  const where = `key ${options.key} in bucket ${subjects.bucket}`;
  const found = await readManifest(session, keySubject, where, options.watch ?? false);
  const { manifest, revision } = found;
  const toStdout = options.out === "-";
  using output = toStdout ? undefined : OutputFile.create({
    out: options.out,
    name: manifest.name,
    mode: manifest.mode,
    force: options.force,
  });
  const sink = output
    ? (bytes: Uint8Array) => output.write(bytes)
    : (bytes: Uint8Array) => writeAll(Deno.stdout, bytes);
  reporter.event("start", { key: options.key, revision, size: manifest.size, uuid: manifest.uuid });
  const progress = reporter.progress(`fetch ${options.key}`, manifest.size);
  const digest = await createDigest(manifest.digest.algorithm);
  const start = performance.now();
  if (manifest.chunks > 0) {
    await readChunks(session, manifest, revision, keySubject, (bytes, done) => {
      digest.update(bytes);
      sink(bytes);
      progress.update(done);
    });
  }
  const actual = toHex(digest.digest());
  if (actual !== manifest.digest.value) {
    throw new VerifyError(`${manifest.digest.algorithm} ${manifest.digest.value}`, actual);
  }
  output?.commit();
  return {
    manifest,
    revision,
    path: output?.path ?? "-",
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

async function readManifest(
  session: NatsSession,
  keySubject: string,
  where: string,
  watch: boolean,
): Promise<{ manifest: Manifest; revision: number }> {
  for (;;) {
    const message = (await session.hasBucket()) ? await session.lastMessage(keySubject) : undefined;
    if (message) {
      return {
        manifest: parseManifest(message.data, `${where}, revision ${message.seq}`),
        revision: message.seq,
      };
    }
    if (!watch) throw new P2mError(`no ${where} (use --watch to wait for it)`);
    await delay(WATCH_POLL_MS);
  }
}

/**
 * Streams the chunks of one manifest to `take`, checking each. A watchdog
 * fails the read when no chunk came for the timeout, or when the revision
 * was replaced and its chunks stopped coming.
 */
async function readChunks(
  session: NatsSession,
  manifest: Manifest,
  revision: number,
  keySubject: string,
  take: (bytes: Uint8Array, done: number) => void,
): Promise<void> {
  const { subjects, flags } = session;
  const dataSubject = subjects.dataSubject(manifest.uuid);
  const timeoutMs = flags.timeoutSeconds * 1000;
  const consumer = await session.jetstream.consumers.get(subjects.stream, {
    filter_subjects: dataSubject,
    deliver_policy: "by_start_sequence" as never,
    opt_start_seq: manifest.firstSeq,
  });
  const expires = Math.max(1000, Math.min(30_000, Math.round(timeoutMs / 2)));
  const messages = await consumer.consume({
    // Bounded by bytes: a count of large messages overruns the server's
    // per-client buffer (a slow consumer), and the transfer stalls.
    max_bytes: Math.max(8 << 20, 8 * manifest.chunkSize),
    expires,
  });
  let failure: P2mError | undefined;
  let lastChunkAt = performance.now();
  let lastCheckAt = lastChunkAt;
  let replaced = false;
  let checking = false;
  const watchdog = setInterval(async () => {
    const now = performance.now();
    if (!replaced && !checking && now - lastCheckAt >= REPLACED_CHECK_MS) {
      lastCheckAt = now;
      checking = true;
      try {
        const current = await session.lastMessage(keySubject);
        if (!current || current.seq !== revision) replaced = true;
      } catch { /* the server is away: only the timeout decides */ }
      checking = false;
    }
    const idle = performance.now() - lastChunkAt;
    if (replaced && idle >= REPLACED_CHECK_MS) {
      failure ??= new P2mError(
        `revision ${revision} of ${manifest.key} was replaced during the fetch; nothing kept, fetch again`,
      );
    } else if (idle >= timeoutMs) {
      failure ??= new P2mError(
        `no data from ${flags.servers.join(",")} for ${flags.timeoutSeconds} s ` +
          `(server or link down?); nothing kept`,
      );
    }
    if (failure) messages.stop();
  }, 200);
  let index = 0;
  let done = 0;
  let lastSeq = 0;
  try {
    for await (const message of messages) {
      lastChunkAt = performance.now();
      const seq = message.info.streamSequence;
      const expected = index < manifest.chunks - 1
        ? manifest.chunkSize
        : manifest.size - manifest.chunkSize * (manifest.chunks - 1);
      if (
        message.subject !== dataSubject || seq <= lastSeq || seq < manifest.firstSeq ||
        seq > manifest.lastSeq || message.data.length !== expected
      ) {
        throw new P2mError(
          `chunk ${index} of ${manifest.key} revision ${revision} is not what the manifest says ` +
            `(sequence ${seq}, ${message.data.length} bytes, expected ${expected}); nothing kept`,
        );
      }
      lastSeq = seq;
      done += message.data.length;
      take(message.data, done);
      if (++index === manifest.chunks) break;
    }
  } catch (error) {
    if (error instanceof P2mError) throw error;
    throw failure ?? new P2mError(`fetching ${manifest.key} failed: ${messageOf(error)}`);
  } finally {
    clearInterval(watchdog);
    await messages.close().catch(() => {});
  }
  if (failure) throw failure;
  if (index !== manifest.chunks) {
    throw new P2mError(
      `${manifest.key}: ${index} of ${manifest.chunks} chunks arrived; nothing kept`,
    );
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
