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
import { p2mArgv } from "../core/permissions.ts";
import { assertSameFile, makeFile, tempDir, uniqueName } from "./helpers.ts";
import { assertNoSegment, sender } from "./shm_helpers.ts";

const hasStrace = (() => {
  try {
    return new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

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
      const send = sender(file, name, ["--quiet"]);
      const out = `${dir}/made/sub`;
      const traced = await new Deno.Command("strace", {
        args: [
          "-f",
          "-qq",
          "-o",
          `${dir}/trace`,
          "-e",
          "trace=fsync,fdatasync,linkat,renameat,renameat2,link,rename,openat",
          ...p2mArgv("sharedmem.ts", [
            "receiver",
            "--name",
            name,
            "--out",
            `${out}/`,
            "--timeout",
            "20",
            "--quiet",
          ]),
        ],
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(traced.code, 0, new TextDecoder().decode(traced.stderr));
      assert.equal((await send.done()).code, 0);
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
