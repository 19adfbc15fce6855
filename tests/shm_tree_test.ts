/**
 * shm directory trees with real processes and real files: a tree with
 * nested and empty directories, modes 0600/0755/0644, a symlink inside and
 * one outside, a FIFO, unicode names and a file of 1 MiB + 1 reaches three
 * receivers (two into directories, one through `--out - | tar x`) identical
 * to the source less the reported skips; a receiver killed with -9 mid-tree
 * leaves no tree under the final name, and the next writer sweeps its
 * staging directory.
 */
import assert from "node:assert/strict";
import { p2mArgv } from "../core/permissions.ts";
import {
  type Finished,
  listDir,
  makeFile,
  type P2mProcess,
  shellQuote,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import { assertNoSegment, receiver, sender, withShm } from "./shm_helpers.ts";

const decoder = new TextDecoder();
const UNICODE = "ünïcödé-名前.txt";

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const result = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return {
    code: result.code,
    out: decoder.decode(result.stdout) + decoder.decode(result.stderr),
  };
}

async function makeTree(root: string): Promise<void> {
  await Deno.mkdir(`${root}/a/b/c`, { recursive: true });
  await Deno.mkdir(`${root}/empty`);
  await Deno.writeTextFile(`${root}/a/b/c/deep.txt`, "deep\n");
  await Deno.writeTextFile(`${root}/private.txt`, "secret\n");
  await Deno.chmod(`${root}/private.txt`, 0o600);
  await Deno.writeTextFile(`${root}/run.sh`, "#!/bin/sh\necho hi\n");
  await Deno.chmod(`${root}/run.sh`, 0o755);
  await Deno.writeTextFile(`${root}/plain.txt`, "plain\n");
  await Deno.chmod(`${root}/plain.txt`, 0o644);
  await Deno.writeTextFile(`${root}/a/${UNICODE}`, "unicode\n");
  await Deno.symlink("a/b/c/deep.txt", `${root}/link-in`);
  await Deno.symlink("/etc/hostname", `${root}/link-out`);
  assert.equal((await run("mkfifo", [`${root}/a/fifo`])).code, 0);
  await makeFile(`${root}/big.bin`, 1024 * 1024 + 1, 5);
}

