/**
 * The shared-memory sender: creates the segment, waits for receivers,
 * streams the file through the ring and reports each receiver's verdict.
 *
 * Data path: {@linkcode SenderRun.transfer} reads each chunk from the
 * {@linkcode Payload} (a file through {@linkcode Source}, a directory's tar
 * stream, or a stream such as stdin; see {@link ./payload.ts}) straight
 * into its ring slot, hashes it there and publishes it. A file or a tree
 * fills every slot; a stream of unknown size publishes a partial slot
 * (with its byte length) as soon as its input pauses, and at its end the
 * final size and the digest. Every shared word goes through {@link ./segment.ts}; the
 * name is owned by the {@linkcode SharedMemory} from {@link ./stale.ts},
 * whose reaper removes it if this process is killed. Receivers' verdicts
 * are checked against the sender's own observations ({@link ./entry_audit.ts}).
 * A caller may hand over the payload and the digest instead
 * ({@linkcode SenderOptions.payload}, {@linkcode SenderOptions.givenDigest}):
 * `net fetch --fanout shm` sends chunks as they come from NATS, with the
 * publisher's digest, and nothing is hashed here.
 *
 * @module
 */
import {
  createDigest,
  delay,
  DIGEST_LENGTH,
  type DigestAlgorithm,
  digestCode,
  exitForSignal,
  formatBytes,
  formatTable,
  gibPerSecond,
  onAbort,
  onSignal,
  P2mError,
  type Progress,
  RateLimit,
  type Reporter,
  toHex,
} from "../core/mod.ts";
import type { Digest } from "../core/digest.ts";
import { CorruptSemaphoreError, type UnixGroup } from "../ffi/mod.ts";
import { EntryAudit, type SenderView } from "./entry_audit.ts";
import {
  AbortReason,
  chunksFor,
  COMMIT_GRACE_MS,
  geometry,
  MAX_CHUNKS,
  PayloadFlag,
  PEER_STATE_TEXT,
  ReceiverState,
  TransferState,
  writeHeader,
} from "./layout.ts";
import {
  receiverLockByte,
  Segment,
  SegmentCorruptError,
  SENDER,
  shareWithGroup,
} from "./segment.ts";
import { createOrReplace, Reaper } from "./stale.ts";
import { openPayload, type Payload, PayloadChangedError } from "./payload.ts";

/** What the sender is asked to do. */
export interface SenderOptions {
  /** File, directory or stream (`-` for stdin) to send. */
  path: string;
  /** Segment name (without the leading slash). */
  name: string;
  /** Receivers to wait for. */
  peers: number;
  /** Seconds to wait for them. */
  waitSeconds: number;
  /** Slots in the ring. */
  slots: number;
  /** Bytes per slot. */
  chunk: number;
  /** Seconds a live receiver may hold the ring without moving before it is evicted. */
  stallSeconds: number;
  /** Digest algorithm (`none` for --no-verify). */
  digest: DigestAlgorithm;
  /** Bytes per second cap (0: none). */
  limitRate: number;
  /** `--linger S`: serve later receivers in laps until S idle seconds (0: until a signal). */
  lingerSeconds?: number;
  /** `--group`: share the segment with this group (mode 0660) instead of 0600. */
  group?: UnixGroup;
  /** What to send instead of opening `path` (net fetch --fanout: bytes as they come from NATS). */
  payload?: Payload;
  /**
   * The digest of `digest`'s algorithm that whoever produced the bytes
   * published (net fetch --fanout: the publisher's, from the manifest). It
   * is published to the receivers as is and nothing is hashed here, so the
   * sender never vouches for bytes it did not see hashed at their origin.
   */
  givenDigest?: Uint8Array;
}

/** One receiver's line in the sender's summary. */
export interface PeerSummary {
  /** Table index. */
  peer: number;
  /** The lap that served it (1 for the first). */
  lap: number;
  /** Its pid (for people; liveness never relies on it). */
  pid: number;
  /** Outcome: verified, failed, died, stalled, left. */
  status: string;
  /** Whether its copy verified. */
  verified: boolean;
  /** Bytes it consumed. */
  bytes: number;
  /** Seconds from the start of streaming to its verdict. */
  seconds: number;
  /** Its rate. */
  gibPerSecond: number;
}

