/**
 * Faults in the shared-memory transport with real processes: kill -9 of a
 * receiver and of the sender mid-stream, a SIGSTOPped receiver, SIGINT and
 * SIGTERM, and hand-written hostile segments.
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { SharedMemory } from "../ffi/mod.ts";
import {
  FILE_SIZE_OFFSET,
  geometry,
  HeaderField,
  TransferState,
  writeHeader,
} from "../shm/layout.ts";
import { Segment } from "../shm/segment.ts";
import {
  type Finished,
  listDir,
  makeFile,
  shmEntries,
  smallTmpfs,
  uniqueName,
  waitFor,
  withTempDir,
} from "./helpers.ts";
import {
  assertAllFailed,
  assertEmptyDir,
  assertNameReusable,
  assertNoSegment,
  assertReceiversFailed,
  assertSameBytes,
  receiver,
  sender,
  SLOW_SIZE as SIZE,
  type SlowTransfer,
  startSlowTransfer,
  summaryOf,
  waitForPart,
  waitForSegment,
  withShm,
} from "./shm_helpers.ts";

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  await withTempDir("p2m-shmf-", body);
}

function finals(dir: string): string[] {
  return listDir(dir).filter((name) => !name.endsWith(".part"));
}

/** How a slow transfer ended after a fault: what each process said. */
interface Outcome extends SlowTransfer {
  dir: string;
  /** When the fault was injected. */
  injectedAt: number;
  /** The sender's end. */
  sent: Finished;
  /** Each receiver's end, with the moment it ended. */
  results: (Finished & { at: number })[];
}

/**
 * A fault injected into a slow transfer to `peers` receivers once the
 * first receiver holds `at` of the file; `verdict` checks what everyone did.
 * Afterwards the segment must be gone.
 */
function midTransferFault(
  name: string,
  { peers, senderArgs, at }: { peers: number; senderArgs: string[]; at: number },
  inject: (transfer: SlowTransfer) => void,
  verdict: (outcome: Outcome) => void | Promise<void>,
): void {
  Deno.test(`shm fault: ${name}`, async () => {
    await withDir(async (dir) => {
      const transfer = await startSlowTransfer(dir, { peers, senderArgs, prefix: "p2m-f" });
      await waitForPart(transfer.outs[0], SIZE * at);
      inject(transfer);
      const injectedAt = performance.now();
      const results = await Promise.all(
        transfer.receivers.map(async (p) => ({ ...await p.done(), at: performance.now() })),
      );
      const sent = await transfer.send.done();
      await verdict({ ...transfer, dir, injectedAt, sent, results });
      await assertNoSegment(transfer.name);
    });
  });
}

