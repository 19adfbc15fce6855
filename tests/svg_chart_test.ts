/**
 * tools/svg_chart.ts: round y ticks and the caption that says where and
 * when a chart was measured.
 *
 * @module
 */
import assert from "node:assert/strict";
import { lineChart, roundTicks } from "../tools/svg_chart.ts";

Deno.test("svg chart: y ticks are round multiples of 1, 2 or 5 × 10^k, 3 to 7 steps", () => {
  assert.deepEqual(roundTicks(4.73), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(roundTicks(1.81), [0, 0.5, 1, 1.5, 2]);
  assert.deepEqual(roundTicks(17), [0, 5, 10, 15, 20]);
  for (const max of [0.013, 0.24, 0.9, 1, 2.93, 3.8, 12.5, 44, 100, 730]) {
    const ticks = roundTicks(max);
    const step = ticks[1];
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 5].some((m) => Math.abs(m - mantissa) < 1e-9), `step ${step} for ${max}`);
    assert.ok(ticks.length >= 4 && ticks.length <= 8, `${ticks.length} ticks for ${max}`);
    assert.ok(ticks[ticks.length - 1] >= max && ticks[ticks.length - 2] < max, `${ticks} ${max}`);
  }
});

Deno.test("svg chart: the caption is drawn, escaped", () => {
  const svg = lineChart({
    title: "t",
    xLabels: ["1", "4"],
    xCaption: "peers",
    yCaption: "GiB/s",
    series: [{ name: "shm", color: "#000" }],
    panels: [{ title: "1 GiB", values: { shm: [1.3, 3.8] } }],
    caption: "2 vCPU <AMD>, 2026-12-01",
  });
  assert.match(svg, /class="caption"[^>]*>2 vCPU &lt;AMD&gt;, 2026-12-01</);
  for (const tick of ["0", "1", "2", "3", "4"]) assert.match(svg, new RegExp(`>${tick}</text>`));
  assert.doesNotMatch(svg, />1\.3<\/text>|>2\.5<\/text>/);
});
