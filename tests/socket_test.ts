/**
 * The socket transport end to end: real server, real clients, real files.
 */
import assert from "node:assert/strict";
import { DATA_CHUNK } from "../socket/protocol.ts";
import { assertSameFile, listDir, makeFile, spawnP2m } from "./helpers.ts";
import {
  assertNoTempFiles,
  newFile,
  serveNewFile,
  socketPlace,
  startClient,
  startServer,
  waitForListener,
  waitForSocket,
  workerSockets,
} from "./socket_helpers.ts";

/** Serves `size` bytes to `peers` clients; asserts every copy is identical. */
async function transfer(
  size: number,
  peers: number,
  { serverArgs = [] as string[], clientArgs = [] as string[] } = {},
) {
  await using place = await socketPlace();
  const file = `${place.dir}/data-${size}.bin`;
  await makeFile(file, size, size + 7);
  const server = startServer(file, place.socket, ["--peers", String(peers), ...serverArgs]);
  const outs = Array.from({ length: peers }, (_, i) => `${place.dir}/out${i}`);
  const clients = outs.map((out) => startClient(place.socket, out, clientArgs));
  const results = await Promise.all(clients.map((c) => c.done()));
  const served = await server.done();
  for (const [i, result] of results.entries()) {
    assert.equal(result.code, 0, `client ${i}: ${result.stderr}`);
    await assertSameFile(`${outs[i]}/data-${size}.bin`, file);
    assertNoTempFiles(outs[i]);
  }
  assert.equal(served.code, 0, served.stderr);
  assert.deepEqual(listDir(place.dir).filter((n) => n.endsWith(".sock")), []);
  assert.deepEqual(workerSockets(server.child.pid), []);
  return { served, results };
}

for (const size of [0, 1, DATA_CHUNK - 1, DATA_CHUNK, DATA_CHUNK + 1]) {
  Deno.test(`socket: ${size} bytes to 1 peer arrive identical`, async () => {
    const { served } = await transfer(size, 1);
    assert.match(served.stdout, /1 of 1 peers ok/);
  });
}

Deno.test("socket: 64 MiB of random data to 4 peers, with a per-peer summary", async () => {
  const { served } = await transfer(64 * 1024 * 1024, 4);
  assert.match(served.stdout, /peer +bytes +verified +seconds +GiB\/s/);
  assert.equal(served.stdout.match(/64\.0 MiB +yes/g)?.length, 4, served.stdout);
  assert.match(served.stdout, /4 of 4 peers ok/);
});

Deno.test("socket: 16 peers with --max-active 4 queue in order and all verify", async () => {
  const { served, results } = await transfer(DATA_CHUNK + 1, 16, {
    serverArgs: ["--max-active", "4", "--json"],
    clientArgs: ["--json"],
  });
  const summary = served.stdout.split("\n").filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l)).find((e) => e.event === "summary");
  assert.equal(summary.ok, 16);
  assert.equal(summary.failed, 0);
  // Clients only know they were queued if they arrived while 4 were busy;
  // every done event carries the byte count the harness sums.
  for (const result of results) {
    const events = result.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const done = events.find((e) => e.event === "done");
    assert.equal(done.bytes, DATA_CHUNK + 1);
    assert.equal(done.verified, true);
  }
});

/**
 * Server flags for 2 of 3 peers before --wait ends: one slot at 512 KiB/s,
 * so a 1 MiB peer takes 2 s and the second is still in line at 1.5 s.
 */
const TWO_OF_THREE_LATE = [
  "--peers",
  "3",
  "--wait",
  "1.5",
  "--max-active",
  "1",
  "--limit-rate",
  "512K",
];

Deno.test("socket: --wait gives up on missing peers, yet serves the ones that came, queued too", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, DATA_CHUNK + 3);
  const server = startServer(file, place.socket, [...TWO_OF_THREE_LATE, "--json"]);
  await waitForSocket(place.socket);
  const outs = [`${place.dir}/a`, `${place.dir}/b`];
  const clients = outs.map((out) => startClient(place.socket, out));
  const results = await Promise.all(clients.map((c) => c.done()));
  const served = await server.done();
  for (const [i, result] of results.entries()) {
    assert.equal(result.code, 0, `client ${i}: ${result.stderr}`);
    await assertSameFile(`${outs[i]}/f.bin`, file);
  }
  assert.equal(served.code, 1, served.stderr);
  assert.match(served.stderr, /only 2 of 3 peers came within 1\.5 s \(--wait\)/);
  const events = served.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) =>
    JSON.parse(l)
  );
  const expired = events.find((e) => e.event === "wait-expired");
  assert.deepEqual([expired?.came, expired?.peers, expired?.seconds], [2, 3, 1.5]);
  assert.equal(events.find((e) => e.event === "summary").ok, 2);
  assert.deepEqual(listDir(place.dir).filter((n) => n.endsWith(".sock")), []);
  assert.deepEqual(workerSockets(server.child.pid), []);
});

