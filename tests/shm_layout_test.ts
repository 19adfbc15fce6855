/**
 * The segment header validator against hostile input, in process: a valid
 * header round-trips; any mutation of its fields, and random bytes, either
 * give a header whose every offset lies inside the segment, or a WireError.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { WireError } from "../core/mod.ts";
import {
  chunksFor,
  ENTRY_SIZE,
  geometry,
  HEADER_AREA,
  HeaderField,
  NAME_AREA,
  NAME_OFFSET,
  readHeader,
  SEGMENT_MAGIC,
  writeHeader,
} from "../shm/layout.ts";

const RUNS = 3_000;

function validSegment(slots = 2, chunk = 4096, fileSize = 5000): ArrayBuffer {
  const geo = geometry(chunk, slots);
  const buffer = new ArrayBuffer(geo.segmentSize);
  writeHeader(buffer, {
    ...geo,
    fileSize,
    mode: 0o640,
    name: "data.bin",
    digestCode: 1,
    digestLength: 8,
    peers: 3,
    pid: 1234,
  });
  return buffer;
}

/** Returns the header, or undefined for a WireError; anything else fails the test. */
function readOrReject(buffer: ArrayBuffer, size: number) {
  try {
    return readHeader(buffer, size);
  } catch (error) {
    if (error instanceof WireError) return undefined;
    throw error;
  }
}

function assertInside(info: NonNullable<ReturnType<typeof readHeader>>, size: number): void {
  assert.ok(info.tableOffset >= HEADER_AREA);
  assert.ok(info.tableOffset + info.tableEntries * ENTRY_SIZE <= info.slotsOffset);
  assert.equal(info.slotsOffset + info.slotCount * info.chunkSize, size);
  assert.ok(info.slotCount > 0 && info.chunkSize > 0);
  assert.equal(info.totalChunks, chunksFor(info.fileSize, info.chunkSize));
  assert.ok(new TextEncoder().encode(info.name).length <= NAME_AREA * 3);
}

Deno.test("shm layout: a written header reads back", () => {
  const buffer = validSegment();
  const info = readHeader(buffer, buffer.byteLength)!;
  assert.equal(info.name, "data.bin");
  assert.equal(info.fileSize, 5000);
  assert.equal(info.totalChunks, 2);
  assert.equal(info.mode, 0o640);
  assert.equal(info.digest, "xxh64");
  assert.equal(info.peers, 3);
  assertInside(info, buffer.byteLength);
});

Deno.test("shm layout: a header not yet written (magic 0) is 'not ready', not an error", () => {
  const buffer = new ArrayBuffer(geometry(4096, 2).segmentSize);
  assert.equal(readHeader(buffer, buffer.byteLength), undefined);
  assert.equal(readHeader(new ArrayBuffer(1), 0), undefined);
});

Deno.test("shm layout: any mutated header field is validated or rejected with WireError", () => {
  const fields = Object.values(HeaderField);
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.constantFrom(...fields, 20, 21, 22, 23), // i32 fields and the two f64 sizes
          fc.oneof(
            fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
            fc.constantFrom(0, 1, -1, 4096, 4095, 2 ** 30, 2 ** 31 - 1, -(2 ** 31)),
          ),
        ),
        { minLength: 1, maxLength: 4 },
      ),
      fc.integer({ min: 0, max: 3 }),
      (mutations, shrink) => {
        const buffer = validSegment(3, 4096, 9000);
        const i32 = new Int32Array(buffer, 0, HEADER_AREA / 4);
        for (const [field, value] of mutations) i32[field] = value;
        // Sometimes the segment is also shorter than the header thinks.
        const size = buffer.byteLength - shrink * 4096;
        const info = readOrReject(buffer, size);
        if (info) assertInside(info, size);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("shm layout: random header bytes never pass unchecked", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 512 }),
      fc.boolean(),
      (bytes, withMagic) => {
        const buffer = validSegment();
        const view = new Uint8Array(buffer);
        view.set(bytes.subarray(0, NAME_OFFSET + 64));
        if (withMagic) new Int32Array(buffer)[HeaderField.magic] = SEGMENT_MAGIC | 0;
        const info = readOrReject(buffer, buffer.byteLength);
        if (info) assertInside(info, buffer.byteLength);
      },
    ),
    { numRuns: RUNS },
  );
});
