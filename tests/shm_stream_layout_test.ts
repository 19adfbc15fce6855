/**
 * The version-2 segment fields, in process: a stream header (size unknown)
 * and a tree header read back with their flags, and the strict validator
 * refuses unknown flags, a stream that announces a size, and a slot-length
 * table that is misplaced or overlaps the ring.
 */
import assert from "node:assert/strict";
import { WireError } from "../core/mod.ts";
import {
  geometry,
  HeaderField,
  PayloadFlag,
  readHeader,
  SEGMENT_VERSION,
  writeHeader,
} from "../shm/layout.ts";

function segment(flags: number, fileSize: number, slots = 4): ArrayBuffer {
  const geo = geometry(4096, slots);
  const buffer = new ArrayBuffer(geo.segmentSize);
  writeHeader(buffer, {
    ...geo,
    fileSize,
    flags,
    mode: 0o644,
    name: "stdin",
    digestCode: 1,
    digestLength: 8,
    peers: 1,
    pid: 1,
  });
  return buffer;
}

Deno.test("shm layout v3: stream and tree headers read back", () => {
  assert.equal(SEGMENT_VERSION, 3);
  const stream = segment(PayloadFlag.SizeUnknown, 0);
  const info = readHeader(stream, stream.byteLength)!;
  assert.equal(info.sizeKnown, false);
  assert.equal(info.tree, false);
  assert.ok(info.lengthsOffset + 4 * info.slotCount <= info.slotsOffset);
  const tree = segment(PayloadFlag.Tree, 10_000);
  const treeInfo = readHeader(tree, tree.byteLength)!;
  assert.equal(treeInfo.sizeKnown, true);
  assert.equal(treeInfo.tree, true);
  assert.equal(treeInfo.totalChunks, 3);
});

Deno.test("shm layout v2: the validator refuses bad flags, sizes and length tables", () => {
  const cases: [string, (i32: Int32Array, f64: Float64Array) => void, RegExp, number][] = [
    ["unknown flag", (i32) => void (i32[HeaderField.flags] = 8), /unknown flags 8/, 0],
    [
      "a stream with a size",
      (i32, f64) => {
        f64[11] = 4096;
        i32[HeaderField.totalChunks] = 1;
      },
      /stream of unknown size announces a size/,
      PayloadFlag.SizeUnknown,
    ],
    [
      "length table inside the receiver table",
      (i32) => void (i32[HeaderField.lengthsOffset] = 4096),
      /bad slot-length table offset/,
      0,
    ],
    [
      "length table overlapping the ring",
      (i32) => void (i32[HeaderField.lengthsOffset] += 64),
      /bad slot-length table offset/,
      0,
    ],
  ];
  for (const [label, mutate, expected, flags] of cases) {
    // 32 slots: the length table is 128 bytes, two cache lines, so moving it
    // by one line overlaps the ring.
    const buffer = segment(flags, 0, 32);
    mutate(new Int32Array(buffer, 0, 1024), new Float64Array(buffer, 0, 512));
    assert.throws(
      () => readHeader(buffer, buffer.byteLength),
      (e) => e instanceof WireError && expected.test(e.message),
      label,
    );
  }
});
