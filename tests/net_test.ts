/**
 * `net` against a real nats-server: publish and fetch byte-identical files
 * of edge sizes, stdin, ls, rm, --watch, and the command line.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { assertSameFile, listDir, makeFile, tempDir } from "./helpers.ts";
import { natsMissing, NatsServer, runNet, spawnNet } from "./net_helpers.ts";
import { delay } from "../core/delay.ts";

const ignore = natsMissing();
const MiB = 1 << 20;
const CHUNK = 512 << 10;

Deno.test({
  name: "net: publish + fetch are byte-identical at 0 B, 1 B, chunk ± 1 and 64 MiB",
  ignore,
}, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 64 * MiB]) {
      const file = `${dir}/f-${size}.bin`;
      await makeFile(file, size, size + 7);
      await Deno.chmod(file, 0o640);
      const common = ["--server", server.url, "--bucket", "sizes"];
      const published = await runNet(["publish", file, "--key", `k${size}`, ...common, "--json"]);
      assert.equal(published.code, 0, published.stderr);
      const done = published.stdout.split("\n").filter((l) => l).map((l) => JSON.parse(l))
        .find((e) => e.event === "done");
      assert.equal(done.size, size);
      assert.equal(done.chunks, Math.ceil(size / CHUNK));
      assert.ok(done.revision > 0);
      const out = `${dir}/out-${size}/`;
      const fetched = await runNet(["fetch", `k${size}`, ...common, "--out", out]);
      assert.equal(fetched.code, 0, fetched.stderr);
      assert.match(fetched.stdout, new RegExp(`revision ${done.revision} .*verified`));
      await assertSameFile(`${out}f-${size}.bin`, file);
      assert.equal((await Deno.stat(`${out}f-${size}.bin`)).mode! & 0o777, 0o640);
      assert.deepEqual(listDir(out), [`f-${size}.bin`], "no temp file left");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  { name: "net: stdin publish, ls, rm, --out -, and a later overwrite", ignore },
  async () => {
    await using server = await NatsServer.start();
    const dir = await tempDir();
    try {
      const common = ["--server", server.url, "--bucket", "misc"];
      const input = await makeFile(`${dir}/in.bin`, 3 * MiB + 5, 3);
      const publisher = spawnNet(["publish", "-", "--key", "from.stdin", ...common], {
        stdin: "piped",
      });
      const writer = publisher.child.stdin.getWriter();
      await writer.write(input);
      await writer.close();
      const published = await publisher.done();
      assert.equal(published.code, 0, published.stderr);
      assert.match(published.stdout, /published from\.stdin revision \d+/);

      const listed = await runNet(["ls", ...common, "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      const keys = listed.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(keys.map((k) => [k.key, k.size]), [["from.stdin", input.length]]);

      const piped = await spawnNet(["fetch", "from.stdin", ...common, "--out", "-"]).done();
      assert.equal(piped.code, 0, piped.stderr);
      assert.ok(Buffer.compare(piped.stdoutBytes, input) === 0, "--out - carries the bytes");

      // Overwrite: the newer revision is what a fetch gets; the older data is gone.
      await makeFile(`${dir}/v2.bin`, 2 * MiB, 99);
      const second = await runNet(["publish", `${dir}/v2.bin`, "--key", "from.stdin", ...common]);
      assert.equal(second.code, 0, second.stderr);
      const fetched = await runNet(["fetch", "from.stdin", ...common, "--out", `${dir}/got.bin`]);
      assert.equal(fetched.code, 0, fetched.stderr);
      await assertSameFile(`${dir}/got.bin`, `${dir}/v2.bin`);
      const jsz = await server.monitor("jsz?streams=true");
      const stream =
        (jsz.account_details as { stream_detail: { name: string; state: { bytes: number } }[] }[])[
          0
        ]
          .stream_detail.find((s) => s.name === "P2M_misc")!;
      assert.ok(
        stream.state.bytes < 3 * MiB,
        `old revision purged (${stream.state.bytes} bytes kept)`,
      );

      const removed = await runNet(["rm", "from.stdin", ...common]);
      assert.equal(removed.code, 0, removed.stderr);
      const gone = await runNet(["fetch", "from.stdin", ...common, "--out", `${dir}/none.bin`]);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /^p2m: no key from\.stdin in bucket misc/);
      assert.equal(gone.stderr.trim().split("\n").length, 1);
      assert.deepEqual(listDir(dir).filter((n) => n.startsWith("none") || n.includes(".part")), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test({ name: "net: fetch --watch waits for a key published later", ignore }, async () => {
  await using server = await NatsServer.start();
  const dir = await tempDir();
  try {
    const common = ["--server", server.url, "--bucket", "watch"];
    const watcher = spawnNet(["fetch", "later", ...common, "--watch", "--out", `${dir}/out/`]);
    await delay(1500);
    await makeFile(`${dir}/later.bin`, MiB + 3, 5);
    const published = await runNet(["publish", `${dir}/later.bin`, ...common, "--key", "later"]);
    assert.equal(published.code, 0, published.stderr);
    const fetched = await watcher.done();
    assert.equal(fetched.code, 0, fetched.stderr);
    await assertSameFile(`${dir}/out/later.bin`, `${dir}/later.bin`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "net: bad command lines exit 2 with a reason; secrets never on the command line",
  ignore,
}, async () => {
  const cases: [string[], RegExp][] = [
    [["publish", "x"], /--server URL is required/],
    [["fetch"], /missing <key>/],
    [["fetch", "k", "--server", "127.0.0.1:1", "--password", "x"], /Unknown option '--password'/],
    [
      ["fetch", "k", "--server", "127.0.0.1:1", "--user", "u"],
      /--user needs a password in \$P2M_NATS_PASSWORD/,
    ],
    [["ls", "--server", "127.0.0.1:1", "--bucket", "a.b"], /--bucket must be/],
    [["nope"], /unknown command 'nope'/],
  ];
  for (const [args, reason] of cases) {
    const result = await runNet(args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, reason);
  }
  const help = await runNet(["fetch", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--watch/);
  const refused = await runNet(["ls", "--server", "127.0.0.1:1", "--timeout", "2"]);
  assert.equal(refused.code, 1);
  assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
  assert.match(refused.stderr, /^p2m: cannot reach a NATS server at 127\.0\.0\.1:1/);
});
