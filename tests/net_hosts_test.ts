/**
 * `net` across hosts: network namespaces with veth links, the server in one
 * and three fetching hosts in three others, each fanning out to 2 local
 * receivers (shm, socket, shm). Every copy is identical, the server sends
 * one copy per host (its monitoring endpoint and each link's
 * kernel counter agree), and a host whose link is cut mid-transfer fails
 * clearly within its --timeout while the others verify.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertSameFile,
  largestPart,
  listDir,
  shmEntries,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import {
  fanoutArgs,
  fetchOnEveryHost,
  natsMissing,
  publishFromServer,
  spawnLocalReceivers,
  withHosts,
} from "./net_helpers.ts";
import { netnsMissing } from "./net_netns.ts";

const ignore = natsMissing() || await netnsMissing();
const MiB = 1 << 20;

interface ClosedConnection {
  name?: string;
  out_bytes: number;
}

/** Each host's local fan-out: two shm hosts and a socket one, each with its own segment or socket. */
const HOST_FANOUTS = ["shm", "socket", "shm"] as const;

Deno.test({
  name: "net hosts: three hosts fetch once each and fan out to 2 local receivers, all identical",
  ignore,
}, async () => {
  await withHosts(3, async (test) => {
    const { network, server, dir } = test;
    const size = 48 * MiB + 17;
    await publishFromServer(test, "model.bin", size, 21);
    const before = await Promise.all(network.hosts.map((_, i) => network.receivedBytes(i)));
    const locals = HOST_FANOUTS.map((fanout, i) =>
      fanout === "shm" ? uniqueName(`p2m-host${i + 1}`) : `${dir}/host${i + 1}.sock`
    );
    const fetches = fetchOnEveryHost(
      test,
      "model.bin",
      () => "30",
      (i) => fanoutArgs(HOST_FANOUTS[i], locals[i], 2),
    );
    const receivers = HOST_FANOUTS.map((fanout, i) =>
      spawnLocalReceivers(fanout, locals[i], [`${dir}/host${i + 1}-r1`, `${dir}/host${i + 1}-r2`])
    );
    const results = await Promise.all(fetches.map((f) => f.done()));
    for (const [i, result] of results.entries()) {
      assert.equal(result.code, 0, `host ${i + 1}: ${result.stderr}`);
      await assertSameFile(`${dir}/host${i + 1}/model.bin`, `${dir}/model.bin`);
      for (const [r, receiver] of receivers[i].entries()) {
        const end = await receiver.done();
        assert.equal(end.code, 0, `host ${i + 1} receiver ${r + 1}: ${end.stderr}`);
        await assertSameFile(`${dir}/host${i + 1}-r${r + 1}/model.bin`, `${dir}/model.bin`);
      }
      assert.deepEqual(await shmEntries(locals[i]), [], `host ${i + 1}: segment removed`);
      const received = (await network.receivedBytes(i)) - before[i];
      assert.ok(
        received >= size && received < size * 1.1,
        `host ${i + 1} received ${received} bytes on its link for a ${size}-byte file`,
      );
    }
    assert.ok(!listDir(dir).some((name) => name.endsWith(".sock")), "socket file removed");
    const connz = await server.monitor("connz?state=closed&limit=1000");
    const senders = (connz.connections as ClosedConnection[])
      .filter((c) => c.name?.startsWith("p2m net") && c.out_bytes > size / 2);
    assert.equal(senders.length, 3, `server sent the file to ${senders.length} connections`);
    for (const connection of senders) {
      assert.ok(connection.out_bytes < size * 1.1, `one copy per host (${connection.out_bytes})`);
    }
  });
});

Deno.test({
  name: "net hosts: one host's link cut mid-transfer fails it clearly; the others verify",
  ignore,
}, async () => {
  await withHosts(3, async (test) => {
    const { network, dir } = test;
    const size = 128 * MiB;
    await publishFromServer(test, "data.bin", size, 22);
    for (let i = 0; i < 3; i++) await Deno.mkdir(`${dir}/host${i + 1}`);
    const fetches = fetchOnEveryHost(test, "data.bin", (i) => i === 2 ? "3" : "30");
    await waitFor(() => largestPart(`${dir}/host3`) >= 4 * MiB, 60_000, "host 3 under way");
    await network.cutLink(2);
    const cutAt = performance.now();
    const cut = await fetches[2].done();
    const failedAfter = (performance.now() - cutAt) / 1000;
    assert.equal(cut.code, 1, cut.stderr);
    assert.match(cut.stderr, /no data from .* for 3 s .*nothing kept/);
    assert.equal(cut.stderr.trim().split("\n").length, 1, cut.stderr);
    assert.ok(failedAfter < 20, `host 3 failed ${failedAfter.toFixed(1)} s after the cut`);
    assert.deepEqual(listDir(`${dir}/host3`), []);
    for (const i of [0, 1]) {
      const result = await fetches[i].done();
      assert.equal(result.code, 0, `host ${i + 1}: ${result.stderr}`);
      await assertSameFile(`${dir}/host${i + 1}/data.bin`, `${dir}/data.bin`);
    }
  });
});
