/**
 * The shared-memory receiver: finds and validates the segment, claims a
 * table entry, drains the ring into its output file and reports a verdict.
 *
 * Data path: the loop in {@linkcode receive} writes each published slot
 * to its {@linkcode Sink} (a file, a tree built from the tar stream, or
 * stdout for `--out -`; see core/sink.ts) and hashes it in place, then
 * publishes its cursor. A stream of unknown size gives each slot's length
 * in the slot-length table and its final size at the end.
 * Every shared word goes through {@link ./segment.ts}.
 *
 * @module
 */
import {
  checksumLine,
  createDigest,
  delay,
  DIGEST_LENGTH,
  digestsEqual,
  type ExpectedDigest,
  formatBytes,
  onAbort,
  ownerProblem,
  P2mError,
  type Reporter,
  toHex,
  VerifyError,
  WireError,
} from "../core/mod.ts";
import { NameWait } from "../core/name_wait.ts";
import { openSink, type Sink } from "../core/sink.ts";
import { EACCES, LibcError, SharedMemory, SHM_DIRECTORY, type UnixGroup } from "../ffi/mod.ts";
import {
  AbortReason,
  HEADER_AREA,
  MAX_RING,
  mayBeP2mLeftover,
  PEER_STATE_TEXT,
  readHeader,
  ReceiverState,
  type SegmentInfo,
  TransferState,
} from "./layout.ts";
import { receiverLockByte, Segment, SENDER_LOCK_BYTE } from "./segment.ts";
import { removeIfStale } from "./stale.ts";

/** What the receiver is asked to do. */
export interface ReceiverOptions {
  /** Segment name (without the leading slash). */
  name: string;
  /** `--out`: directory, file or tree path, or `-` for stdout. */
  out?: string;
  /** Seconds to wait for a sender. */
  timeoutSeconds: number;
  /** Replace an existing output file. */
  force: boolean;
  /** A digest published elsewhere that the copy must match too (`--expect`). */
  expect?: ExpectedDigest;
  /** `--group`: the segment must belong to this group (a sender of another user). */
  group?: UnixGroup;
}

/** How often the sender's liveness and signals are looked at (ms). */
const HOUSEKEEPING_MS = 200;
/**
 * How often to look again at a segment that exists but is still being set
 * up (ms). Receivers usually start with their sender, so a long period here
 * is added straight to the transfer. A name that is not there yet is waited
 * for with inotify instead ({@linkcode NameWait}).
 */
const POLL_MS = 5;

/** Runs a receiver to the end; returns the exit code. */
export async function runReceiver(options: ReceiverOptions, reporter: Reporter): Promise<number> {
  // A lingering sender (--linger) serves a receiver too late for one lap in
  // the next: a new segment under the same name with a higher lap number.
  for (let afterLap = 0;;) {
    const { segment, info } = await findSegment(options, afterLap);
    using _segment = segment;
    try {
      return await receive(segment, info, options, reporter);
    } catch (error) {
      if (!(error instanceof NextLap)) throw error;
      reporter.event("waiting-for-lap", { after: info.lap });
      afterLap = info.lap;
    }
  }
}

/** This lap is too far along for us; the sender lingers, so wait for its next one. */
class NextLap extends P2mError {
  constructor() {
    super("waiting for the next lap");
    this.name = "NextLap";
  }
}

/**
 * Waits up to the timeout for a live sender's segment and validates it.
 * A hostile or corrupt segment is refused at once; a stale one (no sender
 * holds its liveness lock) is removed, whatever its header says, and the
 * wait goes on for the next sender.
 */
