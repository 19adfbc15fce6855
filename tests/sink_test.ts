/**
 * core/sink.ts: `--out -` over real pipes (bytes intact, a full pipe never
 * makes the writer deaf to SIGTERM, a reader that goes away fails the
 * writer clearly), Reporter's eventsTo stderr, and openSink's resolution of
 * `--out DIR/`, `--out PATH` for files and trees on real directories.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FileSink, openSink, StdoutSink, TreeSink } from "../core/sink.ts";
import { TreeStream, walkTree } from "../core/tree.ts";
import { tempDir } from "./helpers.ts";
import { spawnStdioChild } from "./stdio_helpers.ts";

function childPattern(total: number): Uint8Array {
  const piece = new Uint8Array(256 * 1024);
  for (let i = 0; i < piece.length; i++) piece[i] = (i * 7 + 3) & 0xff;
  const out = new Uint8Array(total);
  for (let at = 0; at < total; at += piece.length) {
    out.set(piece.subarray(0, Math.min(piece.length, total - at)), at);
  }
  return out;
}

Deno.test("StdoutSink: bytes reach a pipe intact", async () => {
  const total = 8 * 1024 * 1024 + 1;
  const { child, log } = spawnStdioChild(["write", String(total)]);
  await child.stdin.close();
  const hash = createHash("sha256");
  let got = 0;
  for await (const chunk of child.stdout) {
    hash.update(chunk);
    got += chunk.length;
  }
  const status = await child.status;
  await log.finished;
  assert.equal(status.code, 0, log.text.join("\n"));
  assert.equal(got, total);
  assert.equal(hash.digest("hex"), createHash("sha256").update(childPattern(total)).digest("hex"));
  assert.equal(log.seen.find((line) => "wrote" in line)?.wrote, total);
});

Deno.test("StdoutSink: a writer facing a full pipe still answers SIGTERM", async () => {
  const { child, log } = spawnStdioChild(["write", String(64 * 1024 * 1024)]);
  await child.stdin.close();
  const reader = child.stdout.getReader();
  await reader.read(); // it is writing; now stop reading, so the pipe fills
  child.kill("SIGTERM");
  const status = await child.status;
  await reader.cancel();
  await log.finished;
  assert.equal(status.code, 143);
  assert.ok(log.seen.some((line) => line.signal === "SIGTERM"));
});

Deno.test("StdoutSink: a reader that goes away fails the writer clearly", async () => {
  const { child, log } = spawnStdioChild(["write", String(64 * 1024 * 1024)]);
  await child.stdin.close();
  const reader = child.stdout.getReader();
  await reader.read();
  await reader.cancel();
  const status = await child.status;
  await log.finished;
  assert.equal(status.code, 1);
  const error = log.seen.find((line) => "error" in line);
  assert.match(String(error?.error), /stdout was closed/);
  assert.ok(Number(error?.wrote) < 64 * 1024 * 1024);
});

Deno.test("Reporter eventsTo stderr: stdout stays free for data", async () => {
  const { child, log } = spawnStdioChild(["report"]);
  await child.stdin.close();
  const stdout = await new Response(child.stdout).text();
  await child.status;
  await log.finished;
  assert.equal(stdout, "");
  assert.ok(log.seen.some((line) => line.event === "start" && line.what === "test"));
  assert.ok(log.text.includes("a human line"));
});

Deno.test("openSink: a file to DIR/ and to PATH, committed only when asked", async () => {
  const dir = await tempDir();
  try {
    const intoDir = openSink({ out: `${dir}/sub/`, name: "a.bin", mode: 0o640, kind: "file" });
    assert.ok(intoDir instanceof FileSink);
    assert.equal(intoDir.path, `${dir}/sub/a.bin`);
    await intoDir.write(new TextEncoder().encode("abc"));
    assert.throws(() => Deno.statSync(`${dir}/sub/a.bin`));
    intoDir.commit();
    assert.equal(await Deno.readTextFile(`${dir}/sub/a.bin`), "abc");
    assert.equal(Deno.statSync(`${dir}/sub/a.bin`).mode! & 0o777, 0o640);
    const atPath = openSink({ out: `${dir}/b.bin`, name: "ignored", mode: 0o644, kind: "file" });
    assert.equal(atPath.path, `${dir}/b.bin`);
    atPath.abort();
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["sub"]);
    assert.ok(openSink({ out: "-", name: "x", mode: 0o644, kind: "tree" }) instanceof StdoutSink);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openSink: a tree to DIR/ lands at DIR/<name>/, to PATH at PATH", async () => {
  const dir = await tempDir();
  try {
    const src = `${dir}/src/proj`;
    await Deno.mkdir(`${src}/a/empty`, { recursive: true });
    await Deno.writeTextFile(`${src}/a/f.txt`, "one");
    await Deno.writeTextFile(`${src}/top`, "two");
    await Deno.mkdir(`${dir}/out`);
    for (
      const [out, expected] of [[`${dir}/out/`, `${dir}/out/proj`], [`${dir}/t2`, `${dir}/t2`]]
    ) {
      const sink = openSink({ out, name: "proj", mode: 0o755, force: false, kind: "tree" });
      assert.ok(sink instanceof TreeSink);
      assert.equal(sink.path, expected);
      using stream = new TreeStream(walkTree(src), { prefix: "proj" });
      const buffer = new Uint8Array(1000);
      for (let n = stream.read(buffer); n > 0; n = stream.read(buffer)) {
        await sink.write(buffer.subarray(0, n));
      }
      assert.throws(() => Deno.statSync(expected), "nothing under the final name before commit");
      sink.commit();
      assert.equal(await Deno.readTextFile(`${expected}/a/f.txt`), "one");
      assert.equal(await Deno.readTextFile(`${expected}/top`), "two");
      assert.ok(Deno.statSync(`${expected}/a/empty`).isDirectory);
    }
    // Without --force an existing tree is never touched; an existing
    // directory given as PATH receives PATH/<name>, as a file would.
    assert.throws(
      () => openSink({ out: `${dir}/out/`, name: "proj", mode: 0o755, kind: "tree" }),
      /already exists/,
    );
    const again = openSink({ out: `${dir}/t2`, name: "proj", mode: 0o755, kind: "tree" });
    assert.equal(again.path, `${dir}/t2/proj`);
    again.abort();
    assert.deepEqual([...Deno.readDirSync(`${dir}/out`)].map((e) => e.name), ["proj"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
