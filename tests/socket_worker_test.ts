/**
 * The socket worker on its own: a real worker process, driven through its
 * stdin the way the server drives it, with this test as the peer. Both entry
 * points run the same tests: socket/worker_main.ts (what the server spawns)
 * and the hidden `socket.ts worker`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createDigest, toHex } from "../core/digest.ts";
import { p2mArgv } from "../core/permissions.ts";
import { Source } from "../core/source.ts";
import {
  decodeHeader,
  decodeTrailer,
  HEADER_FIXED_LENGTH,
  headerLength,
  TRAILER_FIXED_LENGTH,
  TrailerStatus,
} from "../core/wire.ts";
import { newToken, readFull } from "../socket/protocol.ts";
import { workerArgv } from "../socket/worker_handle.ts";
import { DIGEST_LINE, NOTIFIED, type WorkerConfig } from "../socket/worker_protocol.ts";
import { spawnPiped } from "../tools/runner.ts";
import { makeFile, withTempDir } from "./helpers.ts";

const encoder = new TextEncoder();

/** The two ways a worker starts: what the server spawns, and the hidden role. */
const ENTRIES: ReadonlyArray<[string, () => string[]]> = [
  ["worker_main.ts", workerArgv],
  ["socket.ts worker", () => p2mArgv("socket.ts", ["worker"])],
];

/** A worker started from `argv`, configured for `config`, that has said `ready`. */
async function readyWorker(argv: string[], config: WorkerConfig) {
  const child = spawnPiped(argv, { stdin: "piped" });
  const stdin = child.stdin.getWriter();
  await stdin.write(encoder.encode(JSON.stringify(config) + "\n"));
  const reports = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) text += (await reports.read()).value ?? "";
  assert.equal(JSON.parse(text.split("\n")[0]).type, "ready");
  assert.equal(Deno.lstatSync(config.socketPath).mode! & 0o777, 0o600);
  return { child, stdin, reports, text };
}

/** A configuration for the file at `path`, listening on `socketPath`. */
function configFor(path: string, socketPath: string): WorkerConfig {
  return {
    source: Source.open(path, { lease: false }).info,
    digest: "xxh64",
    digestHex: null, // the server is still hashing
    token: newToken(),
    socketPath,
    stallSeconds: 10,
    limitRate: 0,
  };
}

for (const [entry, argv] of ENTRIES) {
  Deno.test(`socket worker (${entry}): a digest that arrives after the bytes goes into the trailer`, async () => {
    await withTempDir("p2m-worker-", async (dir) => {
      const path = `${dir}/f.bin`;
      const size = 3 * 1024 * 1024 + 5;
      const data = await makeFile(path, size);
      const socketPath = `${dir}/w.sock`;
      const config = configFor(path, socketPath);
      const { token } = config;
      const worker = await readyWorker(argv(), config);
      const { child, stdin, reports } = worker;
      let text = worker.text;
      await stdin.write(encoder.encode(NOTIFIED + "\n"));

      const conn = await Deno.connect({ transport: "unix", path: socketPath });
      await conn.write(encoder.encode(token + "\n"));
      const fixed = new Uint8Array(HEADER_FIXED_LENGTH);
      await readFull(conn, fixed, "header");
      const headerBytes = new Uint8Array(headerLength(fixed));
      headerBytes.set(fixed);
      await readFull(conn, headerBytes.subarray(HEADER_FIXED_LENGTH), "header");
      assert.equal(decodeHeader(headerBytes).size, size);
      const body = new Uint8Array(size);
      await readFull(conn, body, "body");
      assert.deepEqual(body, data);

      // Every byte is read; the worker now waits for the digest before its trailer.
      const digest = await createDigest("xxh64");
      digest.update(data);
      const hex = toHex(digest.digest());
      await stdin.write(encoder.encode(`${DIGEST_LINE} ${hex}\n`));
      const trailerBytes = new Uint8Array(TRAILER_FIXED_LENGTH + 8);
      await readFull(conn, trailerBytes, "trailer");
      const trailer = decodeTrailer(trailerBytes, "xxh64");
      assert.equal(trailer.status, TrailerStatus.Complete);
      assert.equal(toHex(trailer.digest), hex);
      assert.equal(await conn.read(new Uint8Array(1)), null); // shut down after the trailer
      conn.close();

      while (!text.includes('"done"')) text += (await reports.read()).value ?? "";
      assert.equal((await child.status).code, 0);
      await stdin.close();
      reports.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel();
      assert.throws(() => Deno.lstatSync(socketPath), Deno.errors.NotFound);
    });
  });

  Deno.test(`socket worker (${entry}): SIGTERM while it waits for its peer unlinks its socket, exits 143`, async () => {
    await withTempDir("p2m-worker-", async (dir) => {
      const path = `${dir}/f.bin`;
      await makeFile(path, 4096);
      const socketPath = `${dir}/w.sock`;
      const { child, stdin, reports } = await readyWorker(argv(), configFor(path, socketPath));
      child.kill("SIGTERM");
      const status = await child.status;
      assert.equal(status.code, 143);
      await stdin.close().catch(() => {});
      reports.releaseLock();
      await child.stdout.cancel().catch(() => {});
      const stderr = await new Response(child.stderr).text();
      assert.match(stderr, /interrupted by SIGTERM; aborted/);
      assert.throws(() => Deno.lstatSync(socketPath), Deno.errors.NotFound);
    });
  });
}
