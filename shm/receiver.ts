/**
 * The shared-memory receiver: finds and validates the segment, claims a
 * table entry, drains the ring into its output file and reports a verdict.
 *
 * @module
 */
import {
  createDigest,
  DIGEST_LENGTH,
  digestsEqual,
  formatBytes,
  onAbort,
  OutputFile,
  P2mError,
  type Reporter,
  toHex,
  VerifyError,
  WireError,
} from "../core/mod.ts";
import { SharedMemory } from "../ffi/mod.ts";
import {
  AbortReason,
  DIGEST_OFFSET,
  E,
  H,
  MAX_RING,
  Peer,
  readHeader,
  type SegmentInfo,
  State,
} from "./layout.ts";
import { peerLockByte, Segment, SENDER_LOCK_BYTE, sleep } from "./segment.ts";

/** What the receiver is asked to do. */
export interface ReceiverOptions {
  /** Segment name (without the leading slash). */
  name: string;
  /** `--out`: directory or file. */
  out?: string;
  /** Seconds to wait for a sender. */
  timeoutSeconds: number;
  /** Replace an existing output file. */
  force: boolean;
}

/** How often the sender's liveness and signals are looked at (ms). */
const HOUSEKEEPING_MS = 200;
/** Longest single semaphore wait (ms). */
const WAIT_SLICE_MS = 100;
/**
 * How often to look for the segment while waiting for a sender (ms). A look
 * is one shm_open; receivers usually start with their sender, so a long
 * period here is added straight to the transfer.
 */
const POLL_MS = 5;

/** Runs a receiver to the end; returns the exit code. */
export async function runReceiver(options: ReceiverOptions, reporter: Reporter): Promise<number> {
  const { segment, info } = await findSegment(options);
  try {
    return await receive(segment, info, options, reporter);
  } finally {
    segment.close();
  }
}

/**
 * Waits up to the timeout for a live sender's segment and validates it.
 * A hostile or corrupt segment is refused at once; a stale one (its
 * sender died) is waited past, since the next sender replaces it.
 */
async function findSegment(
  options: ReceiverOptions,
): Promise<{ segment: Segment; info: SegmentInfo }> {
  const deadline = performance.now() + options.timeoutSeconds * 1000;
  const uid = Deno.uid();
  let stale = false;
  for (;;) {
    const memory = SharedMemory.open(options.name);
    if (memory) {
      let keep = false;
      try {
        const st = memory.stat();
        if (uid !== null && st.uid !== uid) {
          throw new P2mError(
            `shared memory ${options.name} belongs to uid ${st.uid}, not ${uid}; refusing to read it`,
          );
        }
        if ((st.mode & 0o077) !== 0) {
          throw new P2mError(
            `shared memory ${options.name} is open to other users (mode ${
              (st.mode & 0o777).toString(8)
            }); refusing to trust it`,
          );
        }
        if (st.size > MAX_RING + 2 * 1024 * 1024) {
          throw new P2mError(`shared memory ${options.name} is not a p2m segment: too large`);
        }
        if (st.size > 0) {
          const buffer = memory.map(st.size);
          let info: SegmentInfo | undefined;
          try {
            info = readHeader(buffer, st.size);
          } catch (error) {
            if (!(error instanceof WireError)) throw error;
            throw new P2mError(
              `shared memory ${options.name} is not a usable p2m segment: ${error.message}`,
            );
          }
          if (info) {
            if (memory.isLocked(SENDER_LOCK_BYTE)) {
              keep = true;
              return { segment: new Segment(memory, buffer, info), info };
            }
            stale = true;
          }
        }
      } finally {
        if (!keep) memory.close();
      }
    }
    if (performance.now() > deadline) {
      throw new P2mError(
        stale
          ? `only a stale segment ${options.name} (its sender died) within ${options.timeoutSeconds} s`
          : `no sender on ${options.name} within ${options.timeoutSeconds} s`,
      );
    }
    await sleep(POLL_MS);
  }
}

