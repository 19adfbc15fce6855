/**
 * The shared-memory sender: creates the segment, waits for receivers,
 * streams the file through the ring and reports each receiver's verdict.
 *
 * @module
 */
import {
  createDigest,
  DIGEST_LENGTH,
  type DigestAlgorithm,
  digestCode,
  formatBytes,
  formatTable,
  gibPerSecond,
  onAbort,
  P2mError,
  RateLimit,
  type Reporter,
  Source,
  toHex,
} from "../core/mod.ts";
import { SharedMemory } from "../ffi/mod.ts";
import {
  AbortReason,
  chunksFor,
  COMMIT_GRACE_MS,
  DIGEST_OFFSET,
  E,
  geometry,
  H,
  HEADER_AREA,
  MAX_CHUNKS,
  Peer,
  PEER_STATE_TEXT,
  State,
  writeHeader,
} from "./layout.ts";
import { peerLockByte, Segment, SENDER_LOCK_BYTE, sleep } from "./segment.ts";

/** What the sender is asked to do. */
export interface SenderOptions {
  /** File to send. */
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
}

/** One receiver's line in the sender's summary. */
export interface PeerSummary {
  /** Table index. */
  peer: number;
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
/** Longest single semaphore wait (ms). */
const WAIT_SLICE_MS = 100;

/** Runs a sender to the end; returns the exit code. */
export async function runSender(options: SenderOptions, reporter: Reporter): Promise<number> {
  using source = Source.open(options.path);
  const info = source.info;
  const weak = source.weakGuardWarning;
  if (weak) reporter.warn(weak);
  const totalChunks = chunksFor(info.size, options.chunk);
  if (totalChunks > MAX_CHUNKS) {
    throw new P2mError(`file too large for --chunk ${options.chunk}; use a larger chunk`);
  }
  const geo = geometry(options.chunk, options.slots);
  const memory = createSegment(options.name, reporter);
  let unlinked = false;
  const unlink = () => {
    if (unlinked) return;
    unlinked = true;
    try {
      SharedMemory.unlink(options.name);
    } catch { /* already gone */ }
  };
  let segment: Segment | undefined;
  const stopAbortHook = onAbort(() => {
    if (segment) abortTransfer(segment, AbortReason.Interrupted);
    unlink();
  });
  try {
    memory.truncate(geo.segmentSize);
    try {
      memory.allocate(geo.segmentSize);
    } catch (error) {
      throw new P2mError(
        `cannot reserve ${formatBytes(geo.segmentSize)} of shared memory for ${options.name}: ` +
          `${(error as Error).message}; use a smaller ring (--slots, --chunk)`,
      );
    }
    const buffer = memory.map(geo.segmentSize);
    segment = new Segment(memory, buffer, geo);
    segment.senderSem.init(0);
    for (let i = 0; i < geo.tableEntries; i++) segment.peerSem(i).init(0);
    writeHeader(buffer, {
      ...geo,
      fileSize: info.size,
      mode: info.mode,
      name: info.name,
      digestCode: digestCode(options.digest),
      digestLength: DIGEST_LENGTH[options.digest],
      peers: options.peers,
      pid: Deno.pid,
    });
    reporter.event("start", {
      transport: "shm",
      name: options.name,
      file: info.path,
      size: info.size,
      peers: options.peers,
      slots: geo.slotCount,
      chunk: geo.chunkSize,
    });
    reporter.info(
      `shm ${options.name}: sending ${info.name} (${formatBytes(info.size)}) through ` +
        `${geo.slotCount} × ${
          formatBytes(geo.chunkSize)
        }; waiting for ${options.peers} receiver(s)`,
    );
    const run = new SenderRun(segment, options, reporter, totalChunks, info.size);
    const code = await run.transfer(source);
    return code;
  } catch (error) {
    if (segment) abortTransfer(segment, AbortReason.Failed);
    throw error;
  } finally {
    stopAbortHook();
    unlink();
    segment?.close();
    memory.close();
  }
}

/** Marks the transfer aborted and wakes everyone so they notice at once. */
function abortTransfer(segment: Segment, reason: number): void {
  if (!segment.memory.mapped) return;
  const state = segment.load(H.state);
  if (state === State.Closed || state === State.Aborted) return;
  segment.store(H.abortReason, reason);
  segment.store(H.state, State.Aborted);
  for (let i = 0; i < segment.entriesUsed(); i++) segment.peerSem(i).post();
}

/**
 * Creates the segment with O_EXCL and takes the sender's liveness lock.
 * A name held by a live sender is refused; a stale one (its sender's lock
 * is gone) is unlinked and replaced.
 */
function createSegment(name: string, reporter: Reporter): SharedMemory {
  for (let attempt = 0; attempt < 5; attempt++) {
    const created = SharedMemory.create(name, 0o600);
    if (created) {
      if (created.tryLock(SENDER_LOCK_BYTE)) return created;
      created.close(); // someone judged it stale and took it: try again
      continue;
    }
    const old = SharedMemory.open(name);
    if (!old) continue;
    try {
      if (!old.tryLock(SENDER_LOCK_BYTE)) {
        const pid = senderPid(old);
        throw new P2mError(
          `a live sender${pid ? ` (pid ${pid})` : ""} is using shared memory ${name}; ` +
            `refusing to replace it (choose another --name)`,
        );
      }
      // We hold the dead sender's lock, so no other new sender judges it
      // stale at the same time; make sure the name still means this object.
      const ino = old.stat().ino;
      const again = SharedMemory.open(name);
      const same = again?.stat().ino === ino;
      again?.close();
      if (!same) continue;
      SharedMemory.unlink(name);
      reporter.info(`shm ${name}: removed a stale segment left by a sender that died`);
      reporter.event("stale-removed", { name });
    } finally {
      old.close();
    }
  }
  throw new P2mError(`cannot create shared memory ${name}: it keeps being replaced`);
}

function senderPid(memory: SharedMemory): number | undefined {
  try {
    if (memory.stat().size < HEADER_AREA) return undefined;
    const i32 = new Int32Array(memory.map(HEADER_AREA));
    return i32[H.senderPid] > 0 ? i32[H.senderPid] : undefined;
  } catch {
    return undefined;
  }
}

interface Track {
  lastCursor: number;
  lastMove: number;
  start: number;
  end?: number;
  reported: boolean;
}

class SenderRun {
  #seg: Segment;
  #options: SenderOptions;
  #reporter: Reporter;
  #total: number;
  #size: number;
  #published = 0;
  #tracks: Track[] = [];
  #nextHousekeeping = 0;
  #streamStart = 0;
  #wakeLag: number;
  #source: Source | undefined;