/** How often liveness, stalls and signals are looked at (ms). */
const HOUSEKEEPING_MS = 200;

/** Runs a sender to the end; returns the exit code. */
export async function runSender(options: SenderOptions, reporter: Reporter): Promise<number> {
  using payload = options.payload ?? openPayload(options.path, reporter);
  if (options.lingerSeconds !== undefined && payload.kind !== "file") {
    throw new P2mError(
      `--linger replays a regular file for late receivers; ${payload.path} is a ` +
        `${payload.kind === "tree" ? "directory" : "stream"}, which cannot be replayed`,
    );
  }
  const size = payload.size ?? 0;
  const totalChunks = chunksFor(size, options.chunk);
  if (totalChunks > MAX_CHUNKS) {
    throw new P2mError(`file too large for --chunk ${options.chunk}; use a larger chunk`);
  }
  // Disposed last: the segment's owner unlinks the name first, then the
  // reaper's pipe closes (it finds nothing). A kill -9 leaves the reaper.
  using _reaper = Reaper.start(options.name);
  const first = await runLap(1, payload, options, reporter, undefined);
  if (options.lingerSeconds === undefined || first === undefined) return first?.ok ? 0 : 1;
  // --linger: serve later receivers in laps until S idle seconds pass or a
  // signal comes while no lap runs.
  const linger: Linger = { seconds: options.lingerSeconds, idle: false, stopped: false };
  const laps: LapResult[] = [first];
  onSignal((signal) => {
    if (!linger.idle) exitForSignal(signal as "SIGINT" | "SIGTERM");
    linger.stopped = true;
  });
  try {
    for (let lap = 2;; lap++) {
      const changed = payload.changed();
      if (changed) throw new P2mError(`${payload.path} changed (${changed}); linger ended`);
      payload.rewind();
      const result = await runLap(lap, payload, options, reporter, linger);
      if (result === undefined) break;
      laps.push(result);
    }
  } finally {
    onSignal(undefined);
  }
  const peers = laps.flatMap((lap) => lap.peers);
  const verified = peers.filter((p) => p.verified).length;
  const ok = laps.every((lap) => lap.ok);
  reporter.event("linger-summary", { ok, laps: laps.length, peers });
  reporter.info(
    `${laps.length} lap(s): ${verified} of ${peers.length} receiver(s) verified` +
      (linger.stopped ? "; linger ended by a signal" : `; idle for ${linger.seconds} s`),
  );
  if (!ok) reporter.error(`not every receiver of every lap verified`);
  return ok ? 0 : 1;
}

/** How a lingering sender waits between laps. */
interface Linger {
  /** Idle seconds before the sender leaves (0: until a signal). */
  seconds: number;
  /** Whether no lap is running (a signal then ends the linger, exit by verdict). */
  idle: boolean;
  /** Whether a signal asked to stop. */
  stopped: boolean;
}

/** One lap's verdicts. */
interface LapResult {
  ok: boolean;
  peers: PeerSummary[];
}

/** How long a lap after the first waits after its first joiner, so others can join it (ms). */
const GATHER_MS = 300;

/**
 * Creates the segment for lap `lap`, serves it and removes it. Lap 1 waits
 * for `--peers`; a later lap (`linger` set) for its first joiner, up to the
 * linger time, then GATHER_MS more. Returns undefined when a later lap
 * ended idle.
 */