async function receive(
  seg: Segment,
  info: SegmentInfo,
  options: ReceiverOptions,
  reporter: Reporter,
): Promise<number> {
  const early = seg.load(H.state);
  if (early === State.Aborted) throw new P2mError(abortMessage(seg));
  if (early === State.Closed) {
    throw new P2mError(`the transfer on ${options.name} has already finished`);
  }
  const output = OutputFile.create({
    out: options.out,
    name: info.name,
    mode: info.mode,
    force: options.force,
  });
  using _output = output;
  // Ready everything before joining: the sender streams once all have joined.
  const digest = await createDigest(info.digest);
  const index = Atomics.add(seg.i32, H.nextEntry, 1);
  if (index >= info.tableEntries) {
    throw new P2mError(
      `the transfer on ${options.name} already has ${info.tableEntries} receivers`,
    );
  }
  if (!seg.memory.tryLock(peerLockByte(index))) {
    throw new P2mError(`receiver slot #${index} of ${options.name} is locked by another process`);
  }
  Atomics.store(seg.i32, seg.entryField(index, E.pid), Deno.pid);
  Atomics.store(seg.i32, seg.entryField(index, E.state), Peer.Attached);
  seg.wakeSender();
  // Interrupted or refused: "left"; any other failure: "failed", which
  // the sender's summary counts against the transfer.
  const leaveAs = (state: number) => {
    if (seg.memory.mapped && seg.movePeer(index, Peer.Attached, state)) seg.wakeSender();
  };
  const stopAbortHook = onAbort(() => leaveAs(Peer.Left));
  let refused = false;
  try {
    // Read the shared state only after our entry is visible. From then on
    // the sender's ring gate counts our cursor (0), so chunk 0 can no longer
    // be overwritten; if fewer than K chunks were published when we looked,
    // the gate check for chunk K comes after our entry, and we are served
    // from the start. A file that fits in the ring is never overwritten.
    const state = seg.load(H.state);
    if (state === State.Closed) {
      refused = true;
      throw new P2mError(`the transfer on ${options.name} has already finished`);
    }
    if (info.totalChunks > info.slotCount && seg.load(H.published) >= info.slotCount) {
      refused = true;
      throw new P2mError(
        `the transfer on ${options.name} has already started and the file ` +
          `(${info.fileSize} bytes) is larger than the ring ` +
          `(${info.slotCount * info.chunkSize} bytes), so it cannot be served from the ` +
          `start; start receivers before the sender streams`,
      );
    }
    reporter.event("start", {
      transport: "shm",
      name: options.name,
      peer: index,
      file: info.name,
      size: info.fileSize,
      path: output.path,
    });
    const started = performance.now();
    const progress = reporter.progress("receiving", info.fileSize);
    const checker = new Checker(seg, index, options.name);
    const chunk = info.chunkSize;
    const waiting = seg.entryField(index, E.waiting);
    const cursorField = seg.entryField(index, E.cursor);
    const sem = seg.peerSem(index);
    const wakeSpace = Math.max(1, Math.floor(info.slotCount / 4));
    let cursor = 0;
    for (;;) {
      const published = seg.load(H.published);
      if (published > info.totalChunks || published < cursor) {
        throw new P2mError(`shared memory ${options.name} is corrupt (bad published count)`);
      }
      if (cursor < published) {
        while (cursor < published) {
          const length = Math.min(chunk, info.fileSize - cursor * chunk);
          const view = seg.slot(cursor, length);
          output.write(view);
          digest.update(view);
          cursor++;
          Atomics.store(seg.i32, cursorField, cursor);
          // Wake a waiting sender once a quarter of the ring is free (or we
          // are done), not for every slot: a wake-up costs ~60 µs here.
          if (
            seg.load(H.senderWaiting) === 1 &&
            (cursor === published ||
              info.slotCount - (published - seg.minCursor(published)) >= wakeSpace)
          ) seg.wakeSender();
        }
        progress.update(Math.min(info.fileSize, cursor * chunk));
        await checker.check();
        continue;
      }
      const state = seg.load(H.state);
      if (cursor === info.totalChunks && state >= State.Final) break;
      // Caught up: say so, re-check, and only then wait.
      Atomics.store(seg.i32, waiting, 1);
      if (seg.load(H.published) === cursor && seg.load(H.state) === state) {
        sem.wait(WAIT_SLICE_MS);
      }
      Atomics.store(seg.i32, waiting, 0);
      await checker.check();
    }
    await checker.check(true);
    const expected = seg.bytes.slice(DIGEST_OFFSET, DIGEST_OFFSET + DIGEST_LENGTH[info.digest]);
    const actual = digest.digest();
    if (!digestsEqual(expected, actual)) {
      output.abort();
      seg.movePeer(index, Peer.Attached, Peer.Failed);
      seg.wakeSender();
      throw new VerifyError(toHex(expected), toHex(actual));
    }
    try {
      // fsync may take a while for a large copy on a slow disk: say so,
      // so that the sender does not take it for a stall.
      Atomics.store(seg.i32, seg.entryField(index, E.committing), 1);
      output.commit();
    } catch (error) {
      seg.movePeer(index, Peer.Attached, Peer.Failed);
      seg.wakeSender();
      throw error;
    }
    const seconds = (performance.now() - started) / 1000;
    if (!seg.movePeer(index, Peer.Attached, Peer.Verified)) {
      // Evicted at the last moment: the sender counts us out, so do we. But
      // with --force the copy has already replaced the user's old file, and
      // removing it would lose both: keep the verified copy and say so.
      if (options.force) {
        throw new P2mError(
          `${checker.evictionMessage()}; the copy had already verified and replaced ` +
            `${output.path}, so it is kept`,
        );
      }
      try {
        Deno.removeSync(output.path);
      } catch { /* gone */ }
      throw new P2mError(checker.evictionMessage());
    }
    seg.wakeSender();
    const verified = info.digest !== "none";
    reporter.event("done", {
      bytes: info.fileSize,
      path: output.path,
      seconds,
      verified,
      digest: info.digest,
      value: toHex(actual),
    });
    reporter.info(
      `received ${output.path} (${formatBytes(info.fileSize)}) in ${seconds.toFixed(3)} s; ` +
        (verified ? `${info.digest} verified` : "not verified (sender used --no-verify)"),
    );
    return 0;
  } catch (error) {
    leaveAs(refused ? Peer.Left : Peer.Failed);
    if (error instanceof SenderDied) removeStaleSegment(seg, options.name);
    throw error;
  } finally {
    stopAbortHook();
  }
}

