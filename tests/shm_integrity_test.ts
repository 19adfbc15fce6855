/**
 * Integrity of an shm transfer against other processes of the same user:
 * an in-place rewrite of the source with its mtime restored (with and
 * without a read lease), a forged "verified" in the receiver table, a
 * forged header state, scribbled semaphores, and the segment truncated
 * under a running transfer. Real processes; this test process plays the
 * hostile one, mapping the live segment through ffi/SharedMemory.
 */
import assert from "node:assert/strict";
import { SharedMemory } from "../ffi/mod.ts";
import {
  ENTRY_SEM_OFFSET,
  ENTRY_SIZE,
  EntryField,
  HEADER_AREA,
  HeaderField,
  ReceiverState,
  SENDER_SEM_OFFSET,
  TransferState,
} from "../shm/layout.ts";
import { listDir, makeFile, uniqueName, withTempDir } from "./helpers.ts";
import {
  assertEmptyDir,
  assertNoSegment,
  assertSameBytes,
  receiver,
  sender,
  SLOW_SIZE,
  startSlowTransfer,
  waitForNoSegment,
  waitForPart,
} from "./shm_helpers.ts";

/**
 * A two-receiver slow transfer in a fresh directory whose live segment this
 * process maps, as a hostile same-user process would, and `change` scribbles
 * on. `check` judges the exit of everyone; afterwards no receiver may hold
 * a copy or temp file and no segment may be left.
 */
async function corruptedTransfer(
  change: (segment: ArrayBuffer) => void,
  check: (run: Run) => void,
  senderArgs: string[] = [],
): Promise<void> {
  await withTempDir("p2m-shmi-", async (dir) => {
    const run = await transferUnder(dir, (name) => {
      using live = SharedMemory.open(name)!;
      live.map(live.stat().size);
      change(live.buffer);
      return Promise.resolve();
    }, senderArgs);
    check(run);
    for (const out of run.outs) assertEmptyDir(out, "receiver of a corrupt segment");
    await assertNoSegment(run.name);
  });
}

/** A transfer's act: truncates the live segment to `size` bytes. */
function truncateTo(size: number): (name: string) => Promise<void> {
  return (name) => {
    using live = SharedMemory.open(name)!;
    live.truncate(size);
    return Promise.resolve();
  };
}

/** Index into the table words of entry `index`'s `field`. */
function entryWord(index: number, field: number): number {
  return (HEADER_AREA + index * ENTRY_SIZE) / 4 + field;
}

/** A two-receiver slow transfer; `act` runs once a receiver has a quarter of the file. */
async function transferUnder(
  dir: string,
  act: (name: string, file: string) => Promise<void>,
  senderArgs: string[] = [],
) {
  const { name, file, outs, send, receivers } = await startSlowTransfer(dir, {
    senderArgs,
    prefix: "p2m-i",
  });
  await waitForPart(outs[0], SLOW_SIZE / 4);
  await act(name, file);
  const sent = await send.done();
  const received = await Promise.all(receivers.map((p) => p.done()));
  return { name, file, outs, sent, received };
}

/** What transferUnder returns: the exits of the sender and the receivers. */
type Run = Awaited<ReturnType<typeof transferUnder>>;

/** The sender and every receiver fail on a rewritten source, leaving no copy and no segment. */
async function assertRewriteCaught(run: Run) {
  assert.equal(run.sent.code, 1, run.sent.stderr);
  assert.match(run.sent.stderr, /changed while it was sent/);
  for (const result of run.received) {
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /source file changed/);
  }
  for (const out of run.outs) assertEmptyDir(out, "receiver of a rewritten source");
  await assertNoSegment(run.name);
}

async function sh(script: string): Promise<void> {
  const out = await new Deno.Command("sh", { args: ["-c", script], stderr: "piped" }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
}

Deno.test("shm integrity: 3 bytes rewritten in place, mtime restored: caught, nobody keeps a copy", async () => {
  await withTempDir("p2m-shmi-", async (dir) => {
    const run = await transferUnder(dir, async (_name, file) => {
      // dd's open for writing breaks the sender's read lease; it waits for it.
      await sh(
        `cp -p '${file}' '${dir}/ref' && printf abc | ` +
          `dd of='${file}' bs=1 seek=${SLOW_SIZE - 1000} conv=notrunc 2>/dev/null && ` +
          `touch -r '${dir}/ref' '${file}'`,
      );
    });
    await assertRewriteCaught(run);
  });
});

Deno.test("shm integrity: a writer open before the sender (no lease): warned, and the rewrite is still caught by ctime", async () => {
  await withTempDir("p2m-shmi-", async (dir) => {
    const file = `${dir}/data.bin`;
    await makeFile(file, SLOW_SIZE);
    await sh(`cp -p '${file}' '${dir}/ref'`);
    using writer = await Deno.open(file, { write: true });
    const run = await transferUnder(dir, async () => {
      await writer.seek(SLOW_SIZE - 1000, Deno.SeekMode.Start);
      await writer.write(new TextEncoder().encode("abc"));
      await sh(`touch -r '${dir}/ref' '${file}'`); // same size, same mtime to the ns
    });
    assert.match(run.sent.stderr + run.sent.stdout, /no read lease on/);
    await assertRewriteCaught(run);
  });
});

Deno.test("shm integrity: a forged 'verified' in the receiver table is a corrupt segment, not a success", async () => {
  await corruptedTransfer(
    (segment) => {
      const words = new Int32Array(segment);
      Atomics.store(words, entryWord(0, EntryField.state), ReceiverState.Verified);
    },
    (run) => {
      assert.equal(run.sent.code, 1, run.sent.stderr);
      assert.match(
        run.sent.stderr,
        /shared memory p2m-i-\S+ is corrupt: receiver #0's entry says verified at [\d.]+ [KM]iB of 4\.0+ MiB/,
      );
      assert.doesNotMatch(run.sent.stdout, /"ok":true/);
      for (const result of run.received) {
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, /corrupt/);
        assert.doesNotMatch(result.stderr, /evicted/);
      }
    },
    ["--json"],
  );
});

