/**
 * Faults in the shared-memory transport with real processes: kill -9 of a
 * receiver and of the sender mid-stream, a SIGSTOPped receiver, SIGINT and
 * SIGTERM, and hand-written hostile segments.
 */
import assert from "node:assert/strict";
import { SharedMemory } from "../ffi/mod.ts";
import { geometry, HeaderField, writeHeader } from "../shm/layout.ts";
import {
  listDir,
  makeFile,
  shmEntries,
  smallTmpfs,
  tempDir,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import {
  assertEmptyDir,
  assertNoSegment,
  assertSameBytes,
  receiver,
  sender,
  waitForPart,
  waitForSegment,
} from "./shm_helpers.ts";

const SIZE = 4 * 1024 * 1024;
/** About two seconds of streaming, so that a fault lands mid-transfer. */
const SLOW = ["--chunk", "65536", "--slots", "4", "--limit-rate", String(SIZE / 2)];

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir("p2m-shmf-");
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function finals(dir: string): string[] {
  return listDir(dir).filter((name) => !name.endsWith(".part"));
}

Deno.test("shm fault: kill -9 of one receiver at ~50%: the others verify, the sender reports it", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, ["--peers", "4", "--json", ...SLOW]);
    const outs = [0, 1, 2, 3].map((i) => `${dir}/out${i}`);
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 2);
    peers[0].child.kill("SIGKILL");
    const results = await Promise.all(peers.map((p) => p.done()));
    assert.equal(results[0].signal, "SIGKILL");
    for (const i of [1, 2, 3]) {
      assert.equal(results[i].code, 0, results[i].stderr);
      await assertSameBytes(`${outs[i]}/data.bin`, file);
    }
    const sent = await send.done();
    assert.equal(sent.code, 1, "not all receivers verified");
    assert.match(sent.stderr, /receiver #\d+ \(pid \d+\) died; evicted/);
    const summary = JSON.parse(sent.stdout.split("\n").find((l) => l.includes('"summary"'))!);
    assert.equal(summary.peers.filter((p: { status: string }) => p.status === "died").length, 1);
    assert.equal(summary.peers.filter((p: { verified: boolean }) => p.verified).length, 3);
    assert.deepEqual(finals(outs[0]), [], "the killed receiver has no final file");
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: kill -9 of the sender at ~50%: receivers fail within 2 s, the name is reusable", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, ["--peers", "2", "--quiet", ...SLOW]);
    const outs = [`${dir}/a`, `${dir}/b`];
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 2);
    send.child.kill("SIGKILL");
    const killedAt = performance.now();
    const results = await Promise.all(
      peers.map(async (p) => ({ ...await p.done(), at: performance.now() })),
    );
    await send.done();
    for (const result of results) {
      assert.equal(result.code, 1);
      assert.match(result.stderr, /the sender of p2m-f-\S+ died; copy discarded/);
      assert.ok(result.at - killedAt < 2500, `noticed after ${result.at - killedAt} ms`);
    }
    for (const out of outs) assertEmptyDir(out, "receiver of a dead sender");
    // The receivers removed the dead sender's segment on their way out.
    await assertNoSegment(name);
    // The next sender with that name starts cleanly.
    const next = sender(file, name, ["--chunk", "65536", "--slots", "4"]);
    const got = await receiver(name, `${dir}/c`, ["--quiet"]).done();
    assert.equal(got.code, 0, got.stderr);
    const sent = await next.done();
    assert.equal(sent.code, 0, sent.stderr);
    await assertSameBytes(`${dir}/c/data.bin`, file);
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: a SIGSTOPped receiver is evicted after --stall-timeout; the others finish", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, [
      "--peers",
      "3",
      "--json",
      "--stall-timeout",
      "1",
      ...SLOW,
    ]);
    const outs = [0, 1, 2].map((i) => `${dir}/out${i}`);
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 4);
    peers[0].child.kill("SIGSTOP");
    try {
      const others = await Promise.all([peers[1].done(), peers[2].done()]);
      for (const [i, result] of others.entries()) {
        assert.equal(result.code, 0, result.stderr);
        await assertSameBytes(`${outs[i + 1]}/data.bin`, file);
      }
      const sent = await send.done();
      assert.equal(sent.code, 1);
      assert.match(sent.stderr, /receiver #\d+ \(pid \d+\) stalled for 1 s; evicted/);
      const summary = JSON.parse(sent.stdout.split("\n").find((l) => l.includes('"summary"'))!);
      assert.deepEqual(
        summary.peers.map((p: { status: string }) => p.status).sort(),
        ["stalled", "verified", "verified"],
      );
    } finally {
      // Never leave a stopped process behind, even when an assertion fails.
      peers[0].child.kill("SIGCONT");
    }
    const stopped = await peers[0].done();
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /stalled|sender .* died/);
    assertEmptyDir(outs[0], "the evicted receiver");
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: SIGTERM to the sender aborts everyone cleanly (143, receivers 1)", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, ["--peers", "2", "--quiet", ...SLOW]);
    const outs = [`${dir}/a`, `${dir}/b`];
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 4);
    send.child.kill("SIGTERM");
    const sent = await send.done();
    assert.equal(sent.code, 143);
    for (const peer of peers) {
      const result = await peer.done();
      assert.equal(result.code, 1);
      assert.match(result.stderr, /sender was interrupted/);
    }
    for (const out of outs) assertEmptyDir(out, "aborted receiver");
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: SIGINT to one receiver: it exits 130 with no output, the other verifies", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, ["--peers", "2", "--json", ...SLOW]);
    const outs = [`${dir}/a`, `${dir}/b`];
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 4);
    peers[0].child.kill("SIGINT");
    const [interrupted, other] = await Promise.all(peers.map((p) => p.done()));
    assert.equal(interrupted.code, 130);
    assertEmptyDir(outs[0], "interrupted receiver");
    assert.equal(other.code, 0, other.stderr);
    await assertSameBytes(`${outs[1]}/data.bin`, file);
    const sent = await send.done();
    assert.equal(sent.code, 1, "one of two did not verify");
    assert.match(sent.stdout, /"status":"left"/);
    await assertNoSegment(name);
  });
});

