/**
 * The socket transport sending a directory tree, on real processes and
 * real files: one tree to 3 clients (`--out DIR/`, `--out PATH`, and
 * `--out -` into `tar x`) comes out identical less the reported skips, and
 * hostile tree streams from a fake server are refused with nothing landing
 * outside the target.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createDigest } from "../core/digest.ts";
import { p2mArgv } from "../core/permissions.ts";
import { encodeHeader, encodeTrailer, TrailerStatus } from "../core/wire.ts";
import { Reporter } from "../core/report.ts";
import { writeAll } from "../socket/protocol.ts";
import { ServedStream } from "../socket/served_stream.ts";
import { listDir, makeFile, waitFor } from "./helpers.ts";
import { archive, file, type Item } from "./tar_helpers.ts";
import { FakeServer, socketPlace, startClient, startServer } from "./socket_helpers.ts";

/** Builds the test tree under `root` (named `src`). */
async function makeTree(root: string): Promise<void> {
  await Deno.mkdir(`${root}/a/b/c`, { recursive: true });
  await Deno.mkdir(`${root}/empty`);
  await makeFile(`${root}/a/b/c/big.bin`, 1024 * 1024 + 1, 5);
  await Deno.writeTextFile(`${root}/a/secret.txt`, "only me\n", { mode: 0o600 });
  await Deno.chmod(`${root}/a/secret.txt`, 0o600);
  await Deno.writeTextFile(`${root}/a/run.sh`, "#!/bin/sh\necho hi\n");
  await Deno.chmod(`${root}/a/run.sh`, 0o755);
  await Deno.writeTextFile(`${root}/plain.txt`, "plain\n");
  await Deno.chmod(`${root}/plain.txt`, 0o644);
  await Deno.writeTextFile(`${root}/ünï código 日本.txt`, "unicode\n");
  await Deno.symlink("b/c/big.bin", `${root}/a/inside-link`);
  await Deno.symlink("/etc/hostname", `${root}/outside-link`);
  const fifo = await new Deno.Command("mkfifo", { args: [`${root}/a/fifo`] }).output();
  assert.ok(fifo.success, "mkfifo");
}

async function diffTrees(expected: string, actual: string): Promise<string> {
  const result = await new Deno.Command("diff", { args: ["-r", expected, actual], stdout: "piped" })
    .output();
  return new TextDecoder().decode(result.stdout);
}

function modeOf(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o7777;
}

Deno.test("socket: a tree to 3 clients (DIR/, PATH, --out - | tar x) is identical less its skips", async () => {
  await using place = await socketPlace();
  const src = `${place.dir}/src`;
  await makeTree(src);
  const spool = `${place.dir}/spool`;
  await Deno.mkdir(spool);
  const server = startServer(src, place.socket, ["--peers", "3", "--spool", spool]);
  const toDir = startClient(place.socket, `${place.dir}/out0`);
  await Deno.mkdir(`${place.dir}/out1`);
  const toPath = startClient(place.socket, `${place.dir}/out1`, [
    "--out",
    `${place.dir}/out1/copy`,
  ]);
  await Deno.mkdir(`${place.dir}/out2`);
  const argv = p2mArgv("socket.ts", ["client", "--socket", place.socket, "--out", "-"]);
  const toTar = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tar = new Deno.Command("tar", {
    args: ["-x", "-C", `${place.dir}/out2`],
    stdin: "piped",
    stderr: "piped",
  }).spawn();
  const piped = toTar.stdout.pipeTo(tar.stdin);
  const tarClientErr = new Response(toTar.stderr).text();
  const [r0, r1, tarClient, tarResult] = await Promise.all([
    toDir.done(),
    toPath.done(),
    toTar.status,
    tar.output(),
  ]);
  await piped;
  const served = await server.done();
  assert.equal(served.code, 0, served.stderr);
  assert.equal(r0.code, 0, r0.stderr);
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal(tarClient.code, 0, await tarClientErr);
  assert.equal(tarResult.code, 0, new TextDecoder().decode(tarResult.stderr));
  // The skips are reported, and they are the only difference.
  assert.match(served.stderr, /skipped a\/fifo/);
  assert.match(served.stderr, /skipped outside-link: symlink points out of the tree/);
  const onlySkips = `Only in ${src}/a: fifo\nOnly in ${src}: outside-link\n`;
  for (const copy of [`${place.dir}/out0/src`, `${place.dir}/out1/copy`, `${place.dir}/out2/src`]) {
    assert.equal(await diffTrees(src, copy), onlySkips, copy);
    assert.equal(modeOf(`${copy}/a/secret.txt`), 0o600);
    assert.equal(modeOf(`${copy}/a/run.sh`), 0o755);
    assert.equal(modeOf(`${copy}/plain.txt`), 0o644);
    assert.equal(Deno.readLinkSync(`${copy}/a/inside-link`), "b/c/big.bin");
    assert.ok(Deno.statSync(`${copy}/empty`).isDirectory);
    assert.equal(Deno.statSync(`${copy}/a/b/c/big.bin`).size, 1024 * 1024 + 1);
  }
  assert.deepEqual(listDir(`${place.dir}/out0`), ["src"], "no staging directory left");
  assert.deepEqual(listDir(`${place.dir}/out1`), ["copy"], "no staging directory left");
  assert.deepEqual(listDir(spool), [], "no spool file left");
});

