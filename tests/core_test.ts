import assert from "node:assert/strict";
import {
  createDigest,
  decodeHeader,
  decodeTrailer,
  encodeHeader,
  encodeTrailer,
  headerLength,
  MAX_NAME_BYTES,
  OutputFile,
  RateLimit,
  reporterFor,
  sanitizeName,
  sendingFlags,
  sizeFlag,
  sweepStaleOutputs,
  toHex,
  TrailerStatus,
  UsageError,
  WireError,
} from "../core/mod.ts";
import { listDir, smallTmpfs } from "./helpers.ts";

Deno.test("sanitizeName keeps one safe component", () => {
  assert.equal(sanitizeName("../../x"), "x");
  assert.equal(sanitizeName("/etc/passwd"), "passwd");
  assert.equal(sanitizeName("a\0b\nc"), "a_b_c");
  assert.equal(sanitizeName(".."), "file");
  assert.equal(sanitizeName(""), "file");
  assert.equal(sanitizeName("..\\..\\win.txt"), "win.txt");
  const long = sanitizeName("é".repeat(10_000));
  assert.ok(new TextEncoder().encode(long).length <= MAX_NAME_BYTES);
  assert.ok(!long.includes("/"));
});

Deno.test("header and trailer round-trip and reject garbage", () => {
  const header = { size: 2 ** 40 + 3, mode: 0o640, name: "data.bin", digest: "xxh64" as const };
  const bytes = encodeHeader(header);
  assert.equal(headerLength(bytes), bytes.length);
  assert.deepEqual(decodeHeader(bytes), header);
  assert.throws(() => decodeHeader(bytes.subarray(0, 10)), WireError);
  const bad = bytes.slice();
  bad[0] ^= 0xff;
  assert.throws(() => decodeHeader(bad), /magic/);
  const huge = bytes.slice();
  new DataView(huge.buffer).setBigUint64(8, 2n ** 63n, true);
  assert.throws(() => decodeHeader(huge), /absurd/);

  const trailer = { status: TrailerStatus.Complete, size: 9, digest: new Uint8Array(8).fill(7) };
  assert.deepEqual(decodeTrailer(encodeTrailer(trailer), "xxh64"), trailer);
  assert.throws(() => decodeTrailer(encodeTrailer(trailer), "sha256"), WireError);
});

