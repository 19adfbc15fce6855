/**
 * AdmissionQueue (socket/admission.ts): slots, order and release.
 *
 * @module
 */
import assert from "node:assert/strict";
import { AdmissionQueue } from "../socket/admission.ts";

Deno.test("AdmissionQueue: the first maxActive start at once, the rest wait in order", () => {
  const queue = new AdmissionQueue<string>(2);
  assert.equal(queue.offer("a"), 0);
  assert.equal(queue.offer("b"), 0);
  assert.equal(queue.offer("c"), 1);
  assert.equal(queue.offer("d"), 2);
  assert.equal(queue.busy, 2);
  assert.deepEqual(queue.waiting, ["c", "d"]);
  assert.equal(queue.next(), undefined, "no slot is free");
  queue.release();
  assert.equal(queue.next(), "c");
  assert.equal(queue.next(), undefined);
  assert.deepEqual(queue.waiting, ["d"]);
  assert.equal(queue.busy, 2);
});

Deno.test("AdmissionQueue: a newcomer never overtakes the line, and leavers leave it", () => {
  const queue = new AdmissionQueue<string>(1);
  assert.equal(queue.offer("a"), 0);
  assert.equal(queue.offer("b"), 1);
  assert.equal(queue.offer("c"), 2);
  queue.release();
  // A slot is free but "b" waits: "x" goes to the back, not in front.
  assert.equal(queue.offer("x"), 3);
  assert.equal(queue.remove("b"), true);
  assert.equal(queue.remove("b"), false);
  assert.equal(queue.next(), "c");
  assert.deepEqual(queue.waiting, ["x"]);
});

Deno.test("AdmissionQueue: release without a slot and a bad size are errors", () => {
  assert.throws(() => new AdmissionQueue(0), RangeError);
  assert.throws(() => new AdmissionQueue(1.5), RangeError);
  const queue = new AdmissionQueue<number>(3);
  assert.throws(() => queue.release(), /without a slot/);
  queue.offer(1);
  queue.release();
  assert.equal(queue.busy, 0);
});
