/**
 * core/tree_output.ts on real directories: a tree round-trips and commits
 * atomically, hostile streams are refused with nothing landing outside the
 * target, --force swaps the whole tree, and a staging directory left by a
 * `kill -9`'d writer is swept by the next one.
 *
 * @module
 */
import assert from "node:assert/strict";
import { P2mError } from "../core/errors.ts";
import { tarEntryOf, walkTree } from "../core/tree.ts";
import {
  sanitizeTreePath,
  sweepStaleStaging,
  type TreeLimits,
  TreeOutput,
} from "../core/tree_output.ts";
import { listDir, makeFile, tempDir, withTempDir } from "./helpers.ts";
import { archive, directory, file, type Item, symlink } from "./tar_helpers.ts";

const STAGING = /^\.p2m-stage-\d+-[0-9a-z]+$/;

/**
 * A stream for `items` whose first U+0001 becomes `byte` (NUL by default):
 * our encoder refuses NUL and cannot write bytes that are not UTF-8, so
 * this forges them in the pax record (pax bodies carry no checksum).
 */
function withNul(items: Item[], byte = 0): Uint8Array {
  const stream = archive(items);
  const at = stream.indexOf(1);
  assert.ok(at > 0);
  stream[at] = byte;
  return stream;
}

/** Writes `stream` in odd-sized pieces and commits; returns the output. */
function receive(
  target: string,
  stream: Uint8Array,
  options: { force?: boolean; limits?: TreeLimits; stripComponents?: number } = {},
): TreeOutput {
  const output = TreeOutput.create({ path: target, ...options });
  for (let at = 0; at < stream.length; at += 777) output.write(stream.subarray(at, at + 777));
  output.commit();
  return output;
}

async function run(command: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const result = await new Deno.Command(command, { args }).output();
  const text = new TextDecoder();
  return { code: result.code, out: text.decode(result.stdout) + text.decode(result.stderr) };
}

