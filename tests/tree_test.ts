/**
 * core/tree.ts on a real temporary tree holding every kind of entry:
 * files, nested and empty directories, symlinks in and out of the tree,
 * a dangling link, a FIFO, a Unix socket, a device, a hard link, special
 * mode bits and a name that is not UTF-8.
 *
 * @module
 */
import assert from "node:assert/strict";
import { P2mError } from "../core/errors.ts";
import { tarEntryOf, type TreeFileReader, TreeStream, walkTree } from "../core/tree.ts";
import { TreeOutput } from "../core/tree_output.ts";
import { makeFile, tempDir, withTempDir } from "./helpers.ts";

async function run(command: string, ...args: string[]): Promise<void> {
  const result = await new Deno.Command(command, { args }).output();
  assert.equal(result.code, 0, `${command}: ${new TextDecoder().decode(result.stderr)}`);
}

Deno.test("walkTree lists files, dirs and inside links in stable order and skips the rest", async () => {
  const dir = await tempDir("p2m-tree-");
  const src = `${dir}/src`;
  let listener: Deno.Listener | undefined;
  try {
    await Deno.mkdir(`${src}/b/nested/deep`, { recursive: true });
    await Deno.mkdir(`${src}/empty`);
    await Deno.mkdir(`${src}/sticky`);
    await Deno.chmod(`${src}/sticky`, 0o1777);
    await Deno.writeTextFile(`${dir}/outside.txt`, "outside\n");
    await Deno.writeTextFile(`${src}/a.txt`, "a\n");
    await Deno.chmod(`${src}/a.txt`, 0o600);
    await Deno.writeTextFile(`${src}/b/nested/deep/f.bin`, "123456789");
    await Deno.writeTextFile(`${src}/suid`, "#!/bin/sh\n");
    await Deno.chmod(`${src}/suid`, 0o4755);
    await Deno.link(`${src}/a.txt`, `${src}/hard`);
    await Deno.writeTextFile(`${src}/Zed`, "z");
    await Deno.writeTextFile(`${src}/é`, "e");
    await Deno.symlink("nested/deep/f.bin", `${src}/b/rel-link`);
    await Deno.symlink(`${src}/b/nested/deep/f.bin`, `${src}/b/abs-inside`);
    await Deno.symlink("nested", `${src}/b/dir-link`);
    await Deno.symlink("..", `${src}/b/to-root`);
    await Deno.symlink("../../outside.txt", `${src}/b/escape`);
    await Deno.symlink("/etc/passwd", `${src}/abs-outside`);
    await Deno.symlink("nowhere", `${src}/dangling`);
    await Deno.symlink("b/../../src/a.txt", `${src}/roundabout`);
    await run("mkfifo", `${src}/fifo`);
    listener = Deno.listen({ transport: "unix", path: `${src}/sock` });
    await run("mknod", `${src}/null-dev`, "c", "1", "3");
    await run("sh", "-c", `touch "${src}/bad-$(printf '\\377')name"`);
    await Deno.writeTextFile(`${src}/ctl\nname`, "newline in the name");
    const deep = ["deep", ...Array(64).fill("d")];
    await Deno.mkdir(`${src}/${deep.join("/")}`, { recursive: true });

    const tree = walkTree(src);
    const summary = tree.entries.map((entry) =>
      entry.kind === "symlink"
        ? `${entry.path} -> ${entry.target}`
        : `${entry.kind} ${entry.path} ${entry.mode.toString(8)}`
    );
    assert.deepEqual(summary, [
      "file Zed 644",
      "file a.txt 600",
      "directory b 755",
      "b/abs-inside -> nested/deep/f.bin",
      "b/dir-link -> nested",
      "directory b/nested 755",
      "directory b/nested/deep 755",
      "file b/nested/deep/f.bin 644",
      "b/rel-link -> nested/deep/f.bin",
      "b/to-root -> ..",
      ...deep.slice(0, 64).map((_, i) => `directory ${deep.slice(0, i + 1).join("/")} 755`),
      "directory empty 755",
      "file hard 600",
      "roundabout -> a.txt",
      "directory sticky 777",
      "file suid 755",
      "file é 644",
    ]);
    assert.deepEqual(tree.skipped, [
      { path: "abs-outside", reason: "symlink points out of the tree" },
      { path: "b/escape", reason: "symlink points out of the tree" },
      { path: "bad-\ufffdname", reason: "name is not valid UTF-8" },
      { path: "ctl\nname", reason: "control character U+000a in path" },
      { path: "dangling", reason: "dangling symlink" },
      { path: deep.join("/"), reason: "deeper than 64 levels" },
      { path: "fifo", reason: "FIFO" },
      { path: "null-dev", reason: "character device" },
      { path: "sock", reason: "socket" },
    ]);
    const file = tree.entries.find((entry) => entry.path === "b/nested/deep/f.bin");
    assert.equal(file?.kind === "file" && file.size, 9);
    assert.equal(tree.fileBytes, 1 + 2 + 9 + 2 + 10 + 1, "the hard link counts as a separate file");
    assert.equal(tree.rootMode, 0o755);
    // The same tree walks to the same list: the order is stable.
    assert.deepEqual(walkTree(src).entries, tree.entries);
    assert.deepEqual(tarEntryOf(tree.entries[0], "src"), {
      path: "src/Zed",
      kind: "file",
      mode: 0o644,
      size: 1,
      mtime: Math.floor(tree.entries[0].mtime),
    });
  } finally {
    listener?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("walkTree refuses what is not a readable directory", async () => {
  await withTempDir("p2m-tree-", async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "x");
    assert.throws(() => walkTree(`${dir}/file`), (error: unknown) => {
      assert.ok(error instanceof P2mError);
      assert.match(error.message, /is not a directory/);
      return true;
    });
    assert.throws(() => walkTree(`${dir}/missing`), /cannot read .*no such file/);
  });
});

Deno.test("TreeStream reads a tree's tar stream into any buffer, one file open at a time", async () => {
  await withTempDir("p2m-tree-", async (dir) => {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/a/b`, { recursive: true });
    await Deno.mkdir(`${src}/empty`);
    await makeFile(`${src}/a/b/big.bin`, 1024 * 1024 + 1, 5);
    await makeFile(`${src}/a/small`, 700, 6);
    await Deno.writeFile(`${src}/zero`, new Uint8Array(0));
    await Deno.symlink("a/small", `${src}/link`);
    const tree = walkTree(src);
    let open = 0;
    let opened = 0;
    let mostOpen = 0;
    const stream = new TreeStream(tree, {
      prefix: "src",
      open: (_file, path) => {
        const file = Deno.openSync(path);
        opened++;
        mostOpen = Math.max(mostOpen, ++open);
        return {
          read: (buffer) => file.readSync(buffer) ?? 0,
          close: () => (open--, file.close()),
        };
      },
    });
    assert.equal(opened, 0, "nothing is opened before the first read");
    const output = TreeOutput.create({ path: `${dir}/copy`, stripComponents: 1 });
    let seed = 1;
    for (;;) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const buffer = new Uint8Array(1 + (seed % 100_000));
      const count = stream.read(buffer);
      if (count === 0) break;
      output.write(buffer.subarray(0, count));
    }
    assert.equal(stream.bytesRead, stream.size, "size is known in advance and exact");
    assert.equal(stream.read(new Uint8Array(10)), 0, "stays at its end");
    output.commit();
    assert.equal(opened, 2, "only non-empty files are opened");
    assert.equal(mostOpen, 1);
    assert.equal(open, 0, "every file closed");
    const diff = await new Deno.Command("diff", {
      args: ["-r", "--no-dereference", src, `${dir}/copy`],
    }).output();
    assert.equal(diff.code, 0, new TextDecoder().decode(diff.stdout));

    // A file that is shorter than walked fails the stream.
    const short = new TreeStream(walkTree(src), {
      open: (): TreeFileReader => ({ read: () => 0, close() {} }),
    });
    assert.throws(() => {
      while (short.read(new Uint8Array(4096)) > 0) { /* drain */ }
    }, /a\/b\/big.bin shrank while being sent/);
    short.close();
  });
});
