/**
 * core/output.ts durability: after a verified copy is linked to its final
 * name, the directory that holds the name is fsynced, and so is the parent
 * of each directory the receiver made for `--out DIR/`. A crash test
 * cannot show a lost directory entry, so this watches the system calls of
 * a real shm receiver with strace(1) (skipped where strace is missing).
 *
 * @module
 */
import assert from "node:assert/strict";
import { assertSameFile, makeFile, tempDir, uniqueName, waitFor } from "./helpers.ts";
import { assertNoSegment, receiver, sender } from "./shm_helpers.ts";

const hasStrace = (() => {
  try {
    return new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

const TRACED = "trace=fsync,fdatasync,linkat,renameat,renameat2,link,rename,openat";

/** The pid tracing `pid` (0: none), from /proc (which Deno reads only with -A, so cat does). */
function tracerOf(pid: number): number {
  const out = new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" })
    .outputSync();
  const status = new TextDecoder().decode(out.stdout);
  return Number(/^TracerPid:\s*(\d+)/m.exec(status)?.[1] ?? 0);
}

/**
 * Whether, after line `from`, `trace` opens `path` read-only and fsyncs that
 * fd before the fd number is handed out again.
 */
function syncedAfter(trace: string[], from: number, path: string): boolean {
  const opened = new RegExp(`^openat\\(AT_FDCWD, "${path}", O_RDONLY[^)]*\\) = (\\d+)$`);
  for (let i = from; i < trace.length; i++) {
    const fd = opened.exec(trace[i])?.[1];
    if (fd === undefined) continue;
    const next = trace.slice(i + 1).find((line) =>
      line.startsWith(`fsync(${fd})`) || line.endsWith(`) = ${fd}`)
    );
    if (next === `fsync(${fd}) = 0`) return true;
  }
  return false;
}

Deno.test({
  name: "output: the directory is fsynced after the copy gets its final name",
  ignore: !hasStrace,
  fn: async () => {
    const dir = await tempDir("p2m-durable-");
    const name = uniqueName("p2m-dur");
    try {
      const file = `${dir}/src.bin`;
      await makeFile(file, 200_000);
      // The receiver waits for its sender: attach strace to it first.
      const out = `${dir}/made/sub`;
      const receive = receiver(name, out, ["--quiet"]);
      const strace = new Deno.Command("strace", {
        args: ["-f", "-qq", "-o", `${dir}/trace`, "-e", TRACED, "-p", String(receive.child.pid)],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      await waitFor(() => tracerOf(receive.child.pid) !== 0, 10_000, "strace to attach");
      const send = sender(file, name, ["--quiet"]);
      const received = await receive.done();
      assert.equal(received.code, 0, received.stderr);
      assert.equal((await send.done()).code, 0);
      assert.equal((await strace.output()).code, 0, "strace saw the receiver to its end");
      await assertSameFile(`${out}/src.bin`, file);

      const trace = Deno.readTextFileSync(`${dir}/trace`).split("\n")
        .map((line) => line.replace(/^\d+\s+/, "").replace(/\s+/g, " ").trim());
      const linked = trace.findIndex((line) =>
        /^(linkat|renameat2?|link|rename)\(/.test(line) && line.includes(`"${out}/src.bin"`) &&
        line.endsWith("= 0")
      );
      assert.ok(linked >= 0, "the copy was linked to its final name");
      assert.ok(syncedAfter(trace, linked, out), `${out} fsynced after the link`);
      assert.ok(syncedAfter(trace, linked, `${dir}/made`), "the parent of sub/ fsynced");
      assert.ok(syncedAfter(trace, linked, dir), "the parent of made/ fsynced");
    } finally {
      await assertNoSegment(name);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