  constructor(
    segment: Segment,
    options: SenderOptions,
    reporter: Reporter,
    total: number,
    size: number,
  ) {
    this.#seg = segment;
    this.#options = options;
    this.#reporter = reporter;
    this.#total = total;
    this.#size = size;
    // A waiting receiver is woken once a quarter of the ring is ready for
    // it, so a wake-up (~60 µs here) is paid per batch, not per chunk.
    this.#wakeLag = Math.max(1, Math.floor(segment.geometry.slotCount / 4));
  }

  async transfer(source: Source): Promise<number> {
    const info = source.info;
    this.#source = source;
    const digest = await createDigest(this.#options.digest);
    await this.#waitForPeers();
    const seg = this.#seg;
    this.#streamStart = performance.now();
    seg.store(H.state, State.Streaming);
    this.#reporter.event("streaming", { peers: this.#attached() });
    const rate = new RateLimit(this.#options.limitRate);
    const progress = this.#reporter.progress("sending", this.#size);
    const slots = seg.geometry.slotCount;
    const chunk = seg.geometry.chunkSize;
    while (this.#published < this.#total) {
      // The slowest live receiver gates the ring.
      while (this.#published - this.#minCursor() >= slots) {
        seg.store(H.senderWaiting, 1);
        if (this.#published - this.#minCursor() < slots) {
          seg.store(H.senderWaiting, 0);
          break;
        }
        this.#wakeAll();
        seg.senderSem.wait(WAIT_SLICE_MS);
        seg.store(H.senderWaiting, 0);
        await this.#housekeeping();
      }
      const n = this.#published;
      const length = Math.min(chunk, this.#size - n * chunk);
      const view = seg.slot(n, length);
      for (let got = 0; got < length;) {
        const read = source.read(view.subarray(got));
        if (read === 0) {
          abortTransfer(seg, AbortReason.SourceChanged);
          throw new P2mError(`${info.path} shrank while it was sent; transfer aborted`);
        }
        got += read;
      }
      digest.update(view);
      this.#published = n + 1;
      seg.store(H.published, this.#published);
      const last = this.#published === this.#total;
      for (let i = 0; i < seg.entriesUsed(); i++) {
        if (seg.peerState(i) !== Peer.Attached) continue;
        if (last || this.#published - seg.cursor(i) >= this.#wakeLag) seg.wakePeer(i);
      }
      progress.update(this.#published * chunk > this.#size ? this.#size : this.#published * chunk);
      if (rate.enabled) await rate.pace(length);
      await this.#housekeeping();
    }
    const changed = source.changed();
    if (changed) {
      abortTransfer(seg, AbortReason.SourceChanged);
      throw new P2mError(`${info.path} changed while it was sent (${changed}); transfer aborted`);
    }
    const raw = digest.digest();
    seg.bytes.set(raw, DIGEST_OFFSET);
    seg.store(H.state, State.Final);
    this.#wakeAll();
    await this.#waitForVerdicts();
    // No new receiver may join now; one that joined meanwhile is served too.
    seg.store(H.state, State.Closed);
    await this.#waitForVerdicts();
    return this.#summarise(toHex(raw));
  }

  /**
   * Waits until `--peers` receivers have joined. One that joined and then
   * died or left still counts: streaming starts for the rest, and the
   * summary reports it, rather than the healthy ones waiting for a stranger.
   */
  async #waitForPeers(): Promise<void> {
    const seg = this.#seg;
    const deadline = performance.now() + this.#options.waitSeconds * 1000;
    let seen = 0;
    for (;;) {
      this.#evictDead();
      const joined = this.#joined();
      if (joined !== seen) {
        seen = joined;
        this.#reporter.event("attached", { count: joined, live: this.#attached() });
      }
      if (joined >= this.#options.peers) return;
      if (performance.now() > deadline) {
        abortTransfer(seg, AbortReason.Failed);
        throw new P2mError(
          `only ${joined} of ${this.#options.peers} receiver(s) attached to ${this.#options.name} ` +
            `within ${this.#options.waitSeconds} s`,
        );
      }
      // A joining receiver posts us, so streaming starts without a poll delay.
      seg.store(H.senderWaiting, 1);
      if (this.#joined() === joined) seg.senderSem.wait(WAIT_SLICE_MS);
      seg.store(H.senderWaiting, 0);
      await sleep(0);
    }
  }

  #joined(): number {
    let n = 0;
    for (let i = 0; i < this.#seg.entriesUsed(); i++) {
      if (this.#seg.peerState(i) !== Peer.Free) n++;
    }
    return n;
  }

  async #waitForVerdicts(): Promise<void> {
    const seg = this.#seg;
    while (this.#attached() > 0) {
      seg.store(H.senderWaiting, 1);
      if (this.#attached() > 0) seg.senderSem.wait(WAIT_SLICE_MS);
      seg.store(H.senderWaiting, 0);
      await this.#housekeeping();
    }
  }

  #attached(): number {
    let n = 0;
    for (let i = 0; i < this.#seg.entriesUsed(); i++) {
      if (this.#seg.peerState(i) === Peer.Attached) n++;
    }
    return n;
  }

  #minCursor(): number {
    return this.#seg.minCursor(this.#published);
  }

  #wakeAll(): void {
    for (let i = 0; i < this.#seg.entriesUsed(); i++) this.#seg.wakePeer(i);
  }

  #track(i: number, now: number): Track {
    return this.#tracks[i] ??= {
      lastCursor: this.#seg.cursor(i),
      lastMove: now,
      start: this.#streamStart || now,
      reported: false,
    };
  }

  /** Evicts receivers whose process died (their OFD lock is gone). */
  #evictDead(): void {
    const seg = this.#seg;
    const now = performance.now();
    for (let i = 0; i < seg.entriesUsed(); i++) {
      const track = this.#track(i, now);
      if (seg.peerState(i) !== Peer.Attached) continue;
      if (seg.memory.isLocked(peerLockByte(i))) continue;
      if (seg.movePeer(i, Peer.Attached, Peer.Dead)) {
        track.end = now;
        this.#reporter.error(`receiver #${i} (pid ${this.#pid(i)}) died; evicted`, { peer: i });
      }
    }
  }

  /** Liveness, stalls, signals: every HOUSEKEEPING_MS. */
  async #housekeeping(): Promise<void> {
    const now = performance.now();
    // Yielding to the event loop (for signal handlers) costs a timer tick,
    // up to milliseconds: do it with the checks, not after every wake-up.
    if (now < this.#nextHousekeeping) return;
    this.#nextHousekeeping = now + HOUSEKEEPING_MS;
    this.#evictDead();
    const seg = this.#seg;
    // A writer that breaks our lease waits for us: notice it now, not at the end.
    const changed = seg.load(H.state) === State.Streaming ? this.#source?.changed() : undefined;
    if (changed) {
      abortTransfer(seg, AbortReason.SourceChanged);
      throw new P2mError(
        `${this.#source!.info.path} changed while it was sent (${changed}); transfer aborted`,
      );
    }
    const stallMs = this.#options.stallSeconds * 1000;
    for (let i = 0; i < seg.entriesUsed(); i++) {
      const track = this.#track(i, now);
      const state = seg.peerState(i);
      if (state !== Peer.Attached) {
        track.end ??= now;
        continue;
      }
      const cursor = seg.cursor(i);
      const final = seg.load(H.state) >= State.Final;
      // A receiver that has everything published is not stalled (unless
      // the data is all out and it still owes a verdict).
      if (cursor !== track.lastCursor || (cursor >= this.#published && !final)) {
        track.lastCursor = cursor;
        track.lastMove = now;
        continue;
      }
      const committing = Atomics.load(seg.i32, seg.entryField(i, E.committing)) === 1;
      const limit = committing ? Math.max(stallMs, COMMIT_GRACE_MS) : stallMs;
      if (now - track.lastMove > limit && seg.movePeer(i, Peer.Attached, Peer.Stalled)) {
        track.end = now;
        seg.peerSem(i).post();
        this.#reporter.error(
          `receiver #${i} (pid ${
            this.#pid(i)
          }) stalled for ${this.#options.stallSeconds} s; evicted`,
          { peer: i },
        );
      }
    }
    await sleep(0);
  }

  #pid(i: number): number {
    return Atomics.load(this.#seg.i32, this.#seg.entryField(i, E.pid));
  }

  #summarise(digestHex: string): number {
    const seg = this.#seg;
    const now = performance.now();
    const peers: PeerSummary[] = [];
    for (let i = 0; i < seg.entriesUsed(); i++) {
      const state = seg.peerState(i);
      if (state === Peer.Free) continue;
      const track = this.#track(i, now);
      // Seconds of streaming: a receiver that waited for the others starts
      // its clock when streaming did.
      const start = Math.max(track.start, this.#streamStart);
      const seconds = ((track.end ?? now) - start) / 1000;
      const bytes = Math.min(this.#size, seg.cursor(i) * seg.geometry.chunkSize);
      peers.push({
        peer: i,
        pid: this.#pid(i),
        status: PEER_STATE_TEXT[state] ?? String(state),
        verified: state === Peer.Verified,
        bytes,
        seconds,
        gibPerSecond: gibPerSecond(bytes, seconds),
      });
    }
    const verified = peers.filter((p) => p.verified).length;
    const failed = peers.filter((p) => !p.verified && p.status !== "left").length;
    const ok = verified >= this.#options.peers && failed === 0;
    const seconds = (now - this.#streamStart) / 1000;
    this.#reporter.event("summary", {
      ok,
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
      `${verified} of ${peers.length} receiver(s) verified; ` +
        `${formatBytes(this.#size)} in ${seconds.toFixed(3)} s`,
    );
    if (!ok) {
      this.#reporter.error(
        `${verified} of ${this.#options.peers} receiver(s) verified` +
          (failed ? `; ${failed} failed` : ""),
      );
    }
    return ok ? 0 : 1;
  }
}