async function runLap(
  lap: number,
  payload: Payload,
  options: SenderOptions,
  reporter: Reporter,
  linger: Linger | undefined,
): Promise<LapResult | undefined> {
  const size = payload.size ?? 0;
  const geo = geometry(options.chunk, options.slots);
  using memory = await createOrReplace(options.name, reporter);
  if (options.group) shareWithGroup(memory, options.group);
  let segment: Segment | undefined;
  using _abortHook = {
    [Symbol.dispose]: onAbort(() => {
      if (segment) abortTransfer(segment, AbortReason.Interrupted);
      memory.close();
    }),
  };
  try {
    memory.truncate(geo.segmentSize);
    try {
      memory.allocate(geo.segmentSize);
    } catch (error) {
      throw new P2mError(
        `cannot reserve ${formatBytes(geo.segmentSize)} of shared memory for ${options.name}: ` +
          `${(error as Error).message}; use a smaller ring (--slots, --chunk)`,
        { cause: error },
      );
    }
    const buffer = memory.map(geo.segmentSize);
    segment = new Segment(memory, buffer, geo);
    segment.initSemaphores();
    writeHeader(buffer, {
      ...geo,
      fileSize: size,
      flags: (payload.size === undefined ? PayloadFlag.SizeUnknown : 0) |
        (payload.kind === "tree" ? PayloadFlag.Tree : 0) |
        (options.lingerSeconds !== undefined ? PayloadFlag.Laps : 0),
      lap,
      mode: payload.mode,
      name: payload.name,
      digestCode: digestCode(options.digest),
      digestLength: DIGEST_LENGTH[options.digest],
      peers: linger ? 1 : options.peers,
      pid: Deno.pid,
    });
    if (lap === 1) {
      reporter.event("start", {
        transport: "shm",
        name: options.name,
        file: payload.path,
        kind: payload.kind,
        size: payload.size ?? null,
        peers: options.peers,
        slots: geo.slotCount,
        chunk: geo.chunkSize,
      });
      const what = payload.kind === "stream"
        ? `${payload.name} (a stream of unknown size)`
        : `${payload.kind === "tree" ? "tree " : ""}${payload.name} (${formatBytes(size)})`;
      reporter.info(
        `shm ${options.name}: sending ${what} through ` +
          `${geo.slotCount} × ${
            formatBytes(geo.chunkSize)
          }; waiting for ${options.peers} receiver(s)`,
      );
    }
    const totalChunks = chunksFor(size, options.chunk);
    return await new SenderRun(segment, options, reporter, totalChunks, payload, lap, linger)
      .transfer();
  } catch (error) {
    if (segment) {
      const corrupt = error instanceof SegmentCorruptError ||
        error instanceof CorruptSemaphoreError;
      abortTransfer(segment, corrupt ? AbortReason.Corrupt : AbortReason.Failed);
    }
    throw error;
  }
}

/**
 * Marks the transfer aborted and wakes everyone so they notice at once.
 * Best effort: a truncated segment is left alone (touching it is a SIGBUS),
 * and a scribbled semaphore is not posted.
 */
function abortTransfer(segment: Segment, reason: number): void {
  if (!segment.memory.mapped) return;
  try {
    segment.checkSize();
    const state = segment.transferState();
    if (state === TransferState.Closed || state === TransferState.Aborted) return;
    segment.setAbortReason(reason);
    segment.setTransferState(TransferState.Aborted);
    segment.forEachEntry((i) => segment.alertReceiver(i));
  } catch { /* corrupt: receivers notice our exit instead */ }
}

interface Track {
  lastCursor: number;
  /** Since when the receiver owed something (a chunk, or its verdict) without moving. */
  lastMove: number;
  /** Whether it owed something at the previous round. */
  owed: boolean;
  start: number;
  end?: number;
}

class SenderRun {
  #seg: Segment;
  #options: SenderOptions;
  #reporter: Reporter;
  #total: number;
  #size: number;
  #payload: Payload;
  #published = 0;
  /** Bytes published so far. */
  #bytes = 0;
  /** The transfer state this process last wrote; the header must still say it. */
  #state: number = TransferState.Waiting;
  #tracks: Track[] = [];
  #audit = new EntryAudit();
  #nextHousekeeping = 0;
  #streamStart = 0;
  #wakeLag: number;
  #lap: number;
  #linger: Linger | undefined;