Deno.test("socket: --raw readers queued behind --max-active get the bytes alone; --wait serves them", async () => {
  await using place = await socketPlace();
  const size = DATA_CHUNK + 3;
  const file = await newFile(place, size);
  // The second reader is told nothing while it waits (a "queued" line
  // would land in its copy), and is in line when --wait ends.
  const server = startServer(file, place.socket, ["--raw", ...TWO_OF_THREE_LATE]);
  await waitForSocket(place.socket);
  const copies = await Promise.all([readRaw(place.socket), readRaw(place.socket)]);
  const served = await server.done();
  const original = await Deno.readFile(file);
  for (const copy of copies) assert.deepEqual(copy, original);
  assert.equal(served.code, 1, served.stderr);
  assert.match(served.stdout, /2 of 2 peers ok/);
  assert.match(served.stderr, /only 2 of 3 peers came within 1\.5 s \(--wait\)/);
  assert.deepEqual(listDir(place.dir).filter((n) => n.endsWith(".sock")), []);
});

/** Every byte a plain reader gets from `socket` until EOF. */
async function readRaw(socket: string): Promise<Uint8Array> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  const parts: Uint8Array[] = [];
  for (let part = new Uint8Array(1 << 16), n; (n = await conn.read(part)) !== null;) {
    parts.push(part.slice(0, n));
  }
  conn.close();
  const all = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
  return all;
}

Deno.test("socket: --wait without --peers is a usage error", async () => {
  const result = await spawnP2m("socket.ts", ["server", "f", "--wait", "5"]).done();
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /--wait needs --peers/);
});

Deno.test("socket: client --json reports numeric progress and done bytes", async () => {
  const { results } = await transfer(8 * 1024 * 1024, 1, { clientArgs: ["--json"] });
  const events = results[0].stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(events[0].event, "start");
  for (const e of events.filter((e) => e.event === "progress")) {
    assert.equal(typeof e.bytes, "number");
  }
  assert.equal(events.at(-1).event, "done");
  assert.equal(events.at(-1).bytes, 8 * 1024 * 1024);
});

Deno.test("socket: --digest sha256 and --no-verify", async () => {
  const sha = await transfer(DATA_CHUNK * 2 + 5, 2, { serverArgs: ["--digest", "sha256"] });
  assert.match(sha.results[0].stdout, /sha256 verified/);
  const none = await transfer(DATA_CHUNK + 5, 2, { serverArgs: ["--no-verify"] });
  assert.match(none.results[0].stdout, /NOT verified/);
  assert.match(none.served.stdout, /unverified/);
});

Deno.test("socket: --raw serves plain bytes to Deno.connect, socat and client --raw", async () => {
  await using place = await socketPlace();
  const file = `${place.dir}/raw.bin`;
  const size = 3 * DATA_CHUNK + 17;
  await makeFile(file, size, 9);
  const hasSocat = new Deno.Command("sh", { args: ["-c", "command -v socat"], stdout: "null" })
    .outputSync().success;
  const peers = hasSocat ? 3 : 2;
  const server = startServer(file, place.socket, ["--raw", "--peers", String(peers)]);
  await waitForSocket(place.socket);

  // 1. A plain Deno.connect reader: no handshake at all.
  const plain = `${place.dir}/plain.bin`;
  await Deno.writeFile(plain, await readRaw(place.socket));
  await assertSameFile(plain, file);

  // 2. client --raw saves without verification and says so.
  const client = await startClient(place.socket, `${place.dir}/rawout`, ["--raw"]).done();
  assert.equal(client.code, 0, client.stderr);
  assert.match(client.stdout, /NOT verified/);
  await assertSameFile(`${place.dir}/rawout/p2m-raw-download`, file);

  // 3. socat, when installed.
  if (hasSocat) {
    const out = await new Deno.Command("socat", {
      args: ["-u", `UNIX-CONNECT:${place.socket}`, `CREATE:${place.dir}/socat.bin`],
    }).output();
    assert.ok(out.success);
    await assertSameFile(`${place.dir}/socat.bin`, file);
  }
  const served = await server.done();
  assert.equal(served.code, 0, served.stderr);
  assert.match(served.stdout, /unverified/);
});

