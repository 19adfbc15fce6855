/**
 * The digests of core/digest.ts: the direct xxh64 loader, which skips
 * Deno's npm loader for start-up speed, must agree with hash-wasm's own
 * package; xxh3-128 must give `xxhsum -H2`'s value natively and through
 * its WebAssembly fallback, whatever the split, and a process with the
 * native library must not compile any wasm.
 */
import assert from "node:assert/strict";
import { createXXHash64 } from "hash-wasm";
import { feedInPieces, randomBytes, warnNoXxhsum, XXHSUM, xxhsum } from "./xxhsum.ts";
import { withTempDir } from "./helpers.ts";
import {
  createDigest,
  decodeHeader,
  decodeTrailer,
  DIGEST_LENGTH,
  digestCode,
  digestFromCode,
  encodeHeader,
  encodeTrailer,
  isDigestAlgorithm,
  MAX_DIGEST_BYTES,
  toHex,
  TrailerStatus,
} from "../core/mod.ts";

Deno.test("xxh64 without the npm loader matches hash-wasm's package, whatever the split", async () => {
  const empty = await createDigest("xxh64");
  assert.deepStrictEqual(toHex(empty.digest()), "ef46db3751d8e999"); // xxh64("") with seed 0
  const data = crypto.getRandomValues(new Uint8Array(65536));
  const big = new Uint8Array(3 * 1024 * 1024 + 12345);
  for (let i = 0; i < big.length; i += data.length) big.set(data.subarray(0, big.length - i), i);
  const reference = await createXXHash64();
  reference.init();
  reference.update(big);
  const expected = toHex(reference.digest("binary"));
  for (const cuts of [[0], [1, 31, 32, 16384, 16385, 1 << 20], [big.length - 1]]) {
    const digest = await createDigest("xxh64");
    let at = 0;
    for (const cut of [...cuts, big.length]) {
      digest.update(big.subarray(at, cut));
      at = cut;
    }
    assert.deepStrictEqual(toHex(digest.digest()), expected, `cuts ${cuts}`);
  }
});

const MiB = 1024 * 1024;

warnNoXxhsum("the xxh3-128 comparison with it is");

/** Hex digest of `data` fed to a fresh digest in pieces of the given sizes, then the rest. */
async function digestInPieces(
  data: Uint8Array,
  pieces: number[],
  options: { native: boolean },
): Promise<string> {
  const digest = await createDigest("xxh3-128", options);
  feedInPieces(data, pieces, (bytes) => digest.update(bytes));
  return toHex(digest.digest());
}

Deno.test("xxh3-128 is appended to the wire tables; the older codes do not move", () => {
  assert.deepStrictEqual(
    ["none", "xxh64", "sha256", "xxh3-128"].map((name) => isDigestAlgorithm(name)),
    [true, true, true, true],
  );
  assert.equal(digestCode("none"), 0);
  assert.equal(digestCode("xxh64"), 1);
  assert.equal(digestCode("sha256"), 2);
  assert.equal(digestCode("xxh3-128"), 3);
  assert.equal(digestFromCode(3), "xxh3-128");
  assert.equal(DIGEST_LENGTH["xxh3-128"], 16);
  assert.ok(DIGEST_LENGTH["xxh3-128"] <= MAX_DIGEST_BYTES);
  const trailer = { status: TrailerStatus.Complete, size: 3, digest: randomBytes(16) };
  assert.deepStrictEqual(decodeTrailer(encodeTrailer(trailer), "xxh3-128"), trailer);
  const header = { size: 5, mode: 0o600, name: "f", digest: "xxh3-128" as const };
  assert.deepStrictEqual(decodeHeader(encodeHeader(header)), header);
});

Deno.test({
  name: "xxh3-128: native and WebAssembly agree at awkward splits and equal xxhsum -H2",
  ignore: !XXHSUM,
  async fn() {
    const data = randomBytes(2 * MiB + 4321);
    const [whole, empty] = await xxhsum(2, [data, new Uint8Array(0)]);
    assert.equal(empty, "99aa06d3014798d86001c324468d497f");
    for (const native of [true, false]) {
      assert.equal(await digestInPieces(new Uint8Array(0), [], { native }), empty);
    }
    const random = Array.from({ length: 30 }, () => Math.floor(Math.random() * 100000));
    const splits = [
      [],
      [0],
      [1],
      [0, 1, 0, 15, 16, 17],
      [239, 240, 241],
      [MiB - 1],
      [MiB],
      [MiB + 1],
      [MiB - 1, 2, MiB + 1],
      [16383, 16385], // across hash-wasm's 16 KiB copy buffer
      random,
    ];
    for (const pieces of splits) {
      assert.equal(
        await digestInPieces(data, pieces, { native: true }),
        whole,
        `native ${pieces}`,
      );
      assert.equal(
        await digestInPieces(data, pieces, { native: false }),
        whole,
        `wasm ${pieces}`,
      );
    }
  },
});

/**
 * Runs a fresh Deno process that hashes `file` with createDigest("xxh3-128"),
 * WebAssembly made unusable in it when `forbidWasm`; returns its digest and
 * the stderr lines that are p2m notices.
 */
async function hashInChild(
  file: string,
  permissions: string[],
  forbidWasm: boolean,
): Promise<{ hex: string; notices: string[]; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "p2m-digest-child-" });
  try {
    const script = `${dir}/child.js`;
    await Deno.writeTextFile(
      script,
      `const { createDigest, toHex } = await import(${
        JSON.stringify(new URL("../core/digest.ts", import.meta.url).href)
      });
if (${forbidWasm}) {
  const refuse = () => { throw new Error("WebAssembly was compiled"); };
  for (const name of ["compile", "compileStreaming", "instantiate", "instantiateStreaming"]) {
    WebAssembly[name] = refuse;
  }
  WebAssembly.Module = refuse;
}
const digest = await createDigest("xxh3-128");
digest.update(await Deno.readFile(Deno.args[0]));
console.log(toHex(digest.digest()));
`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--config",
        new URL("../deno.json", import.meta.url).pathname,
        ...permissions,
        script,
        file,
      ],
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.ok(output.success, stderr);
    return {
      hex: new TextDecoder().decode(output.stdout).trim(),
      notices: stderr.split("\n").filter((line) => line.startsWith("p2m: notice:")),
      stderr,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("xxh3-128: a process with the library never compiles wasm; one without FFI falls back with one notice", async () => {
  const data = randomBytes(MiB + 17);
  await withTempDir("p2m-digest-", async (dir) => {
    const file = `${dir}/data.bin`;
    await Deno.writeFile(file, data);
    const expected = await digestInPieces(data, [], { native: true });
    const native = await hashInChild(file, ["--allow-read", "--allow-env", "--allow-ffi"], true);
    assert.equal(native.hex, expected, native.stderr);
    assert.deepStrictEqual(native.notices, []);
    const fallback = await hashInChild(file, ["--allow-read", "--allow-env"], false);
    assert.equal(fallback.hex, expected, fallback.stderr);
    assert.equal(fallback.notices.length, 1, fallback.stderr);
    assert.match(fallback.notices[0], /native xxHash unavailable: --allow-ffi is not granted/);
    assert.match(fallback.notices[0], /WebAssembly \(same digests\)/);
  });
});
