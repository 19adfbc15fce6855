/**
 * The libxxhash binding (ffi/xxhash.ts) against the reference `xxhsum`
 * program and hash-wasm, at the lengths where XXH3 changes code path and at
 * awkward update splits, and hashing mapped shared memory where it lies.
 *
 * `xxhsum` comes from Debian's `xxhash` package; without it the tests that
 * need it are ignored with a warning (the others still run).
 */
import assert from "node:assert/strict";
import { createXXHash128, createXXHash3 } from "hash-wasm";
import { SharedMemory } from "../ffi/mod.ts";
import { loadXxhash, type Xxh3Bits, Xxh3Hasher } from "../ffi/xxhash.ts";
import { toHex } from "../core/digest.ts";
import { feedInPieces, randomBytes, warnNoXxhsum, XXHSUM, xxhsum } from "./xxhsum.ts";

const MiB = 1024 * 1024;

warnNoXxhsum("the comparisons with it are");

/** Native digest of `data` fed in pieces of the given sizes (the rest in one last update). */
function nativeDigest(bits: Xxh3Bits, data: Uint8Array, pieces: number[] = []): string {
  using hasher = new Xxh3Hasher(bits);
  feedInPieces(data, pieces, (bytes) => hasher.update(bytes));
  return toHex(hasher.digest());
}

/** hash-wasm's digest of the same algorithm, in one update. */
async function wasmDigest(bits: Xxh3Bits, data: Uint8Array): Promise<string> {
  const hasher = await (bits === 128 ? createXXHash128() : createXXHash3());
  hasher.init();
  hasher.update(data);
  return hasher.digest("hex");
}

/** Every length where XXH3 switches code path (0, 1-3, 4-8, 9-16, 17-128, 129-240, stripes, blocks). */
const EDGE_LENGTHS = [
  0,
  1,
  3,
  4,
  8,
  9,
  16,
  17,
  128,
  129,
  239,
  240,
  241,
  255,
  256,
  1023,
  1024,
  1025,
  65536,
  65537,
];

/** Update sizes that cross the internal 256-byte buffer and 1 KiB block edges badly. */
const AWKWARD_PIECES: number[][] = [
  [0],
  [1],
  [0, 1, 0, 15, 16, 17],
  [239, 240, 241],
  [255, 1, 256],
  [MiB - 1],
  [MiB],
  [MiB + 1],
  [MiB - 1, 2, MiB + 1],
];

Deno.test("xxh3: the binding reports libxxhash 0.8 or later", () => {
  assert.ok(loadXxhash().XXH_versionNumber() >= 800);
});

Deno.test({
  name: "xxh3-128 and xxh3-64: native digests equal xxhsum -H2 / -H3 at every code-path edge",
  ignore: !XXHSUM,
  async fn() {
    const inputs = EDGE_LENGTHS.map((length) => randomBytes(length));
    const reference128 = await xxhsum(2, inputs);
    const reference64 = await xxhsum(3, inputs);
    inputs.forEach((bytes, index) => {
      const label = `${bytes.length} bytes`;
      assert.equal(nativeDigest(128, bytes), reference128[index], label);
      assert.equal(nativeDigest(64, bytes), reference64[index], label);
    });
    assert.equal(reference128[0], "99aa06d3014798d86001c324468d497f", "XXH128 of nothing");
  },
});

Deno.test({
  name: "xxh3: awkward and random update splits give xxhsum's digest of the whole, as hash-wasm",
  ignore: !XXHSUM,
  async fn() {
    const data = randomBytes(3 * MiB + 12345);
    const [reference128] = await xxhsum(2, [data]);
    const [reference64] = await xxhsum(3, [data]);
    assert.equal(await wasmDigest(128, data), reference128, "hash-wasm xxhash128 = XXH128");
    assert.equal(await wasmDigest(64, data), reference64, "hash-wasm xxhash3 = XXH3_64");
    const random = Array.from({ length: 40 }, () => Math.floor(Math.random() * 70000));
    for (const pieces of [...AWKWARD_PIECES, random]) {
      assert.equal(nativeDigest(128, data, pieces), reference128, `128, pieces ${pieces}`);
      assert.equal(nativeDigest(64, data, pieces), reference64, `64, pieces ${pieces}`);
    }
  },
});

Deno.test("xxh3: the dispatching (AVX2) update the hasher uses gives the portable update's digest", () => {
  const symbols = loadXxhash();
  const dispatch = symbols.XXH3_128bits_update_dispatch;
  if (dispatch === null) {
    console.warn("this libxxhash has no dispatcher: the hasher uses the portable update");
    return;
  }
  const data = randomBytes(2 * MiB + 777);
  const random = Array.from({ length: 30 }, () => Math.floor(Math.random() * 70000));
  for (const pieces of [...AWKWARD_PIECES, random]) {
    const digests: string[] = [symbols.XXH3_128bits_update, dispatch].map((update) => {
      const state = symbols.XXH3_createState()!;
      try {
        symbols.XXH3_128bits_reset(state);
        feedInPieces(data, pieces, (bytes) => {
          assert.equal(update(state, bytes, BigInt(bytes.length)), 0);
        });
        return toHex(symbols.XXH3_128bits_digest(state).reverse());
      } finally {
        symbols.XXH3_freeState(state);
      }
    });
    assert.equal(digests[1], digests[0], `pieces ${pieces}`);
    assert.equal(nativeDigest(128, data, pieces), digests[0], `hasher, pieces ${pieces}`);
  }
});

Deno.test("xxh3: digest() leaves the state going, reset() starts over, close() frees it", () => {
  const data = randomBytes(5000);
  const hasher = new Xxh3Hasher(128);
  hasher.update(data.subarray(0, 1000));
  const early = toHex(hasher.digest());
  assert.equal(early, nativeDigest(128, data.subarray(0, 1000)));
  hasher.update(data.subarray(1000));
  assert.equal(toHex(hasher.digest()), nativeDigest(128, data));
  hasher.reset();
  hasher.update(data.subarray(0, 1000));
  assert.equal(toHex(hasher.digest()), early);
  hasher.close();
  hasher.close(); // idempotent
  assert.throws(() => hasher.update(data), /after close/);
  assert.throws(() => hasher.digest(), /after close/);
  using narrow = new Xxh3Hasher(64);
  using wide = new Xxh3Hasher(128);
  assert.equal(narrow.length, 8);
  assert.equal(wide.length, 16);
});

Deno.test("xxh3: a view of mapped shared memory is hashed where it lies", () => {
  const name = `p2m-xxhash-${crypto.randomUUID().slice(0, 8)}`;
  const size = 4 * MiB;
  using writer = SharedMemory.create(name)!;
  try {
    writer.truncate(size);
    const written = new Uint8Array(writer.map(size));
    written.set(randomBytes(size));
    using reader = SharedMemory.open(name)!;
    const mapped = new Uint8Array(reader.map(size));
    // A slot in the middle, at an odd offset, like a ring slot view.
    const slot = mapped.subarray(MiB + 1, 3 * MiB + 2);
    const before = nativeDigest(128, slot);
    assert.equal(before, nativeDigest(128, slot.slice()), "same as hashing a private copy");
    // Change one byte through the other mapping: the reader's view sees it
    // with no copy or re-read, so its digest changes.
    written[2 * MiB] ^= 0x40;
    const after = nativeDigest(128, slot);
    assert.notEqual(after, before);
    assert.equal(after, nativeDigest(128, written.slice(MiB + 1, 3 * MiB + 2)));
  } finally {
    SharedMemory.unlink(name);
  }
});