/** A complete, correctly digested p2m tree stream of `tar`, named `tree`. */
async function treeStream(tar: Uint8Array): Promise<Uint8Array> {
  const digest = await createDigest("xxh64");
  digest.update(tar);
  return Buffer.concat([
    encodeHeader({ size: tar.length, tree: true, mode: 0o755, name: "tree", digest: "xxh64" }),
    tar,
    encodeTrailer({ status: TrailerStatus.Complete, size: tar.length, digest: digest.digest() }),
  ]);
}

Deno.test("socket client refuses hostile tree streams; nothing lands outside the target", async (t) => {
  const root: Item = { path: "tree/", kind: "directory", mode: 0o755, size: 0 };
  const deep = `tree/${Array.from({ length: 80 }, () => "d").join("/")}/f`;
  const cases: [string, Item[], RegExp][] = [
    ["../x", [root, file("tree/../../x", "evil")], /"\.\." in path/],
    ["an absolute path", [root, file("/tmp/p2m-evil-abs", "evil")], /absolute|leading/],
    ["an escaping symlink", [
      root,
      { path: "tree/l", kind: "symlink", mode: 0o777, size: 0, linkTarget: "../../x" },
    ], /leaves the tree/],
    ["too deep a path", [root, file(deep, "deep")], /deep/],
  ];
  for (const [what, items, reason] of cases) {
    await t.step(what, async () => {
      await using place = await socketPlace();
      const out = `${place.dir}/out`;
      const bytes = await treeStream(archive(items));
      let result;
      {
        await using _server = new FakeServer(place.socket, (conn) => writeAll(conn, bytes));
        result = await startClient(place.socket, out).done();
      }
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, reason);
      assert.deepEqual(listDir(out), [], "no tree and no staging directory");
      assert.deepEqual(listDir(place.dir), ["out"], "nothing outside");
      assert.throws(() => Deno.lstatSync("/tmp/p2m-evil-abs"), Deno.errors.NotFound);
    });
  }
  await t.step("the same stream with a harmless entry is kept", async () => {
    await using place = await socketPlace();
    const out = `${place.dir}/out`;
    const bytes = await treeStream(archive([root, file("tree/ok.txt", "fine")]));
    let result;
    {
      await using _server = new FakeServer(place.socket, (conn) => writeAll(conn, bytes));
      result = await startClient(place.socket, out).done();
    }
    assert.equal(result.code, 0, result.stderr);
    assert.equal(await Deno.readTextFile(`${out}/tree/ok.txt`), "fine");
  });
});

Deno.test("socket: kill -9 of a client mid-tree leaves no tree under its name; the next client sweeps the staging", async () => {
  await using place = await socketPlace();
  const src = `${place.dir}/src`;
  await Deno.mkdir(`${src}/d`, { recursive: true });
  await makeFile(`${src}/d/big.bin`, 8 * 1024 * 1024, 3);
  const out = `${place.dir}/out`;
  await Deno.mkdir(out);
  // A slow peer (1 MiB/s) is surely mid-tree once its staging directory holds bytes.
  const server = startServer(src, place.socket, ["--peers", "1", "--limit-rate", "1M"]);
  const argv = p2mArgv("socket.ts", ["client", "--socket", place.socket, "--out", `${out}/`]);
  const victim = new Deno.Command(argv[0], { args: argv.slice(1), stdout: "null", stderr: "null" })
    .spawn();
  const staged = () => listDir(out).filter((name) => name.startsWith(".p2m-stage-"));
  const bigIn = (stage: string) => {
    try {
      return Deno.statSync(`${out}/${stage}/d/big.bin`).size > 0;
    } catch {
      return false;
    }
  };
  await waitFor(() => staged().some(bigIn), 20_000, "the client to be mid-tree");
  victim.kill("SIGKILL");
  await victim.status;
  const left = staged();
  assert.equal(left.length, 1, "kill -9 leaves its staging directory behind");
  assert.deepEqual(listDir(out).filter((n) => !n.startsWith(".p2m-stage-")), [], "no tree");
  const served = await server.done();
  assert.equal(served.code, 1, "the server counts the killed peer failed");
  // The next writer in that directory sweeps it and lands the tree.
  const again = startServer(src, place.socket, ["--peers", "1"]);
  const next = await startClient(place.socket, out).done();
  assert.equal(next.code, 0, next.stderr);
  assert.equal((await again.done()).code, 0);
  assert.deepEqual(listDir(out), ["src"], "the stale staging directory was swept");
  assert.equal(await diffTrees(src, `${out}/src`), "");
});

Deno.test("socket: a tree file that changes after the walk fails the whole tree stream", async () => {
  await using place = await socketPlace();
  const src = `${place.dir}/src`;
  await Deno.mkdir(src);
  await Deno.writeTextFile(`${src}/a.txt`, "first\n");
  await Deno.writeTextFile(`${src}/b.txt`, "second\n");
  // The walk is done when fromTree returns; the files are read after its first await.
  const served = ServedStream.fromTree(src, "xxh64", place.dir, new Reporter({ quiet: true }));
  try {
    Deno.writeTextFileSync(`${src}/b.txt`, "grown\n", { append: true }); // before any await
    await assert.rejects(served.digest, /b\.txt changed while the tree was sent/);
  } finally {
    served.close();
  }
  assert.deepEqual(listDir(place.dir), ["src"], "no spool file");
});