  constructor(
    segment: Segment,
    options: SenderOptions,
    reporter: Reporter,
    total: number,
    payload: Payload,
    lap: number,
    linger: Linger | undefined,
  ) {
    this.#lap = lap;
    this.#linger = linger;
    this.#seg = segment;
    this.#options = options;
    this.#reporter = reporter;
    this.#total = total;
    this.#size = payload.size ?? 0;
    this.#payload = payload;
    // A waiting receiver is woken once a quarter of the ring is ready for
    // it, so a wake-up (~60 µs here) is paid per batch, not per chunk.
    this.#wakeLag = Math.max(1, Math.floor(segment.geometry.slotCount / 4));
  }

  async transfer(): Promise<LapResult | undefined> {
    const given = this.#options.givenDigest;
    const digest = await createDigest(given ? "none" : this.#options.digest);
    if (this.#linger) {
      if (!await this.#waitForLap()) {
        this.#setState(TransferState.Closed);
        return undefined;
      }
    } else {
      await this.#waitForPeers();
    }
    const seg = this.#seg;
    this.#streamStart = performance.now();
    this.#setState(TransferState.Streaming);
    this.#reporter.event("streaming", { peers: this.#count(ReceiverState.Attached) });
    const rate = new RateLimit(this.#options.limitRate);
    const progress = this.#reporter.progress("sending", this.#size);
    if (this.#payload.size === undefined) {
      await this.#sendStream(digest, rate, progress);
    } else {
      await this.#sendKnown(digest, rate, progress);
    }
    const changed = this.#payload.changed();
    if (changed) this.#sourceChanged(changed);
    const raw = given ?? digest.digest();
    seg.setDigest(raw);
    if (this.#payload.size === undefined) {
      // The stream's end: its size and chunk count are known only now.
      this.#total = this.#published;
      this.#size = this.#bytes;
      seg.setFinalChunks(this.#published);
      seg.setFinalSize(this.#bytes);
    }
    this.#setState(TransferState.Final);
    this.#wakeAll();
    await this.#waitForVerdicts();
    // No new receiver may join now; one that joined meanwhile is served too.
    this.#setState(TransferState.Closed);
    await this.#waitForVerdicts();
    return this.#summarise(toHex(raw));
  }

  /** A file or a tree: every slot full but the last. */
  async #sendKnown(digest: Digest, rate: RateLimit, progress: Progress): Promise<void> {
    const chunk = this.#seg.geometry.chunkSize;
    while (this.#published < this.#total) {
      await this.#waitForSpace();
      const n = this.#published;
      const view = this.#seg.slot(n, Math.min(chunk, this.#size - n * chunk));
      this.#fill(view);
      this.#publish(view, digest, false);
      progress.update(this.#bytes);
      if (rate.enabled) await rate.pace(view.length);
      await this.#housekeeping();
    }
  }

  /**
   * A stream: waits (in bounded slices, with housekeeping) for the first
   * bytes of a slot, then takes whatever else is there at once, and
   * publishes the slot as soon as it is full or the input pauses.
   */
  async #sendStream(digest: Digest, rate: RateLimit, progress: Progress): Promise<void> {
    const chunk = this.#seg.geometry.chunkSize;
    let ended = false;
    while (!ended) {
      await this.#waitForSpace();
      const view = this.#seg.slot(this.#published, chunk);
      let filled = 0;
      while (filled < chunk) {
        const got = await this.#payload.readSome(
          view.subarray(filled),
          filled === 0 ? HOUSEKEEPING_MS : 0,
        );
        if (got === null) {
          if (filled > 0) break; // a pause: publish what is there
          await this.#housekeeping();
          continue;
        }
        if (got === 0) {
          ended = true;
          break;
        }
        filled += got;
      }
      if (filled === 0) break;
      this.#publish(view.subarray(0, filled), digest, filled < chunk || ended);
      progress.update(this.#bytes);
      if (rate.enabled) await rate.pace(filled);
      await this.#housekeeping();
    }
  }

  /**
   * Waits until the slowest live receiver has freed the next slot. The
   * claim is stored before the first look at the cursors, so a receiver
   * that attaches meanwhile either is counted or sees the claim (see
   * {@linkcode Segment.claimed}).
   */
  async #waitForSpace(): Promise<void> {
    const seg = this.#seg;
    const slots = seg.geometry.slotCount;
    const ringFull = () => this.#published - seg.minCursor(this.#published) >= slots;
    seg.setClaimed(this.#published + 1);
    while (ringFull()) {
      this.#wakeBehind();
      seg.park(SENDER, ringFull);
      await this.#housekeeping();
    }
  }

  /**
   * Hashes and publishes the next slot (`view` holds its bytes) and wakes
   * receivers: all of them when `flush` (a stream paused) or at the last
   * chunk, else only those a quarter of the ring behind.
   */
  #publish(view: Uint8Array, digest: Digest, flush: boolean): void {
    const seg = this.#seg;
    digest.update(view);
    seg.setSlotLength(this.#published, view.length);
    this.#published++;
    this.#bytes += view.length;
    seg.setPublished(this.#published);
    const wakeAll = flush || this.#published === this.#total;
    seg.forEachEntry((i, state) => {
      if (state !== ReceiverState.Attached) return;
      if (wakeAll || this.#published - seg.cursor(i) >= this.#wakeLag) seg.wakeReceiver(i);
    });
  }

  /** Reads the next chunk of a file or tree into its slot; a change or a truncated segment fails clearly. */
  #fill(view: Uint8Array): void {
    try {
      this.#payload.fill(view);
    } catch (error) {
      if (error instanceof PayloadChangedError) {
        abortTransfer(this.#seg, AbortReason.SourceChanged);
        throw error;
      }
      this.#seg.checkSize(); // EFAULT into a truncated segment: say so
      throw error;
    }
  }

  #sourceChanged(why: string): never {
    abortTransfer(this.#seg, AbortReason.SourceChanged);
    throw new P2mError(
      `${this.#payload.path} changed while it was sent (${why}); transfer aborted`,
    );
  }

  #setState(state: number): void {
    this.#state = state;
    this.#seg.setTransferState(state);
  }

  /**
   * Waits until `--peers` receivers have joined. One that joined and then
   * died or left still counts: streaming starts for the rest, and the
   * summary reports it, rather than the healthy ones waiting for a stranger.
   */
  async #waitForPeers(): Promise<void> {
    const deadline = performance.now() + this.#options.waitSeconds * 1000;
    const joined = () => this.#count((state) => state !== ReceiverState.Free);
    let seen = 0;
    for (;;) {
      await this.#housekeeping(true);
      const count = joined();
      if (count !== seen) {
        seen = count;
        this.#reporter.event("attached", {
          count,
          live: this.#count(ReceiverState.Attached),
        });
      }
      if (count >= this.#options.peers) return;
      if (performance.now() > deadline) {
        abortTransfer(this.#seg, AbortReason.Failed);
        throw new P2mError(
          `only ${count} of ${this.#options.peers} receiver(s) attached to ${this.#options.name} ` +
            `within ${this.#options.waitSeconds} s`,
        );
      }
      // A joining receiver posts us, so streaming starts without a poll delay.
      this.#seg.park(
        SENDER,
        () => this.#seg.countEntries((s) => s !== ReceiverState.Free) === count,
      );
    }
  }

  /**
   * A later lap: waits up to the linger time (restarted for every lap) for
   * a first joiner, then GATHER_MS more so that others share the lap.
   * False when the time ran out or a signal came first.
   */
  async #waitForLap(): Promise<boolean> {
    const linger = this.#linger!;
    const seg = this.#seg;
    const nobody = () => seg.countEntries((state) => state !== ReceiverState.Free) === 0;
    const deadline = linger.seconds > 0 ? performance.now() + linger.seconds * 1000 : Infinity;
    linger.idle = true;
    this.#reporter.event("lap-waiting", { lap: this.#lap });
    try {
      while (this.#count((state) => state !== ReceiverState.Free) === 0) {
        if (linger.stopped || performance.now() > deadline) return false;
        seg.park(SENDER, nobody);
        await this.#housekeeping(true);
      }
    } finally {
      linger.idle = false;
    }
    const gathered = performance.now() + GATHER_MS;
    while (performance.now() < gathered) {
      seg.park(SENDER, () => true, Math.max(1, gathered - performance.now()));
      await this.#housekeeping(true);
    }
    this.#reporter.event("lap", { lap: this.#lap, peers: this.#count(ReceiverState.Attached) });
    return true;
  }

  async #waitForVerdicts(): Promise<void> {
    const attached = () => this.#count(ReceiverState.Attached) > 0;
    while (attached()) {
      this.#seg.park(SENDER, attached);
      await this.#housekeeping();
    }
  }

