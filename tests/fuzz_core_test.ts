/**
 * Property-based fuzzing of the decoders that read untrusted bytes.
 *
 * Whatever a hostile peer sends, a decoder either returns a value that
 * passes validation or throws WireError: never another exception, never
 * an absurd size.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeChunkLength,
  decodeHeader,
  decodeTrailer,
  DIGEST_ALGORITHMS,
  encodeChunkLength,
  encodeHeader,
  encodeTrailer,
  HEADER_FIXED_LENGTH,
  headerLength,
  KEEPALIVE_CHUNK,
  MAX_NAME_BYTES,
  MAX_WIRE_CHUNK,
  MAX_WIRE_NAME_BYTES,
  sanitizeName,
  TrailerStatus,
  WireError,
} from "../core/mod.ts";

const RUNS = 5_000;

/** Runs `decode` and accepts only success or a WireError. */
function decodesOrRejects<T>(decode: () => T): T | undefined {
  try {
    return decode();
  } catch (error) {
    if (error instanceof WireError) return undefined;
    throw error;
  }
}

const header = fc.record({
  size: fc.maxSafeNat(),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  name: fc.string({ unit: "binary", maxLength: 300 }),
  digest: fc.constantFrom(...DIGEST_ALGORITHMS),
});

Deno.test("fuzz: valid headers round-trip", () => {
  fc.assert(
    fc.property(header, (h) => {
      const decoded = decodeHeader(encodeHeader(h));
      assert.equal(decoded.size, h.size);
      assert.equal(decoded.mode, h.mode);
      assert.equal(decoded.digest, h.digest);
      // Lone surrogates cannot survive UTF-8; everything else must.
      assert.equal(decoded.name, new TextDecoder().decode(new TextEncoder().encode(h.name)));
    }),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: random bytes never crash the header decoder", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      const decoded = decodesOrRejects(() => decodeHeader(bytes));
      if (decoded) {
        assert.ok(Number.isSafeInteger(decoded.size) && decoded.size >= 0);
        assert.ok(decoded.mode <= 0o7777);
      }
    }),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: mutated valid headers are decoded or rejected cleanly", () => {
  fc.assert(
    fc.property(
      header,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
      fc.integer({ min: -8, max: 8 }),
      (h, flips, cut) => {
        const bytes = encodeHeader(h);
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        const sliced = bytes.subarray(0, Math.max(0, bytes.length + Math.min(cut, 0)));
        const length = decodesOrRejects(() => headerLength(sliced));
        if (length !== undefined) {
          assert.ok(length >= HEADER_FIXED_LENGTH);
          assert.ok(length <= HEADER_FIXED_LENGTH + MAX_WIRE_NAME_BYTES);
        }
        decodesOrRejects(() => decodeHeader(sliced));
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: trailers round-trip and garbage is rejected", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...DIGEST_ALGORITHMS),
      fc.uint8Array({ maxLength: 48 }),
      fc.constantFrom(TrailerStatus.Complete, TrailerStatus.SourceChanged),
      fc.maxSafeNat(),
      (algorithm, noise, status, size) => {
        const length = { none: 0, xxh64: 8, sha256: 32, "xxh3-128": 16 }[algorithm];
        const digest = new Uint8Array(length).map((_, i) => noise[i] ?? i);
        const trailer = { status, size, digest };
        assert.deepEqual(decodeTrailer(encodeTrailer(trailer), algorithm), trailer);
        decodesOrRejects(() => decodeTrailer(noise, algorithm));
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: sanitizeName always yields one safe, bounded component", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 2_000 }), (untrusted) => {
      const name = sanitizeName(untrusted);
      assert.ok(name.length > 0);
      assert.ok(!name.includes("/") && !name.includes("\\"));
      assert.ok(name !== "." && name !== ".." && !name.startsWith("."));
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(name));
      assert.ok(new TextEncoder().encode(name).length <= MAX_NAME_BYTES);
    }),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: stream and tree headers round-trip; a size with 'unknown' is refused", () => {
  fc.assert(
    fc.property(header, fc.boolean(), fc.boolean(), (h, unknown, tree) => {
      const flagged = {
        ...h,
        size: unknown ? 0 : h.size,
        ...(unknown ? { sizeUnknown: true as const } : {}),
        ...(tree ? { tree: true as const } : {}),
      };
      const decoded = decodeHeader(encodeHeader(flagged));
      assert.equal(decoded.sizeUnknown, flagged.sizeUnknown);
      assert.equal(decoded.tree, flagged.tree);
      assert.equal(decoded.size, flagged.size);
      if (unknown && h.size > 0) {
        const bytes = encodeHeader(flagged);
        new DataView(bytes.buffer).setBigUint64(8, BigInt(h.size), true);
        assert.throws(() => decodeHeader(bytes), WireError);
      }
    }),
    { numRuns: RUNS },
  );
});

Deno.test("fuzz: chunk lengths round-trip and out-of-range ones are refused", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: MAX_WIRE_CHUNK }), fc.uint8Array(), (length, noise) => {
      assert.equal(decodeChunkLength(encodeChunkLength(length)), length);
      const decoded = decodesOrRejects(() => decodeChunkLength(noise));
      if (decoded !== undefined) {
        assert.ok(decoded <= MAX_WIRE_CHUNK || decoded === KEEPALIVE_CHUNK);
      }
    }),
    { numRuns: RUNS },
  );
});

Deno.test("a version 1 header is refused with both versions named", () => {
  const bytes = encodeHeader({ size: 1, mode: 0o644, name: "f", digest: "xxh64" });
  new DataView(bytes.buffer).setUint16(4, 1, true);
  assert.throws(() => headerLength(bytes), /wire version 1 \(this build speaks 2\)/);
});
