import assert from "node:assert/strict";
import { DirectoryWatch, LibcError } from "../ffi/mod.ts";

/** Runs `script` in sh after `ms` milliseconds, in another process. */
function later(ms: number, script: string): Deno.ChildProcess {
  return new Deno.Command("sh", {
    args: ["-c", `sleep ${ms / 1000}; ${script}`],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

Deno.test("directory watch: a name created, chmod'ed or removed by another process wakes the wait; other names do not", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "p2m-watch-" });
  try {
    using watch = DirectoryWatch.open(dir);
    assert.equal(await watch.waitFor("segment", 50), false, "nothing happened");

    const other = later(50, `: > "${dir}/other"; chmod 600 "${dir}/other"`);
    assert.equal(
      await watch.waitFor("segment", 600),
      false,
      "changes to another name are passed over",
    );
    await other.status;

    for (
      const [what, script] of [
        ["created", `: > "${dir}/segment"`],
        ["chmod'ed", `chmod 640 "${dir}/segment"`],
        ["truncated", `truncate -s 4096 "${dir}/segment"`],
        ["removed", `rm "${dir}/segment"`],
        ["renamed into place", `: > "${dir}/.tmp"; mv "${dir}/.tmp" "${dir}/segment"`],
      ]
    ) {
      const child = later(100, script);
      assert.equal(await watch.waitFor("segment", 30_000), true, `${what}: the wait ends`);
      assert.equal((await child.status).code, 0);
      // What the script did is queued before the next case starts.
      await watch.waitFor("segment", 20);
    }

    // A name that only starts with the one we want is another name.
    const longer = later(50, `: > "${dir}/segment-2"`);
    assert.equal(await watch.waitFor("segment", 400), false);
    await longer.status;

    watch.close();
    await assert.rejects(watch.waitFor("segment", 10), RangeError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("directory watch: a path that is not a directory is refused with errno and the call named", () => {
  const file = Deno.makeTempFileSync({ prefix: "p2m-watch-" });
  try {
    assert.throws(
      () => DirectoryWatch.open(file),
      (error: unknown) =>
        error instanceof LibcError && error.fn === "inotify_add_watch" &&
        error.message.includes(file) && error.reason === "not a directory",
    );
    assert.throws(() => DirectoryWatch.open(`${file}-missing`), LibcError);
  } finally {
    Deno.removeSync(file);
  }
});
