import assert from "node:assert/strict";
import { listDir, runTask, shmEntries } from "./helpers.ts";

/** Runs `deno task demo` as a user would. */
function demo(args: string[]) {
  return runTask("demo", args);
}

function demoDirs(): string[] {
  return listDir("/tmp").filter((name) => name.startsWith("p2m-demo-"));
}

Deno.test("demo copies to every receiver over both transports and prints one table", async () => {
  const before = demoDirs();
  const { code, stdout, stderr } = await demo([
    "--size",
    "2MiB",
    "--peers",
    "2",
    "--timeout",
    "60",
  ]);
  assert.equal(code, 0, `demo failed:\n${stdout}\n${stderr}`);
  const lines = stdout.split("\n");
  const header = lines.findIndex((line) => /^transport\s+peers\s+size\s+seconds/.test(line));
  assert.ok(header >= 0, `no table in:\n${stdout}`);
  for (const transport of ["shm", "socket"]) {
    const row = lines.slice(header + 2).find((line) => line.startsWith(transport + " "));
    assert.ok(row, `no ${transport} row in:\n${stdout}`);
    assert.match(row, /\s2\s+2\.0 MiB\s+\d+\.\d{3}\s+\d+\.\d\d GiB\/s\s+2\/2$/);
  }
  assert.deepEqual(demoDirs(), before, "the demo left its temp dir behind");
  assert.deepEqual(await shmEntries(`demo-`), []);
});

Deno.test("demo --json reports a result per transport and a summary", async () => {
  const { code, stdout } = await demo([
    "--size",
    "300K",
    "--peers",
    "1",
    "--transport",
    "shm",
    "--json",
  ]);
  assert.equal(code, 0, stdout);
  const events = stdout.trim().split("\n").map((line) => JSON.parse(line));
  const results = events.filter((e) => e.event === "result");
  assert.equal(results.length, 1);
  assert.equal(results[0].transport, "shm");
  assert.equal(results[0].verified, 1);
  assert.equal(results[0].bytes, 300 * 1024);
  const summary = events.at(-1);
  assert.equal(summary.event, "summary");
  assert.equal(summary.ok, true);
});

Deno.test("demo refuses bad input with the usual exit codes", async () => {
  const usage = await demo(["--peers", "0"]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--peers must be a whole number from 1 to 64/);
  const both = await demo(["--file", "x", "--size", "1M"]);
  assert.equal(both.code, 2);
  const missing = await demo(["--file", "/nonexistent/p2m-demo-input"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open \/nonexistent\/p2m-demo-input: no such file/);
});
