/**
 * The socket transport against same-user processes that try to cheat or
 * jam it (issue 8): an in-place edit that restores mtime while a transfer
 * runs, silent callers on a worker's one-time socket, a flood of peers that
 * only say hello, and a server that dies mid-handshake.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { DIGEST_LENGTH } from "../core/digest.ts";
import {
  decodeHeader,
  HEADER_FIXED_LENGTH,
  headerLength,
  TRAILER_FIXED_LENGTH,
} from "../core/wire.ts";
import { readFull } from "../socket/protocol.ts";
import { listDir, makeFile } from "./helpers.ts";
import {
  assertNoTempFiles,
  assertServed,
  childPids,
  FakeClient,
  newFile,
  serveNewFile,
  socketPlace,
  startClient,
  startServer,
  waitForSocket,
  workerSockets,
} from "./socket_helpers.ts";

/** Sum of the resident memory (KiB) of `pid` and its children. */
function treeRssKiB(pid: number): number {
  const out = new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", [pid, ...childPids(pid)].join(",")],
    stdout: "piped",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").map(Number)
    .filter((n) => n > 0).reduce((a, b) => a + b, 0);
}

Deno.test("socket: an in-place edit with mtime restored fails every peer at once", async () => {
  await using place = await socketPlace();
  const file = `${place.dir}/f.bin`;
  const size = 4 * 1024 * 1024;
  await makeFile(file, size);
  const out = `${place.dir}/out`;
  // 256 KiB/s: a 16 s transfer, so the edit lands in the middle of it.
  const server = startServer(file, place.socket, ["--peers", "2", "--limit-rate", "262144"]);
  await waitForSocket(place.socket);
  const clients = [startClient(place.socket, out), startClient(place.socket, out)];
  await delay(2000);
  const started = performance.now();
  // Same size, bytes changed in place, mtime put back: only ctime and the
  // read lease can tell. The writer's open waits until every lease holder
  // (server and both workers) lets go.
  const edit = await new Deno.Command("sh", {
    args: [
      "-c",
      `cp -p "$1" "$1.ref" && printf abc | dd of="$1" bs=1 seek=1000000 conv=notrunc status=none` +
      ` && touch -r "$1.ref" "$1" && rm "$1.ref"`,
      "sh",
      file,
    ],
  }).output();
  const editMs = performance.now() - started;
  assert.equal(edit.code, 0, new TextDecoder().decode(edit.stderr));
  assert.ok(editMs < 5000, `the writer was kept waiting ${Math.round(editMs)} ms`);
  for (const client of clients) {
    const result = await client.done();
    assert.equal(result.code, 1, `a client kept a copy of a changed file: ${result.stderr}`);
    assert.match(result.stderr, /changed/);
  }
  assert.ok(performance.now() - started < 8000, "the clients failed long after the edit");
  const served = await server.done();
  assert.equal(served.code, 1);
  assert.match(served.stderr, /changed while it was sent/);
  assert.deepEqual(listDir(out).filter((n) => !n.endsWith(".part")), []);
  assertNoTempFiles(out);
  assert.throws(() => Deno.lstatSync(place.socket), Deno.errors.NotFound);
  assert.deepEqual(workerSockets(server.child.pid), []);
});

Deno.test("socket: silent callers on a worker's one-time socket do not delay its peer", async () => {
  await using place = await socketPlace();
  const size = 8 * 1024 * 1024;
  const { server, data } = await serveNewFile(place, size, ["--peers", "1"]);
  using fake = await FakeClient.hello(place.socket);
  const connect = await fake.nextConnect();
  const started = performance.now();
  // Three same-user callers get there first and say nothing.
  const silent = await Promise.all(
    [1, 2, 3].map(() => Deno.connect({ transport: "unix", path: connect.path })),
  );
  try {
    const conn = await fake.connectData(connect);
    const fixed = new Uint8Array(HEADER_FIXED_LENGTH);
    await readFull(conn, fixed, "header");
    const header = new Uint8Array(headerLength(fixed));
    header.set(fixed);
    await readFull(conn, header.subarray(HEADER_FIXED_LENGTH), "header");
    const { digest } = decodeHeader(header);
    assert.equal(decodeHeader(header).size, size);
    assert.deepEqual(await fake.readData(size), data);
    await fake.readData(TRAILER_FIXED_LENGTH + DIGEST_LENGTH[digest]); // the trailer
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5000, `the real peer waited ${Math.round(elapsed)} ms`);
    conn.close();
    await fake.say({ type: "verdict", ok: true, bytes: size });
    assert.equal((await fake.next())?.type, "commit");
    await fake.say({ type: "committed", ok: true });
  } finally {
    for (const conn of silent) conn.close();
  }
  await assertServed(server, 0, /1 of 1 peers ok/);
});

Deno.test("socket: 100 hello-only peers do not hold the workers from honest ones", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 1024 * 1024);
  const out = `${place.dir}/out`;
  const server = startServer(file, place.socket);
  await waitForSocket(place.socket);
  const pid = server.child.pid;
  let mostWorkers = 0;
  let mostRss = 0;
  const sampler = setInterval(() => {
    mostWorkers = Math.max(mostWorkers, childPids(pid).length);
    mostRss = Math.max(mostRss, treeRssKiB(pid));
  }, 100);
  const flood: FakeClient[] = [];
  try {
    for (let i = 0; i < 100; i++) flood.push(await FakeClient.hello(place.socket));
    const started = performance.now();
    const honest = await Promise.all(
      [`${out}/a`, `${out}/b`].map((dir) => startClient(place.socket, dir).done()),
    );
    const elapsed = performance.now() - started;
    for (const result of honest) assert.equal(result.code, 0, result.stderr);
    // Before: every hello-only peer held a worker for the 10 s stall timeout (31 s here).
    assert.ok(elapsed < 25_000, `honest peers took ${Math.round(elapsed)} ms`);
    console.log(
      `honest peers verified after ${Math.round(elapsed)} ms; at most ${mostWorkers} workers, ` +
        `server tree at most ${Math.round(mostRss / 1024)} MiB`,
    );
  } finally {
    clearInterval(sampler);
    for (const fake of flood) fake.close();
  }
  // The default --max-active 32, plus the one worker started ahead.
  assert.ok(mostWorkers <= 33, `${mostWorkers} workers alive at once`);
  server.child.kill("SIGINT");
  const served = await server.done();
  assert.equal(served.code, 130, served.stderr);
  assert.deepEqual([...listDir(`${out}/a`), ...listDir(`${out}/b`)], ["f.bin", "f.bin"]);
  assert.throws(() => Deno.lstatSync(place.socket), Deno.errors.NotFound);
  assert.deepEqual(workerSockets(pid), []);
});

Deno.test("socket: a server that dies mid-handshake is named, not taken for --raw", async () => {
  await using place = await socketPlace();
  const listener = Deno.listen({ transport: "unix", path: place.socket });
  const client = startClient(place.socket, `${place.dir}/out`);
  // Accept, let the hello arrive, and go without reading it, as a server
  // killed at that moment. The client's next read usually gets ECONNRESET
  // (the hello was left unread); when its read comes after the kernel's
  // hang-up was taken, it gets end of file: both must name the server.
  const conn = await listener.accept();
  await delay(300);
  conn.close();
  listener.close();
  const result = await client.done();
  assert.equal(result.code, 1);
  assert.doesNotMatch(result.stderr, /--raw/);
  assert.match(
    result.stderr,
    /server (went away|closed the connection) during the handshake.*was it stopped or killed\?/,
  );
  assert.deepEqual(listDir(`${place.dir}/out`), []);
});
