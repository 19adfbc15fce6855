/**
 * The control protocol's line reader and message checks
 * (socket/protocol.ts), over real sockets pairs and in memory, plus the
 * worker's stdio messages (socket/worker_protocol.ts).
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  LineReader,
  MAX_LINE_BYTES,
  parseClientMessage,
  ProtocolError,
  type Readable,
} from "../socket/protocol.ts";
import {
  encodeParentMessage,
  encodeReport,
  parseParentMessage,
  parseReport,
} from "../socket/worker_protocol.ts";

const encoder = new TextEncoder();

/** A readable that hands out the given chunks one read at a time, then EOF. */
function chunks(...parts: (string | Uint8Array)[]): Readable {
  const queue = parts.map((p) => typeof p === "string" ? encoder.encode(p) : p);
  return {
    read(buf: Uint8Array): Promise<number | null> {
      const next = queue.shift();
      if (next === undefined) return Promise.resolve(null);
      const n = Math.min(buf.length, next.length);
      buf.set(next.subarray(0, n));
      if (n < next.length) queue.unshift(next.subarray(n));
      return Promise.resolve(n);
    },
  };
}

async function readAll(reader: LineReader): Promise<string[]> {
  const out: string[] = [];
  for (let line; (line = await reader.readLine()) !== null;) out.push(line);
  return out;
}

Deno.test("LineReader: lines split across reads, several per read, and empty lines", async () => {
  const reader = new LineReader(chunks('{"a":', '1}\n{"b":2}\n\n', "x\ny", "z\n"));
  assert.deepEqual(await readAll(reader), ['{"a":1}', '{"b":2}', "", "x", "yz"]);
});

Deno.test("LineReader: multi-byte UTF-8 split between reads", async () => {
  const bytes = encoder.encode("é→\n");
  const reader = new LineReader(
    chunks(bytes.subarray(0, 1), bytes.subarray(1, 3), bytes.subarray(3)),
  );
  assert.deepEqual(await readAll(reader), ["é→"]);
});

Deno.test("LineReader: a line of exactly the limit passes; one byte more is refused", async () => {
  const fits = "a".repeat(MAX_LINE_BYTES);
  assert.deepEqual(await readAll(new LineReader(chunks(fits + "\n"))), [fits]);
  const long = new LineReader(chunks("a".repeat(MAX_LINE_BYTES + 1) + "\n"));
  await assert.rejects(() => long.readLine(), ProtocolError);
});

Deno.test("LineReader: EOF in the middle of a line is a protocol error", async () => {
  const reader = new LineReader(chunks("done\npartial"));
  assert.equal(await reader.readLine(), "done");
  await assert.rejects(() => reader.readLine(), /in the middle of a line/);
});

Deno.test("LineReader: over a real socket pair, many lines in one write", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const listener = Deno.listen({ transport: "unix", path: `${dir}/s` });
    const client = await Deno.connect({ transport: "unix", path: `${dir}/s` });
    const server = await listener.accept();
    const lines = Array.from({ length: 500 }, (_, i) => `{"n":${i}}`);
    await client.write(encoder.encode(lines.join("\n") + "\n"));
    client.close();
    assert.deepEqual(await readAll(new LineReader(server)), lines);
    server.close();
    listener.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseClientMessage: only well-formed messages pass", () => {
  assert.deepEqual(parseClientMessage('{"type":"hello","version":1,"pid":7}'), {
    type: "hello",
    version: 1,
    pid: 7,
  });
  for (const bad of ["[]", "null", "{", '{"type":"hello","version":-1}', '{"type":"x"}']) {
    assert.throws(() => parseClientMessage(bad), ProtocolError, bad);
  }
});

Deno.test("worker stdio messages: round trip, and anything else is refused", () => {
  for (
    const report of [
      { type: "ready" as const },
      { type: "done" as const, bytes: 5, seconds: 0.25 },
      { type: "missed" as const, seconds: 2 },
      { type: "error" as const, message: "boom" },
    ]
  ) {
    const line = new TextDecoder().decode(encodeReport(report)).trimEnd();
    assert.deepEqual(parseReport(line), report);
  }
  for (const bad of ["", "{", '{"type":"done","bytes":-1,"seconds":0}', '{"type":"nope"}']) {
    assert.equal(parseReport(bad), undefined, bad);
  }
  const digest = new TextDecoder().decode(encodeParentMessage({ type: "digest", hex: "00ff" }));
  assert.deepEqual(parseParentMessage(digest.trimEnd()), { type: "digest", hex: "00ff" });
  assert.deepEqual(parseParentMessage("notified"), { type: "notified" });
  assert.equal(parseParentMessage("digest 0g"), undefined);
  assert.throws(() => parseParentMessage('{"source":1}'), /bad configuration/);
});
