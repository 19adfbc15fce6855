/**
 * Delivery through the shared-memory ring with real processes: sizes around
 * the slot and ring boundaries, 1/4/16 receivers, start order, late joiners
 * and a second sender on a live name.
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { makeFile, smallTmpfs, tempDir, uniqueName } from "./helpers.ts";
import {
  assertEmptyDir,
  assertNoSegment,
  assertSameBytes,
  eventIn,
  receiver,
  sender,
  summaryOf,
  waitForPart,
  waitForSegment,
  withShm,
} from "./shm_helpers.ts";

const CHUNK = 4096;
const SLOTS = 4;
const RING = CHUNK * SLOTS;
const SMALL_RING = ["--chunk", String(CHUNK), "--slots", String(SLOTS)];

interface Run {
  size: number;
  peers: number;
  senderArgs?: string[];
  /** Start the receivers this many ms before the sender (negative: after). */
  receiversFirstMs?: number;
}

/**
 * A scratch directory, on a private tmpfs when mounting is allowed: fsync on
 * a disk-backed /tmp would dominate these runs.
 */
async function scratch(): Promise<{ dir: string; [Symbol.asyncDispose](): Promise<void> }> {
  const fs = await smallTmpfs("1g");
  if (fs) return fs;
  const dir = await tempDir("p2m-shm-");
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function deliver(run: Run): Promise<void> {
  await using space = await scratch();
  const dir = await Deno.makeTempDir({ dir: space.dir });
  const name = uniqueName("p2m-t");
  try {
    const file = `${dir}/data-${run.size}.bin`;
    await makeFile(file, run.size, run.size + 7);
    const outs = Array.from({ length: run.peers }, (_, i) => `${dir}/out${i}`);
    const lead = run.receiversFirstMs ?? 0;
    const startReceivers = () => outs.map((out) => receiver(name, out, ["--quiet"]));
    const startSender = () =>
      sender(file, name, ["--peers", String(run.peers), "--json", ...(run.senderArgs ?? [])]);
    let receivers;
    let send;
    if (lead > 0) {
      receivers = startReceivers();
      await delay(lead);
      send = startSender();
    } else {
      send = startSender();
      if (lead < 0) await delay(-lead);
      receivers = startReceivers();
    }
    const results = await Promise.all(receivers.map((r) => r.done()));
    const sent = await send.done();
    for (const [i, result] of results.entries()) {
      assert.equal(result.code, 0, `receiver ${i}: ${result.stderr}`);
    }
    assert.equal(sent.code, 0, sent.stderr);
    const summary = summaryOf(sent.stdout);
    assert.equal(summary.peers.length, run.peers);
    for (const peer of summary.peers) {
      assert.equal(peer.verified, true);
      assert.equal(peer.bytes, run.size);
    }
    for (const out of outs) await assertSameBytes(`${out}/data-${run.size}.bin`, file);
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const EDGE_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, RING - 1, RING, RING + 1];

for (const peers of [1, 4]) {
  Deno.test(`shm: ${peers} receiver(s), sizes 0, 1, slot ± 1, ring ± 1`, async () => {
    // Sizes run side by side under different names: also a concurrency check.
    // allSettled: a failure must not end the test before the others clean up.
    const results = await Promise.allSettled(
      EDGE_SIZES.map((size) => deliver({ size, peers, senderArgs: SMALL_RING })),
    );
    for (const result of results) if (result.status === "rejected") throw result.reason;
  });
}

Deno.test("shm: 16 receivers, empty file and ring + 1", async () => {
  await deliver({ size: 0, peers: 16, senderArgs: SMALL_RING });
  await deliver({ size: RING + 1, peers: 16, senderArgs: SMALL_RING });
});

Deno.test("shm: 64 MiB of random data to 4 receivers with the default ring", async () => {
  await deliver({ size: 64 * 1024 * 1024, peers: 4 });
});

Deno.test("shm: a file of 256 slots through a 4-slot ring, sha256", async () => {
  await deliver({
    size: 256 * CHUNK + 5,
    peers: 3,
    senderArgs: [...SMALL_RING, "--digest", "sha256"],
  });
});

Deno.test("shm: receivers started before the sender wait for it", async () => {
  await deliver({ size: RING * 3 + 11, peers: 2, senderArgs: SMALL_RING, receiversFirstMs: 600 });
});

Deno.test("shm: receivers started after the sender attach while it waits", async () => {
  await deliver({ size: RING * 3 + 11, peers: 2, senderArgs: SMALL_RING, receiversFirstMs: -600 });
});

Deno.test("shm: --no-verify still delivers, and says it did not verify", async () => {
  await withShm("p2m-shm-", "p2m-t", async ({ dir, name }) => {
    const file = `${dir}/nv.bin`;
    await makeFile(file, 100_000);
    const send = sender(file, name, ["--no-verify", "--quiet"]);
    const got = await receiver(name, `${dir}/out`, ["--json"]).done();
    assert.equal(got.code, 0, got.stderr);
    const done = eventIn<{ verified: boolean; bytes: number }>(got.stdout, "done");
    assert.ok(done, "the receiver emits a done event");
    assert.equal(done.verified, false);
    assert.equal(done.bytes, 100_000);
    assert.equal((await send.done()).code, 0);
    await assertSameBytes(`${dir}/out/nv.bin`, file);
  });
});

Deno.test("shm: a late receiver is refused when the file is larger than the ring", async () => {
  await withShm("p2m-shm-", "p2m-t", async ({ dir, name }) => {
    const file = `${dir}/big.bin`;
    const size = RING * 40;
    await makeFile(file, size);
    const send = sender(file, name, [...SMALL_RING, "--limit-rate", String(size), "--quiet"]);
    const first = receiver(name, `${dir}/a`, ["--quiet"]);
    await waitForPart(`${dir}/a`, RING * 2);
    const late = await receiver(name, `${dir}/late`, ["--quiet"]).done();
    assert.equal(late.code, 1);
    assert.match(late.stderr, /already started.*larger than the ring/);
    assertEmptyDir(`${dir}/late`, "refused receiver");
    assert.equal((await first.done()).code, 0);
    const sent = await send.done();
    assert.equal(sent.code, 0, `a refused late joiner does not fail the sender: ${sent.stderr}`);
    await assertSameBytes(`${dir}/a/big.bin`, file);
  });
});

Deno.test("shm: a late receiver is served from the start when the ring holds the whole file", async () => {
  await withShm("p2m-shm-", "p2m-t", async ({ dir, name }) => {
    const file = `${dir}/fits.bin`;
    const size = RING - 100; // four chunks, the last one short
    await makeFile(file, size);
    // About 1.5 s of streaming: time for a late receiver to arrive.
    const send = sender(file, name, [
      ...SMALL_RING,
      "--limit-rate",
      String(Math.floor(size / 1.5)),
      "--json",
    ]);
    const first = receiver(name, `${dir}/a`, ["--quiet"]);
    await waitForPart(`${dir}/a`, 1);
    const late = await receiver(name, `${dir}/late`, ["--quiet"]).done();
    assert.equal(late.code, 0, late.stderr);
    assert.equal((await first.done()).code, 0);
    const sent = await send.done();
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stdout, /"event":"summary"/);
    await assertSameBytes(`${dir}/a/fits.bin`, file);
    await assertSameBytes(`${dir}/late/fits.bin`, file);
  });
});

Deno.test("shm: a second sender on a live name is refused and the first is untouched", async () => {
  await withShm("p2m-shm-", "p2m-t", async ({ dir, name }) => {
    const file = `${dir}/one.bin`;
    await makeFile(file, 50_000);
    const first = sender(file, name, ["--quiet"]);
    await waitForSegment(name);
    const second = await sender(file, name, ["--quiet"]).done();
    assert.equal(second.code, 1);
    assert.match(second.stderr, /live sender \(pid \d+\) is using shared memory/);
    const got = await receiver(name, `${dir}/out`, ["--quiet"]).done();
    assert.equal(got.code, 0, got.stderr);
    assert.equal((await first.done()).code, 0);
    await assertSameBytes(`${dir}/out/one.bin`, file);
  });
});

Deno.test("shm: usage errors exit 2, --help exits 0, no sender exits 1", async () => {
  await withShm("p2m-shm-", "p2m-t", async ({ dir, name }) => {
    const help = await receiver("x", dir, ["--help"]).done();
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--timeout S/);
    const bad = await sender(`${dir}/f`, "x", ["--chunk", "1000"]).done();
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--chunk/);
    const badName = await sender(`${dir}/f`, "../etc", []).done();
    assert.equal(badName.code, 2);
    const missing = await sender(`${dir}/nope`, uniqueName("p2m-t"), []).done();
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot open .*nope/);
    const none = await receiver(name, `${dir}/out`, ["--timeout", "0.3"]).done();
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no sender on p2m-t-.* within 0.3 s/);
    const lonely = await sender(new URL(import.meta.url).pathname, name, [
      "--peers",
      "2",
      "--wait",
      "0.3",
    ]).done();
    assert.equal(lonely.code, 1);
    assert.match(lonely.stderr, /only 0 of 2 receiver\(s\) attached/);
  });
});