/** Writes a valid header for a small ring into a new segment, then lets `spoil` break it. */
function hostileSegment(
  name: string,
  spoil: (i32: Int32Array, f64: Float64Array) => void,
  size?: number,
) {
  const geo = geometry(4096, 2);
  const memory = SharedMemory.create(name)!;
  const length = size ?? geo.segmentSize;
  memory.truncate(length);
  const buffer = memory.map(Math.max(length, geo.segmentSize));
  if (length >= geo.segmentSize) {
    writeHeader(buffer, {
      ...geo,
      fileSize: 5000,
      mode: 0o644,
      name: "evil.bin",
      digestCode: 1,
      digestLength: 8,
      peers: 1,
      pid: Deno.pid,
    });
    spoil(new Int32Array(buffer, 0, 1024), new Float64Array(buffer, 0, 512));
  }
  // Hold the sender's liveness lock, as a live (hostile) sender would.
  memory.tryLock(0);
  return memory;
}

Deno.test("shm fault: hostile segments are refused with a clear message", async () => {
  const cases: [string, (i32: Int32Array, f64: Float64Array) => void, RegExp, number?][] = [
    ["bad magic", (i32) => void (i32[HeaderField.magic] = 0x12345678), /bad magic/],
    [
      "wrong version",
      (i32) => void (i32[HeaderField.version] = 99),
      /unsupported segment version 99/,
    ],
    ["zero slots", (i32) => void (i32[HeaderField.slotCount] = 0), /bad slot count 0/],
    [
      "ring past the end",
      (i32) => void (i32[HeaderField.slotCount] = 1000),
      /does not end at the segment's end/,
    ],
    ["table past the ring", (i32) => void (i32[HeaderField.slotsOffset] = 4096), /bad ring offset/],
    [
      "size mismatch",
      (_i32, f64) => void (f64[10] = 2 ** 40),
      /header says .* bytes but the segment has/,
    ],
    [
      "huge name length",
      (i32) => void (i32[HeaderField.nameLength] = 1 << 30),
      /name length .* exceeds/,
    ],
    ["absurd chunk", (i32) => void (i32[HeaderField.chunkSize] = 4097), /bad chunk size 4097/],
    [
      "chunk count lie",
      (i32) => void (i32[HeaderField.totalChunks] = 1),
      /chunk count 1 does not match/,
    ],
    ["tiny segment", () => {}, /smaller than a header/, 100],
  ];
  await withDir(async (dir) => {
    const segments: SharedMemory[] = [];
    try {
      const runs = cases.map(([label, spoil, expected, size]) => {
        const name = uniqueName("p2m-h");
        segments.push(hostileSegment(name, spoil, size));
        return {
          label,
          expected,
          name,
          run: receiver(name, `${dir}/${segments.length}`, ["--timeout", "2"]),
        };
      });
      for (const { label, expected, run } of runs) {
        const result = await run.done();
        assert.equal(result.code, 1, `${label}: ${result.stderr}`);
        assert.match(result.stderr, /is not (a usable )?p2m segment|smaller than a header/, label);
        assert.match(result.stderr, expected, label);
        assert.equal(result.stderr.trim().split("\n").length, 1, `${label}: one line`);
      }
      for (let i = 1; i <= runs.length; i++) assertEmptyDir(`${dir}/${i}`, "refused receiver");
    } finally {
      for (const segment of segments) {
        SharedMemory.unlink(segment.name);
        segment.close();
      }
    }
  });
  assert.deepEqual(await import("./helpers.ts").then((h) => h.shmEntries("p2m-h-" + Deno.pid)), []);
});