/** The sender's liveness lock is gone: it died without cleaning up. */
class SenderDied extends P2mError {
  constructor(name: string) {
    super(`the sender of ${name} died; copy discarded`);
    this.name = "SenderDied";
  }
}

/**
 * Unlinks the segment of a sender that died, so that a crash leaves nothing
 * in /dev/shm once its receivers are gone. Taking the dead sender's lock
 * first means only one party does it (a new sender judging it stale does
 * the same), and the inode check makes sure the name still means this
 * segment and not a new sender's.
 */
function removeStaleSegment(seg: Segment, name: string): void {
  try {
    if (!seg.memory.tryLock(SENDER_LOCK_BYTE)) return;
    const ino = seg.memory.stat().ino;
    const current = SharedMemory.open(name);
    const same = current?.stat().ino === ino;
    current?.close();
    if (same) SharedMemory.unlink(name);
    seg.memory.unlock(SENDER_LOCK_BYTE);
  } catch { /* best effort: the next sender replaces a stale segment anyway */ }
}

function abortMessage(seg: Segment): string {
  switch (seg.load(H.abortReason)) {
    case AbortReason.Interrupted:
      return "the sender was interrupted; transfer aborted, copy discarded";
    case AbortReason.SourceChanged:
      return "the source file changed while it was sent; copy discarded";
    default:
      return "the sender failed; transfer aborted, copy discarded";
  }
}

/** Watches the sender's liveness, the abort flag and our own entry. */
class Checker {
  #seg: Segment;
  #index: number;
  #name: string;
  #next = 0;

  constructor(seg: Segment, index: number, name: string) {
    this.#seg = seg;
    this.#index = index;
    this.#name = name;
  }

  async check(force = false): Promise<void> {
    const now = performance.now();
    // Yielding (for signal handlers) costs a timer tick: only with the checks.
    if (!force && now < this.#next) return;
    this.#next = now + HOUSEKEEPING_MS;
    const seg = this.#seg;
    if (seg.load(H.state) === State.Aborted) throw new P2mError(abortMessage(seg));
    if (seg.peerState(this.#index) !== Peer.Attached) throw new P2mError(this.evictionMessage());
    if (!seg.memory.isLocked(SENDER_LOCK_BYTE)) throw new SenderDied(this.#name);
    await sleep(0);
  }

  evictionMessage(): string {
    const state = this.#seg.peerState(this.#index);
    if (state === Peer.Stalled) {
      return "evicted by the sender: this receiver stalled past the stall timeout; copy discarded";
    }
    return "evicted by the sender; copy discarded";
  }
}