Deno.test("shm integrity: a forged 'final' header is a corrupt segment, never 'digest mismatch: expected 0000…'", async () => {
  await corruptedTransfer(
    (segment) => {
      const words = new Int32Array(segment);
      Atomics.store(words, HeaderField.published, words[HeaderField.totalChunks]);
      Atomics.store(words, HeaderField.state, TransferState.Final);
    },
    (run) => {
      assert.equal(run.sent.code, 1, run.sent.stderr);
      for (const result of [run.sent, ...run.received]) {
        assert.doesNotMatch(result.stderr, /digest mismatch/);
        assert.match(result.stderr, /corrupt/);
      }
      for (const result of run.received) assert.equal(result.code, 1, result.stderr);
    },
  );
});

Deno.test("shm integrity: random bytes over the semaphores fail clearly instead of a glibc abort", async () => {
  const semaphores = [
    SENDER_SEM_OFFSET,
    ...[0, 1].map((i) => HEADER_AREA + i * ENTRY_SIZE + ENTRY_SEM_OFFSET),
  ];
  await corruptedTransfer(
    (segment) => {
      const bytes = new Uint8Array(segment);
      for (const offset of semaphores) {
        bytes.set(crypto.getRandomValues(new Uint8Array(16)), offset);
      }
    },
    (run) => {
      for (const result of [run.sent, ...run.received]) {
        assert.equal(result.signal, null, `killed by ${result.signal}: ${result.stderr}`);
        assert.equal(result.code, 1, result.stderr);
      }
      assert.match(run.sent.stderr, /is corrupt \(semaphore overwritten\)/);
    },
  );
});

Deno.test("shm integrity: the segment truncated to 8 KiB: a clear 'corrupt' message, no raw 'Bad address'", async () => {
  await withTempDir("p2m-shmi-", async (dir) => {
    const run = await transferUnder(dir, truncateTo(8192));
    // The size is checked before the ring is touched, and a syscall's EFAULT
    // is explained; a truncation between a check and a touch (a process
    // preempted there, under load) is still a SIGBUS, which no process survives.
    const parties = [run.sent, ...run.received];
    for (const result of parties) {
      assert.doesNotMatch(result.stderr, /Bad address|os error 14/);
      if (result.signal === "SIGBUS") continue;
      assert.equal(result.code, 1, `${result.signal}: ${result.stderr}`);
      assert.match(result.stderr, /corrupt|sender of \S+ died/);
    }
    assert.ok(
      parties.some((result) => /is corrupt: it was truncated to 8192 bytes/.test(result.stderr)),
      "someone names the truncation",
    );
    for (const [i, out] of run.outs.entries()) {
      if (run.received[i].signal !== "SIGBUS") {
        assertEmptyDir(out, "receiver of a truncated segment");
      }
    }
    await waitForNoSegment(run.name, 3000, "the segment's removal");
  });
});

Deno.test("shm integrity: the segment truncated to 0 (SIGBUS, unavoidable): the ring is reaped, temp files are swept next time", async () => {
  await withTempDir("p2m-shmi-", async (dir) => {
    const run = await transferUnder(dir, truncateTo(0));
    for (const result of [run.sent, ...run.received]) {
      assert.ok(result.code !== 0, `nobody succeeds: ${result.stderr}`);
    }
    // Whoever died of SIGBUS, the segment is gone within a few seconds.
    await waitForNoSegment(run.name, 3000, "the reaper");
    // The next transfer into the same directories sweeps any temp file left.
    const name = uniqueName("p2m-i");
    const next = sender(run.file, name, ["--peers", "2", "--quiet"]);
    const got = await Promise.all(run.outs.map((out) => receiver(name, out, ["--quiet"]).done()));
    for (const result of got) assert.equal(result.code, 0, result.stderr);
    assert.equal((await next.done()).code, 0);
    for (const out of run.outs) {
      assert.deepEqual(listDir(out), ["data.bin"], `${out}: only the new copy`);
      await assertSameBytes(`${out}/data.bin`, run.file);
    }
    await assertNoSegment(name);
  });
});
