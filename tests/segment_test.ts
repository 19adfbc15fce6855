/**
 * shm/segment.ts on a real mapped segment in this process: the ring gate
 * (the slowest attached receiver's cursor), the one wait `park()` with its
 * wake compare-and-swap (no lost and no needless wake-up), the size check
 * and the semaphore check. Fast: no subprocess.
 */
import assert from "node:assert/strict";
import { CorruptSemaphoreError, SharedMemory } from "../ffi/mod.ts";
import { geometry, HEADER_AREA, ReceiverState, SENDER_SEM_OFFSET } from "../shm/layout.ts";
import { Segment, SegmentCorruptError, SENDER } from "../shm/segment.ts";
import { uniqueName } from "./helpers.ts";

/** A fresh, unlinked, mapped segment with initialised semaphores. */
function segment(): Segment {
  const name = uniqueName("p2m-u");
  const memory = SharedMemory.create(name)!;
  SharedMemory.unlink(name);
  const geo = geometry(4096, 4);
  memory.truncate(geo.segmentSize);
  const seg = new Segment(memory, memory.map(geo.segmentSize), geo);
  seg.initSemaphores();
  return seg;
}

/** Milliseconds `park` took. */
function timedPark(seg: Segment, who: number, stillBlocked: () => boolean, ms: number): number {
  const start = performance.now();
  seg.park(who, stillBlocked, ms);
  return performance.now() - start;
}

/** Attaches a receiver entry the way a receiver does; returns its index. */
function attach(seg: Segment, cursor: number, state: number = ReceiverState.Attached): number {
  const index = seg.claimEntry();
  seg.setEntryPid(index, 1000 + index);
  seg.setCursor(index, cursor);
  seg.setEntryState(index, state);
  return index;
}

Deno.test("segment: the gate is the slowest attached receiver's cursor, or published if none", () => {
  using seg = segment();
  assert.equal(seg.minCursor(7), 7, "no receivers: nothing gates");
  attach(seg, 5);
  const left = attach(seg, 1, ReceiverState.Left);
  attach(seg, 3);
  assert.equal(seg.entriesUsed(), 3);
  assert.equal(seg.minCursor(7), 3, "a receiver that left does not gate");
  assert.ok(seg.moveEntry(left, ReceiverState.Left, ReceiverState.Attached));
  assert.equal(seg.minCursor(7), 1);
  assert.ok(!seg.moveEntry(left, ReceiverState.Left, ReceiverState.Dead), "CAS from a wrong state");
  assert.ok(seg.moveEntry(left, ReceiverState.Attached, ReceiverState.Dead));
  assert.equal(seg.minCursor(7), 3, "an evicted receiver does not gate");
  assert.equal(seg.countEntries((s) => s === ReceiverState.Attached), 2);
});

Deno.test("segment: a wake while parked (after the flag, before the wait) is never lost", () => {
  using seg = segment();
  const index = attach(seg, 0);
  // The waker runs between "flag set" and "wait": its CAS sees the flag and posts.
  const ms = timedPark(seg, index, () => {
    seg.wakeReceiver(index);
    return true;
  }, 2000);
  assert.ok(ms < 1000, `parked ${ms} ms despite the wake`);
  const sender = timedPark(seg, SENDER, () => {
    seg.wakeSender();
    return true;
  }, 2000);
  assert.ok(sender < 1000, `sender parked ${sender} ms despite the wake`);
});

Deno.test("segment: a wake with nobody parked posts nothing (the flag is clear after park)", () => {
  using seg = segment();
  const index = attach(seg, 0);
  assert.equal(seg.park(index, () => false), false, "not blocked: no wait");
  seg.wakeReceiver(index); // flag clear: the CAS fails, no post
  seg.wakeSender();
  assert.ok(!seg.senderWaiting());
  assert.ok(timedPark(seg, index, () => true, 60) >= 45, "a stray post would end the wait early");
  assert.ok(timedPark(seg, SENDER, () => true, 60) >= 45, "a stray post would end the wait early");
  // An alert (abort, eviction) always posts.
  seg.alertReceiver(index);
  assert.ok(timedPark(seg, index, () => true, 2000) < 1000);
});

Deno.test("segment: a truncated segment and a scribbled semaphore are named, before anything is touched", () => {
  using seg = segment();
  seg.checkSize();
  const words = new Int32Array(seg.memory.buffer, SENDER_SEM_OFFSET, 8);
  words[2] = 0x1234; // glibc's "private" word of the sender's sem_t
  assert.throws(() => seg.park(SENDER, () => true, 10), CorruptSemaphoreError);
  assert.ok(!seg.senderWaiting(), "park clears its flag even when it throws");
  seg.memory.truncate(HEADER_AREA);
  assert.throws(() => seg.checkSize(), SegmentCorruptError);
  assert.throws(() => seg.checkSize(), /is corrupt: it was truncated to 4096 bytes of \d+/);
});
