/**
 * A dead sender's segment does not outlive it by more than a few seconds,
 * whoever comes next or nobody (shm/stale.ts): the sender's reaper removes
 * it after a kill -9 at any moment, and a receiver that finds a stale
 * segment removes it, whatever its header says, instead of waiting out its
 * timeout. Real processes, real /dev/shm.
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { SharedMemory } from "../ffi/mod.ts";
import { makeFile, shmEntries, uniqueName, withTempDir } from "./helpers.ts";
import { removeIfStale } from "../shm/stale.ts";
import {
  assertNameReusable,
  assertNoSegment,
  leaveStale,
  receiver,
  sender,
  waitForNoSegment,
  waitForSegment,
} from "./shm_helpers.ts";

Deno.test("stale: kill -9 of a sender waiting for receivers: its ring is gone within 3 s, nobody else involved", async () => {
  await withTempDir("p2m-stale-", async (dir) => {
    const name = uniqueName("p2m-s");
    const file = `${dir}/data.bin`;
    await makeFile(file, 100_000);
    const send = sender(file, name, ["--peers", "2", "--quiet", "--chunk", "1M", "--slots", "16"]);
    await waitForSegment(name);
    await delay(300); // well into its wait for receivers
    send.child.kill("SIGKILL");
    const result = await send.done();
    assert.equal(result.signal, "SIGKILL");
    await waitForNoSegment(name, 3000, "the reaper to remove the killed sender's ring");
    await assertNameReusable(file, name, `${dir}/next`);
  });
});

Deno.test("stale: kill -9 of a sender right after it created the segment (before the header): gone within 3 s", async () => {
  await withTempDir("p2m-stale-", async (dir) => {
    const name = uniqueName("p2m-s");
    const file = `${dir}/data.bin`;
    await makeFile(file, 100_000);
    // A large ring: reserving it takes a while, so the kill lands early.
    const send = sender(file, name, ["--quiet", "--chunk", "64M", "--slots", "4"]);
    await waitForSegment(name, 10_000);
    send.child.kill("SIGKILL");
    await send.done();
    await waitForNoSegment(name, 3000, "the reaper to remove a segment killed before its header");
    await assertNameReusable(file, name, `${dir}/next`);
  });
});

for (const shape of ["empty", "no-magic", "full"] as const) {
  Deno.test(`stale: a receiver removes a stale segment (${shape}) at once instead of waiting out its timeout`, async () => {
    await withTempDir("p2m-stale-", async (dir) => {
      const name = uniqueName("p2m-s");
      leaveStale(name, shape);
      assert.equal((await shmEntries(name)).length, 1);
      const waiting = receiver(name, `${dir}/out`, ["--quiet", "--timeout", "3"]);
      try {
        await waitForNoSegment(name, 2000, `the receiver to remove the ${shape} stale segment`);
      } finally {
        const result = await waiting.done();
        assert.equal(result.code, 1);
        assert.match(result.stderr, /only a stale segment .* \(its sender died; removed\)/);
      }
      await assertNoSegment(name);
    });
  });
}

Deno.test("stale: a receiver never removes someone else's object (no sender lock, not p2m's magic)", async () => {
  await withTempDir("p2m-stale-", async (dir) => {
    const name = uniqueName("p2m-s");
    const foreign = SharedMemory.create(name)!;
    try {
      foreign.truncate(8192);
      new Uint8Array(foreign.map(8192)).set(new TextEncoder().encode("NOTP2M"));
      const result = await receiver(name, `${dir}/out`, ["--quiet", "--timeout", "2"]).done();
      assert.equal(result.code, 1);
      assert.match(result.stderr, /is not a p2m segment \(bad magic\)/);
      assert.equal((await shmEntries(name)).length, 1, "left in place");
    } finally {
      SharedMemory.unlink(name);
      foreign.close();
    }
  });
});

Deno.test("stale: an empty object nobody holds yet is being created, not stale; sized, or older than the grace, it is", async () => {
  const name = uniqueName("p2m-s");
  // What a creator has between its O_EXCL create and its hold: no lock, size 0.
  const creating = SharedMemory.create(name)!;
  try {
    using look = SharedMemory.open(name)!;
    assert.equal(removeIfStale(look), false, "left to its creator");
    assert.equal((await shmEntries(name)).length, 1);

    // A creator sizes its object only once it holds it: unheld and sized is a dead sender's.
    creating.truncate(4096);
    assert.equal(removeIfStale(look), true);
    assert.equal((await shmEntries(name)).length, 0);
  } finally {
    creating.close();
  }

  // A creator killed in that instant leaves an empty object: removed once older than the grace.
  const orphan = SharedMemory.create(name)!;
  orphan.close();
  using later = SharedMemory.open(name)!;
  assert.equal(removeIfStale(later), false);
  await delay(2_100);
  assert.equal(removeIfStale(later), true);
  assert.equal((await shmEntries(name)).length, 0);
});
