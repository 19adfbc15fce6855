/**
 * shm streams of unknown size, with real processes and real pipes: stdin
 * to several receivers at the edge sizes and at 64 MiB, bytes reaching a
 * receiver while the producer is still writing (ordered, not timed), a
 * late receiver refused, the producer's job killed mid-stream, `--out -`
 * into sha256sum, and a consumer that closes its pipe failing alone.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { delay } from "../core/delay.ts";
import { p2mArgv } from "../core/permissions.ts";
import { SharedMemory } from "../ffi/mod.ts";
import { HeaderField } from "../shm/layout.ts";
import { spawnPiped } from "../tools/runner.ts";
import { makeFile, shellQuote, uniqueName, whenDone } from "./helpers.ts";
import {
  assertAllFailed,
  assertEmptyDir,
  assertNoSegment,
  assertReceiversFailed,
  assertSameBytes,
  receiver,
  summaryOf,
  waitForPart,
  withShm,
} from "./shm_helpers.ts";

const CHUNK = 4096;
const SMALL_RING = ["--chunk", String(CHUNK), "--slots", "4"];
const decoder = new TextDecoder();

/** `sharedmem.ts sender - ...` with its stdin piped from the test. */
function streamSender(name: string, args: string[]) {
  const argv = p2mArgv("sharedmem.ts", ["sender", "-", "--name", name, "--wait", "20", ...args]);
  const child = spawnPiped(argv, { stdin: "piped" });
  return { child, writer: child.stdin.getWriter(), done: whenDone(child) };
}

/** The command line of a receiver writing to stdout (`--out -`). */
function stdoutReceiverArgv(name: string, extra: string[] = []): string[] {
  return p2mArgv("sharedmem.ts", [
    "receiver",
    "--name",
    name,
    "--out",
    "-",
    "--timeout",
    "20",
    ...extra,
  ]);
}

async function deliverStream(size: number, peers: number, args: string[]): Promise<void> {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const file = `${dir}/data.bin`;
    const data = await makeFile(file, size, size + 3);
    const outs = Array.from({ length: peers }, (_, i) => `${dir}/out${i}`);
    const receivers = outs.map((out) => receiver(name, out, ["--quiet"]));
    const send = streamSender(name, ["--peers", String(peers), "--json", ...args]);
    // The producer writes a first part, waits until a receiver holds bytes,
    // then writes the rest: bytes flow while the producer still writes.
    const first = Math.min(size, 1000);
    if (first > 0) {
      await send.writer.write(data.subarray(0, first));
      await waitForPart(outs[0], first);
    }
    await send.writer.write(data.subarray(first));
    await send.writer.close();
    const results = await Promise.all(receivers.map((r) => r.done()));
    const sent = await send.done();
    for (const [i, result] of results.entries()) {
      assert.equal(result.code, 0, `size ${size}, receiver ${i}: ${result.stderr}`);
    }
    assert.equal(sent.code, 0, sent.stderr);
    const summary = summaryOf(sent.stdout);
    assert.equal(summary.bytes, size);
    assert.equal(summary.peers.length, peers);
    assert.ok(summary.peers.every((p) => p.verified));
    for (const out of outs) await assertSameBytes(`${out}/stdin`, file);
  });
}

Deno.test("shm stream: stdin to 3 receivers at 0, 1, one chunk ± 1 bytes", async () => {
  const results = await Promise.allSettled(
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 4 * CHUNK + 1].map((size) =>
      deliverStream(size, 3, SMALL_RING)
    ),
  );
  for (const result of results) if (result.status === "rejected") throw result.reason;
});

Deno.test("shm stream: 64 MiB of stdin to 2 receivers with the default ring", async () => {
  await deliverStream(64 * 1024 * 1024, 2, []);
});

Deno.test("shm stream: a receiver that arrives after the stream began is refused", async () => {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const early = receiver(name, `${dir}/early`, ["--quiet"]);
    const send = streamSender(name, ["--peers", "1", "--json", ...SMALL_RING]);
    // More than the ring holds: chunk 0 may be overwritten, so no replay.
    await send.writer.write(new Uint8Array(5 * CHUNK).fill(7));
    await waitForPart(`${dir}/early`, 5 * CHUNK);
    const late = await receiver(name, `${dir}/late`, []).done();
    assert.equal(late.code, 1);
    assert.match(late.stderr, /stream .* has already started; a stream cannot be replayed/);
    assertEmptyDir(`${dir}/late`, "the late receiver");
    await send.writer.write(new Uint8Array(10).fill(8));
    await send.writer.close();
    assert.equal((await early.done()).code, 0);
    const sent = await send.done();
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(Deno.statSync(`${dir}/early/stdin`).size, 5 * CHUNK + 10);
  });
});

