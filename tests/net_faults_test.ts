/**
 * `net` faults against a real nats-server: a publisher killed mid-publish,
 * a corrupted chunk published by hand, wrong credentials, a server that
 * requires TLS, the server killed and restarted mid-fetch, and a key
 * overwritten during a fetch. In every case a fetcher commits one whole
 * verified revision or nothing.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createDigest, toHex } from "../core/digest.ts";
import { delay } from "../core/delay.ts";
import { MANIFEST_VERSION } from "../net/manifest.ts";
import { publish } from "../net/publish.ts";
import { Reporter } from "../core/report.ts";
import { BucketSubjects } from "../net/subjects.ts";
import { assertSameFile, largestPart, listDir, makeFile, withTempDir } from "./helpers.ts";
import {
  assertNetFailed,
  assertOneLine,
  dataCounts,
  fetchUnderWay,
  issueCertificate,
  natsMissing,
  NatsServer,
  natsTest,
  openssl,
  publishNewFile,
  publishUnderWay,
  runNet,
  session,
  spawnNet,
  waitForChunks,
} from "./net_helpers.ts";

const ignore = natsMissing();
const MiB = 1 << 20;

natsTest(
  "net: a publisher killed -9 mid-publish leaves no revision; a later publish works",
  "killed",
  async ({ server, dir, common }) => {
    const watcher = spawnNet(["fetch", "k", ...common, "--watch", "--out", `${dir}/watch/`]);
    const publisher = spawnNet(["publish", "-", "--key", "k", ...common], { stdin: "piped" });
    const writer = publisher.child.stdin.getWriter();
    await writer.write(await makeFile(`${dir}/part.bin`, 8 * MiB, 1));
    await waitForChunks(server, "killed", 4, 20_000, "chunks of the doomed publish on the server");
    publisher.child.kill("SIGKILL");
    await publisher.done();
    await writer.abort().catch(() => {});

    const fetched = await runNet(["fetch", "k", ...common, "--out", `${dir}/plain/`]);
    assertNetFailed(fetched, /no key k in bucket killed/);
    assert.deepEqual(listDir(`${dir}/plain`), []);
    await delay(500);
    assert.deepEqual(listDir(`${dir}/watch`), [], "the watcher committed nothing");
    assert.equal((await dataCounts(server, "killed")).size, 1, "orphan data is there");

    await publishNewFile(`${dir}/k`, 5 * MiB + 1, 2, common);
    const watched = await watcher.done();
    assert.equal(watched.code, 0, watched.stderr);
    await assertSameFile(`${dir}/watch/k`, `${dir}/k`);

    // Housekeeping: rm sweeps the dead publisher's data along with the key.
    const removed = await runNet(["rm", "k", ...common, "--orphans-older-than", "0"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal((await dataCounts(server, "killed")).size, 0, "no data left in the bucket");
  },
);

natsTest(
  "net: a corrupted or misshapen chunk published by hand is refused, nothing kept",
  "bad",
  async ({ server, dir, common }) => {
    await using nats = await session(server, "bad");
    await nats.ensureBucket();
    const original = await makeFile(`${dir}/src.bin`, 3 * MiB, 4);
    const digest = await createDigest("xxh64");
    digest.update(original);
    const value = toHex(digest.digest());
    const publishByHand = async (key: string, chunks: Uint8Array[]) => {
      const uuid = BucketSubjects.newUuid();
      let firstSeq = 0;
      let lastSeq = 0;
      for (const chunk of chunks) {
        const ack = await nats.jetstream.publish(nats.subjects.dataSubject(uuid), chunk);
        firstSeq ||= ack.seq;
        lastSeq = ack.seq;
      }
      const manifest = {
        p2m: MANIFEST_VERSION,
        key,
        uuid,
        name: `${key}.bin`,
        size: original.length,
        mode: 0o644,
        digest: { algorithm: "xxh64", value },
        chunks: 3,
        chunkSize: MiB,
        firstSeq,
        lastSeq,
        published: new Date().toISOString(),
      };
      await nats.jetstream.publish(
        nats.subjects.keySubject(key),
        new TextEncoder().encode(JSON.stringify(manifest)),
      );
    };
    const flipped = original.slice(MiB, 2 * MiB);
    flipped[12345] ^= 0x40;
    await publishByHand("flipped", [
      original.subarray(0, MiB),
      flipped,
      original.subarray(2 * MiB),
    ]);
    await publishByHand("short", [
      original.subarray(0, MiB),
      original.subarray(MiB, 2 * MiB - 1),
      original.subarray(2 * MiB),
    ]);
    for (
      const [key, reason] of [["flipped", /digest mismatch/], [
        "short",
        /chunk 1 .* not what the manifest says/,
      ]] as const
    ) {
      const out = `${dir}/out-${key}/`;
      const fetched = await runNet(["fetch", key, ...common, "--out", out]);
      assert.equal(fetched.code, 1, `${key}: ${fetched.stderr}`);
      assert.match(fetched.stderr, reason);
      assertOneLine(fetched);
      assert.deepEqual(listDir(out), [], `${key}: nothing kept, not even a temp file`);
    }
  },
);

natsTest(
  "net: wrong credentials fail in one line, exit 1, nothing left; right ones work",
  "p2m",
  async ({ server, dir }) => {
    await makeFile(`${dir}/f.bin`, MiB + 1, 6);
    const common = ["--server", server.url, "--user", "alice"];
    const wrong = await runNet(["fetch", "f.bin", ...common, "--out", `${dir}/out/`], {
      env: { P2M_NATS_PASSWORD: "wrong" },
    });
    assertNetFailed(wrong, /^p2m: .*refused our credentials/);
    assertOneLine(wrong);
    assert.deepEqual(listDir(`${dir}/out`), []);
    const anonymous = await runNet(["publish", `${dir}/f.bin`, "--server", server.url]);
    assertNetFailed(anonymous, /refused our credentials/);

    await Deno.writeTextFile(`${dir}/pw`, "s3cret-pw\n", { mode: 0o600 });
    const withPasswordFile = [...common, "--password-file", `${dir}/pw`];
    const published = await runNet(["publish", `${dir}/f.bin`, ...withPasswordFile]);
    assert.equal(published.code, 0, published.stderr);
    const fetched = await runNet(["fetch", "f.bin", ...common, "--out", `${dir}/out/`], {
      env: { P2M_NATS_PASSWORD: "s3cret-pw" },
    });
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${dir}/out/f.bin`, `${dir}/f.bin`);
  },
  ["--user", "alice", "--pass", "s3cret-pw"],
);

Deno.test({
  name:
    "net: a server that requires TLS: plain fails in one line; --tls-ca works; mutual TLS with --tls-cert",
  ignore,
}, async () => {
  await withTempDir("p2m-test-", async (dir) => {
    const ca = ["-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"];
    await openssl(["req", ...ca, "-days", "1", "-subj", "/CN=p2m test CA"], dir);
    await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    await issueCertificate(dir, "server", "/CN=127.0.0.1", "san.ext");
    const serverTls = ["--tlscert", `${dir}/server.pem`, "--tlskey", `${dir}/server.key`];
    await using server = await NatsServer.start(["--tls", ...serverTls]);
    await makeFile(`${dir}/t.bin`, 2 * MiB, 8);
    const publishTo = async (url: string) =>
      await runNet(["publish", `${dir}/t.bin`, "--server", url, "--timeout", "5"]);
    const plain = await publishTo(server.url);
    assert.equal(plain.code, 1, plain.stderr);
    assertOneLine(plain);
    assert.match(plain.stderr, /^p2m: TLS with .* failed .*--tls-ca/);
    const untrusted = await publishTo(`tls://127.0.0.1:${server.port}`);
    assert.equal(untrusted.code, 1, untrusted.stderr);
    assertOneLine(untrusted);
    const tls = ["--server", `tls://127.0.0.1:${server.port}`, "--tls-ca", `${dir}/ca.pem`];
    const published = await runNet(["publish", `${dir}/t.bin`, ...tls]);
    assert.equal(published.code, 0, published.stderr);
    const fetched = await runNet(["fetch", "t.bin", ...tls, "--out", `${dir}/out/`]);
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${dir}/out/t.bin`, `${dir}/t.bin`);

    // Mutual TLS: a server that verifies clients takes only a signed client certificate.
    await issueCertificate(dir, "client", "/CN=p2m client");
    await using mutual = await NatsServer.start([
      "--tlsverify",
      ...serverTls,
      "--tlscacert",
      `${dir}/ca.pem`,
    ]);
    const mtls = ["--server", `tls://127.0.0.1:${mutual.port}`, "--tls-ca", `${dir}/ca.pem`];
    const noCert = await runNet(["ls", ...mtls, "--timeout", "5"]);
    assert.equal(noCert.code, 1, noCert.stderr);
    assertOneLine(noCert);
    const withCert = [...mtls, "--tls-cert", `${dir}/client.pem`, "--tls-key", `${dir}/client.key`];
    assert.equal((await runNet(["publish", `${dir}/t.bin`, ...withCert])).code, 0);
    const mutualFetch = await runNet(["fetch", "t.bin", ...withCert, "--out", `${dir}/mtls/`]);
    assert.equal(mutualFetch.code, 0, mutualFetch.stderr);
    await assertSameFile(`${dir}/mtls/t.bin`, `${dir}/t.bin`);
  });
});

natsTest(
  "net: the server killed mid-fetch and restarted: the fetch resumes and verifies",
  "restart",
  async ({ server, dir, common }) => {
    await publishNewFile(`${dir}/big.bin`, 128 * MiB, 9, common);
    const out = `${dir}/out`;
    const fetcher = await fetchUnderWay("big.bin", [...common, "--timeout", "30"], out, 8 * MiB);
    await server.kill("SIGKILL");
    const atKill = largestPart(out);
    await delay(1000);
    await server.restart();
    const fetched = await fetcher.done();
    assert.ok(atKill < 128 * MiB, "the server died mid-fetch");
    // The design resumes: the client reconnects and the ordered consumer
    // restarts after the last chunk it delivered.
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${out}/big.bin`, `${dir}/big.bin`);
    assert.deepEqual(listDir(out), ["big.bin"]);
  },
);

natsTest(
  "net: the server killed mid-fetch and not back within --timeout: clear failure, nothing kept",
  "gone",
  async ({ server, dir, common }) => {
    const out = `${dir}/out`;
    await publishNewFile(`${dir}/big.bin`, 128 * MiB, 10, common);
    const started = performance.now();
    const fetcher = await fetchUnderWay("big.bin", [...common, "--timeout", "3"], out, 8 * MiB);
    await server.kill("SIGKILL");
    const fetched = await fetcher.done();
    assertNetFailed(fetched, /no data from .* for 3 s .*nothing kept/);
    assertOneLine(fetched);
    assert.deepEqual(listDir(out), []);
    assert.ok(performance.now() - started < 60_000);
  },
);

natsTest(
  "net: a key overwritten during a fetch: one whole revision or a clear failure",
  "over",
  async ({ server, dir, common }) => {
    await publishNewFile(`${dir}/a.bin`, 128 * MiB, 11, ["--key", "k", ...common]);
    await makeFile(`${dir}/b.bin`, 2 * MiB, 12);
    const out = `${dir}/out`;
    const fetchArgs = [...common, "--out", `${out}/k.bin`, "--timeout", "20"];
    const fetcher = await fetchUnderWay("k", fetchArgs, out, 8 * MiB);
    // In-process, so the overwrite lands while the fetch runs (a new
    // process would take longer to start than the fetch to finish).
    {
      await using nats = await session(server, "over");
      const reporter = new Reporter({ quiet: true });
      const options = {
        path: `${dir}/b.bin`,
        key: "k",
        digest: "xxh64",
        chunkSize: 512 << 10,
        window: 16,
      } as const;
      await publish(nats, options, reporter);
    }
    const fetched = await fetcher.done();
    if (fetched.code === 0) {
      // It had every chunk of revision A before A's data was purged.
      await assertSameFile(`${out}/k.bin`, `${dir}/a.bin`);
      console.log("  (the fetch had every chunk of the old revision before it was purged)");
    } else {
      assert.equal(fetched.code, 1);
      assert.match(fetched.stderr, /revision \d+ of k was replaced during the fetch/);
      console.log("  (the fetch saw its revision replaced and stopped)");
      assert.deepEqual(listDir(out), []);
    }
    const again = await runNet(["fetch", "k", ...common, "--out", `${dir}/again.bin`]);
    assert.equal(again.code, 0, again.stderr);
    await assertSameFile(`${dir}/again.bin`, `${dir}/b.bin`);
  },
);

natsTest(
  "net: SIGTERM mid-fetch exits 143 and leaves nothing",
  "signal",
  async ({ dir, common }) => {
    await publishNewFile(`${dir}/big.bin`, 128 * MiB, 13, common);
    const out = `${dir}/out`;
    const fetcher = await fetchUnderWay("big.bin", common, out, 4 * MiB);
    fetcher.child.kill("SIGTERM");
    assertNetFailed(await fetcher.done(), /interrupted by SIGTERM/, 143);
    assert.deepEqual(listDir(out), []);
  },
);

natsTest(
  "net: a file written to while it is published fails the publish; no revision",
  "changed",
  async (test) => {
    const { server, dir, common } = test;
    const path = `${dir}/moving.bin`;
    const publisher = await publishUnderWay(test, path, 128 * MiB, 14, ["--window", "2"], 4);
    // Opening for writing breaks the publisher's read lease (or moves ctime).
    const file = await Deno.open(`${dir}/moving.bin`, { write: true });
    await file.write(new Uint8Array([1, 2, 3]));
    file.close();
    assertNetFailed(await publisher.done(), /moving\.bin changed while publishing/);
    const fetched = await runNet(["fetch", "moving.bin", ...common, "--out", `${dir}/out/`]);
    assert.equal(fetched.code, 1);
    assert.match(fetched.stderr, /no key moving\.bin/);
    assert.equal((await dataCounts(server, "changed")).size, 0, "its chunks were purged");
  },
);

natsTest(
  "net: the server killed mid-publish: clear failure within --timeout, no revision after restart",
  "pubkill",
  async (test) => {
    const timeout = ["--timeout", "3"];
    const publisher = await publishUnderWay(test, `${test.dir}/big.bin`, 256 * MiB, 15, timeout, 8);
    const { server, dir, common } = test;
    await server.kill("SIGKILL");
    const published = await publisher.done();
    assertNetFailed(published, /publishing big\.bin failed: .*no revision was stored/);
    assertOneLine(published);
    await server.restart();
    const fetched = await runNet(["fetch", "big.bin", ...common, "--out", `${dir}/out/`]);
    assertNetFailed(fetched, /no key big\.bin/);
    assert.deepEqual(listDir(`${dir}/out`), []);
  },
);
