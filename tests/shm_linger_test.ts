/**
 * shm `--linger` with real processes: two receivers on time, one that
 * joins while the first lap runs (too late for it: the file is larger
 * than the ring) and one that joins after it; all four verify, the summary
 * lists every receiver of every lap, and SIGTERM during the idle linger
 * ends it with exit 0. With `-`, --linger is refused.
 */
import assert from "node:assert/strict";
import { p2mArgv } from "../core/permissions.ts";
import { makeFile, spawnP2m, tempDir, uniqueName } from "./helpers.ts";
import { assertNoSegment, assertSameBytes, receiver, waitForPart } from "./shm_helpers.ts";
import { LineLog } from "./stdio_helpers.ts";

Deno.test("shm --linger: two on time, one during and one after the first lap all verify", async () => {
  const dir = await tempDir("p2m-shm-linger-");
  const name = uniqueName("p2m-lg");
  try {
    const file = `${dir}/data.bin`;
    await makeFile(file, 2 * 1024 * 1024 + 7, 3);
    const argv = p2mArgv("sharedmem.ts", [
      "sender",
      file,
      "--name",
      name,
      "--wait",
      "20",
      "--peers",
      "2",
      "--linger",
      "0",
      "--chunk",
      "65536",
      "--slots",
      "4",
      "--limit-rate",
      "4M",
      "--json",
    ]);
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const events = new LineLog(child.stdout);
    const onTime = [receiver(name, `${dir}/a`), receiver(name, `${dir}/b`)];
    // Well past the ring (256 KiB): too late for lap 1.
    await waitForPart(`${dir}/a`, 1024 * 1024);
    const during = receiver(name, `${dir}/c`);
    for (const r of onTime) assert.equal((await r.done()).code, 0);
    await events.waitFor((e) => e.event === "summary" && e.lap === 1);
    const after = receiver(name, `${dir}/d`);
    for (const r of [during, after]) {
      const result = await r.done();
      assert.equal(result.code, 0, result.stderr);
    }
    // Idle again, once the lap that served the last of them has reported:
    // a signal now ends the linger with the verdict of every lap.
    type Summary = { event: string; lap: number; peers: { verified: boolean }[] };
    const summaries = () => events.seen.filter((e) => e.event === "summary") as Summary[];
    const verifiedCount = () =>
      summaries().reduce((n, e) => n + e.peers.filter((p) => p.verified).length, 0);
    await events.waitFor(() => verifiedCount() >= 4);
    const lastLap = Math.max(...summaries().map((e) => e.lap));
    await events.waitFor((e) => e.event === "lap-waiting" && e.lap === lastLap + 1);
    child.kill("SIGTERM");
    const status = await child.status;
    await events.finished;
    assert.equal(status.code, 0, await stderr);
    const lap1 = events.seen.find((e) => e.event === "summary" && e.lap === 1) as {
      peers: { verified: boolean; status: string }[];
    };
    assert.equal(lap1.peers.filter((p) => p.verified).length, 2);
    const total = events.seen.find((e) => e.event === "linger-summary") as {
      ok: boolean;
      laps: number;
      peers: { verified: boolean; lap: number; status: string }[];
    };
    assert.equal(total.ok, true);
    assert.ok(total.laps >= 2);
    const verified = total.peers.filter((p) => p.verified);
    assert.equal(verified.length, 4, JSON.stringify(total.peers));
    assert.ok(verified.some((p) => p.lap >= 2));
    for (const out of ["a", "b", "c", "d"]) await assertSameBytes(`${dir}/${out}/data.bin`, file);
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shm --linger: refused with - (a stream cannot be replayed)", async () => {
  const result = await spawnP2m("sharedmem.ts", ["sender", "-", "--linger", "5"]).done();
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--linger replays a file .* stream, which cannot be replayed/);
});