Deno.test("shm stream: the producer's job killed mid-stream fails every receiver, keeps nothing", async () => {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const outs = [`${dir}/a`, `${dir}/b`];
    const receivers = outs.map((out) => receiver(name, out, ["--quiet"]));
    // A shell job: a producer that writes a part and then hangs, piped into
    // the sender. Killing the job (as Ctrl-C or kill -TERM -PGID does) ends
    // both; the receivers must fail and keep nothing.
    const argv = p2mArgv("sharedmem.ts", ["sender", "-", "--name", name, "--peers", "2"]);
    const quoted = shellQuote(argv);
    const job = new Deno.Command("setsid", {
      args: ["sh", "-c", `{ head -c 300000 /dev/urandom; sleep 30; } | ${quoted}`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    for (const out of outs) await waitForPart(out, 100_000);
    Deno.kill(-job.pid, "SIGTERM");
    const results = await Promise.all(receivers.map((r) => r.done()));
    await job.output();
    assertAllFailed(results, outs, /interrupted|aborted|died/, "a receiver of an aborted stream");
  });
});

Deno.test("shm stream: --out - | sha256sum gives the source's hash; a closed pipe fails alone", async () => {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const size = 8 * 1024 * 1024 + 3;
    const data = await makeFile(`${dir}/data.bin`, size, 11);
    const expected = createHash("sha256").update(data).digest("hex");
    const receiverArgv = (extra: string[]) => shellQuote(stdoutReceiverArgv(name, extra));
    // Each pipeline records the receiver's own exit status in a file.
    const good = new Deno.Command("sh", {
      args: ["-c", `(${receiverArgv(["--json"])}; echo $? > ${dir}/good.code) | sha256sum`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const closing = new Deno.Command("sh", {
      args: ["-c", `(${receiverArgv([])}; echo $? > ${dir}/bad.code) | head -c 1000 > /dev/null`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const plain = receiver(name, `${dir}/file`, ["--quiet"]);
    const send = streamSender(name, ["--peers", "3", "--json", "--stall-timeout", "5"]);
    await send.writer.write(data);
    await send.writer.close();
    const goodOut = await good.output();
    const badOut = await closing.output();
    const plainOut = await plain.done();
    const sent = await send.done();
    assert.equal(decoder.decode(goodOut.stdout).split(" ")[0], expected);
    assert.equal((await Deno.readTextFile(`${dir}/good.code`)).trim(), "0");
    // --json with --out -: the events went to stderr, the data alone to stdout.
    assert.match(decoder.decode(goodOut.stderr), /"event":"done"/);
    assert.equal((await Deno.readTextFile(`${dir}/bad.code`)).trim(), "1");
    assert.match(decoder.decode(badOut.stderr), /stdout was closed/);
    assert.equal(plainOut.code, 0, plainOut.stderr);
    await assertSameBytes(`${dir}/file/stdin`, `${dir}/data.bin`);
    assert.equal(sent.code, 1, "the sender counts the closed pipe as failed");
    const summary = summaryOf(sent.stdout);
    assert.equal(summary.peers.filter((p) => p.verified).length, 2);
    assert.equal(summary.peers.filter((p) => p.status === "failed").length, 1);
  });
});

Deno.test("shm stream: kill -9 of the sender mid-stream fails every receiver, keeps nothing", async () => {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const outs = [`${dir}/a`, `${dir}/b`];
    const receivers = outs.map((out) => receiver(name, out, ["--quiet"]));
    const send = streamSender(name, ["--peers", "2"]);
    await send.writer.write(new Uint8Array(200_000).fill(1));
    for (const out of outs) await waitForPart(out, 200_000);
    send.child.kill("SIGKILL");
    await send.writer.close().catch(() => {});
    await send.done();
    await assertReceiversFailed(receivers, outs, /sender .* died/, "a receiver of a killed sender");
  });
});

Deno.test("shm stream: a corrupted slot makes an --out - receiver exit non-zero, saying so", async () => {
  const name = uniqueName("p2m-st");
  const reader = spawnPiped(stdoutReceiverArgv(name));
  const stderr = new Response(reader.stderr).text();
  let got = 0;
  const { promise: firstPart, resolve } = Promise.withResolvers<void>();
  const drained = (async () => {
    for await (const chunk of reader.stdout) {
      got += chunk.length;
      if (got >= 5000) resolve();
    }
  })();
  const send = streamSender(name, ["--peers", "1", ...SMALL_RING]);
  try {
    await send.writer.write(new Uint8Array(5000).fill(1));
    await firstPart;
    // Stop the receiver, publish one more slot, and flip a byte in it.
    reader.kill("SIGSTOP");
    const memory = SharedMemory.open(name)!;
    const words = new Int32Array(memory.map(memory.stat().size));
    const before = Atomics.load(words, HeaderField.published);
    await send.writer.write(new Uint8Array(3000).fill(2));
    const deadline = performance.now() + 10_000;
    while (Atomics.load(words, HeaderField.published) === before) {
      assert.ok(performance.now() < deadline, "the sender never published the second part");
      await delay(5);
    }
    const slots = words[HeaderField.slotCount];
    const slot = words[HeaderField.slotsOffset] + (before % slots) * words[HeaderField.chunkSize];
    new Uint8Array(words.buffer)[slot + 10] ^= 0xff;
    memory.close();
    reader.kill("SIGCONT");
    await send.writer.close();
    const status = await reader.status;
    await drained;
    assert.equal(status.code, 1);
    assert.match(await stderr, /did NOT verify/);
    assert.equal((await send.done()).code, 1);
    await assertNoSegment(name);
  } finally {
    try {
      reader.kill("SIGKILL");
    } catch { /* exited */ }
  }
});

Deno.test("shm stream: a FIFO path is a stream too", async () => {
  await withShm("p2m-shm-stream-", "p2m-st", async ({ dir, name }) => {
    const fifo = `${dir}/feed`;
    assert.equal((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
    await makeFile(`${dir}/data.bin`, 300_001, 8);
    const got = receiver(name, `${dir}/out`, ["--quiet"]);
    const argv = p2mArgv("sharedmem.ts", ["sender", fifo, "--name", name, "--json"]);
    const send = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    // The sender opens the FIFO without waiting for a writer; this one comes later.
    const feed = await new Deno.Command("sh", { args: ["-c", `cat '${dir}/data.bin' > '${fifo}'`] })
      .output();
    assert.equal(feed.code, 0);
    const result = await got.done();
    const sent = await send;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(sent.code, 0, decoder.decode(sent.stderr));
    assert.equal(summaryOf(decoder.decode(sent.stdout)).bytes, 300_001);
    await assertSameBytes(`${dir}/out/feed`, `${dir}/data.bin`);
  });
});
