/**
 * Speed-related behaviour that must stay correct: the direct xxh64 loader
 * and OutputFile.preallocate. Nothing here is timed.
 */
import assert from "node:assert/strict";
import { createXXHash64 } from "hash-wasm";
import { createDigest, OutputFile, toHex } from "../core/mod.ts";
import { tempDir } from "./helpers.ts";

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

Deno.test("a preallocated output is full size while written and exact when committed", async () => {
  const dir = await tempDir();
  try {
    await preallocatedCopy(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function preallocatedCopy(dir: string): Promise<void> {
  const output = OutputFile.create({ out: `${dir}/`, name: "copy.bin", mode: 0o640 });
  assert(output.preallocate(1 << 20, (path, size) => Deno.truncateSync(path, size)));
  assert.deepStrictEqual(Deno.statSync(output.tempPath).size, 1 << 20);
  const bytes = crypto.getRandomValues(new Uint8Array(60_000));
  output.write(bytes);
  output.commit();
  assert.deepStrictEqual(await Deno.readFile(output.path), bytes);
  assert.deepStrictEqual(Deno.statSync(output.path).mode! & 0o777, 0o640);
  assert.deepStrictEqual([...Deno.readDirSync(dir)].length, 1);
}

Deno.test("a preallocation that fails leaves an empty file and the copy still works", async () => {
  const dir = await tempDir();
  try {
    await failedPreallocation(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function failedPreallocation(dir: string): Promise<void> {
  using output = OutputFile.create({ out: `${dir}/`, name: "copy.bin", mode: 0o600 });
  const refused = output.preallocate(1 << 20, (path, size) => {
    Deno.truncateSync(path, size);
    throw new Error("no space");
  });
  assert.deepStrictEqual(refused, false);
  assert.deepStrictEqual(Deno.statSync(output.tempPath).size, 0);
  output.write(new Uint8Array([1, 2, 3]));
  output.commit();
  assert.deepStrictEqual(await Deno.readFile(output.path), new Uint8Array([1, 2, 3]));
}
