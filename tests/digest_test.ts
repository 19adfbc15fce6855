/**
 * The direct xxh64 loader (core/digest.ts), which skips Deno's npm loader
 * for start-up speed, must agree with hash-wasm's own package.
 */
import assert from "node:assert/strict";
import { createXXHash64 } from "hash-wasm";
import { createDigest, toHex } from "../core/mod.ts";

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
