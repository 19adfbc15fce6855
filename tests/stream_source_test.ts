/**
 * core/stream_source.ts against real pipes and FIFOs: bytes arrive as they
 * are written, the end is seen, the shared stdin description is never made
 * nonblocking, a FIFO with no writer neither blocks the open nor reads as
 * an end, and a process waiting on an idle input still answers SIGTERM.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { inputKind, isStreamPath } from "../core/stream_source.ts";
import { tempDir } from "./helpers.ts";
import { spawnStdioChild } from "./stdio_helpers.ts";

function pattern(size: number, seed: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * seed + (i >> 9)) & 0xff;
  return data;
}

Deno.test("stdin: the first 100 bytes are delivered while the producer still writes", async () => {
  const { child, log } = spawnStdioChild(["read", "-"]);
  const writer = child.stdin.getWriter();
  const first = pattern(100, 3);
  const rest = pattern(1024 * 1024 + 1, 5);
  await writer.write(first);
  // Ordering, not timing: the rest is written only once the reader has the first part.
  await log.waitFor((line) => line.got === 100);
  await writer.write(rest);
  await writer.close();
  const status = await child.status;
  await child.stdout.cancel();
  await log.finished;
  assert.equal(status.code, 0);
  const end = log.seen.find((line) => "eof" in line)!;
  const hash = createHash("sha256").update(first).update(rest).digest("hex");
  assert.equal(end.eof, 100 + rest.length);
  assert.equal(end.sha256, hash);
  assert.equal(end.nonblock, false, "stdin's shared description must stay blocking");
});

Deno.test("stdin: 0 bytes is a clean end", async () => {
  const { child, log } = spawnStdioChild(["read", "-"]);
  await child.stdin.close();
  const status = await child.status;
  await child.stdout.cancel();
  await log.finished;
  assert.equal(status.code, 0);
  assert.equal(log.seen.find((line) => "eof" in line)?.eof, 0);
});

Deno.test("stdin: a reader waiting on an idle pipe still answers SIGTERM", async () => {
  const { child, log } = spawnStdioChild(["read", "-"]);
  await log.waitFor((line) => line.idle === true);
  child.kill("SIGTERM");
  const status = await child.status;
  await child.stdin.close().catch(() => {});
  await child.stdout.cancel();
  await log.finished;
  assert.equal(status.code, 143);
  assert.ok(log.seen.some((line) => line.signal === "SIGTERM"));
});

Deno.test("FIFO: the open does not wait for a writer, and no writer is not an end", async () => {
  const dir = await tempDir();
  try {
    const fifo = `${dir}/in.fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(made.code, 0);
    assert.equal(inputKind(fifo), "stream");
    const { child, log } = spawnStdioChild(["read", fifo]);
    await child.stdin.close();
    await log.waitFor((line) => line.idle === true);
    assert.ok(!log.seen.some((line) => "eof" in line), "no writer yet must not read as an end");
    const writer = await Deno.open(fifo, { write: true });
    await writer.write(new TextEncoder().encode("hello"));
    writer.close();
    const status = await child.status;
    await child.stdout.cancel();
    await log.finished;
    assert.equal(status.code, 0);
    assert.equal(log.seen.find((line) => "eof" in line)?.eof, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inputKind: -, FIFO, char device vs file vs directory", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "x");
    assert.equal(inputKind("-"), "stream");
    assert.equal(inputKind("/dev/null"), "stream");
    assert.equal(inputKind(dir), "directory");
    assert.equal(inputKind(`${dir}/f`), "file");
    assert.equal(inputKind(`${dir}/missing`), "file");
    assert.equal(isStreamPath("-"), true);
    assert.equal(isStreamPath(`${dir}/f`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
