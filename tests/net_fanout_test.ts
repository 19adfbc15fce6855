/**
 * `net fetch --fanout shm|socket`: the fetcher is its host's local sender.
 * Real nats-server, real shm receivers and socket clients as subprocesses.
 * Every local copy (and the fetcher's own, with --out) is the published
 * file; and a chunk corrupted in NATS fails every local copy, because the
 * local receivers check the publisher's digest, carried end to end, and
 * nothing is committed anywhere.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { NatsSession } from "../net/session.ts";
import { assertSameFile, listDir, makeFile, shmEntries, uniqueName } from "./helpers.ts";
import {
  fanoutArgs,
  natsMissing,
  runNet,
  spawnLocalReceivers,
  spawnNet,
  withServerAndDir,
} from "./net_helpers.ts";

const ignore = natsMissing();
const MiB = 1 << 20;
const FANOUTS = ["shm", "socket"] as const;

/** The segment name or socket path of one run (the socket in `dir`). */
function localFor(fanout: "shm" | "socket", dir: string): string {
  return fanout === "shm" ? uniqueName("p2m-fan") : `${dir}/${uniqueName("fan")}.sock`;
}

for (const fanout of FANOUTS) {
  Deno.test({
    name: `net fanout ${fanout}: 2 local receivers and the own copy are the published file`,
    ignore,
  }, () =>
    withServerAndDir(async (server, dir) => {
      const size = 24 * MiB + 5;
      await makeFile(`${dir}/model.bin`, size, 31);
      const published = await runNet(["publish", `${dir}/model.bin`, "--server", server.url]);
      assert.equal(published.code, 0, published.stderr);
      const local = localFor(fanout, dir);
      const fetch = spawnNet([
        "fetch",
        "model.bin",
        "--server",
        server.url,
        ...fanoutArgs(fanout, local, 2),
        "--out",
        `${dir}/own/`,
        "--json",
      ]);
      const receivers = spawnLocalReceivers(fanout, local, [`${dir}/r1`, `${dir}/r2`]);
      const result = await fetch.done();
      assert.equal(result.code, 0, result.stderr);
      const events = result.stdout.trim().split("\n").map((line) => JSON.parse(line));
      const done = events.at(-1);
      assert.equal(done.event, "done", result.stdout);
      assert.equal(done.verified, true);
      assert.equal(done.fanout, fanout);
      assert.equal(done.peers, 2);
      for (const [i, receiver] of receivers.entries()) {
        const end = await receiver.done();
        assert.equal(end.code, 0, `receiver ${i + 1}: ${end.stderr}`);
        await assertSameFile(`${dir}/r${i + 1}/model.bin`, `${dir}/model.bin`);
      }
      await assertSameFile(`${dir}/own/model.bin`, `${dir}/model.bin`);
      assert.deepEqual(listDir(`${dir}/own`), ["model.bin"]);
      assert.deepEqual(await shmEntries(local), []);
      assert.ok(!listDir(dir).some((name) => name.endsWith(".sock")), "socket file removed");
    }));
}

Deno.test({
  name: "net fanout: a chunk corrupted or misshapen in NATS fails every local copy; nothing kept",
  ignore,
}, () =>
  withServerAndDir(async (server, dir) => {
    const size = 6 * MiB + 3;
    await makeFile(`${dir}/good.bin`, size, 32);
    const bad = await Deno.readFile(`${dir}/good.bin`);
    bad[3 * MiB + 100] ^= 0x5a; // inside the seventh 512 KiB chunk
    await Deno.writeFile(`${dir}/bad.bin`, bad);
    for (const file of ["good.bin", "bad.bin"]) {
      const published = await runNet(["publish", `${dir}/${file}`, "--server", server.url]);
      assert.equal(published.code, 0, published.stderr);
    }
    await using nats = await NatsSession.open({
      servers: [server.url],
      bucket: "default",
      timeoutSeconds: 10,
    });
    const manifestOf = async (key: string) => {
      const message = await nats.lastMessage(nats.subjects.keySubject(key));
      return JSON.parse(new TextDecoder().decode(message!.data));
    };
    const published = await manifestOf("bad.bin");
    const { digest } = await manifestOf("good.bin");
    // "corrupt": the publisher's digest is good.bin's, the chunks NATS holds are
    // bad.bin's. "misshapen": the manifest says 1 MiB chunks, NATS holds 512 KiB ones.
    const forged = {
      corrupt: { ...published, key: "corrupt", name: "model.bin", digest },
      misshapen: { ...published, key: "misshapen", chunkSize: MiB, chunks: Math.ceil(size / MiB) },
    };
    for (const manifest of Object.values(forged)) {
      await nats.jetstream.publish(
        nats.subjects.keySubject(manifest.key),
        new TextEncoder().encode(JSON.stringify(manifest)),
      );
    }
    for (const key of ["corrupt", "misshapen"] as const) {
      for (const fanout of FANOUTS) {
        const what = `${key} ${fanout}`;
        const run = `${dir}/${key}-${fanout}`;
        await Deno.mkdir(run);
        const local = localFor(fanout, run);
        // shm keeps no own copy (no --out: nothing in the cwd either); socket asks for one.
        const fetch = spawnNet(
          [
            "fetch",
            key,
            "--server",
            server.url,
            ...fanoutArgs(fanout, local, 2),
            ...(fanout === "socket" ? ["--out", `${run}/own/`] : []),
          ],
          { cwd: run },
        );
        const receivers = spawnLocalReceivers(fanout, local, [`${run}/r1`, `${run}/r2`]);
        const result = await fetch.done();
        assert.equal(result.code, 1, `${what}: ${result.stdout}${result.stderr}`);
        if (key === "misshapen") {
          assert.match(result.stderr, /chunk 0 of misshapen .* is not what the manifest says/);
        } else if (fanout === "socket") {
          assert.match(result.stderr, /digest mismatch/); // its own copy, by the same digest
        }
        for (const [i, receiver] of receivers.entries()) {
          const end = await receiver.done();
          assert.equal(end.code, 1, `${what} receiver ${i + 1}: ${end.stderr}`);
          if (key === "corrupt") {
            // The receivers checked the publisher's digest, carried to them.
            assert.match(end.stderr, new RegExp(`digest mismatch: expected ${digest.value}`));
          }
        }
        // No received-files/ (the default --out), no socket file, no temp file.
        const left = listDir(run).filter((name) => !["r1", "r2", "own"].includes(name));
        assert.deepEqual(left, [], `${what}: left in the run dir`);
        for (const out of ["r1", "r2", "own"]) {
          assert.deepEqual(listDir(`${run}/${out}`), [], `${what}: nothing in ${out}`);
        }
        assert.deepEqual(await shmEntries(local), []);
      }
    }
  }));

