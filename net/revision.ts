/**
 * One revision of a key on the server: its manifest, found first, and then
 * its chunks, streamed in order and checked one by one.
 *
 * This is the seam between the network and what is done with the bytes:
 * `net fetch` writes them to an output file; a local fan-out (`--fanout`,
 * net/fanout.ts) hands the same callback's bytes to the shm or socket
 * sender as a stream source, with the manifest's digest as the one the
 * local receivers verify. A callback that returns a promise holds the read
 * until it settles (the local receivers are behind): no further chunk is
 * requested meanwhile, and that wait is not counted as the network's
 * silence.
 *
 * While the server is away (restart, lost link), the client reconnects and
 * the ordered consumer resumes after the last chunk it delivered; the read
 * fails only when no chunk came for `--timeout` seconds, or when the
 * revision was replaced and its chunks stopped coming.
 *
 * @module
 */
import { delay } from "../core/delay.ts";
import { P2mError } from "../core/errors.ts";
import { type Manifest, parseManifest } from "./manifest.ts";
import { messageOf, type NatsSession } from "./session.ts";

const WATCH_POLL_MS = 250;

/** Takes one checked chunk (and the total so far); a promise holds the read until it settles. */
export type Take = (bytes: Uint8Array, done: number) => void | Promise<void>;
const REPLACED_CHECK_MS = 1000;

/** A revision found by its manifest; {@linkcode stream} delivers its bytes. */
export class Revision {
  /** The checked manifest. */
  readonly manifest: Manifest;
  /** Its stream sequence. */
  readonly revision: number;
  #session: NatsSession;
  #keySubject: string;

  private constructor(
    session: NatsSession,
    keySubject: string,
    manifest: Manifest,
    revision: number,
  ) {
    this.#session = session;
    this.#keySubject = keySubject;
    this.manifest = manifest;
    this.revision = revision;
  }

  /**
   * The current revision of `key`. Without `watch`, a missing key is a
   * P2mError; with it, waits until the key is published.
   */
  static async find(
    session: NatsSession,
    key: string,
    options: { watch?: boolean } = {},
  ): Promise<Revision> {
    const { subjects } = session;
    const keySubject = subjects.keySubject(key);
    const where = `key ${key} in bucket ${subjects.bucket}`;
    for (;;) {
      const message = (await session.hasBucket())
        ? await session.lastMessage(keySubject)
        : undefined;
      if (message) {
        const manifest = parseManifest(message.data, `${where}, revision ${message.seq}`);
        return new Revision(session, keySubject, manifest, message.seq);
      }
      if (!options.watch) throw new P2mError(`no ${where} (use --watch to wait for it)`);
      await delay(WATCH_POLL_MS);
    }
  }

  /**
   * Streams every chunk, in order, to `take` (bytes, and the total so far).
   * Throws a P2mError if a chunk is not what the manifest says, if no chunk
   * came for the timeout, or if the revision was replaced meanwhile.
   */
  async stream(take: Take): Promise<void> {
    if (this.manifest.chunks === 0) return;
    await readChunks(this.#session, this.manifest, this.revision, this.#keySubject, take);
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
  take: Take,
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
  let takerBusy = false;
  const watchdog = setInterval(async () => {
    const now = performance.now();
    if (takerBusy) {
      lastChunkAt = now; // the local side holds the read: the network is not silent
      return;
    }
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
      const taken = take(message.data, done);
      if (taken) {
        takerBusy = true;
        try {
          await taken;
        } finally {
          takerBusy = false;
          lastChunkAt = performance.now();
        }
      }
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