async function findSegment(
  options: ReceiverOptions,
  afterLap = 0,
): Promise<{ segment: Segment; info: SegmentInfo }> {
  let deadline = performance.now() + options.timeoutSeconds * 1000;
  let stale = false;
  let deniedSince: number | undefined;
  using wait = new NameWait(`${SHM_DIRECTORY}/${options.name.replace(/^\//, "")}`, POLL_MS);
  for (;;) {
    // Whether what we wait for next comes as a change of the name
    // (created, replaced, removed, chmod'ed): a directory event. A segment
    // being set up changes through its mapping and locks, which send none.
    let byEvent = true;
    const memory = openUnlessDenied(options);
    if (memory === "denied") {
      deniedSince ??= performance.now();
      if (performance.now() - deniedSince > DENIED_GRACE_MS) {
        throw new P2mError(
          `shared memory ${options.name} exists but this user may not open it ` +
            `(permission denied); ${
              options.group
                ? `its sender must share it with group ${options.group.name} (--group)`
                : "a sender of another user must share it with --group GROUP"
            }`,
        );
      }
    } else if (memory) {
      let keep = false;
      try {
        const st = memory.stat();
        const problem = ownerProblem(`shared memory ${options.name}`, st, options.group, true);
        if (problem) throw new P2mError(problem);
        if (st.size > MAX_RING + 2 * 1024 * 1024) {
          throw new P2mError(`shared memory ${options.name} is not a p2m segment: too large`);
        }
        if (!memory.isLocked(SENDER_LOCK_BYTE)) {
          // No sender: a dead one's leftover, or one being created (whose
          // creator holds its flock, so removeIfStale leaves it).
          const header = st.size > 0 ? memory.map(Math.min(st.size, HEADER_AREA)) : undefined;
          if (!mayBeP2mLeftover(header)) {
            throw new P2mError(`shared memory ${options.name} is not a p2m segment (bad magic)`);
          }
          if (removeIfStale(memory)) stale = true;
          else byEvent = false; // its creator is setting it up
        } else if (st.size > 0) {
          const buffer = memory.map(st.size);
          let info: SegmentInfo | undefined;
          try {
            info = readHeader(buffer, st.size);
          } catch (error) {
            if (!(error instanceof WireError)) throw error;
            throw new P2mError(
              `shared memory ${options.name} is not a usable p2m segment: ${error.message}`,
              { cause: error },
            );
          }
          if (info && info.lap <= afterLap) {
            // The lap we were too late for is still running: its sender is
            // alive, so the wait for the next one starts again.
            deadline = performance.now() + options.timeoutSeconds * 1000;
          } else if (info) {
            keep = true;
            return { segment: new Segment(memory, buffer, info), info };
          } else {
            byEvent = false; // its sender is writing the header
          }
        }
      } finally {
        if (!keep) memory.close();
      }
    }
    if (performance.now() > deadline) {
      throw new P2mError(
        stale
          ? `only a stale segment ${options.name} (its sender died; removed) within ${options.timeoutSeconds} s`
          : `no sender on ${options.name} within ${options.timeoutSeconds} s`,
      );
    }
    await wait.next(byEvent, deadline - performance.now());
  }
}

/**
 * How long the segment may refuse us (EACCES) before the receiver says so
 * (ms): a sender with `--group` shares its new segment a moment after it
 * creates it, mode 0600.
 */
const DENIED_GRACE_MS = 1_000;

/** Opens the segment; "denied" if it exists but is not open to this user. */
function openUnlessDenied(options: ReceiverOptions): SharedMemory | "denied" | undefined {
  try {
    return SharedMemory.open(options.name);
  } catch (error) {
    if (error instanceof LibcError && error.errno === EACCES) return "denied";
    throw error;
  }
}