Deno.test("digests match known values", async () => {
  const data = new TextEncoder().encode("p2m");
  for (const algorithm of ["xxh64", "sha256"] as const) {
    const whole = await createDigest(algorithm);
    whole.update(data);
    const parts = await createDigest(algorithm);
    parts.update(data.subarray(0, 1));
    parts.update(data.subarray(1));
    assert.equal(toHex(whole.digest()), toHex(parts.digest()));
  }
  const sha = await createDigest("sha256");
  sha.update(new Uint8Array(0));
  assert.equal(
    toHex(sha.digest()),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

Deno.test("sizeFlag parses units and rejects nonsense", () => {
  assert.equal(sizeFlag("256K", "chunk", 0), 256 * 1024);
  assert.equal(sizeFlag("1MiB", "chunk", 0), 1 << 20);
  assert.equal(sizeFlag(undefined, "chunk", 5), 5);
  assert.throws(() => sizeFlag("lots", "chunk", 0), UsageError);
});

Deno.test("OutputFile only shows a committed copy, never clobbers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2m-out-" });
  try {
    const first = OutputFile.create({ out: `${dir}/`, name: "../a.txt", mode: 0o640 });
    first.write(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [
      first.tempPath.slice(dir.length + 1),
    ]);
    first.commit();
    assert.equal(first.path, `${dir}/a.txt`);
    assert.equal(Deno.statSync(first.path).mode! & 0o777, 0o640);
    assert.throws(
      () => OutputFile.create({ out: `${dir}/`, name: "a.txt", mode: 0o600 }),
      /exists/,
    );
    {
      using second = OutputFile.create({ out: dir, name: "b", mode: 0o600 });
      second.write(new Uint8Array([9]));
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno.json tasks grant exactly the permissions the code spawns with", async () => {
  const { SHM_PERMISSIONS, SOCKET_PERMISSIONS } = await import("../core/permissions.ts");
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const flags = (task: string) => task.split(" ").filter((word) => word.startsWith("--"));
  assert.deepEqual(flags(config.tasks.socket), [...SOCKET_PERMISSIONS]);
  assert.deepEqual(flags(config.tasks.shm), [...SHM_PERMISSIONS]);
  for (const [name, task] of Object.entries<string>(config.tasks)) {
    assert.ok(!/(^| )(-A|--allow-all)( |$)/.test(task), `task ${name} must not use -A`);
  }
});

Deno.test({
  name: "a full disk fails the copy clearly and leaves no temp file",
  // Mounting a small tmpfs needs root; elsewhere the case cannot be staged.
  ignore: Deno.uid() !== 0,
}, async () => {
  await using disk = await smallTmpfs("1m");
  assert.ok(disk, "mounting a small tmpfs failed");
  const output = OutputFile.create({ out: `${disk.dir}/`, name: "big.bin", mode: 0o644 });
  const chunk = new Uint8Array(256 * 1024);
  assert.throws(() => {
    for (let i = 0; i < 8; i++) output.write(chunk);
  }, /No space left on device; copy discarded/);
  assert.deepEqual(listDir(disk.dir), []);
});

Deno.test("RateLimit holds a stream to its rate and is free when off", async () => {
  const limit = new RateLimit(1024 * 1024);
  const start = performance.now();
  for (let i = 0; i < 4; i++) await limit.pace(64 * 1024);
  // 256 KiB at 1 MiB/s is due at 0.1875 s after the first chunk.
  assert.ok(performance.now() - start >= 150, "the limit did not wait");
  const free = new RateLimit(0);
  assert.equal(free.enabled, false);
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) await free.pace(1 << 30);
  assert.ok(performance.now() - t0 < 1000);
});

Deno.test("a temp file left by a writer killed with -9 is swept by the next writer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2m-sweep-" });
  try {
    // A real writer process that creates its temp file, says so, and hangs.
    const script = `${dir}/writer.ts`;
    await Deno.writeTextFile(
      script,
      `import { OutputFile } from ${
        JSON.stringify(new URL("../core/output.ts", import.meta.url).href)
      };
const out = OutputFile.create({ out: ${JSON.stringify(`${dir}/out/`)}, name: "x", mode: 0o600 });
out.write(new Uint8Array(10));
console.log(out.tempPath);
await new Promise(() => setInterval(() => {}, 1000));`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", script],
      stdout: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const tempPath = (await reader.read()).value!.trim();
    // While the writer lives, its lock protects its temp file.
    sweepStaleOutputs(`${dir}/out`);
    assert.ok(Deno.statSync(tempPath).isFile, "a live writer's temp file was swept");
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    assert.ok(Deno.statSync(tempPath).isFile, "kill -9 leaves the temp file behind");
    // The next writer in that directory removes it.
    using next = OutputFile.create({ out: `${dir}/out/`, name: "y", mode: 0o600 });
    assert.deepEqual(listDir(`${dir}/out`), [next.tempPath.slice(`${dir}/out/`.length)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("both senders read their shared flags the same way", () => {
  assert.deepEqual(sendingFlags({}), { digest: "xxh3-128", stallSeconds: 10, limitRate: 0 });
  assert.deepEqual(
    sendingFlags({ "no-verify": true, "stall-timeout": "2.5", "limit-rate": "4M" }),
    { digest: "none", stallSeconds: 2.5, limitRate: 4 * 2 ** 20 },
  );
  assert.equal(sendingFlags({ digest: "sha256" }).digest, "sha256");
  assert.throws(
    () => sendingFlags({ digest: "md5" }),
    /--digest must be xxh3-128, xxh64, sha256, not 'md5'/,
  );
  assert.equal(sendingFlags({ digest: "xxh64" }).digest, "xxh64");
  assert.throws(() => sendingFlags({ digest: "none" }), UsageError);
  assert.throws(() => sendingFlags({ digest: "sha256", "no-verify": true }), /drop --digest/);
  assert.throws(() => sendingFlags({ "stall-timeout": "0" }), UsageError);
  assert.throws(() => reporterFor({ json: true, quiet: true }), /exclude each other/);
  assert.equal(reporterFor({ json: true }).mode, "json");
});