Deno.test("shm tree: 3 receivers get the tree, identical less the reported skips", async () => {
  await withShm("p2m-shm-tree-", "p2m-tr", async ({ dir, name }) => {
    const root = `${dir}/proj`;
    await makeTree(root);
    const receivers = [receiver(name, `${dir}/out0`), receiver(name, `${dir}/out1`)];
    await Deno.mkdir(`${dir}/tarout`);
    const tarArgv = shellQuote(p2mArgv("sharedmem.ts", ["receiver", "--name", name, "--out", "-"]));
    const tar = new Deno.Command("sh", {
      args: ["-c", `(${tarArgv}; echo $? > ${dir}/tar.code) | tar -x -C ${dir}/tarout`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const sent = await sender(root, name, ["--peers", "3", "--chunk", "65536", "--slots", "4"])
      .done();
    const results = await Promise.all(receivers.map((r) => r.done()));
    await tar;
    for (const result of results) assert.equal(result.code, 0, result.stderr);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal((await Deno.readTextFile(`${dir}/tar.code`)).trim(), "0");
    // The skips are reported.
    assert.match(sent.stderr, /warning: skipped .*link-out/);
    assert.match(sent.stderr, /warning: skipped .*a\/fifo/);
    for (const copy of [`${dir}/out0/proj`, `${dir}/out1/proj`, `${dir}/tarout/proj`]) {
      const diff = await run("diff", ["-r", "--no-dereference", root, copy]);
      const lines = diff.out.trim().split("\n").sort();
      assert.deepEqual(lines, [`Only in ${root}/a: fifo`, `Only in ${root}: link-out`], diff.out);
    }
    for (const copy of [`${dir}/out0/proj`, `${dir}/out1/proj`]) {
      assert.equal(Deno.statSync(`${copy}/private.txt`).mode! & 0o777, 0o600);
      assert.equal(Deno.statSync(`${copy}/run.sh`).mode! & 0o777, 0o755);
      assert.equal(Deno.statSync(`${copy}/plain.txt`).mode! & 0o777, 0o644);
      assert.equal(Deno.readLinkSync(`${copy}/link-in`), "a/b/c/deep.txt");
      assert.deepEqual(listDir(`${copy}/empty`), []);
      assert.equal(Deno.statSync(`${copy}/big.bin`).size, 1024 * 1024 + 1);
      assert.equal(await Deno.readTextFile(`${copy}/a/${UNICODE}`), "unicode\n");
    }
  });
});

function stagingBytes(dir: string): number {
  let total = 0;
  const walk = (path: string) => {
    for (const entry of Deno.readDirSync(path)) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory) walk(child);
      else if (entry.isFile) total += Deno.statSync(child).size;
    }
  };
  for (const name of listDir(dir)) {
    if (name.startsWith(".p2m-stage-")) {
      try {
        walk(`${dir}/${name}`);
      } catch { /* renamed or removed meanwhile */ }
    }
  }
  return total;
}

/** A tree under way to one receiver, and then how both ended. */
interface TreeOutcome {
  dir: string;
  name: string;
  root: string;
  out: string;
  sent: Finished;
  got: Finished;
}

/**
 * A fault in the middle of sending the tree `DIR/proj`, which holds one
 * file `file` of `mib` MiB (from `seed`), at 8 MiB/s to one receiver into
 * `DIR/out`: `inject` runs once the receiver has staged 1 MiB; `verdict`
 * checks how both ended. Afterwards the segment must be gone.
 */
function midTreeFault(
  test: string,
  { file, mib, seed }: { file: string; mib: number; seed: number },
  inject: (tree: { root: string; send: P2mProcess; receiving: P2mProcess }) => void | Promise<void>,
  verdict: (outcome: TreeOutcome) => void | Promise<void>,
): void {
  Deno.test(`shm tree: ${test}`, async () => {
    await withShm("p2m-shm-tree-", "p2m-tr", async ({ dir, name }) => {
      const root = `${dir}/proj`;
      await Deno.mkdir(`${root}/${file.slice(0, file.lastIndexOf("/") + 1)}`, { recursive: true });
      await makeFile(`${root}/${file}`, mib * 1024 * 1024, seed);
      const out = `${dir}/out`;
      const send = sender(root, name, ["--limit-rate", "8M"]);
      const receiving = receiver(name, out);
      await waitFor(() => stagingBytes(out) >= 1024 * 1024, 20_000, "the receiver to stage 1 MiB");
      await inject({ root, send, receiving });
      const got = await receiving.done();
      const sent = await send.done();
      await verdict({ dir, name, root, out, sent, got });
    });
  });
}

midTreeFault(
  "kill -9 of a receiver mid-tree leaves no tree; the next writer sweeps",
  { file: "sub/big.bin", mib: 48, seed: 9 },
  ({ receiving }) => receiving.child.kill("SIGKILL"),
  async ({ dir, out, sent }) => {
    assert.equal(sent.code, 1, "the sender counts the killed receiver as failed");
    assert.ok(!listDir(out).includes("proj"), "no partial tree under the final name");
    assert.ok(listDir(out).some((n) => n.startsWith(".p2m-stage-")), "kill -9 leaves staging");
    // The next writer in that directory sweeps the dead writer's staging.
    const small = `${dir}/small`;
    await Deno.mkdir(small);
    await Deno.writeTextFile(`${small}/f`, "x");
    const name2 = uniqueName("p2m-tr");
    const send2 = sender(small, name2, []);
    const got = await receiver(name2, out).done();
    assert.equal(got.code, 0, got.stderr);
    assert.equal((await send2.done()).code, 0);
    assert.deepEqual(listDir(out), ["small"]);
    await assertNoSegment(name2);
  },
);

midTreeFault(
  "a file that changes while the tree is sent fails the transfer",
  { file: "big.bin", mib: 32, seed: 4 },
  async ({ root }) => {
    // A writer in another process: its open waits for the lease to go.
    const writer = await run("sh", ["-c", `echo more >> '${root}/big.bin'`]);
    assert.equal(writer.code, 0);
  },
  ({ out, sent, got }) => {
    assert.equal(sent.code, 1);
    assert.match(sent.stderr, /changed while it was sent \(.*big\.bin/);
    assert.equal(got.code, 1);
    assert.match(got.stderr, /changed while it was sent; copy discarded/);
    assert.deepEqual(listDir(out), []);
  },
);

midTreeFault(
  "kill -9 of the sender mid-tree fails the receiver, leaves no tree",
  { file: "big.bin", mib: 32, seed: 2 },
  ({ send }) => send.child.kill("SIGKILL"),
  ({ out, got: result }) => {
    assert.equal(result.code, 1);
    assert.match(result.stderr, /sender .* died/);
    assert.deepEqual(listDir(out), [], "no tree and no staging directory");
  },
);
