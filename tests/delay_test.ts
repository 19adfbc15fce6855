/**
 * core/delay.ts: delays sleep at least their time, off the main thread or
 * (past the off-thread limit) with setTimeout; an alarm fires once, late
 * never early, and never after cancel().
 */
import assert from "node:assert/strict";
import { alarm, delay, OFF_THREAD_WAITS } from "../core/delay.ts";

Deno.test("delay: each of many overlapping delays waits at least its time", async () => {
  const started = performance.now();
  const waits = Array.from({ length: OFF_THREAD_WAITS * 3 }, (_, i) => 20 + 10 * (i % 5));
  const ended = await Promise.all(waits.map((ms) => delay(ms).then(() => performance.now())));
  ended.forEach((at, i) => assert.ok(at - started >= waits[i] - 0.5, `delay(${waits[i]})`));
});

Deno.test("alarm: fires once, not before its time; a cancelled one never fires", async () => {
  const started = performance.now();
  let fired = 0;
  let firedAt = 0;
  const kept = alarm(60, () => {
    fired++;
    firedAt = performance.now();
  }, 20);
  let cancelledFired = false;
  const cancelled = alarm(30, () => cancelledFired = true, 10);
  cancelled.cancel();
  let immediate = false;
  const now = alarm(0, () => immediate = true);
  assert.equal(immediate, false, "an alarm never fires inside alarm()");
  assert.equal(now.fired, false);
  await delay(150);
  assert.ok(immediate && now.fired, "an alarm of 0 ms fires on a later turn");
  assert.equal(fired, 1);
  assert.ok(kept.fired);
  assert.ok(firedAt - started >= 59.5, `fired after ${firedAt - started} ms`);
  assert.equal(cancelledFired, false);
  assert.equal(cancelled.fired, false);
});
