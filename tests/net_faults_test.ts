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
import { NatsSession } from "../net/session.ts";
import { publish } from "../net/publish.ts";
import { Reporter } from "../core/report.ts";
import { BucketSubjects } from "../net/subjects.ts";
import { assertSameFile, largestPart, listDir, makeFile, tempDir, waitFor } from "./helpers.ts";
import { natsMissing, NatsServer, runNet, spawnNet } from "./net_helpers.ts";

const ignore = natsMissing();
const MiB = 1 << 20;

async function session(server: NatsServer, bucket: string): Promise<NatsSession> {
  return await NatsSession.open({ servers: [server.url], bucket, timeoutSeconds: 10 });
}

/** Waits until a bucket holds at least `chunks` data messages on the server. */
async function waitForChunks(
  server: NatsServer,
  bucket: string,
  chunks: number,
  ms: number,
  what: string,
): Promise<void> {
  await waitFor(
    async () => {
      const counts = await dataCounts(server, bucket);
      return [...counts.values()].reduce((a, b) => a + b, 0) >= chunks;
    },
    ms,
    what,
  );
}

/** Total data messages in a bucket, by subject. */
async function dataCounts(server: NatsServer, bucket: string): Promise<Map<string, number>> {
  await using nats = await session(server, bucket);
  return await nats.subjectCounts(nats.subjects.data);
}

