/**
 * The one place that reads and writes a mapped segment's shared words: the
 * header's live fields, every receiver entry, the semaphores, the digest and
 * the ring slots. Sender and receiver call these accessors and never touch
 * the words, `Atomics` or field indices themselves (Aeron's
 * `LogBufferDescriptor` style: one named accessor per shared field, its
 * memory ordering stated on it).
 *
 * Memory ordering: every shared word is read and written with `Atomics`,
 * which are sequentially consistent (on x86_64 a store is a locked `xchg`),
 * also across processes on the same mapping. "Release" below means: every
 * write this process made before the store (ring bytes, the digest, other
 * fields) is visible to a process that then loads the new value; "acquire"
 * means the mirror for the loading side. Plain byte writes (the ring, the
 * digest) are ordered by the atomic store that publishes them.
 *
 * The one wait, {@linkcode Segment.park}: say "waiting" in a flag, re-check
 * the condition, wait on the semaphore for one timed slice, clear the flag.
 * A waker clears the flag with a compare-and-swap and posts only if it was
 * set ({@linkcode Segment.wakeSender}, {@linkcode Segment.wakeReceiver}), so
 * a wake-up is paid only by a process that really sleeps, and none is lost:
 * whoever changes the condition after the re-check sees the flag.
 *
 * @module
 */
import { P2mError } from "../core/mod.ts";
import { EPERM, LibcError, Semaphore, type SharedMemory, type UnixGroup } from "../ffi/mod.ts";
import {
  DIGEST_OFFSET,
  ENTRY_SEM_OFFSET,
  ENTRY_SIZE,
  EntryField,
  FINAL_SIZE_OFFSET,
  type Geometry,
  HeaderField,
  ReceiverState,
  SENDER_SEM_OFFSET,
} from "./layout.ts";

/** Byte of the segment whose OFD lock marks the sender alive. */
export const SENDER_LOCK_BYTE = 0;
/** Byte whose OFD lock marks receiver `index` alive. */
export function receiverLockByte(index: number): number {
  return 1 + index;
}

/** Who parks in {@linkcode Segment.park}: the sender, or a receiver's entry index. */
export const SENDER = -1;

/** Longest single semaphore wait (ms): every waiter re-checks liveness and signals this often. */
export const WAIT_SLICE_MS = 100;

/** The segment holds words no p2m process would write: another process overwrote it. */
export class SegmentCorruptError extends P2mError {
  /** `shared memory NAME is corrupt: CAUSE`. */
  constructor(segmentName: string, cause: string) {
    super(`shared memory ${segmentName} is corrupt: ${cause}`);
    this.name = "SegmentCorruptError";
  }
}

/**
 * `--group` on the sender: gives its new segment to `group` with mode
 * 0660, so receivers of other users in that group can attach (the
 * semaphores live in the segment, so nothing else needs sharing).
 */
export function shareWithGroup(memory: SharedMemory, group: UnixGroup): void {
  try {
    memory.shareWithGroup(group.gid);
  } catch (error) {
    if (!(error instanceof LibcError && error.errno === EPERM)) throw error;
    throw new P2mError(
      `cannot share shared memory ${memory.name.slice(1)} with group ${group.name}: ` +
        `this user is not a member of it`,
      { cause: error },
    );
  }
}

/** Typed access to one mapped, validated segment. */
export class Segment implements Disposable {
  /** The shared-memory object. */
  readonly memory: SharedMemory;
  /** The segment's shape. */
  readonly geometry: Geometry;
  /** The segment's name, without the leading slash (for messages). */
  readonly segmentName: string;
  #words: Int32Array;
  #bytes: Uint8Array;
  #finalSize: Float64Array;
  #ring: Uint8Array;
  #senderSem: Semaphore;
  #entrySems: Semaphore[] = [];

  /** Wraps a mapping whose header is known to match `geometry`. */
  constructor(memory: SharedMemory, buffer: ArrayBuffer, geometry: Geometry) {
    this.memory = memory;
    this.geometry = geometry;
    this.segmentName = memory.name.replace(/^\//, "");
    this.#words = new Int32Array(buffer, 0, geometry.slotsOffset / 4);
    this.#bytes = new Uint8Array(buffer);
    this.#finalSize = new Float64Array(buffer, FINAL_SIZE_OFFSET, 1);
    this.#ring = new Uint8Array(
      buffer,
      geometry.slotsOffset,
      geometry.chunkSize * geometry.slotCount,
    );
    this.#senderSem = new Semaphore(memory, SENDER_SEM_OFFSET);
    for (let i = 0; i < geometry.tableEntries; i++) {
      this.#entrySems.push(new Semaphore(memory, this.#entryOffset(i) + ENTRY_SEM_OFFSET));
    }
  }

