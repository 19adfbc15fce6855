/**
 * The socket transport with a stream source (`-`, stdin) and a stdout sink
 * (`--out -`), on real processes, real pipes and real files: sizes around
 * the chunk edges, bytes delivered while the producer still writes, a
 * server killed mid-stream, `--out -` into sha256sum, a consumer that
 * closes its pipe, and corrupted chunked streams from a fake server.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { Buffer } from "node:buffer";
import { createDigest, toHex } from "../core/digest.ts";
import { lines } from "../core/lines.ts";
import { p2mArgv } from "../core/permissions.ts";
import {
  encodeChunkLength,
  encodeHeader,
  encodeTrailer,
  MAX_WIRE_CHUNK,
  TrailerStatus,
} from "../core/wire.ts";
import { writeAll } from "../socket/protocol.ts";
import { listDir, makeFile, waitFor, whenDone } from "./helpers.ts";
import { spawnPiped } from "../tools/runner.ts";
import {
  assertNoTempFiles,
  childPids,
  FakeServer,
  socketPlace,
  startClient,
} from "./socket_helpers.ts";

/** The server's and the client's read size: the chunk the edges are around. */
const CHUNK = 1024 * 1024;

/** A server on `-` whose stdin the test writes, spooling into `spool`. */
function stdinServer(socket: string, spool: string, args: string[] = []) {
  const argv = p2mArgv("socket.ts", ["server", "-", "--socket", socket, "--spool", spool, ...args]);
  const child = spawnPiped(argv, { stdin: "piped" });
  return { child, stdin: child.stdin.getWriter(), done: whenDone(child) };
}

/** A client writing to stdout (`--out -`, or `out`), its stdout left to the test. */
function stdoutClient(socket: string, args: string[] = [], out = "-") {
  const argv = p2mArgv("socket.ts", [
    "client",
    "--socket",
    socket,
    "--out",
    out,
    "--timeout",
    "20",
    ...args,
  ]);
  return spawnPiped(argv);
}

async function stderrOf(child: Deno.ChildProcess): Promise<string> {
  return await new Response(child.stderr).text();
}

async function writeInPieces(
  stdin: WritableStreamDefaultWriter<Uint8Array>,
  data: Uint8Array,
): Promise<void> {
  for (let at = 0; at < data.length; at += 4 * CHUNK) {
    await stdin.write(data.subarray(at, at + 4 * CHUNK));
  }
}

Deno.test("socket: stdin to 2 clients at 0 B, 1 B, chunk ± 1 and 64 MiB; no spool left", async (t) => {
  for (const size of [0, 1, CHUNK - 1, CHUNK + 1, 64 * CHUNK]) {
    await t.step(`${size} bytes`, async () => {
      await using place = await socketPlace();
      const spool = `${place.dir}/spool`;
      await Deno.mkdir(spool);
      const data = await makeFile(`${place.dir}/src`, size, size + 3);
      const server = stdinServer(place.socket, spool, ["--peers", "2"]);
      const clients = [0, 1].map((i) => startClient(place.socket, `${place.dir}/out${i}`));
      await writeInPieces(server.stdin, data);
      await server.stdin.close();
      const results = await Promise.all(clients.map((c) => c.done()));
      const served = await server.done();
      assert.equal(served.code, 0, served.stderr);
      for (const [i, result] of results.entries()) {
        assert.equal(result.code, 0, result.stderr);
        const copy = await Deno.readFile(`${place.dir}/out${i}/stdin`);
        assert.equal(copy.length, size);
        assert.ok(Buffer.compare(copy, data) === 0, `copy ${i} differs`);
        assertNoTempFiles(`${place.dir}/out${i}`);
      }
      assert.deepEqual(listDir(spool), [], "the spool has no name, ever");
    });
  }
});

Deno.test("socket: 100 bytes reach a --out - client while the producer still writes", async () => {
  await using place = await socketPlace();
  const server = stdinServer(place.socket, place.dir, ["--peers", "1"]);
  const client = stdoutClient(place.socket);
  const errors = stderrOf(client);
  const first = new Uint8Array(100).map((_, i) => i);
  await server.stdin.write(first);
  // The producer (this test) holds the rest back until the client has the first 100.
  const reader = client.stdout.getReader();
  const got: Uint8Array[] = [];
  let count = 0;
  while (count < first.length) {
    const { value, done } = await reader.read();
    if (done) assert.fail(`client stdout ended early: ${await errors}`);
    got.push(value);
    count += value.length;
  }
  assert.equal(count, 100, "exactly the bytes written so far");
  const rest = new Uint8Array(3 * CHUNK + 7).map((_, i) => (i * 13) & 0xff);
  await writeInPieces(server.stdin, rest);
  await server.stdin.close();
  for (let part; !(part = await reader.read()).done;) got.push(part.value);
  const status = await client.status;
  assert.equal(status.code, 0, await errors);
  const all = Buffer.concat(got);
  assert.ok(Buffer.compare(all, Buffer.concat([first, rest])) === 0, "stdout is the stream");
  assert.equal((await server.done()).code, 0);
});