Deno.test({
  name: "net: a publisher killed -9 mid-publish leaves no revision; a later publish works",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "killed"];
    const watcher = spawnNet(["fetch", "k", ...common, "--watch", "--out", `${dir}/watch/`]);
    const publisher = spawnNet(["publish", "-", "--key", "k", ...common], { stdin: "piped" });
    const writer = publisher.child.stdin.getWriter();
    await writer.write(await makeFile(`${dir}/part.bin`, 8 * MiB, 1));
    await waitForChunks(server, "killed", 4, 20_000, "chunks of the doomed publish on the server");
    publisher.child.kill("SIGKILL");
    await publisher.done();
    await writer.abort().catch(() => {});

    const fetched = await runNet(["fetch", "k", ...common, "--out", `${dir}/plain/`]);
    assert.equal(fetched.code, 1, fetched.stderr);
    assert.match(fetched.stderr, /no key k in bucket killed/);
    assert.deepEqual(listDir(`${dir}/plain`), []);
    await delay(500);
    assert.deepEqual(listDir(`${dir}/watch`), [], "the watcher committed nothing");
    assert.equal((await dataCounts(server, "killed")).size, 1, "orphan data is there");

    await makeFile(`${dir}/k`, 5 * MiB + 1, 2);
    const second = await runNet(["publish", `${dir}/k`, ...common]);
    assert.equal(second.code, 0, second.stderr);
    const watched = await watcher.done();
    assert.equal(watched.code, 0, watched.stderr);
    await assertSameFile(`${dir}/watch/k`, `${dir}/k`);

    // Housekeeping: rm sweeps the dead publisher's data along with the key.
    const removed = await runNet(["rm", "k", ...common, "--orphans-older-than", "0"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal((await dataCounts(server, "killed")).size, 0, "no data left in the bucket");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: a corrupted or misshapen chunk published by hand is refused, nothing kept",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
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
    const common = ["--server", server.url, "--bucket", "bad"];
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
      assert.equal(fetched.stderr.trim().split("\n").length, 1, fetched.stderr);
      assert.deepEqual(listDir(out), [], `${key}: nothing kept, not even a temp file`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: wrong credentials fail in one line, exit 1, nothing left; right ones work",
  ignore,
}, async () => {
  await using server = await NatsServer.start(["--user", "alice", "--pass", "s3cret-pw"]);
  const dir = await tempDir();
  try {
    await makeFile(`${dir}/f.bin`, MiB + 1, 6);
    const common = ["--server", server.url, "--user", "alice"];
    const wrong = await runNet(["fetch", "f.bin", ...common, "--out", `${dir}/out/`], {
      env: { P2M_NATS_PASSWORD: "wrong" },
    });
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.equal(wrong.stderr.trim().split("\n").length, 1, wrong.stderr);
    assert.match(wrong.stderr, /^p2m: .*refused our credentials/);
    assert.deepEqual(listDir(`${dir}/out`), []);
    const anonymous = await runNet(["publish", `${dir}/f.bin`, "--server", server.url]);
    assert.equal(anonymous.code, 1, anonymous.stderr);
    assert.match(anonymous.stderr, /refused our credentials/);

    await Deno.writeTextFile(`${dir}/pw`, "s3cret-pw\n", { mode: 0o600 });
    const published = await runNet([
      "publish",
      `${dir}/f.bin`,
      ...common,
      "--password-file",
      `${dir}/pw`,
    ]);
    assert.equal(published.code, 0, published.stderr);
    const fetched = await runNet(["fetch", "f.bin", ...common, "--out", `${dir}/out/`], {
      env: { P2M_NATS_PASSWORD: "s3cret-pw" },
    });
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${dir}/out/f.bin`, `${dir}/f.bin`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function openssl(args: string[], cwd: string): Promise<void> {
  const result = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!result.success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(result.stderr)}`);
  }
}

Deno.test({
  name:
    "net: a server that requires TLS: plain fails in one line; --tls-ca works; mutual TLS with --tls-cert",
  ignore,
}, async () => {
  const dir = await tempDir();
  try {
    await openssl([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=p2m test CA",
    ], dir);
    await openssl([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
      "-subj",
      "/CN=127.0.0.1",
    ], dir);
    await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    await openssl([
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.pem",
      "-days",
      "1",
      "-extfile",
      "san.ext",
    ], dir);
    await using server = await NatsServer.start([
      "--tls",
      "--tlscert",
      `${dir}/server.pem`,
      "--tlskey",
      `${dir}/server.key`,
    ]);
    await makeFile(`${dir}/t.bin`, 2 * MiB, 8);
    const plain = await runNet([
      "publish",
      `${dir}/t.bin`,
      "--server",
      server.url,
      "--timeout",
      "5",
    ]);
    assert.equal(plain.code, 1, plain.stderr);
    assert.equal(plain.stderr.trim().split("\n").length, 1, plain.stderr);
    assert.match(plain.stderr, /^p2m: TLS with .* failed .*--tls-ca/);
    const untrusted = await runNet([
      "publish",
      `${dir}/t.bin`,
      "--server",
      `tls://127.0.0.1:${server.port}`,
      "--timeout",
      "5",
    ]);
    assert.equal(untrusted.code, 1, untrusted.stderr);
    assert.equal(untrusted.stderr.trim().split("\n").length, 1, untrusted.stderr);
    const tls = ["--server", `tls://127.0.0.1:${server.port}`, "--tls-ca", `${dir}/ca.pem`];
    const published = await runNet(["publish", `${dir}/t.bin`, ...tls]);
    assert.equal(published.code, 0, published.stderr);
    const fetched = await runNet(["fetch", "t.bin", ...tls, "--out", `${dir}/out/`]);
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${dir}/out/t.bin`, `${dir}/t.bin`);

    // Mutual TLS: a server that verifies clients takes only a signed client certificate.
    await openssl([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "client.key",
      "-out",
      "client.csr",
      "-subj",
      "/CN=p2m client",
    ], dir);
    await openssl([
      "x509",
      "-req",
      "-in",
      "client.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "client.pem",
      "-days",
      "1",
    ], dir);
    await using mutual = await NatsServer.start([
      "--tlsverify",
      "--tlscert",
      `${dir}/server.pem`,
      "--tlskey",
      `${dir}/server.key`,
      "--tlscacert",
      `${dir}/ca.pem`,
    ]);
    const mtls = ["--server", `tls://127.0.0.1:${mutual.port}`, "--tls-ca", `${dir}/ca.pem`];
    const noCert = await runNet(["ls", ...mtls, "--timeout", "5"]);
    assert.equal(noCert.code, 1, noCert.stderr);
    assert.equal(noCert.stderr.trim().split("\n").length, 1, noCert.stderr);
    const withCert = [...mtls, "--tls-cert", `${dir}/client.pem`, "--tls-key", `${dir}/client.key`];
    assert.equal((await runNet(["publish", `${dir}/t.bin`, ...withCert])).code, 0);
    const mutualFetch = await runNet(["fetch", "t.bin", ...withCert, "--out", `${dir}/mtls/`]);
    assert.equal(mutualFetch.code, 0, mutualFetch.stderr);
    await assertSameFile(`${dir}/mtls/t.bin`, `${dir}/t.bin`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: the server killed mid-fetch and restarted: the fetch resumes and verifies",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "restart"];
    await makeFile(`${dir}/big.bin`, 128 * MiB, 9);
    const published = await runNet(["publish", `${dir}/big.bin`, ...common]);
    assert.equal(published.code, 0, published.stderr);
    const out = `${dir}/out`;
    await Deno.mkdir(out);
    const fetcher = spawnNet([
      "fetch",
      "big.bin",
      ...common,
      "--out",
      `${out}/`,
      "--timeout",
      "30",
    ]);
    await waitFor(() => largestPart(out) >= 8 * MiB, 60_000, "the fetch under way");
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
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "net: the server killed mid-fetch and not back within --timeout: clear failure, nothing kept",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "gone"];
    await makeFile(`${dir}/big.bin`, 128 * MiB, 10);
    const published = await runNet(["publish", `${dir}/big.bin`, ...common]);
    assert.equal(published.code, 0, published.stderr);
    const out = `${dir}/out`;
    await Deno.mkdir(out);
    const started = performance.now();
    const fetcher = spawnNet(["fetch", "big.bin", ...common, "--out", `${out}/`, "--timeout", "3"]);
    await waitFor(() => largestPart(out) >= 8 * MiB, 60_000, "the fetch under way");
    await server.kill("SIGKILL");
    const fetched = await fetcher.done();
    assert.equal(fetched.code, 1, fetched.stderr);
    assert.match(fetched.stderr, /no data from .* for 3 s .*nothing kept/);
    assert.equal(fetched.stderr.trim().split("\n").length, 1, fetched.stderr);
    assert.deepEqual(listDir(out), []);
    assert.ok(performance.now() - started < 60_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: a key overwritten during a fetch: one whole revision or a clear failure",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "over"];
    await makeFile(`${dir}/a.bin`, 128 * MiB, 11);
    await makeFile(`${dir}/b.bin`, 2 * MiB, 12);
    assert.equal((await runNet(["publish", `${dir}/a.bin`, "--key", "k", ...common])).code, 0);
    const out = `${dir}/out`;
    await Deno.mkdir(out);
    const fetcher = spawnNet(["fetch", "k", ...common, "--out", `${out}/k.bin`, "--timeout", "20"]);
    await waitFor(() => largestPart(out) >= 8 * MiB, 60_000, "the fetch under way");
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
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({ name: "net: SIGTERM mid-fetch exits 143 and leaves nothing", ignore }, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "signal"];
    await makeFile(`${dir}/big.bin`, 128 * MiB, 13);
    assert.equal((await runNet(["publish", `${dir}/big.bin`, ...common])).code, 0);
    const out = `${dir}/out`;
    await Deno.mkdir(out);
    const fetcher = spawnNet(["fetch", "big.bin", ...common, "--out", `${out}/`]);
    await waitFor(() => largestPart(out) >= 4 * MiB, 60_000, "the fetch under way");
    fetcher.child.kill("SIGTERM");
    const fetched = await fetcher.done();
    assert.equal(fetched.code, 143, fetched.stderr);
    assert.match(fetched.stderr, /interrupted by SIGTERM/);
    assert.deepEqual(listDir(out), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: a file written to while it is published fails the publish; no revision",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "changed"];
    await makeFile(`${dir}/moving.bin`, 128 * MiB, 14);
    const publisher = spawnNet(["publish", `${dir}/moving.bin`, ...common, "--window", "2"]);
    await waitForChunks(server, "changed", 4, 60_000, "the publish under way");
    // Opening for writing breaks the publisher's read lease (or moves ctime).
    const file = await Deno.open(`${dir}/moving.bin`, { write: true });
    await file.write(new Uint8Array([1, 2, 3]));
    file.close();
    const published = await publisher.done();
    assert.equal(published.code, 1, published.stderr);
    assert.match(published.stderr, /moving\.bin changed while publishing/);
    const fetched = await runNet(["fetch", "moving.bin", ...common, "--out", `${dir}/out/`]);
    assert.equal(fetched.code, 1);
    assert.match(fetched.stderr, /no key moving\.bin/);
    assert.equal((await dataCounts(server, "changed")).size, 0, "its chunks were purged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "net: the server killed mid-publish: clear failure within --timeout, no revision after restart",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "pubkill"];
    await makeFile(`${dir}/big.bin`, 256 * MiB, 15);
    const publisher = spawnNet(["publish", `${dir}/big.bin`, ...common, "--timeout", "3"]);
    await waitForChunks(server, "pubkill", 8, 60_000, "the publish under way");
    await server.kill("SIGKILL");
    const published = await publisher.done();
    assert.equal(published.code, 1, published.stderr);
    assert.equal(published.stderr.trim().split("\n").length, 1, published.stderr);
    assert.match(published.stderr, /publishing big\.bin failed: .*no revision was stored/);
    await server.restart();
    const fetched = await runNet(["fetch", "big.bin", ...common, "--out", `${dir}/out/`]);
    assert.equal(fetched.code, 1, fetched.stderr);
    assert.match(fetched.stderr, /no key big\.bin/);
    assert.deepEqual(listDir(`${dir}/out`), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
