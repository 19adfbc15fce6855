/**
 * A mapped segment with typed views over its header, receiver table and
 * ring, shared by the sender and the receiver.
 *
 * @module
 */
import { Semaphore, type SharedMemory } from "../ffi/mod.ts";
import {
  E,
  ENTRY_SEM_OFFSET,
  ENTRY_SIZE,
  type Geometry,
  H,
  Peer,
  SENDER_SEM_OFFSET,
} from "./layout.ts";

/** Typed access to one mapped, validated segment. */
export class Segment implements Disposable {
  /** The shared-memory object. */
  readonly memory: SharedMemory;
  /** The segment's shape. */
  readonly geometry: Geometry;
  /** Header and table as i32 (Atomics work across processes on it). */
  readonly i32: Int32Array;
  /** The whole mapping as bytes. */
  readonly bytes: Uint8Array;
  /** The ring's bytes. */
  readonly ring: Uint8Array;
  /** The sender's "space" semaphore. */
  readonly senderSem: Semaphore;
  #entrySems: Semaphore[] = [];

  /** Wraps a mapping whose header is known to match `geometry`. */
  constructor(memory: SharedMemory, buffer: ArrayBuffer, geometry: Geometry) {
    this.memory = memory;
    this.geometry = geometry;
    this.i32 = new Int32Array(buffer, 0, geometry.slotsOffset / 4);
    this.bytes = new Uint8Array(buffer);
    this.ring = new Uint8Array(
      buffer,
      geometry.slotsOffset,
      geometry.chunkSize * geometry.slotCount,
    );
    this.senderSem = new Semaphore(memory, SENDER_SEM_OFFSET);
    for (let i = 0; i < geometry.tableEntries; i++) {
      this.#entrySems.push(new Semaphore(memory, this.#entryOffset(i) + ENTRY_SEM_OFFSET));
    }
  }

  /** Reads a header field atomically. */
  load(field: number): number {
    return Atomics.load(this.i32, field);
  }

  /** Writes a header field atomically. */
  store(field: number, value: number): void {
    Atomics.store(this.i32, field, value);
  }

  /** Index into {@linkcode i32} of a receiver entry's field. */
  entryField(index: number, field: number): number {
    return this.#entryOffset(index) / 4 + field;
  }

  /** A receiver entry's state. */
  peerState(index: number): number {
    return Atomics.load(this.i32, this.entryField(index, E.state));
  }

  /** Moves a receiver entry from state `from` to `to`; false if it was not in `from`. */
  movePeer(index: number, from: number, to: number): boolean {
    return Atomics.compareExchange(this.i32, this.entryField(index, E.state), from, to) === from;
  }

  /** A receiver's cursor: chunks it has consumed. */
  cursor(index: number): number {
    return Atomics.load(this.i32, this.entryField(index, E.cursor));
  }

  /** The semaphore a receiver waits on. */
  peerSem(index: number): Semaphore {
    return this.#entrySems[index];
  }

  /** Wakes receiver `index` if it says it is waiting. */
  wakePeer(index: number): void {
    const field = this.entryField(index, E.waiting);
    if (Atomics.compareExchange(this.i32, field, 1, 0) === 1) this.#entrySems[index].post();
  }

  /** The slowest live receiver's cursor, or `published` if there is none. */
  minCursor(published: number): number {
    let min = published;
    for (let i = 0; i < this.entriesUsed(); i++) {
      if (this.peerState(i) !== Peer.Attached) continue;
      const cursor = this.cursor(i);
      if (cursor < min) min = cursor;
    }
    return min;
  }

  /** Wakes the sender if it says it is waiting. */
  wakeSender(): void {
    if (Atomics.compareExchange(this.i32, H.senderWaiting, 1, 0) === 1) this.senderSem.post();
  }

  /** Entries in use so far (receivers claim them in order). */
  entriesUsed(): number {
    return Math.min(Atomics.load(this.i32, H.nextEntry), this.geometry.tableEntries);
  }

  /** The slot view for chunk `n` holding `length` bytes. */
  slot(n: number, length: number): Uint8Array {
    const start = (n % this.geometry.slotCount) * this.geometry.chunkSize;
    return this.ring.subarray(start, start + length);
  }

  /** Unmaps and closes (dropping this process's liveness lock). */
  close(): void {
    this.memory.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #entryOffset(index: number): number {
    return this.geometry.tableOffset + index * ENTRY_SIZE;
  }
}

/** Byte of the segment whose OFD lock marks the sender alive. */
export const SENDER_LOCK_BYTE = 0;
/** Byte whose OFD lock marks receiver `index` alive. */
export function peerLockByte(index: number): number {
  return 1 + index;
}

/** Sleeps for `ms` milliseconds, letting signal handlers run. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