midTransferFault(
  "kill -9 of one receiver at ~50%: the others verify, the sender reports it",
  { peers: 4, senderArgs: ["--json"], at: 1 / 2 },
  ({ receivers }) => receivers[0].child.kill("SIGKILL"),
  async ({ file, outs, sent, results }) => {
    assert.equal(results[0].signal, "SIGKILL");
    for (const i of [1, 2, 3]) {
      assert.equal(results[i].code, 0, results[i].stderr);
      await assertSameBytes(`${outs[i]}/data.bin`, file);
    }
    assert.equal(sent.code, 1, "not all receivers verified");
    assert.match(sent.stderr, /receiver #\d+ \(pid \d+\) died; evicted/);
    const summary = summaryOf(sent.stdout);
    assert.equal(summary.peers.filter((p) => p.status === "died").length, 1);
    assert.equal(summary.peers.filter((p) => p.verified).length, 3);
    assert.deepEqual(finals(outs[0]), [], "the killed receiver has no final file");
  },
);

midTransferFault(
  "kill -9 of the sender at ~50%: receivers fail within 2 s, the name is reusable",
  { peers: 2, senderArgs: ["--quiet"], at: 1 / 2 },
  ({ send }) => send.child.kill("SIGKILL"),
  async ({ dir, name, file, outs, results, injectedAt: killedAt }) => {
    for (const result of results) {
      assert.equal(result.code, 1);
      assert.match(result.stderr, /the sender of p2m-f-\S+ died; copy discarded/);
      assert.ok(result.at - killedAt < 2500, `noticed after ${result.at - killedAt} ms`);
    }
    for (const out of outs) assertEmptyDir(out, "receiver of a dead sender");
    // The receivers removed the dead sender's segment on their way out.
    await assertNoSegment(name);
    // The next sender with that name starts cleanly.
    await assertNameReusable(file, name, `${dir}/c`, ["--chunk", "65536", "--slots", "4"]);
  },
);

midTransferFault(
  "SIGTERM to the sender aborts everyone cleanly (143, receivers 1)",
  { peers: 2, senderArgs: ["--quiet"], at: 1 / 4 },
  ({ send }) => send.child.kill("SIGTERM"),
  ({ outs, sent, results }) => {
    assert.equal(sent.code, 143);
    assertAllFailed(results, outs, /sender was interrupted/, "aborted receiver");
  },
);

midTransferFault(
  "SIGINT to one receiver: it exits 130 with no output, the other verifies",
  { peers: 2, senderArgs: ["--json"], at: 1 / 4 },
  ({ receivers }) => receivers[0].child.kill("SIGINT"),
  async ({ file, outs, sent, results: [interrupted, other] }) => {
    assert.equal(interrupted.code, 130);
    assertEmptyDir(outs[0], "interrupted receiver");
    assert.equal(other.code, 0, other.stderr);
    await assertSameBytes(`${outs[1]}/data.bin`, file);
    assert.equal(sent.code, 1, "one of two did not verify");
    assert.match(sent.stdout, /"status":"left"/);
  },
);

midTransferFault(
  "the source growing mid-transfer aborts it: no receiver keeps a copy",
  { peers: 2, senderArgs: ["--quiet"], at: 1 / 4 },
  ({ file }) => Deno.writeFileSync(file, new Uint8Array(100), { append: true }),
  ({ outs, sent, results }) => {
    assert.equal(sent.code, 1);
    assert.match(sent.stderr, /changed while it was sent/);
    assertAllFailed(results, outs, /source file changed/, "receiver of a changed source");
  },
);

Deno.test("shm fault: a SIGSTOPped receiver is evicted after --stall-timeout; the others finish", async () => {
  await withDir(async (dir) => {
    const { name, file, outs, send, receivers: peers } = await startSlowTransfer(dir, {
      peers: 3,
      senderArgs: ["--json", "--stall-timeout", "1"],
      prefix: "p2m-f",
    });
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
      assert.deepEqual(
        summaryOf(sent.stdout).peers.map((p) => p.status).sort(),
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

Deno.test("shm fault: a receiver beyond --peers interrupted mid-copy fails the sender too", async () => {
  await withDir(async (dir) => {
    // 4 MiB at 2 MiB/s in an 8 MiB ring: a receiver that attaches late is
    // still served from the start, so both are in this lap.
    const file = `${dir}/data.bin`;
    await makeFile(file, 4 << 20);
    const name = uniqueName("p2m-f");
    const send = sender(file, name, [
      "--peers",
      "1",
      "--slots",
      "8",
      "--chunk",
      "1M",
      "--limit-rate",
      "2M",
      "--json",
    ]);
    const [kept, extra] = [receiver(name, `${dir}/a`, ["--quiet"]), receiver(name, `${dir}/b`)];
    await waitForPart(`${dir}/b`, 1 << 20);
    extra.child.kill("SIGTERM");
    const [gone, got, sent] = await Promise.all([extra.done(), kept.done(), send.done()]);
    assert.equal(gone.code, 143, gone.stderr);
    assert.equal(got.code, 0, got.stderr);
    await assertSameBytes(`${dir}/a/data.bin`, file);
    assertEmptyDir(`${dir}/b`, "the interrupted receiver");
    assert.equal(sent.code, 1, sent.stderr);
    assert.deepEqual(summaryOf(sent.stdout).peers.map((p) => p.status).sort(), [
      "left",
      "verified",
    ]);
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
  assert.deepEqual(await shmEntries("p2m-h-" + Deno.pid), []);
});

Deno.test("shm fault: a stale segment (sender killed) is waited past by a receiver started early", async () => {
  await withShm("p2m-shmf-", "p2m-f", async ({ dir, name }) => {
    // A segment whose sender died: valid header, nobody holds byte 0.
    const stale = hostileSegment(name, () => {});
    stale.unlock(0);
    const file = `${dir}/data.bin`;
    await makeFile(file, 70_000);
    try {
      const early = receiver(name, `${dir}/out`, ["--quiet"]);
      await delay(300);
      const send = sender(file, name, ["--quiet"]);
      const got = await early.done();
      assert.equal(got.code, 0, got.stderr);
      assert.equal((await send.done()).code, 0);
      await assertSameBytes(`${dir}/out/data.bin`, file);
    } finally {
      stale.close();
    }
  });
});

Deno.test("shm fault: a sender replaces a stale segment whose sender died", async () => {
  await withShm("p2m-shmf-", "p2m-f", async ({ dir, name }) => {
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
  });
});

Deno.test("shm fault: a segment open to other users is refused", async () => {
  await withShm("p2m-shmf-", "p2m-h", async ({ dir, name }) => {
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
  await withShm("p2m-shmf-", "p2m-f", async ({ dir, name }) => {
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
  });
});

Deno.test("shm fault: signals while waiting: a sender waiting for peers, a receiver waiting for a sender", async () => {
  await withShm("p2m-shmf-", "p2m-f", async ({ dir, name }) => {
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
    await assertReceiversFailed(
      [one],
      [`${dir}/a`],
      /sender was interrupted/,
      "receiver of an interrupted sender",
    );
    await assertNoSegment(name);

    const lonely = receiver(uniqueName("p2m-f"), `${dir}/b`, ["--quiet"]);
    await delay(300);
    lonely.child.kill("SIGTERM");
    const waited = await lonely.done();
    assert.equal(waited.code, 143);
    assertEmptyDir(`${dir}/b`, "receiver interrupted while waiting");
  });
});

/**
 * The late-receiver rule at its edge, on a segment this test writes: a
 * live "sender" has filled the whole ring (published = slots = 2) of a
 * 5-chunk file while no receiver was reading. Until it claims chunk 2 (the
 * first to reuse slot 0) a receiver that attaches is served from the start;
 * once it has claimed it, the receiver is refused as too late. (Judged by
 * `published` alone, the first receiver was refused too: under load, a
 * receiver of --peers N paused between attaching and looking was refused
 * although the sender's gate counted it.)
 */
Deno.test("shm fault: a receiver is too late only once the sender has claimed slot 0 again", async () => {
  for (const [claimed, servedFromStart] of [[2, true], [3, false]] as const) {
    await withShm("p2m-shmf-", "p2m-c", async ({ dir, name }) => {
      const memory = hostileSegment(name, (i32, f64) => {
        f64[FILE_SIZE_OFFSET / 8] = 5 * 4096;
        i32[HeaderField.totalChunks] = 5;
        i32[HeaderField.state] = TransferState.Streaming;
        i32[HeaderField.published] = 2;
        i32[HeaderField.claimed] = claimed;
      });
      try {
        const geo = geometry(4096, 2);
        const segment = new Segment(memory, memory.buffer, geo);
        segment.initSemaphores();
        const late = receiver(name, `${dir}/out`, ["--timeout", "2"]);
        if (servedFromStart) {
          // It took chunks 0 and 1 and waits for chunk 2.
          await waitFor(() => segment.cursor(0) === 2, 15_000, "the receiver's cursor at 2");
          late.child.kill("SIGTERM");
          const result = await late.done();
          assert.doesNotMatch(result.stderr, /already started/);
        } else {
          const result = await late.done();
          assert.equal(result.code, 1, result.stderr);
          assert.match(result.stderr, /has already started and the file \(20480 bytes\)/);
        }
        assertEmptyDir(`${dir}/out`, "a receiver that kept nothing");
      } finally {
        SharedMemory.unlink(name);
        memory.close();
      }
    });
  }
});
