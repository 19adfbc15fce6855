/**
 * shm streams of unknown size, with real processes and real pipes: stdin
 * to several receivers at the edge sizes and at 64 MiB, bytes reaching a
 * receiver while the producer is still writing (ordered, not timed), a
 * late receiver refused, the producer's job killed mid-stream, `--out -`
 * into sha256sum, and a consumer that closes its pipe failing alone.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { p2mArgv } from "../core/permissions.ts";
import { makeFile, tempDir, uniqueName } from "./helpers.ts";
import {
  assertEmptyDir,
  assertNoSegment,
  assertSameBytes,
  receiver,
  waitForPart,
} from "./shm_helpers.ts";

const CHUNK = 4096;
const SMALL_RING = ["--chunk", String(CHUNK), "--slots", "4"];
const decoder = new TextDecoder();

/** `sharedmem.ts sender - ...` with its stdin piped from the test. */
function streamSender(name: string, args: string[]) {
  const argv = p2mArgv("sharedmem.ts", ["sender", "-", "--name", name, "--wait", "20", ...args]);
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const output = child.output();
  return {
    child,
    writer: child.stdin.getWriter(),
    async done() {
      const result = await output;
      return {
        code: result.code,
        stdout: decoder.decode(result.stdout),
        stderr: decoder.decode(result.stderr),
      };
    },
  };
}

function summaryOf(
  stdout: string,
): { ok: boolean; bytes: number; peers: { verified: boolean; status: string }[] } {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
    .find((e) => e.event === "summary");
}

async function deliverStream(size: number, peers: number, args: string[]): Promise<void> {
  const dir = await tempDir("p2m-shm-stream-");
  const name = uniqueName("p2m-st");
  try {
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
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
  const dir = await tempDir("p2m-shm-stream-");
  const name = uniqueName("p2m-st");
  try {
    const early = receiver(name, `${dir}/early`, ["--quiet"]);
    const send = streamSender(name, ["--peers", "1", "--json"]);
    await send.writer.write(new Uint8Array(5000).fill(7));
    await waitForPart(`${dir}/early`, 5000);
    const late = await receiver(name, `${dir}/late`, []).done();
    assert.equal(late.code, 1);
    assert.match(late.stderr, /stream .* has already started; a stream cannot be replayed/);
    assertEmptyDir(`${dir}/late`, "the late receiver");
    await send.writer.write(new Uint8Array(10).fill(8));
    await send.writer.close();
    assert.equal((await early.done()).code, 0);
    const sent = await send.done();
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(Deno.statSync(`${dir}/early/stdin`).size, 5010);
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shm stream: the producer's job killed mid-stream fails every receiver, keeps nothing", async () => {
  const dir = await tempDir("p2m-shm-stream-");
  const name = uniqueName("p2m-st");
  try {
    const outs = [`${dir}/a`, `${dir}/b`];
    const receivers = outs.map((out) => receiver(name, out, ["--quiet"]));
    // A shell job: a producer that writes a part and then hangs, piped into
    // the sender. Killing the job (as Ctrl-C or kill -TERM -PGID does) ends
    // both; the receivers must fail and keep nothing.
    const argv = p2mArgv("sharedmem.ts", ["sender", "-", "--name", name, "--peers", "2"]);
    const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
    const job = new Deno.Command("setsid", {
      args: ["sh", "-c", `{ head -c 300000 /dev/urandom; sleep 30; } | ${quoted}`],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    for (const out of outs) await waitForPart(out, 100_000);
    Deno.kill(-job.pid, "SIGTERM");
    const results = await Promise.all(receivers.map((r) => r.done()));
    await job.output();
    for (const result of results) {
      assert.equal(result.code, 1);
      assert.match(result.stderr, /interrupted|aborted|died/);
    }
    for (const out of outs) assertEmptyDir(out, "a receiver of an aborted stream");
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shm stream: --out - | sha256sum gives the source's hash; a closed pipe fails alone", async () => {
  const dir = await tempDir("p2m-shm-stream-");
  const name = uniqueName("p2m-st");
  try {
    const size = 8 * 1024 * 1024 + 3;
    const data = await makeFile(`${dir}/data.bin`, size, 11);
    const expected = createHash("sha256").update(data).digest("hex");
    const receiverArgv = (extra: string[]) =>
      p2mArgv("sharedmem.ts", [
        "receiver",
        "--name",
        name,
        "--out",
        "-",
        "--timeout",
        "20",
        ...extra,
      ])
        .map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
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
    await assertNoSegment(name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
