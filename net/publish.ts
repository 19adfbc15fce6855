/**
 * `net publish`: store one file (or stdin) in a bucket under a key.
 *
 * The chunks go to a fresh data subject, `p2m.<bucket>.data.<uuid>`, as
 * plain messages with a bounded window of unacknowledged publishes. Only
 * when the server has acknowledged every chunk, and the source is known not
 * to have changed, does the manifest go to the key's subject: that one
 * message is the revision. A publisher that dies before it leaves data
 * that no manifest names, which no fetcher ever reads; the next publish
 * sweeps it once it is old (see {@linkcode ORPHAN_GRACE_MS}), and a stream
 * `--max-age` removes everything in time.
 *
 * After the new manifest is stored, older manifests of the key and the
 * data they name are purged, so a fetch of the replaced revision stops
 * with a clear error instead of mixing two.
 *
 * @module
 */
import { createDigest, type DigestAlgorithm, toHex } from "../core/digest.ts";
import { P2mError } from "../core/errors.ts";
import { formatBytes, formatRate } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { Source } from "../core/source.ts";
import { type Manifest, MANIFEST_VERSION } from "./manifest.ts";
import { messageOf, type NatsSession } from "./session.ts";
import { BucketSubjects } from "./subjects.ts";
import { ORPHAN_GRACE_MS, safeUuid, sweepOrphans } from "./sweep.ts";
import type { PubAck } from "@nats-io/jetstream";

/**
 * Default chunk size: measured best or level with the best on loopback
 * (docs/nats.md), and half a default server's max_payload (1 MiB).
 */
export const DEFAULT_CHUNK = 512 << 10;
/** Default number of chunks in flight (published, not yet acknowledged). */
export const DEFAULT_WINDOW = 16;

/** What to publish and how. */
export interface PublishOptions {
  /** A file path, or `-` for stdin. */
  path: string;
  /** The key (default: the file's base name). */
  key?: string;
  /** The digest carried to every fetcher. */
  digest: DigestAlgorithm;
  /** Bytes per chunk message. */
  chunkSize: number;
  /** Chunks in flight. */
  window: number;
  /** Stream retention in seconds (undefined: leave as is). */
  maxAgeSeconds?: number;
}

/** What a publish stored. */
export interface PublishResult {
  /** The manifest that was stored. */
  manifest: Manifest;
  /** Its stream sequence: the revision. */
  revision: number;
  /** Seconds from the first chunk to the stored manifest. */
  seconds: number;
}

/** Publishes one file; throws a P2mError on any failure (no revision is then visible). */
export async function publish(
  session: NatsSession,
  options: PublishOptions,
  reporter: Reporter,
): Promise<PublishResult> {
  const input = options.path === "-" ? new StdinInput() : new FileInput(options.path);
  try {
    if (input.warning) reporter.warn(input.warning);
    const key = options.key ?? input.name;
    const { subjects } = session;
    const keySubject = subjects.keySubject(key);
    const chunkSize = Math.min(options.chunkSize, session.connection.info?.max_payload ?? Infinity);
    if (chunkSize < options.chunkSize) {
      reporter.warn(`server max_payload is ${chunkSize} bytes: chunks are that size`);
    }
    await session.ensureBucket({ maxAgeSeconds: options.maxAgeSeconds });
    const uuid = BucketSubjects.newUuid();
    const dataSubject = subjects.dataSubject(uuid);
    const digest = await createDigest(options.digest);
    const progress = reporter.progress(`publish ${key}`, input.size ?? 0);
    reporter.event("start", { key, bucket: subjects.bucket, uuid, size: input.size ?? null });
    const start = performance.now();
    const buffers = Array.from({ length: options.window + 1 }, () => new Uint8Array(chunkSize));
    const inFlight: Promise<PubAck>[] = [];
    let firstSeq = 0;
    let lastSeq = 0;
    let chunks = 0;
    let size = 0;
    const settle = (ack: PubAck) => {
      if (ack.stream !== subjects.stream) {
        throw new P2mError(`chunk stored in stream ${ack.stream}, not ${subjects.stream}`);
      }
      if (firstSeq === 0) firstSeq = ack.seq;
      if (ack.seq <= lastSeq) throw new P2mError("chunks acknowledged out of order");
      lastSeq = ack.seq;
    };
    // Polled between chunks and on a timer: while acks are awaited, a writer
    // whose open() broke our read lease must not be kept waiting.
    let change: string | undefined;
    const guard = setInterval(() => change ??= input.changed(), 100);
    try {
      for (;;) {
        const buffer = buffers[chunks % buffers.length];
        const length = await input.read(buffer);
        if (length === 0) break;
        const chunk = buffer.subarray(0, length);
        digest.update(chunk);
        // The client keeps a reference until it flushes: a buffer is reused
        // only after its chunk was acknowledged, window+1 chunks later.
        inFlight.push(session.jetstream.publish(dataSubject, chunk));
        chunks++;
        size += length;
        if (inFlight.length >= options.window) settle(await inFlight.shift()!);
        progress.update(size);
        change ??= input.changed();
        if (change) throw new P2mError(`${options.path} changed while publishing: ${change}`);
      }
      while (inFlight.length > 0) settle(await inFlight.shift()!);
      change ??= input.changed();
      if (change) throw new P2mError(`${options.path} changed while publishing: ${change}`);
      if (input.size !== undefined && size !== input.size) {
        throw new P2mError(`${options.path} is ${size} bytes, not ${input.size}: it changed`);
      }
    } catch (error) {
      await Promise.allSettled(inFlight);
      await session.purge(dataSubject).catch(() => 0);
      if (error instanceof P2mError) throw error;
      const reason = /timeout/i.test(messageOf(error))
        ? `no acknowledgement from ${
          session.flags.servers.join(",")
        } for ${session.flags.timeoutSeconds} s (server or link down?)`
        : messageOf(error);
      throw new P2mError(`publishing ${key} failed: ${reason}; no revision was stored`, {
        cause: error,
      });
    } finally {
      clearInterval(guard);
    }
    const previous = await session.lastMessage(keySubject);
    const manifest: Manifest = {
      p2m: MANIFEST_VERSION,
      key,
      uuid,
      name: input.name,
      size,
      mode: input.mode,
      digest: { algorithm: options.digest, value: toHex(digest.digest()) },
      chunks,
      chunkSize,
      firstSeq,
      lastSeq,
      published: new Date().toISOString(),
    };
    let revision: number;
    try {
      const ack = await session.jetstream.publish(
        keySubject,
        new TextEncoder().encode(JSON.stringify(manifest)),
      );
      revision = ack.seq;
    } catch (error) {
      await session.purge(dataSubject).catch(() => 0);
      throw new P2mError(`storing the manifest of ${key} failed: ${messageOf(error)}`);
    }
    const seconds = (performance.now() - start) / 1000;
    await retireOlder(session, keySubject, previous, revision, reporter);
    return { manifest, revision, seconds };
  } finally {
    input.close();
  }
}