Deno.test("socket: without --peers the server serves until SIGTERM, then cleans up (143)", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 100_000);
  const server = startServer(file, place.socket);
  for (const i of [1, 2]) {
    const c = await startClient(place.socket, `${place.dir}/o${i}`).done();
    assert.equal(c.code, 0, c.stderr);
  }
  Deno.kill(server.child.pid, "SIGTERM");
  const served = await server.done();
  assert.equal(served.code, 143, served.stderr);
  assert.match(served.stdout, /2 of 2 peers ok/);
  assert.deepEqual(listDir(place.dir).filter((n) => n.endsWith(".sock")), []);
  assert.deepEqual(workerSockets(server.child.pid), []);
});

Deno.test("socket: SIGINT exits 130 and removes the socket", async () => {
  await using place = await socketPlace();
  const { server } = await serveNewFile(place, 10, ["--quiet"]);
  Deno.kill(server.child.pid, "SIGINT");
  const served = await server.done();
  assert.equal(served.code, 130, served.stderr);
  assert.equal(served.stdout, "");
  assert.deepEqual(listDir(place.dir), ["f.bin"]);
});

/** A server killed with -9 leaves a stale socket file at `socket` behind. */
async function leaveStaleSocket(file: string, socket: string): Promise<void> {
  const dead = startServer(file, socket);
  await waitForSocket(socket);
  Deno.kill(dead.child.pid, "SIGKILL");
  await dead.done();
}

Deno.test("socket: stale socket is reused, live server refused, non-socket untouched", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 1000);
  await leaveStaleSocket(file, place.socket);
  assert.ok(Deno.lstatSync(place.socket).isSocket);

  const live = startServer(file, place.socket, ["--peers", "1"]);
  await waitForListener(place.socket);
  const second = await startServer(file, place.socket, ["--peers", "1"]).done();
  assert.equal(second.code, 1);
  assert.match(second.stderr, /already listening/);
  const client = await startClient(place.socket, `${place.dir}/out`).done();
  assert.equal(client.code, 0, client.stderr);
  assert.equal((await live.done()).code, 0);

  const plain = `${place.dir}/not-a-socket`;
  await Deno.writeTextFile(plain, "keep me");
  const refused = await startServer(file, plain, ["--peers", "1"]).done();
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /not a socket; refusing/);
  assert.equal(await Deno.readTextFile(plain), "keep me");
});

Deno.test("socket: two servers racing for one stale path: exactly one wins", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 1000);
  await leaveStaleSocket(file, place.socket);
  const racers = [1, 2].map(() => startServer(file, place.socket, ["--peers", "1"]));
  await waitForListener(place.socket);
  const client = await startClient(place.socket, `${place.dir}/out`).done();
  assert.equal(client.code, 0, client.stderr);
  const results = await Promise.all(racers.map((r) => r.done()));
  assert.deepEqual(results.map((r) => r.code).sort(), [0, 1], results.map((r) => r.stderr).join());
  assert.match(results.find((r) => r.code === 1)!.stderr, /already listening/);
  assert.deepEqual(listDir(place.dir).sort(), ["f.bin", "out"]);
});

Deno.test("socket: --out FILE, no clobbering without --force, and replacing with it", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 70_000);
  const target = `${place.dir}/copy.bin`;
  await Deno.writeTextFile(target, "precious");
  const run = async (args: string[]) => {
    const server = startServer(file, place.socket, ["--peers", "1"]);
    const client = await spawnP2m("socket.ts", [
      "client",
      "--socket",
      place.socket,
      "--out",
      target,
      ...args,
    ]).done();
    return { client, server: await server.done() };
  };
  const refused = await run([]);
  assert.equal(refused.client.code, 1);
  assert.match(refused.client.stderr, /already exists; use --force/);
  assert.equal(refused.server.code, 1);
  assert.equal(await Deno.readTextFile(target), "precious");
  const forced = await run(["--force"]);
  assert.equal(forced.client.code, 0, forced.client.stderr);
  assert.equal(forced.server.code, 0);
  await assertSameFile(target, file);
  assert.deepEqual(listDir(place.dir).sort(), ["copy.bin", "f.bin"]);
});