async function receive(
  seg: Segment,
  info: SegmentInfo,
  options: ReceiverOptions,
  reporter: Reporter,
): Promise<number> {
  const early = seg.transferState();
  if (early === TransferState.Aborted) throw new P2mError(abortMessage(seg));
  if (info.laps && early >= TransferState.Closed) throw new NextLap();
  if (early === TransferState.Closed) {
    throw new P2mError(`the transfer on ${options.name} has already finished`);
  }
  // A sender whose digest cannot be compared with --expect is refused first.
  options.expect?.checkAlgorithm(info.digest);
  let checker: Checker | undefined;
  const output: Sink = openSink({
    out: options.out,
    name: info.name,
    mode: info.mode,
    force: options.force,
    kind: info.tree ? "tree" : "file",
    limits: info.tree && info.sizeKnown ? { maxTotalBytes: info.fileSize } : undefined,
    // stdout full: keep watching the sender, the abort flag and signals.
    onWait: () => checker?.check(),
  });
  using _output = output;
  // Ready everything before joining: the sender streams once all have joined.
  const digest = await createDigest(info.digest);
  const index = seg.claimEntry();
  if (index >= info.tableEntries) {
    throw new P2mError(
      `the transfer on ${options.name} already has ${info.tableEntries} receivers`,
    );
  }
  if (!seg.memory.tryLock(receiverLockByte(index))) {
    throw new P2mError(`receiver slot #${index} of ${options.name} is locked by another process`);
  }
  seg.setEntryPid(index, Deno.pid);
  seg.setEntryState(index, ReceiverState.Attached);
  seg.wakeSender();
  // Interrupted or refused: "left"; any other failure: "failed", which
  // the sender's summary counts against the transfer.
  const leaveAs = (state: number) => {
    try {
      if (seg.memory.mapped && seg.moveEntry(index, ReceiverState.Attached, state)) {
        seg.wakeSender();
      }
    } catch { /* a corrupt or truncated segment: the sender notices our exit */ }
  };
  using _abortHook = {
    [Symbol.dispose]: onAbort(() => {
      leaveAs(ReceiverState.Left);
      output.abort();
    }),
  };
  let refused = false;
  try {
    // Read the shared state only after our entry is visible. From then on
    // the sender's ring gate counts our cursor (0), so chunk 0 can no longer
    // be overwritten. The sender claims chunk n's slot before it looks at
    // the cursors for it: if it has claimed no more than K (the slots), its
    // look for chunk K, the first to overwrite chunk 0, comes after our
    // entry, and we are served from the start. A file that fits in the ring
    // is never overwritten.
    const state = seg.transferState();
    const pastChunkZero = seg.claimed() > info.slotCount;
    // Too late for this lap (the rules below), with a lingering sender:
    // wait for the next lap instead of failing.
    const tooLate = state === TransferState.Closed ||
      (info.totalChunks > info.slotCount && pastChunkZero);
    if (info.laps && tooLate) {
      refused = true;
      throw new NextLap();
    }
    if (state === TransferState.Closed) {
      refused = true;
      throw new P2mError(`the transfer on ${options.name} has already finished`);
    }
    // A stream (size unknown) may always outgrow the ring.
    if (!info.sizeKnown && pastChunkZero) {
      refused = true;
      throw new P2mError(
        `the transfer on ${options.name} sends a stream (${info.name}) that has already ` +
          `started; a stream cannot be replayed, so start receivers before its input flows`,
      );
    }
    if (info.totalChunks > info.slotCount && pastChunkZero) {
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
      kind: info.tree ? "tree" : "file",
      size: info.sizeKnown ? info.fileSize : null,
      path: output.path,
    });
    const started = performance.now();
    const progress = reporter.progress("receiving", info.fileSize);
    const live = new Checker(seg, index);
    checker = live;
    const chunk = info.chunkSize;
    const wakeSpace = Math.max(1, Math.floor(info.slotCount / 4));
    // A stream's chunk count is known once the state is Final.
    const announced = info.sizeKnown ? info.totalChunks : Infinity;
    let cursor = 0;
    let bytes = 0;
    for (;;) {
      const published = seg.published();
      if (published > announced || published < cursor) {
        throw seg.corrupt(
          `the header says ${published} chunks published (of ${info.totalChunks}; ` +
            `this receiver has ${cursor})`,
        );
      }
      if (cursor < published) {
        while (cursor < published) {
          const length = info.sizeKnown
            ? Math.min(chunk, info.fileSize - cursor * chunk)
            : seg.slotLength(cursor);
          if (!info.sizeKnown && (length < 1 || length > chunk)) {
            throw seg.corrupt(`slot of chunk ${cursor} says ${length} bytes (chunk ${chunk})`);
          }
          const view = seg.slot(cursor, length);
          try {
            await output.write(view);
          } catch (error) {
            seg.checkSize(); // EFAULT from a truncated segment: say so
            throw error;
          }
          digest.update(view);
          bytes += length;
          cursor++;
          seg.setCursor(index, cursor);
          // Wake a waiting sender once a quarter of the ring is free, not
          // for every slot: a wake-up costs ~60 µs here. Nor when we have
          // caught up but a slower receiver still holds the ring: the sender
          // would find it full and park again. (Waits for anything but ring
          // space are woken by entry changes, never by cursors.)
          if (
            seg.senderWaiting() &&
            info.slotCount - (published - seg.minCursor(published)) >= wakeSpace
          ) seg.wakeSender();
        }
        progress.update(bytes);
        await live.check();
        continue;
      }
      const state = seg.transferState();
      if (state >= TransferState.Final && state !== TransferState.Aborted) {
        const total = info.sizeKnown ? info.totalChunks : seg.finalChunks();
        if (cursor === total) break;
        if (!info.sizeKnown && seg.published() !== total) {
          throw seg.corrupt(
            `the stream ended at ${total} chunks but ${seg.published()} are published`,
          );
        }
        if (cursor < seg.published()) continue;
      }
      // Caught up: park until the sender publishes more or changes state.
      seg.park(index, () => seg.published() === cursor && seg.transferState() === state);
      await live.check();
    }
    await live.check(true);
    const size = info.sizeKnown ? info.fileSize : seg.finalSize();
    if (bytes !== size) {
      throw seg.corrupt(`the transfer says ${size} bytes but ${bytes} arrived`);
    }
    const expected = seg.digest(DIGEST_LENGTH[info.digest]);
    if (expected.length > 0 && expected.every((byte) => byte === 0)) {
      throw seg.corrupt("the header says final but holds no digest");
    }
    const actual = digest.digest();
    if (!digestsEqual(expected, actual)) {
      output.abort();
      leaveAs(ReceiverState.Failed);
      if (output.kind === "stdout") {
        reporter.error(
          "the bytes written to stdout did NOT verify (digest mismatch); discard them",
        );
      }
      throw new VerifyError(toHex(expected), toHex(actual));
    }
    try {
      options.expect?.check(actual);
    } catch (error) {
      output.abort();
      leaveAs(ReceiverState.Failed);
      throw error;
    }
    try {
      // fsync may take a while for a large copy on a slow disk: say so,
      // so that the sender does not take it for a stall.
      seg.setCommitting(index);
      output.commit();
    } catch (error) {
      leaveAs(ReceiverState.Failed);
      throw error;
    }
    const seconds = (performance.now() - started) / 1000;
    if (!seg.moveEntry(index, ReceiverState.Attached, ReceiverState.Verified)) {
      // Evicted at the last moment: the sender counts us out, so do we. But
      // with --force the copy has already replaced the user's old file, and
      // removing it would lose both: keep the verified copy and say so.
      const why = live.entryChanged();
      if (options.force) {
        throw new P2mError(
          `${why.message}; the copy had already verified and replaced ${output.path}, so it is kept`,
        );
      }
      if (output.kind !== "stdout") {
        try {
          Deno.removeSync(output.path, { recursive: output.kind === "tree" });
        } catch { /* gone */ }
      }
      throw why;
    }
    seg.wakeSender();
    for (const warning of output.warnings) reporter.warn(warning);
    const verified = info.digest !== "none";
    reporter.event("done", {
      bytes: size,
      path: output.path,
      seconds,
      verified,
      digest: info.digest,
      value: toHex(actual),
    });
    const where = output.kind === "stdout"
      ? "to stdout"
      : `${output.kind === "tree" ? "tree " : ""}${output.path}`;
    reporter.info(
      `received ${where} (${formatBytes(size)}) in ${seconds.toFixed(3)} s; ` +
        (verified ? `${info.digest} verified` : "not verified (sender used --no-verify)"),
    );
    if (verified) reporter.info(checksumLine(toHex(actual), output.path));
    return 0;
  } catch (error) {
    leaveAs(refused ? ReceiverState.Left : ReceiverState.Failed);
    if (error instanceof SenderDied) removeIfStale(seg.memory);
    throw error;
  }
}

