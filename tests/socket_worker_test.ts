/**
 * The socket worker on its own: a real `socket.ts worker` process, driven
 * through its stdin the way the server drives it, with this test as the peer.
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
import { DIGEST_LINE, NOTIFIED, type WorkerConfig } from "../socket/worker_protocol.ts";
import { spawnPiped } from "../tools/runner.ts";
import { makeFile, withTempDir } from "./helpers.ts";

const encoder = new TextEncoder();

Deno.test("socket worker: a digest that arrives after the bytes goes into the trailer", async () => {
  await withTempDir("p2m-worker-", async (dir) => {
    const path = `${dir}/f.bin`;
    const size = 3 * 1024 * 1024 + 5;
    const data = await makeFile(path, size);
    const info = Source.open(path, { lease: false }).info;
    const token = newToken();
    const socketPath = `${dir}/w.sock`;
    const config: WorkerConfig = {
      source: info,
      digest: "xxh64",
      digestHex: null, // the server is still hashing
      token,
      socketPath,
      stallSeconds: 10,
      limitRate: 0,
    };
    const child = spawnPiped(p2mArgv("socket.ts", ["worker"]), { stdin: "piped" });
    const stdin = child.stdin.getWriter();
    await stdin.write(encoder.encode(JSON.stringify(config) + "\n"));
    const reports = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) text += (await reports.read()).value ?? "";
    assert.equal(JSON.parse(text.split("\n")[0]).type, "ready");
    assert.equal(Deno.lstatSync(socketPath).mode! & 0o777, 0o600);
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