Deno.test("socket: kill -9 of the server mid-stream fails every client; nothing kept, no spool", async () => {
  await using place = await socketPlace();
  const spool = `${place.dir}/spool`;
  await Deno.mkdir(spool);
  const server = stdinServer(place.socket, spool, ["--peers", "2"]);
  const clients = [0, 1].map((i) =>
    stdoutClient(place.socket, ["--json"], `${place.dir}/out${i}/`)
  );
  // Feed until both clients announced the stream (their `start` event).
  const started = clients.map(async (client) => {
    for await (const line of lines(client.stdout)) {
      if (JSON.parse(line).event === "start") return;
    }
  });
  const piece = new Uint8Array(CHUNK).fill(7);
  let both = false;
  void Promise.all(started).then(() => both = true);
  while (!both) {
    await server.stdin.write(piece);
    await Promise.race([Promise.all(started), delay(50)]);
  }
  const workers = childPids(server.child.pid);
  server.child.kill("SIGKILL");
  for (const client of clients) {
    const [status, stderr] = await Promise.all([client.status, stderrOf(client)]);
    assert.equal(status.code, 1, stderr);
  }
  await server.done();
  await server.stdin.close().catch(() => {});
  for (const i of [0, 1]) {
    assert.deepEqual(listDir(`${place.dir}/out${i}`), [], "no copy, no temp file");
  }
  assert.deepEqual(listDir(spool), [], "no spool file left");
  await waitFor(() => workers.every((pid) => !isAlive(pid)), 10_000, "the workers to go");
});

function isAlive(pid: number): boolean {
  try {
    return !Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].startsWith("Z");
  } catch {
    return false;
  }
}

Deno.test("socket: --out - into sha256sum gives the source's hash (--json events on stderr); a closed pipe fails that client alone", async () => {
  await using place = await socketPlace();
  const data = await makeFile(`${place.dir}/src`, 24 * CHUNK + 5, 9);
  const server = stdinServer(place.socket, place.dir, ["--peers", "2"]);
  const good = stdoutClient(place.socket, ["--json"]); // events to stderr: stdout is data
  const quitter = stdoutClient(place.socket);
  const sum = new Deno.Command("sha256sum", { stdin: "piped", stdout: "piped" }).spawn();
  const piped = good.stdout.pipeTo(sum.stdin);
  // The quitter's consumer reads a little, then closes its end of the pipe.
  const quit = (async () => {
    const reader = quitter.stdout.getReader();
    await reader.read();
    await reader.cancel();
  })();
  await writeInPieces(server.stdin, data);
  await server.stdin.close();
  const [goodErr, quitErr] = await Promise.all([stderrOf(good), stderrOf(quitter)]);
  assert.equal((await good.status).code, 0, goodErr);
  assert.match(goodErr, /"event":"done"/, "--json events went to stderr");
  assert.equal((await quitter.status).code, 1, quitErr);
  assert.match(quitErr, /stdout was closed/);
  await quit;
  await piped;
  const sha256 = await createDigest("sha256");
  sha256.update(data);
  const expected = sha256.digest();
  const printed = new TextDecoder().decode((await sum.output()).stdout).split(" ")[0];
  assert.equal(printed, toHex(expected));
  const served = await server.done();
  assert.equal(served.code, 1, "one peer failed");
  assert.match(served.stdout, /1 of 2 peers ok/);
});