Deno.test({
  name: "net fanout: receivers that come later than --timeout hold the fetch, not fail it",
  ignore,
}, () =>
  withServerAndDir(async (server, dir) => {
    // More than the 32 MiB the fetcher queues before it stops asking NATS for chunks.
    await makeFile(`${dir}/model.bin`, 48 * MiB, 33);
    const published = await runNet(["publish", `${dir}/model.bin`, "--server", server.url]);
    assert.equal(published.code, 0, published.stderr);
    const local = localFor("shm", dir);
    const fetch = spawnNet([
      "fetch",
      "model.bin",
      "--server",
      server.url,
      ...fanoutArgs("shm", local, 2),
      "--timeout",
      "1.5",
    ]);
    await delay(4000); // the queue is full long before: the fetch waits on its receivers
    const receivers = spawnLocalReceivers("shm", local, [`${dir}/r1`, `${dir}/r2`]);
    const result = await fetch.done();
    assert.equal(result.code, 0, result.stderr);
    for (const [i, receiver] of receivers.entries()) {
      const end = await receiver.done();
      assert.equal(end.code, 0, `receiver ${i + 1}: ${end.stderr}`);
      await assertSameFile(`${dir}/r${i + 1}/model.bin`, `${dir}/model.bin`);
    }
  }));

Deno.test({
  name: "net fanout: --wait ends the wait for missing receivers; socket serves the ones that came",
  ignore,
}, () =>
  withServerAndDir(async (server, dir) => {
    await makeFile(`${dir}/model.bin`, 3 * MiB + 1, 34);
    const published = await runNet(["publish", `${dir}/model.bin`, "--server", server.url]);
    assert.equal(published.code, 0, published.stderr);
    for (const fanout of FANOUTS) {
      const run = `${dir}/${fanout}`;
      await Deno.mkdir(run);
      const local = localFor(fanout, run);
      const fetch = spawnNet(
        ["fetch", "model.bin", "--server", server.url, ...fanoutArgs(fanout, local, 2)].concat(
          ["--wait", "3"],
        ),
        { cwd: run },
      );
      const [receiver] = spawnLocalReceivers(fanout, local, [`${run}/r1`]); // of 2
      const result = await fetch.done();
      const end = await receiver.done();
      assert.equal(result.code, 1, `${fanout}: ${result.stderr}`);
      if (fanout === "shm") {
        assert.match(result.stderr, /only 1 of 2 receiver\(s\) attached to .* within 3 s/);
        assert.equal(end.code, 1, `shm receiver: ${end.stderr}`);
        assert.deepEqual(listDir(`${run}/r1`), []);
      } else {
        assert.match(result.stderr, /only 1 of 2 peers came within 3 s \(--wait\)/);
        assert.equal(end.code, 0, `socket receiver: ${end.stderr}`);
        await assertSameFile(`${run}/r1/model.bin`, `${dir}/model.bin`);
      }
      assert.deepEqual(listDir(run), ["r1"], `${fanout}: left in the run dir`);
      assert.deepEqual(await shmEntries(local), []);
    }
  }));

Deno.test("net fanout: bad --fanout command lines exit 2 with a reason", async () => {
  const cases: [string[], RegExp][] = [
    [["--peers", "2"], /--peers goes with --fanout/],
    [["--fanout", "tcp"], /--fanout must be shm or socket, not 'tcp'/],
    [["--fanout", "shm", "--out", "-"], /--out - cannot be used with --fanout/],
    [["--fanout", "shm", "--socket", "/tmp/x.sock"], /--socket goes with --fanout socket/],
    [["--fanout", "socket", "--name", "n"], /--name goes with --fanout shm/],
    [["--fanout", "socket", "--wait", "0"], /--wait must be a number of seconds/],
    [["--fanout", "shm", "--name", "a/b"], /--name must be/],
    [["--fanout", "shm", "--peers", "0"], /--peers/],
  ];
  for (const [args, reason] of cases) {
    const result = await runNet(["fetch", "k", "--server", "nats://127.0.0.1:1", ...args]);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, reason, args.join(" "));
  }
});