/** The sender's liveness lock is gone: it died without cleaning up. */
class SenderDied extends P2mError {
  constructor(name: string) {
    super(`the sender of ${name} died; copy discarded`);
    this.name = "SenderDied";
  }
}

function abortMessage(seg: Segment): string {
  switch (seg.abortReason()) {
    case AbortReason.Interrupted:
      return "the sender was interrupted; transfer aborted, copy discarded";
    case AbortReason.SourceChanged:
      return "the source file changed while it was sent; copy discarded";
    case AbortReason.Corrupt:
      return `the sender found shared memory ${seg.segmentName} corrupt; transfer aborted, copy discarded`;
    default:
      return "the sender failed; transfer aborted, copy discarded";
  }
}

/** Watches the segment's size, the abort flag, our own entry and the sender's liveness. */
class Checker {
  #seg: Segment;
  #index: number;
  #next = 0;

  constructor(seg: Segment, index: number) {
    this.#seg = seg;
    this.#index = index;
  }

  async check(force = false): Promise<void> {
    const now = performance.now();
    // Yielding (for signal handlers) costs a timer tick: only with the checks.
    if (!force && now < this.#next) return;
    this.#next = now + HOUSEKEEPING_MS;
    const seg = this.#seg;
    seg.checkSize();
    if (seg.transferState() === TransferState.Aborted) throw new P2mError(abortMessage(seg));
    if (seg.entryState(this.#index) !== ReceiverState.Attached) throw this.entryChanged();
    if (!seg.memory.isLocked(SENDER_LOCK_BYTE)) throw new SenderDied(seg.segmentName);
    await delay(0);
  }

  /**
   * Why our entry is no longer Attached: an eviction for a stall (the one
   * state the sender may write while we live), else a corrupt segment,
   * since only this receiver writes its verdicts and the sender marks dead
   * only a receiver whose lock is gone.
   */
  entryChanged(): P2mError {
    const state = this.#seg.entryState(this.#index);
    if (state === ReceiverState.Stalled) {
      return new P2mError(
        "evicted by the sender: this receiver stalled past the stall timeout; copy discarded",
      );
    }
    const text = PEER_STATE_TEXT[state] ?? `state ${state}`;
    return this.#seg.corrupt(
      `receiver #${this.#index}'s entry says ${text}, which this live receiver did not write; ` +
        `copy discarded`,
    );
  }
}