async function xxh64(bytes: Uint8Array): Promise<Uint8Array> {
  const digest = await createDigest("xxh64");
  digest.update(bytes);
  return digest.digest();
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

Deno.test("socket client refuses corrupted streams of unknown size and keeps nothing", async (t) => {
  const data = new Uint8Array(200_000).map((_, i) => (i * 31) & 0xff);
  const header = encodeHeader({
    size: 0,
    sizeUnknown: true,
    mode: 0o644,
    name: "s",
    digest: "xxh64",
  });
  const trailer = (size: number, digest: Uint8Array) =>
    encodeTrailer({ status: TrailerStatus.Complete, size, digest });
  const good = await xxh64(data);
  const flipped = data.slice();
  flipped[77] ^= 1;
  const huge = new Uint8Array(4);
  new DataView(huge.buffer).setUint32(0, MAX_WIRE_CHUNK + 1, true);
  const end = encodeChunkLength(0);
  const cases: [string, Uint8Array[], RegExp][] = [
    ["a flipped byte", [
      header,
      encodeChunkLength(data.length),
      flipped,
      end,
      trailer(data.length, good),
    ], /digest mismatch/],
    ["a trailer size that disagrees", [
      header,
      encodeChunkLength(data.length),
      data,
      end,
      trailer(data.length - 1, good),
    ], /trailer says/],
    ["a chunk longer than allowed", [header, huge], /exceeds/],
    [
      "EOF before the end chunk",
      [header, encodeChunkLength(data.length), data],
      /chunk length|closed/,
    ],
    [
      "EOF inside a chunk",
      [header, encodeChunkLength(data.length), data.subarray(10)],
      /stopped after/,
    ],
  ];
  for (const [what, parts, reason] of cases) {
    await t.step(what, async () => {
      await using place = await socketPlace();
      const out = `${place.dir}/out`;
      let result;
      {
        await using _server = new FakeServer(place.socket, (conn) => writeAll(conn, concat(parts)));
        result = await startClient(place.socket, out).done();
      }
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, reason);
      assert.deepEqual(listDir(out), [], "no final and no temp file");
    });
  }
  await t.step("a good stream is kept (the cases above fail for their reason only)", async () => {
    await using place = await socketPlace();
    const out = `${place.dir}/out`;
    const parts = [header, encodeChunkLength(data.length), data, end, trailer(data.length, good)];
    let result;
    {
      await using _server = new FakeServer(place.socket, (conn) => writeAll(conn, concat(parts)));
      result = await startClient(place.socket, out).done();
    }
    assert.equal(result.code, 0, result.stderr);
    assert.ok(Buffer.compare(await Deno.readFile(`${out}/s`), data) === 0);
  });
});

Deno.test("socket: a server serving stdin refuses --raw", async () => {
  await using place = await socketPlace();
  const server = stdinServer(place.socket, place.dir, ["--raw"]);
  await server.stdin.close();
  const served = await server.done();
  assert.equal(served.code, 2);
  assert.match(served.stderr, /--raw serves a regular file only/);
});

Deno.test("socket: a FIFO path is served as a stream; a peer that comes after its end is served from the spool", async () => {
  await using place = await socketPlace();
  const fifo = `${place.dir}/in.fifo`;
  assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
  const spool = `${place.dir}/spool`;
  await Deno.mkdir(spool);
  // No --peers: serve until SIGTERM, so a late peer still finds the spool.
  const argv = p2mArgv("socket.ts", ["server", fifo, "--socket", place.socket, "--spool", spool]);
  const server = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = server.output();
  const data = new Uint8Array(2 * CHUNK + 3).map((_, i) => (i * 7) & 0xff);
  // Opening a FIFO for writing waits for its reader: the server.
  const writer = await Deno.open(fifo, { write: true });
  const first = startClient(place.socket, `${place.dir}/out0`);
  await writer.write(data.subarray(0, 1000));
  for (let at = 1000; at < data.length;) at += await writer.write(data.subarray(at));
  writer.close();
  const early = await first.done();
  assert.equal(early.code, 0, early.stderr);
  // The stream has ended and been sent; a peer arriving now gets all of it.
  const late = await startClient(place.socket, `${place.dir}/out1`).done();
  assert.equal(late.code, 0, late.stderr);
  for (const i of [0, 1]) {
    const copy = await Deno.readFile(`${place.dir}/out${i}/in.fifo`);
    assert.ok(Buffer.compare(copy, data) === 0, `copy ${i} differs`);
  }
  server.kill("SIGTERM");
  const served = await output;
  assert.equal(served.code, 143);
  assert.match(new TextDecoder().decode(served.stdout), /2 of 2 peers ok/);
  assert.deepEqual(listDir(spool), [], "no spool file left");
});

Deno.test("socket: a producer pausing longer than the client's --timeout does not fail it (keepalives)", async () => {
  await using place = await socketPlace();
  const server = stdinServer(place.socket, place.dir, ["--peers", "1"]);
  const client = stdoutClient(place.socket, ["--timeout", "2"]);
  const errors = stderrOf(client);
  const reader = client.stdout.getReader();
  await server.stdin.write(new Uint8Array(10).fill(1));
  const first = await reader.read(); // the client is streaming now
  assert.ok(!first.done);
  await delay(5000); // 2.5 × its stall timeout
  await server.stdin.write(new Uint8Array(10).fill(2));
  await server.stdin.close();
  let count = first.value.length;
  for (let part; !(part = await reader.read()).done;) count += part.value.length;
  assert.equal((await client.status).code, 0, await errors);
  assert.equal(count, 20);
  assert.equal((await server.done()).code, 0);
});