Deno.test("shm fault: a stale segment (sender killed) is waited past by a receiver started early", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    // A segment whose sender died: valid header, nobody holds byte 0.
    const stale = hostileSegment(name, () => {});
    stale.unlock(0);
    const file = `${dir}/data.bin`;
    await makeFile(file, 70_000);
    try {
      const early = receiver(name, `${dir}/out`, ["--quiet"]);
      await new Promise((r) => setTimeout(r, 300));
      const send = sender(file, name, ["--quiet"]);
      const got = await early.done();
      assert.equal(got.code, 0, got.stderr);
      assert.equal((await send.done()).code, 0);
      await assertSameBytes(`${dir}/out/data.bin`, file);
    } finally {
      stale.close();
    }
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: a sender replaces a stale segment whose sender died", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const stale = hostileSegment(name, () => {});
    const staleIno = stale.stat().ino;
    stale.close(); // drops the "dead sender's" lock; the segment stays
    assert.equal((await shmEntries(name)).length, 1);
    const file = `${dir}/data.bin`;
    await makeFile(file, 10_000);
    const send = sender(file, name, []);
    // A receiver also removes a stale segment: start it once the sender has.
    await waitFor(
      () => {
        using current = SharedMemory.open(name);
        return current !== undefined && current.stat().ino !== staleIno;
      },
      10_000,
      "the sender's new segment",
    );
    const got = await receiver(name, `${dir}/out`, ["--quiet"]).done();
    assert.equal(got.code, 0, got.stderr);
    const sent = await send.done();
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stdout, /removed a stale segment/);
    await assertSameBytes(`${dir}/out/data.bin`, file);
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: the source growing mid-transfer aborts it: no receiver keeps a copy", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, SIZE);
    const send = sender(file, name, ["--peers", "2", "--quiet", ...SLOW]);
    const outs = [`${dir}/a`, `${dir}/b`];
    const peers = outs.map((out) => receiver(name, out, ["--quiet"]));
    await waitForPart(outs[0], SIZE / 4);
    await Deno.writeFile(file, new Uint8Array(100), { append: true });
    const sent = await send.done();
    assert.equal(sent.code, 1);
    assert.match(sent.stderr, /changed while it was sent/);
    for (const peer of peers) {
      const result = await peer.done();
      assert.equal(result.code, 1);
      assert.match(result.stderr, /source file changed/);
    }
    for (const out of outs) assertEmptyDir(out, "receiver of a changed source");
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: a segment open to other users is refused", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-h");
    const memory = SharedMemory.create(name, 0o644)!;
    try {
      memory.truncate(4096);
      const result = await receiver(name, `${dir}/out`, ["--timeout", "2"]).done();
      assert.equal(result.code, 1);
      assert.match(result.stderr, /is open to other users \(mode 644\); refusing to trust it/);
      assertEmptyDir(`${dir}/out`, "refused receiver");
    } finally {
      SharedMemory.unlink(name);
      memory.close();
    }
  });
});

Deno.test("shm fault: a receiver whose disk fills fails alone; the other verifies", async () => {
  await using full = await smallTmpfs("1m");
  if (!full) return; // mounting is not permitted here: nothing to test with
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, 3 * 1024 * 1024);
    const send = sender(file, name, ["--peers", "2", "--json", "--chunk", "65536", "--slots", "8"]);
    const filling = receiver(name, `${full.dir}/out`, ["--quiet"]);
    const healthy = receiver(name, `${dir}/ok`, ["--quiet"]);
    const [bad, good] = await Promise.all([filling.done(), healthy.done()]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /cannot write .*No space left on device; copy discarded/);
    assertEmptyDir(`${full.dir}/out`, "the receiver on a full disk");
    assert.equal(good.code, 0, good.stderr);
    await assertSameBytes(`${dir}/ok/data.bin`, file);
    const sent = await send.done();
    assert.equal(sent.code, 1);
    assert.match(sent.stdout, /"status":"failed"/);
    await assertNoSegment(name);
  });
});

Deno.test("shm fault: signals while waiting: a sender waiting for peers, a receiver waiting for a sender", async () => {
  await withDir(async (dir) => {
    const name = uniqueName("p2m-f");
    const file = `${dir}/data.bin`;
    await makeFile(file, 1000);
    const send = sender(file, name, ["--peers", "3", "--quiet"]);
    await waitForSegment(name);
    const one = receiver(name, `${dir}/a`, ["--quiet"]);
    // Its temp file exists once it holds the segment mapped: it will see the abort.
    await waitFor(() => listDir(`${dir}/a`).length > 0, 10_000, "the receiver's temp file");
    send.child.kill("SIGINT");
    const sent = await send.done();
    assert.equal(sent.code, 130);
    assert.match(sent.stderr, /interrupted by SIGINT/);
    const got = await one.done();
    assert.equal(got.code, 1);
    assert.match(got.stderr, /sender was interrupted/);
    assertEmptyDir(`${dir}/a`, "receiver of an interrupted sender");
    await assertNoSegment(name);

    const lonely = receiver(uniqueName("p2m-f"), `${dir}/b`, ["--quiet"]);
    await new Promise((r) => setTimeout(r, 300));
    lonely.child.kill("SIGTERM");
    const waited = await lonely.done();
    assert.equal(waited.code, 143);
    assertEmptyDir(`${dir}/b`, "receiver interrupted while waiting");
  });
});