  /**
   * Entries in use whose audited state is `state` (or passes it). Every
   * state the sender acts on is read through {@linkcode #audited}.
   */
  #count(state: number | ((state: number) => boolean)): number {
    const test = typeof state === "number" ? (s: number) => s === state : state;
    let count = 0;
    this.#audited((_, s) => {
      if (test(s)) count++;
    });
    return count;
  }

  /** The scan over entries, each checked against what the sender saw before. */
  #audited(visit: (index: number, state: number) => void): void {
    const seg = this.#seg;
    const view: SenderView = {
      published: this.#published,
      total: this.#total,
      digestPublished: this.#state >= TransferState.Final,
      chunkSize: seg.geometry.chunkSize,
      fileSize: this.#size,
    };
    seg.forEachEntry((i, state) => {
      const words = { state, cursor: seg.cursor(i), pid: seg.entryPid(i) };
      const cause = this.#audit.observe(i, words, view);
      if (cause) throw seg.corrupt(cause);
      visit(i, state);
    });
  }

  #pid(i: number): number {
    return this.#audit.pid(i) || this.#seg.entryPid(i);
  }

  #wakeAll(): void {
    this.#seg.forEachEntry((i) => this.#seg.wakeReceiver(i));
  }

  /**
   * Wakes the receivers that have published slots left to drain, before
   * the sender parks on a full ring. One that has drained them all parks
   * until more is published: waking it would only park it again.
   */
  #wakeBehind(): void {
    const seg = this.#seg;
    seg.forEachEntry((i) => {
      if (seg.cursor(i) < this.#published) seg.wakeReceiver(i);
    });
  }

  #track(i: number, now: number): Track {
    return this.#tracks[i] ??= {
      lastCursor: this.#seg.cursor(i),
      lastMove: now,
      owed: false,
      start: this.#streamStart || now,
    };
  }

  /** Moves entry `i` from Attached to `state` (died, stalled) if it still is attached. */
  #evict(i: number, state: number, now: number): boolean {
    if (!this.#seg.moveEntry(i, ReceiverState.Attached, state)) return false;
    this.#audit.senderMoved(i, state);
    this.#track(i, now).end = now;
    this.#seg.alertReceiver(i);
    return true;
  }

  /** The header words only the sender writes must still say what it wrote. */
  #checkOwnHeader(): void {
    const seg = this.#seg;
    const state = seg.transferState();
    const published = seg.published();
    if (state !== this.#state || published !== this.#published) {
      throw seg.corrupt(
        `the header says state ${state} with ${published} chunks published; ` +
          `the sender wrote state ${this.#state} with ${this.#published}`,
      );
    }
  }

  /** Liveness, stalls, corruption, the source and signals: every HOUSEKEEPING_MS. */
  async #housekeeping(force = false): Promise<void> {
    const now = performance.now();
    // Yielding to the event loop (for signal handlers) costs a timer tick,
    // up to milliseconds: do it with the checks, not after every wake-up.
    if (!force && now < this.#nextHousekeeping) return;
    this.#nextHousekeeping = now + HOUSEKEEPING_MS;
    const seg = this.#seg;
    seg.checkSize();
    this.#checkOwnHeader();
    // A writer that breaks our lease waits for us: notice it now, not at the end.
    if (this.#state < TransferState.Final) {
      const changed = this.#payload.changed();
      if (changed) this.#sourceChanged(changed);
    }
    const stallMs = this.#options.stallSeconds * 1000;
    const final = this.#state >= TransferState.Final;
    this.#audited((i, state) => {
      const track = this.#track(i, now);
      if (state !== ReceiverState.Attached) {
        track.end ??= now;
        return;
      }
      if (!seg.memory.isLocked(receiverLockByte(i))) {
        if (this.#evict(i, ReceiverState.Dead, now)) {
          this.#reporter.error(`receiver #${i} (pid ${this.#pid(i)}) died; evicted`, {
            peer: i,
          });
        }
        return;
      }
      if (this.#streamStart === 0) return; // no stall before streaming
      const cursor = seg.cursor(i);
      // A receiver that has everything published is not stalled (unless
      // the data is all out and it still owes a verdict), and its silence
      // counts from the first round that finds it owing: a sender that was
      // itself stopped between two rounds must not blame a receiver that
      // had caught up before it.
      const owes = cursor < this.#published || final;
      const wasOwing = track.owed;
      track.owed = owes;
      if (cursor !== track.lastCursor || !owes || !wasOwing) {
        track.lastCursor = cursor;
        track.lastMove = now;
        return;
      }
      const limit = seg.committing(i) ? Math.max(stallMs, COMMIT_GRACE_MS) : stallMs;
      if (now - track.lastMove > limit && this.#evict(i, ReceiverState.Stalled, now)) {
        this.#reporter.error(
          `receiver #${i} (pid ${
            this.#pid(i)
          }) stalled for ${this.#options.stallSeconds} s; evicted`,
          { peer: i },
        );
      }
    });
    await delay(0);
  }

  #summarise(digestHex: string): LapResult {
    const seg = this.#seg;
    const now = performance.now();
    const peers: PeerSummary[] = [];
    this.#audited((i, state) => {
      if (state === ReceiverState.Free) return;
      const track = this.#track(i, now);
      // Seconds of streaming: a receiver that waited for the others starts
      // its clock when streaming did.
      const start = Math.max(track.start, this.#streamStart);
      const seconds = ((track.end ?? now) - start) / 1000;
      const bytes = state === ReceiverState.Verified
        ? this.#size
        : Math.min(this.#size, seg.cursor(i) * seg.geometry.chunkSize);
      peers.push({
        peer: i,
        lap: this.#lap,
        pid: this.#pid(i),
        status: PEER_STATE_TEXT[state] ?? String(state),
        verified: state === ReceiverState.Verified,
        bytes,
        seconds,
        gibPerSecond: gibPerSecond(bytes, seconds),
      });
    });
    const verified = peers.filter((p) => p.verified).length;
    // "left" with bytes is a receiver interrupted mid-copy: a failure, even
    // beyond --peers. With none, it left before its first byte (or was
    // sent on to the next lap).
    const failed = peers.filter((p) => !p.verified && (p.status !== "left" || p.bytes > 0)).length;
    const wanted = this.#lap === 1 ? this.#options.peers : 1;
    const ok = verified >= wanted && failed === 0;
    const seconds = (now - this.#streamStart) / 1000;
    this.#reporter.event("summary", {
      ok,
      lap: this.#lap,
      bytes: this.#size,
      seconds,
      digest: this.#options.digest,
      value: digestHex,
      peers,
    });
    const verifiedText = this.#options.digest === "none" ? "no digest" : "yes";
    this.#reporter.info(formatTable(
      ["peer", "bytes", "verified", "seconds", "GiB/s"],
      peers.map((p) => [
        `#${p.peer} pid ${p.pid}`,
        String(p.bytes),
        p.verified ? verifiedText : `no (${p.status})`,
        p.seconds.toFixed(3),
        p.gibPerSecond.toFixed(2),
      ]),
    ));
    this.#reporter.info(
      (this.#linger || this.#options.lingerSeconds !== undefined ? `lap ${this.#lap}: ` : "") +
        `${verified} of ${peers.length} receiver(s) verified; ` +
        `${formatBytes(this.#size)} in ${seconds.toFixed(3)} s`,
    );
    if (!ok) {
      this.#reporter.error(
        `${verified} of ${wanted} receiver(s) verified` + (failed ? `; ${failed} failed` : ""),
      );
    }
    return { ok, peers };
  }
}
