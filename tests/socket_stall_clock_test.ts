/**
 * StallClock (socket/stall_clock.ts): the one rule for blaming the other
 * side, driven with explicit times.
 *
 * @module
 */
import assert from "node:assert/strict";
import { StallClock } from "../socket/stall_clock.ts";

Deno.test("StallClock: silence past the limit, with regular ticks, is a stall", () => {
  const clock = new StallClock(1000, 100, 0);
  for (let now = 50; now <= 1000; now += 50) assert.equal(clock.tick(now), false, `at ${now}`);
  assert.equal(clock.tick(1050), true);
  assert.equal(clock.silentMs, 1050);
});

Deno.test("StallClock: progress restarts the count", () => {
  const clock = new StallClock(1000, 100, 0);
  for (let now = 50; now <= 900; now += 50) clock.tick(now);
  clock.progress(900);
  for (let now = 950; now <= 1900; now += 50) assert.equal(clock.tick(now), false, `at ${now}`);
  assert.equal(clock.tick(1950), true);
});

Deno.test("StallClock: time this process was not running is not the peer's fault", () => {
  const clock = new StallClock(1000, 100, 0);
  clock.tick(50);
  // Stopped for 5 s: the next tick comes late, and the count starts again.
  assert.equal(clock.tick(5050), false);
  assert.equal(clock.silentMs, 0);
  for (let now = 5100; now <= 6050; now += 50) assert.equal(clock.tick(now), false, `at ${now}`);
  assert.equal(clock.tick(6100), true);
});

Deno.test("StallClock: a gap just within the allowance still counts", () => {
  const clock = new StallClock(150, 100, 0);
  assert.equal(clock.tick(100), false); // exactly the gap: still running
  assert.equal(clock.tick(200), true); // 200 ms of silence > 150
});