  /** Initialises every semaphore (sender only, on a zeroed segment, before the header). */
  initSemaphores(): void {
    this.#senderSem.init(0);
    for (const sem of this.#entrySems) sem.init(0);
  }

  // --- header: written by the sender only -------------------------------

  /** The transfer state ({@linkcode TransferState}). Acquire: a Final state means the digest is readable. */
  transferState(): number {
    return Atomics.load(this.#words, HeaderField.state);
  }

  /** Sets the transfer state. Release: publishes the digest (before Final) and the abort reason (before Aborted). */
  setTransferState(state: number): void {
    Atomics.store(this.#words, HeaderField.state, state);
  }

  /** Why the transfer was aborted ({@linkcode AbortReason}). Read after loading the Aborted state. */
  abortReason(): number {
    return Atomics.load(this.#words, HeaderField.abortReason);
  }

  /** Sets the abort reason; store it before the Aborted state, which releases it. */
  setAbortReason(reason: number): void {
    Atomics.store(this.#words, HeaderField.abortReason, reason);
  }

  /** Chunks published so far. Acquire: slots below it hold their chunk's bytes. */
  published(): number {
    return Atomics.load(this.#words, HeaderField.published);
  }

  /** Publishes chunks below `count`. Release: their slot bytes were written before. */
  setPublished(count: number): void {
    Atomics.store(this.#words, HeaderField.published, count);
  }

  /**
   * Chunks the sender has claimed a slot for: it stores `n + 1` before it
   * reads the cursors that decide whether chunk `n` may take its slot.
   * Sequentially consistent, like a receiver's entry store, so the two are
   * a Dekker pair: a receiver that made its entry visible and then reads
   * `claimed() <= slotCount` is counted by the gate of every chunk that
   * would overwrite chunk 0.
   */
  claimed(): number {
    return Atomics.load(this.#words, HeaderField.claimed);
  }

  /** Says the sender is about to check the gate for chunk `count - 1`; store it before that check. */
  setClaimed(count: number): void {
    Atomics.store(this.#words, HeaderField.claimed, count);
  }

  /** The final digest's first `length` bytes (a copy). Valid once the state is Final. */
  digest(length: number): Uint8Array {
    return this.#bytes.slice(DIGEST_OFFSET, DIGEST_OFFSET + length);
  }

  /** Writes the final digest; the Final state stored after it releases it. */
  setDigest(digest: Uint8Array): void {
    this.#bytes.set(digest, DIGEST_OFFSET);
  }

  /** A stream's final chunk count. Valid once the state is Final. */
  finalChunks(): number {
    return Atomics.load(this.#words, HeaderField.finalChunks);
  }

  /** Writes a stream's final chunk count; the Final state stored after it releases it. */
  setFinalChunks(count: number): void {
    Atomics.store(this.#words, HeaderField.finalChunks, count);
  }

  /** A stream's final size in bytes. Valid once the state is Final. */
  finalSize(): number {
    return this.#finalSize[0];
  }

  /** Writes a stream's final size; the Final state stored after it releases it. */
  setFinalSize(bytes: number): void {
    this.#finalSize[0] = bytes;
  }

  // --- receiver table ----------------------------------------------------

  /**
   * Claims the next free entry (an atomic add on the header's entry
   * counter); the index may be past the table, which the caller refuses.
   */
  claimEntry(): number {
    return Atomics.add(this.#words, HeaderField.nextEntry, 1);
  }

  /** Entries in use so far (receivers claim them in order). */
  entriesUsed(): number {
    return Math.min(Atomics.load(this.#words, HeaderField.nextEntry), this.geometry.tableEntries);
  }

  /** Calls `visit` for every entry in use, with its state. The one scan over the table. */
  forEachEntry(visit: (index: number, state: number) => void): void {
    const used = this.entriesUsed();
    for (let i = 0; i < used; i++) visit(i, this.entryState(i));
  }

  /** Entries in use whose state satisfies `test`. */
  countEntries(test: (state: number) => boolean): number {
    let count = 0;
    this.forEachEntry((_, state) => {
      if (test(state)) count++;
    });
    return count;
  }

  /**
   * The gate: the slowest attached receiver's cursor, or `published` if
   * none is attached. The sender may overwrite slot `n % K` only once this
   * is above `n - K`.
   */
  minCursor(published: number): number {
    let min = published;
    this.forEachEntry((i, state) => {
      if (state !== ReceiverState.Attached) return;
      const cursor = this.cursor(i);
      if (cursor < min) min = cursor;
    });
    return min;
  }

  /** Entry `index`'s state ({@linkcode ReceiverState}). Acquire. */
  entryState(index: number): number {
    return Atomics.load(this.#words, this.#field(index, EntryField.state));
  }

  /** Sets entry `index`'s state (the receiver, when it attaches). Release: publishes its pid. */
  setEntryState(index: number, state: number): void {
    Atomics.store(this.#words, this.#field(index, EntryField.state), state);
  }

  /** Moves entry `index` from `from` to `to` (compare-and-swap); false if it was not in `from`. */
  moveEntry(index: number, from: number, to: number): boolean {
    const field = this.#field(index, EntryField.state);
    return Atomics.compareExchange(this.#words, field, from, to) === from;
  }

  /** Chunks receiver `index` has consumed. Acquire: it is done reading the slots below. */
  cursor(index: number): number {
    return Atomics.load(this.#words, this.#field(index, EntryField.cursor));
  }

  /** Says receiver `index` has consumed chunks below `count`. Release: frees their slots. */
  setCursor(index: number, count: number): void {
    Atomics.store(this.#words, this.#field(index, EntryField.cursor), count);
  }

  /** The pid receiver `index` wrote when it attached (for messages and audits). */
  entryPid(index: number): number {
    return Atomics.load(this.#words, this.#field(index, EntryField.pid));
  }

  /** Records this receiver's pid; stored before its Attached state. */
  setEntryPid(index: number, pid: number): void {
    Atomics.store(this.#words, this.#field(index, EntryField.pid), pid);
  }

  /** Whether receiver `index` says it is committing (fsync and rename). */
  committing(index: number): boolean {
    return Atomics.load(this.#words, this.#field(index, EntryField.committing)) === 1;
  }

  /** Says this receiver is committing, so the sender grants it the commit grace. */
  setCommitting(index: number): void {
    Atomics.store(this.#words, this.#field(index, EntryField.committing), 1);
  }

  // --- waiting and waking ------------------------------------------------

  /** Whether the sender says it is parked (a receiver wakes it only then). */
  senderWaiting(): boolean {
    return Atomics.load(this.#words, HeaderField.senderWaiting) === 1;
  }

  /**
   * Parks `who` ({@linkcode SENDER} or an entry index): sets its waiting
   * flag, re-checks `stillBlocked`, waits one timed slice on its semaphore
   * if still blocked, and clears the flag. Returns whether it waited. The
   * caller loops and does its housekeeping between slices.
   */
  park(who: number, stillBlocked: () => boolean, ms = WAIT_SLICE_MS): boolean {
    const flag = who === SENDER ? HeaderField.senderWaiting : this.#field(who, EntryField.waiting);
    const sem = who === SENDER ? this.#senderSem : this.#entrySems[who];
    Atomics.store(this.#words, flag, 1);
    try {
      if (!stillBlocked()) return false;
      sem.wait(ms);
      return true;
    } finally {
      Atomics.store(this.#words, flag, 0);
    }
  }

  /** Wakes the sender if it says it is parked (compare-and-swap of its flag, then a post). */
  wakeSender(): void {
    if (Atomics.compareExchange(this.#words, HeaderField.senderWaiting, 1, 0) === 1) {
      this.#senderSem.post();
    }
  }

  /** Wakes receiver `index` if it says it is parked (compare-and-swap of its flag, then a post). */
  wakeReceiver(index: number): void {
    const field = this.#field(index, EntryField.waiting);
    if (Atomics.compareExchange(this.#words, field, 1, 0) === 1) this.#entrySems[index].post();
  }

  /** Posts receiver `index`'s semaphore unconditionally (abort, eviction: it must look now). */
  alertReceiver(index: number): void {
    this.#entrySems[index].post();
  }

  // --- the ring ------------------------------------------------------------

  /** Bytes in chunk `n`'s slot (a stream's slots). Acquire through {@linkcode published}. */
  slotLength(n: number): number {
    return Atomics.load(this.#words, this.#lengthField(n));
  }

  /** Says chunk `n`'s slot holds `length` bytes; the publish after it releases it. */
  setSlotLength(n: number, length: number): void {
    Atomics.store(this.#words, this.#lengthField(n), length);
  }

  /** The slot view for chunk `n` holding `length` bytes. */
  slot(n: number, length: number): Uint8Array {
    const start = (n % this.geometry.slotCount) * this.geometry.chunkSize;
    return this.#ring.subarray(start, start + length);
  }

  /**
   * Throws {@linkcode SegmentCorruptError} if the object is no longer as
   * large as its mapping (another process truncated it): touching the
   * missing pages would be a SIGBUS. One fstat, cheap enough for every
   * housekeeping round.
   */
  checkSize(): void {
    const size = this.memory.stat().size;
    if (size !== this.geometry.segmentSize) {
      throw new SegmentCorruptError(
        this.segmentName,
        `it was truncated to ${size} bytes of ${this.geometry.segmentSize}`,
      );
    }
  }

  /** A {@linkcode SegmentCorruptError} for this segment. */
  corrupt(cause: string): SegmentCorruptError {
    return new SegmentCorruptError(this.segmentName, cause);
  }

  /** Unmaps and closes (dropping this process's liveness lock; an owner unlinks its name). */
  close(): void {
    this.memory.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #lengthField(n: number): number {
    return this.geometry.lengthsOffset / 4 + (n % this.geometry.slotCount);
  }

  #entryOffset(index: number): number {
    return this.geometry.tableOffset + index * ENTRY_SIZE;
  }

  #field(index: number, field: number): number {
    return this.#entryOffset(index) / 4 + field;
  }
}