/** Human line for a finished publish. */
export function describePublish(result: PublishResult): string {
  const { manifest, revision, seconds } = result;
  return `published ${manifest.key} revision ${revision}: ${
    formatBytes(manifest.size)
  } in ${manifest.chunks} chunks, ${
    formatRate(manifest.size, seconds)
  }, ${manifest.digest.algorithm} ${manifest.digest.value}`;
}

/**
 * Drops manifests older than `revision` on the key, then the data of the
 * one that was current before (unless a newer publish already points at
 * it), then data that no manifest names and that is older than the grace.
 */
async function retireOlder(
  session: NatsSession,
  keySubject: string,
  previous: Awaited<ReturnType<NatsSession["lastMessage"]>>,
  revision: number,
  reporter: Reporter,
): Promise<void> {
  const { subjects } = session;
  try {
    await session.purge(keySubject, 1);
    const current = await session.lastMessage(keySubject);
    const currentUuid = current ? safeUuid(current.data) : undefined;
    if (previous && previous.seq < revision) {
      const old = safeUuid(previous.data);
      if (old && old !== currentUuid) await session.purge(subjects.dataSubject(old));
    }
    await sweepOrphans(session, ORPHAN_GRACE_MS);
  } catch (error) {
    reporter.warn(`could not remove older data of the key: ${messageOf(error)}`);
  }
}

/** Where publish reads from. */
interface Input {
  readonly name: string;
  readonly mode: number;
  readonly size: number | undefined;
  readonly warning: string | undefined;
  read(buffer: Uint8Array): Promise<number>;
  changed(): string | undefined;
  close(): void;
}

/** A regular file, through Source (read lease and exact identity). */
class FileInput implements Input {
  #source: Source;
  constructor(path: string) {
    this.#source = Source.open(path);
  }
  get name() {
    return this.#source.info.name;
  }
  get mode() {
    return this.#source.info.mode & 0o777;
  }
  get size() {
    return this.#source.info.size;
  }
  get warning() {
    return this.#source.weakGuardWarning;
  }
  read(buffer: Uint8Array): Promise<number> {
    // Fill whole chunks: every chunk but the last has exactly chunkSize bytes.
    let filled = 0;
    while (filled < buffer.length) {
      const n = this.#source.read(buffer.subarray(filled));
      if (n === 0) break;
      filled += n;
    }
    return Promise.resolve(filled);
  }
  changed() {
    return this.#source.changed();
  }
  close() {
    this.#source.close();
  }
}

/** Standard input: the size is known only at its end, and the manifest carries it. */
class StdinInput implements Input {
  readonly name = "stdin";
  readonly mode = 0o644;
  readonly size = undefined;
  readonly warning = undefined;
  async read(buffer: Uint8Array): Promise<number> {
    let filled = 0;
    while (filled < buffer.length) {
      const n = await Deno.stdin.read(buffer.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return filled;
  }
  changed() {
    return undefined;
  }
  close() {}
}