Deno.test("a real tree round-trips into place: diff -r, modes, link, no staging left", async () => {
  const dir = await tempDir("p2m-tree-out-");
  try {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/a/b/c`, { recursive: true });
    await Deno.mkdir(`${src}/empty`);
    await Deno.mkdir(`${src}/locked`);
    await makeFile(`${src}/a/b/c/big.bin`, 1024 * 1024 + 1, 9);
    await Deno.writeTextFile(`${src}/a/run.sh`, "#!/bin/sh\n");
    await Deno.chmod(`${src}/a/run.sh`, 0o755);
    await Deno.writeTextFile(`${src}/secret`, "s");
    await Deno.chmod(`${src}/secret`, 0o600);
    await Deno.writeTextFile(`${src}/locked/ro.txt`, "read only");
    await Deno.chmod(`${src}/locked/ro.txt`, 0o444);
    await Deno.chmod(`${src}/locked`, 0o555);
    await Deno.writeTextFile(`${src}/日本語 ü.txt`, "unicode");
    await Deno.symlink("a/b/c/big.bin", `${src}/link`);
    const tree = walkTree(src);
    const items: Item[] = [directory("tree", tree.rootMode)];
    for (const entry of tree.entries) {
      const item: Item = tarEntryOf(entry, "tree");
      if (entry.kind === "file") item.data = await Deno.readFile(`${src}/${entry.path}`);
      items.push(item);
    }
    await Deno.chmod(src, 0o750);
    items[0].mode = 0o750;
    const output = receive(`${dir}/copy`, archive(items), { stripComponents: 1 });
    assert.deepEqual(output.warnings, []);
    const diff = await run("diff", "-r", "--no-dereference", src, `${dir}/copy`);
    assert.equal(diff.code, 0, diff.out);
    for (const entry of tree.entries) {
      const copy = Deno.lstatSync(`${dir}/copy/${entry.path}`);
      if (entry.kind !== "symlink") assert.equal((copy.mode ?? 0) & 0o7777, entry.mode, entry.path);
    }
    assert.equal((Deno.statSync(`${dir}/copy`).mode ?? 0) & 0o777, 0o750, "root mode applied");
    assert.equal(Deno.readLinkSync(`${dir}/copy/link`), "a/b/c/big.bin");
    assert.deepEqual(listDir(dir), ["copy", "src"], "no staging directory remains");
    assert.equal(output.bytesWritten, archive(items).length);

    // GNU tar's own pax stream of the same tree lands identically too.
    const gnu = await run("tar", "-c", "--format=pax", "-f", `${dir}/gnu.tar`, "-C", dir, "src");
    assert.equal(gnu.code, 0, gnu.out);
    receive(`${dir}/from-gnu`, await Deno.readFile(`${dir}/gnu.tar`), { stripComponents: 1 });
    const gnuDiff = await run("diff", "-r", "--no-dereference", src, `${dir}/from-gnu`);
    assert.equal(gnuDiff.code, 0, gnuDiff.out);
    assert.equal((Deno.statSync(`${dir}/from-gnu/locked`).mode ?? 0) & 0o777, 0o555);
  } finally {
    await run("chmod", "-R", "u+rwx", dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sanitizeTreePath keeps clean paths and refuses hostile ones", () => {
  assert.deepEqual(sanitizeTreePath("./a//b/./c/"), ["a", "b", "c"]);
  assert.deepEqual(sanitizeTreePath("."), []);
  assert.deepEqual(sanitizeTreePath("日本/ü"), ["日本", "ü"]);
  const refused: [string, RegExp][] = [
    ["../x", /"\.\." in path/],
    ["a/../../x", /"\.\." in path/],
    ["/etc/passwd", /absolute path/],
    ["a\0b", /NUL byte/],
    ["a\x01b", /control character U\+0001/],
    ["a\x7fb", /control character U\+007f/],
    ["a\u0085b", /control character U\+0085/],
    ["a\ud800b", /not valid UTF-8/],
    [`${"d/".repeat(64)}f`, /deeper than 64/],
    ["x".repeat(256), /longer than 255 bytes/],
    ["é".repeat(128), /longer than 255 bytes/],
    [`${"a".repeat(200)}/`.repeat(21), /longer than 4096 bytes/],
  ];
  for (const [path, message] of refused) {
    assert.throws(() => sanitizeTreePath(path), message, JSON.stringify(path.slice(0, 20)));
  }
  assert.deepEqual(sanitizeTreePath(`${"d/".repeat(63)}f`).length, 64);
});

Deno.test("hostile tree streams are refused and nothing lands outside the target", async () => {
  const dir = await tempDir("p2m-tree-out-");
  const absolute = `/tmp/p2m-abs-${crypto.randomUUID()}`;
  try {
    await Deno.mkdir(`${dir}/parent`);
    await Deno.writeTextFile(`${dir}/parent/keep`, "keep");
    const ok = file("tree/ok.txt", "fine");
    const cases: [string, Item[] | Uint8Array, RegExp, TreeLimits?][] = [
      ["dot-dot", [ok, file("tree/../x", "evil")], /"\.\." in path/],
      ["dot-dot deep", [file("tree/a/../../../x", "evil")], /"\.\." in path/],
      ["absolute", [file(absolute, "evil")], /absolute path/],
      ["NUL", withNul([file("tree/a\x01b", "evil")]), /NUL byte/],
      ["control", [file("tree/a\x1bb", "evil")], /control character/],
      ["not UTF-8", withNul([file("tree/a\x01b", "evil")], 0xff), /not valid UTF-8/],
      ["too deep", [file(`tree/${"d/".repeat(65)}f`, "x")], /deeper than 64/],
      ["escaping link", [symlink("tree/l", "../../x")], /leaves the tree/],
      ["absolute link", [symlink("tree/l", "/etc")], /absolute path/],
      ["link with NUL", withNul([symlink("tree/l", "a\x01b")]), /NUL byte/],
      ["write through a link", [symlink("tree/l", "."), file("tree/l/x", "x")], /is a symlink/],
      ["write through a file", [file("tree/f", "x"), file("tree/f/x", "x")], /is a file/],
      [
        "link chain escaping",
        [
          symlink("tree/d1/d2/b", "../.."),
          symlink("tree/s", "d1/d2/b"),
          symlink("tree/a", "s/../x"),
        ],
        /leaves the tree once links are followed/,
      ],
      ["link loop", [symlink("tree/p", "q/x"), symlink("tree/q", "p")], /leaves the tree once/],
      ["duplicate file", [ok, ok], /duplicate entry/],
      ["file as root", [file("tree", "x")], /a file as the tree root/],
      ["other top directory", [ok, file("other/x", "x")], /not under "tree"/],
      ["too many entries", [ok, file("tree/2", "2"), file("tree/3", "3")], /more than 2 entries/, {
        maxEntries: 2,
      }],
      ["too many bytes", [ok, file("tree/2", "123456")], /more than 8 bytes/, { maxTotalBytes: 8 }],
    ];
    for (const [name, items, message, limits] of cases) {
      const target = `${dir}/parent/tree`;
      const output = TreeOutput.create({ path: target, stripComponents: 1, limits });
      assert.ok(Deno.statSync(output.stagingPath).isDirectory);
      assert.throws(
        () => {
          output.write(items instanceof Uint8Array ? items : archive(items));
          output.commit();
        },
        (error: unknown) => {
          assert.ok(error instanceof P2mError, `${name}: ${error}`);
          assert.match(error.message, message, name);
          assert.match(error.message, /tree discarded/, name);
          return true;
        },
        name,
      );
      assert.deepEqual(listDir(`${dir}/parent`), ["keep"], `${name}: staging and target gone`);
      assert.deepEqual(listDir(dir).sort(), ["parent"], `${name}: nothing beside the parent`);
      assert.throws(() => Deno.lstatSync(absolute), Deno.errors.NotFound);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("special mode bits are dropped with a warning; truncated streams are discarded", async () => {
  await withTempDir("p2m-tree-out-", (dir) => {
    const output = receive(
      `${dir}/t`,
      archive([file("suid", "x", 0o4755), directory("sticky", 0o1777), file("plain", "p", 0o640)]),
    );
    assert.equal((Deno.statSync(`${dir}/t/suid`).mode ?? 0) & 0o7777, 0o755);
    assert.equal((Deno.statSync(`${dir}/t/sticky`).mode ?? 0) & 0o7777, 0o777);
    assert.equal((Deno.statSync(`${dir}/t/plain`).mode ?? 0) & 0o7777, 0o640);
    assert.equal(output.warnings.length, 2);
    assert.match(output.warnings[0], /suid: setuid\/setgid\/sticky bits dropped \(mode 4755\)/);

    const partial = TreeOutput.create({ path: `${dir}/partial` });
    partial.write(archive([file("a", "aaaa"), file("b", "bbbb")], false).subarray(0, 1100));
    assert.throws(() => partial.commit(), /truncated.*tree discarded/);
    assert.deepEqual(listDir(dir), ["t"]);

    const hardLink = archive([file("a", "a")]);
    hardLink[156] = 0x31; // typeflag '1', checksum now wrong as well
    const refused = TreeOutput.create({ path: `${dir}/hard` });
    assert.throws(() => refused.write(hardLink), /bad tar stream/);
    assert.deepEqual(listDir(dir), ["t"]);
  });
});

Deno.test("without force an existing target is never touched, even one that appears late", async () => {
  await withTempDir("p2m-tree-out-", async (dir) => {
    await Deno.mkdir(`${dir}/there`);
    await Deno.writeTextFile(`${dir}/there/old`, "old");
    assert.throws(() => TreeOutput.create({ path: `${dir}/there` }), /already exists; use --force/);

    const output = TreeOutput.create({ path: `${dir}/late` });
    output.write(archive([file("new", "new")]));
    await Deno.mkdir(`${dir}/late`);
    await Deno.writeTextFile(`${dir}/late/theirs`, "theirs");
    assert.throws(() => output.commit(), /appeared while receiving/);
    assert.deepEqual(listDir(`${dir}/late`), ["theirs"]);
    assert.deepEqual(listDir(dir).sort(), ["late", "there"], "staging removed");
  });
});

Deno.test("force replaces the whole tree in one exchange and removes the old one", async () => {
  await withTempDir("p2m-tree-out-", async (dir) => {
    const target = `${dir}/target`;
    await Deno.mkdir(`${target}/old-sub/deeper`, { recursive: true });
    await Deno.writeTextFile(`${target}/old-sub/deeper/old.txt`, "old");
    await Deno.writeTextFile(`${target}/shared.txt`, "old version");
    await Deno.chmod(`${target}/old-sub`, 0o555);
    const oldTree = Deno.openSync(target, { read: true });
    const output = TreeOutput.create({ path: target, force: true });
    output.write(
      archive([file("shared.txt", "new version"), directory("new-dir"), file("n", "n")]),
    );
    const stagingIno = Deno.statSync(output.stagingPath).ino;
    output.commit();
    // The new tree is the staging directory itself, renamed: never half built.
    assert.equal(Deno.statSync(target).ino, stagingIno);
    assert.deepEqual(listDir(target).sort(), ["n", "new-dir", "shared.txt"]);
    assert.equal(Deno.readTextFileSync(`${target}/shared.txt`), "new version");
    // The old tree is gone entirely, even its read-only directory.
    assert.equal(oldTree.statSync().nlink, 0, "old tree removed");
    oldTree.close();
    assert.deepEqual(listDir(dir), ["target"], "no staging or old tree left");

    // A plain file in the way is replaced by the tree too.
    await Deno.writeTextFile(`${dir}/was-file`, "file");
    receive(`${dir}/was-file`, archive([file("x", "x")]), { force: true });
    assert.deepEqual(listDir(`${dir}/was-file`), ["x"]);
    assert.deepEqual(listDir(dir).sort(), ["target", "was-file"]);
  });
});

Deno.test("a staging dir left by a kill -9'd writer is swept by the next writer", async () => {
  const dir = await tempDir("p2m-tree-out-");
  const script = `${dir}/stage.ts`;
  let child: Deno.ChildProcess | undefined;
  try {
    await Deno.mkdir(`${dir}/out`);
    const moduleUrl = new URL("../core/tree_output.ts", import.meta.url).href;
    const tarUrl = new URL("../core/tar.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { TreeOutput } from ${JSON.stringify(moduleUrl)};
import { encodeHeader } from ${JSON.stringify(tarUrl)};
const output = TreeOutput.create({ path: Deno.args[0] });
output.write(encodeHeader({ path: "big.bin", kind: "file", mode: 0o644, size: 1 << 20 }));
output.write(new Uint8Array(5000).fill(1));
console.log(output.stagingPath);
setInterval(() => {}, 1000);
`,
    );
    child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", "--allow-ffi", script, `${dir}/out/tree`],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      assert.ok(!done, "child ended before staging");
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    const staged = text.trim();
    assert.match(staged.split("/").pop()!, STAGING);
    assert.equal(Deno.statSync(`${staged}/big.bin`).size, 5000);
    // While its writer lives, the staging directory is locked and kept.
    assert.equal(sweepStaleStaging(`${dir}/out`), 0);
    assert.ok(Deno.statSync(staged).isDirectory);

    child.kill("SIGKILL");
    const status = await child.status;
    await child.stdout.cancel();
    child = undefined;
    assert.equal(status.signal, "SIGKILL");
    assert.ok(Deno.statSync(staged).isDirectory, "kill -9 leaves the staging dir");
    assert.throws(() => Deno.lstatSync(`${dir}/out/tree`), Deno.errors.NotFound);

    // The next writer there sweeps it on create.
    const next = TreeOutput.create({ path: `${dir}/out/other` });
    assert.throws(() => Deno.lstatSync(staged), Deno.errors.NotFound);
    assert.deepEqual(listDir(`${dir}/out`), [next.stagingPath.split("/").pop()]);
    next.abort();
    assert.deepEqual(listDir(`${dir}/out`), []);
  } finally {
    if (child !== undefined) {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel();
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tree output fuzz: corrupted streams commit or fail cleanly, never outside the target", async () => {
  await withTempDir("p2m-tree-out-", async (dir) => {
    await Deno.mkdir(`${dir}/parent`);
    const good = archive([
      directory("t"),
      directory("t/sub", 0o700),
      file("t/sub/a.txt", "alpha"),
      symlink("t/sub/up", "../sub/a.txt"),
      symlink("t/l", "sub"),
      file(`t/${"ü".repeat(70)}`, "long unicode name"),
      file("t/.hidden", "h", 0o600),
    ]);
    let x = 7;
    const next = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 2 ** 32;
    };
    // Bytes that turn names into hostile ones when they land in a path.
    const nasty = [0x2f, 0x2e, 0x00, 0x0a, 0xff, 0x5c];
    let committed = 0;
    for (let round = 0; round < 200; round++) {
      const stream = good.slice();
      for (let i = 0; i < 1 + Math.floor(next() * 3); i++) {
        const at = Math.floor(next() * stream.length);
        stream[at] = next() < 0.5 ? nasty[Math.floor(next() * nasty.length)] : next() * 256;
      }
      const target = `${dir}/parent/tree`;
      try {
        receive(target, stream, { stripComponents: 1 });
        committed++;
      } catch (error) {
        assert.ok(error instanceof P2mError, `round ${round}: ${error}`);
      }
      const left = listDir(`${dir}/parent`);
      assert.ok(left.length === 0 || (left.length === 1 && left[0] === "tree"), `${left}`);
      assert.deepEqual(listDir(dir), ["parent"], `round ${round}: nothing beside the parent`);
      await Deno.remove(target, { recursive: true }).catch(() => {});
    }
    assert.ok(committed > 0 && committed < 200, `some rounds commit (${committed})`);
  });
});