Deno.test("socket: the default socket lives in a private runtime directory", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 5000);
  const env = { XDG_RUNTIME_DIR: `${place.dir}/run` };
  await Deno.mkdir(env.XDG_RUNTIME_DIR, { mode: 0o755 });
  const server = spawnP2m("socket.ts", ["server", file, "--peers", "1"], { env });
  const socket = `${env.XDG_RUNTIME_DIR}/p2m/p2m.sock`;
  await waitForSocket(socket);
  assert.equal(Deno.statSync(`${env.XDG_RUNTIME_DIR}/p2m`).mode! & 0o777, 0o700);
  assert.equal(Deno.lstatSync(socket).mode! & 0o777, 0o600);
  const client = await spawnP2m("socket.ts", ["client", "--out", `${place.dir}/o/`], { env })
    .done();
  assert.equal(client.code, 0, client.stderr);
  assert.equal((await server.done()).code, 0);
  await assertSameFile(`${place.dir}/o/f.bin`, file);
  assert.deepEqual(listDir(`${env.XDG_RUNTIME_DIR}/p2m`), []);
});

Deno.test("socket: an overlong socket path gets a clear error", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 10);
  const long = `${place.dir}/${"s".repeat(120)}.sock`;
  const server = await startServer(file, long).done();
  assert.equal(server.code, 2);
  assert.match(server.stderr, /at most 107/);
  const client = await startClient(long, `${place.dir}/o`).done();
  assert.equal(client.code, 2);
  assert.match(client.stderr, /at most 107/);
  assert.deepEqual(listDir(place.dir), ["f.bin"]);
});

Deno.test("socket: missing and unopenable inputs fail with exit 1; a directory is sent as a tree", async () => {
  await using place = await socketPlace();
  const file = await newFile(place, 10);
  {
    // A directory is no longer refused: it is served as a tree (socket_tree_test.ts).
    const tree = `${place.dir}/tree`;
    await Deno.mkdir(tree);
    const server = startServer(tree, place.socket, ["--peers", "1"]);
    const client = await startClient(place.socket, `${place.dir}/out`).done();
    assert.equal(client.code, 0, client.stderr);
    assert.equal((await server.done()).code, 0);
    assert.ok(Deno.statSync(`${place.dir}/out/tree`).isDirectory);
    await Deno.remove(tree);
    await Deno.remove(`${place.dir}/out`, { recursive: true });
  }
  for (
    const [input, reason] of [
      [`${place.dir}/missing`, /no such file/],
      [`${file}/inside-a-file`, /cannot open/],
    ] as const
  ) {
    const server = await startServer(input, place.socket, ["--peers", "1"]).done();
    assert.equal(server.code, 1, input);
    assert.match(server.stderr, reason);
    assert.equal(server.stderr.trim().split("\n").length, 1, server.stderr);
  }
  assert.deepEqual(listDir(place.dir), ["f.bin"]);
});

Deno.test("socket: bad flags exit 2 with usage; --help exits 0", async () => {
  const cases = [
    ["server"],
    ["server", "f", "--peers", "abc"],
    ["server", "f", "--bogus"],
    ["server", "f", "--digest", "md5"],
    ["server", "f", "--max-active", "0"],
    ["server", "f", "--limit-rate", "fast"],
    ["server", "f", "--stall-timeout", "0"],
    ["client", "--timeout", "-1"],
    ["client", "extra"],
    ["nonsense"],
    [],
  ];
  for (const args of cases) {
    const result = await spawnP2m("socket.ts", args).done();
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, /Usage:/);
  }
  for (const args of [["--help"], ["server", "--help"], ["client", "-h"]]) {
    const result = await spawnP2m("socket.ts", args).done();
    assert.equal(result.code, 0);
    assert.match(result.stdout, /Usage:/);
    assert.doesNotMatch(result.stdout, /^ {2}worker /m, "the worker role stays hidden");
  }
});

Deno.test("socket: a client with no server times out with exit 1", async () => {
  await using place = await socketPlace();
  const result = await spawnP2m("socket.ts", [
    "client",
    "--socket",
    place.socket,
    "--out",
    `${place.dir}/o/`,
    "--timeout",
    "0.3",
  ]).done();
  assert.equal(result.code, 1);
  assert.match(result.stderr, /no server on/);
  assert.deepEqual(listDir(`${place.dir}/o`), []);
});
