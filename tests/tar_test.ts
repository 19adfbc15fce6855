/**
 * core/tar.ts against GNU tar: our stream extracts identically with
 * `tar -x`, our decoder reads `tar -c --format=pax` output at random
 * splits, and malformed streams are refused with a reason.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  archiveLength,
  encodeHeader,
  TAR_BLOCK,
  TarDecoder,
  TarEncoder,
  type TarEntry,
  TarError,
  type TarEvent,
} from "../core/tar.ts";
import { tarEntryOf, walkTree } from "../core/tree.ts";
import { concatBytes, makeFile, withTempDir } from "./helpers.ts";

const LONG_DIR = `${"d".repeat(60)}/${"e".repeat(70)}`;
const LONG_NAME = `${"n".repeat(120)}.txt`;

/** A tree with every kind a tar stream carries, built in `dir/src`. */
async function sampleTree(dir: string): Promise<string> {
  const src = `${dir}/src`;
  await Deno.mkdir(`${src}/sub/deeper`, { recursive: true });
  await Deno.mkdir(`${src}/empty`);
  await Deno.mkdir(`${src}/${LONG_DIR}`, { recursive: true });
  await Deno.writeTextFile(`${src}/top.txt`, "top\n");
  await Deno.chmod(`${src}/top.txt`, 0o644);
  await makeFile(`${src}/sub/deeper/secret.bin`, 4097, 7);
  await Deno.chmod(`${src}/sub/deeper/secret.bin`, 0o600);
  await Deno.writeTextFile(`${src}/sub/run.sh`, "#!/bin/sh\necho hi\n");
  await Deno.chmod(`${src}/sub/run.sh`, 0o755);
  await Deno.symlink("deeper/secret.bin", `${src}/sub/link`);
  await Deno.writeTextFile(`${src}/ünïcödé-日本語.txt`, "unicode\n");
  await Deno.mkdir(`${src}/répertoire-ß`);
  await Deno.writeTextFile(`${src}/répertoire-ß/🙂.txt`, "emoji\n");
  await makeFile(`${src}/big.bin`, 1024 * 1024 + 1, 3);
  await Deno.writeTextFile(`${src}/${LONG_DIR}/${LONG_NAME}`, "long path\n");
  await Deno.writeFile(`${src}/zero.bin`, new Uint8Array(0));
  return src;
}

/** Encodes the tree at `src` under `prefix` with slots of `slotSize`, as a sender would. */
function encodeTree(src: string, prefix: string, slotSize: number): Uint8Array {
  const tree = walkTree(src);
  const entries = [
    { path: prefix, kind: "directory" as const, mode: tree.rootMode, size: 0 },
    ...tree.entries.map((entry) => tarEntryOf(entry, prefix)),
  ];
  const encoder = new TarEncoder();
  const slot = new Uint8Array(slotSize);
  const chunks: Uint8Array[] = [];
  const flush = (used: number) => {
    if (used > 0) chunks.push(slot.slice(0, used));
  };
  let used = 0;
  const pump = (file?: Deno.FsFile) => {
    while (encoder.pending > 0 || encoder.dataRemaining > 0) {
      if (used === slot.length) {
        flush(used);
        used = 0;
      }
      used += encoder.drain(slot.subarray(used));
      if (encoder.pending === 0 && encoder.dataRemaining > 0 && used < slot.length) {
        const want = Math.min(encoder.dataRemaining, slot.length - used);
        const count = file!.readSync(slot.subarray(used, used + want)) ?? 0;
        assert.ok(count > 0, "file shrank while encoding");
        encoder.dataWritten(count);
        used += count;
      }
    }
  };
  for (let i = 0; i < entries.length; i++) {
    encoder.begin(entries[i]);
    if (entries[i].kind === "file") {
      using file = Deno.openSync(`${src}/${tree.entries[i - 1].path}`);
      pump(file);
    } else {
      pump();
    }
  }
  encoder.end();
  pump();
  flush(used);
  const out = concatBytes(chunks);
  assert.equal(out.length, archiveLength(entries));
  assert.equal(encoder.bytesWritten, out.length);
  return out;
}

/** xorshift32, so a failing split can be reproduced from its seed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

interface Decoded {
  entry: TarEntry;
  data: Uint8Array;
}

/** Decodes `stream` pushed in random pieces (many of 1–3 bytes, some large). */
function decodeAtRandomSplits(stream: Uint8Array, seed: number): Decoded[] {
  const next = random(seed);
  const decoder = new TarDecoder();
  const out: Decoded[] = [];
  let parts: Uint8Array[] = [];
  const take = (events: TarEvent[]) => {
    for (const event of events) {
      if (event.type === "entry") {
        out.push({ entry: event.entry, data: new Uint8Array(0) });
        parts = [];
      } else if (event.type === "data") {
        parts.push(event.bytes.slice());
      } else if (event.type === "entryEnd") {
        out[out.length - 1].data = concatBytes(parts);
      }
    }
  };
  for (let at = 0; at < stream.length;) {
    const roll = next();
    const size = roll < 0.3 ? 1 + Math.floor(next() * 3) : 1 + Math.floor(next() * 70_000);
    take(decoder.push(stream.subarray(at, at + size)));
    at += size;
  }
  decoder.finish();
  assert.ok(decoder.ended);
  return out;
}

/** Checks decoded entries against the tree on disk at `src`, entries named under `prefix`. */
async function assertMatchesTree(decoded: Decoded[], src: string, prefix: string): Promise<void> {
  const tree = walkTree(src);
  const byPath = new Map(decoded.map((item) => [item.entry.path, item]));
  const strip = (path: string) => path.replace(/^\.\//, "").replace(/\/$/, "");
  assert.ok(byPath.has(strip(prefix)) || byPath.has(`./${prefix}`) || prefix === ".");
  for (const expected of tree.entries) {
    const path = prefix === "." ? `./${expected.path}` : `${prefix}/${expected.path}`;
    const got = byPath.get(path);
    assert.ok(got, `missing ${path}; have ${[...byPath.keys()].join(", ")}`);
    assert.equal(got.entry.kind, expected.kind, path);
    if (expected.kind === "file") {
      assert.equal(got.entry.mode & 0o777, expected.mode, path);
      assert.equal(got.entry.size, expected.size, path);
      assert.deepEqual(got.data, await Deno.readFile(`${src}/${expected.path}`), path);
    } else if (expected.kind === "directory") {
      assert.equal(got.entry.mode & 0o777, expected.mode, path);
      assert.equal(got.data.length, 0);
    } else {
      assert.equal(got.entry.linkTarget, expected.target, path);
    }
  }
  assert.equal(decoded.length, tree.entries.length + 1, "one entry per tree entry plus the root");
}

Deno.test("GNU tar -x extracts our stream identically (diff -r, modes, link)", async () => {
  await withTempDir("p2m-tar-", async (dir) => {
    const src = await sampleTree(dir);
    const stream = encodeTree(src, "tree", 64 * 1024 + 3);
    // Our stream is what GNU tar would accept as a POSIX archive.
    await Deno.writeFile(`${dir}/ours.tar`, stream);
    await Deno.mkdir(`${dir}/out`);
    const tar = await new Deno.Command("tar", {
      args: ["-x", "-p", "-f", `${dir}/ours.tar`, "-C", `${dir}/out`],
    }).output();
    assert.equal(tar.code, 0, new TextDecoder().decode(tar.stderr));
    assert.equal(new TextDecoder().decode(tar.stderr), "", "GNU tar had warnings");
    const diff = await new Deno.Command("diff", {
      args: ["-r", "--no-dereference", src, `${dir}/out/tree`],
    }).output();
    assert.equal(diff.code, 0, new TextDecoder().decode(diff.stdout));
    for (const entry of walkTree(src).entries) {
      const copy = await Deno.lstat(`${dir}/out/tree/${entry.path}`);
      if (entry.kind === "symlink") {
        assert.ok(copy.isSymlink);
        assert.equal(await Deno.readLink(`${dir}/out/tree/${entry.path}`), entry.target);
      } else {
        assert.equal((copy.mode ?? 0) & 0o777, entry.mode, entry.path);
      }
    }
    // GNU tar lists the long and unicode paths exactly.
    const list = await new Deno.Command("tar", { args: ["-t", "-f", `${dir}/ours.tar`] }).output();
    const names = new TextDecoder().decode(list.stdout).split("\n");
    assert.ok(names.includes(`tree/${LONG_DIR}/${LONG_NAME}`));
    assert.ok(names.includes("tree/ünïcödé-日本語.txt"));
    assert.ok(names.includes("tree/empty/"));
  });
});

Deno.test("decoder reads GNU tar --format=pax output at random splits", async () => {
  await withTempDir("p2m-tar-", async (dir) => {
    const src = await sampleTree(dir);
    await Deno.rename(src, `${dir}/tree`);
    const tar = await new Deno.Command("tar", {
      args: ["-c", "--format=pax", "-f", `${dir}/gnu.tar`, "-C", dir, "tree"],
    }).output();
    assert.equal(tar.code, 0, new TextDecoder().decode(tar.stderr));
    const stream = await Deno.readFile(`${dir}/gnu.tar`);
    for (const seed of [1, 2, 3]) {
      const decoded = decodeAtRandomSplits(stream, seed);
      await assertMatchesTree(decoded, `${dir}/tree`, "tree");
    }
  });
});

Deno.test("decoder reads our encoder's output at random splits, tiny slots too", async () => {
  await withTempDir("p2m-tar-", async (dir) => {
    const src = await sampleTree(dir);
    const big = encodeTree(src, "tree", 1024 * 1024);
    const tiny = encodeTree(src, "tree", 7);
    assert.deepEqual(tiny, big, "slot size must not change the stream");
    for (const seed of [4, 5]) {
      await assertMatchesTree(decodeAtRandomSplits(big, seed), src, "tree");
    }
  });
});

Deno.test("pax records carry long paths, long targets, unicode, large sizes and fractional mtime", () => {
  const longPath = `${"x/".repeat(150)}leaf`;
  const cases: TarEntry[] = [
    { path: longPath, kind: "file", mode: 0o640, size: 0, mtime: 1_700_000_000.5 },
    { path: "link", kind: "symlink", mode: 0o777, size: 0, linkTarget: "t/".repeat(80) + "z" },
    { path: "日本", kind: "directory", mode: 0o755, size: 0, mtime: 12 },
    { path: "huge", kind: "file", mode: 0o600, size: 2 ** 40 + 5, mtime: 0 },
  ];
  for (const entry of cases) {
    const header = encodeHeader(entry);
    assert.ok(header.length > TAR_BLOCK, `${entry.path.slice(0, 10)} needs a pax header`);
    const events = new TarDecoder().push(header);
    assert.equal(events[0].type, "entry");
    const got = (events[0] as { entry: TarEntry }).entry;
    assert.equal(got.path, entry.path);
    assert.equal(got.kind, entry.kind);
    assert.equal(got.mode, entry.mode);
    assert.equal(got.size, entry.size);
    assert.equal(got.linkTarget, entry.linkTarget);
    assert.equal(got.mtime, entry.mtime ?? 0);
  }
  // The root directory is written as "./", never as the absolute "/".
  const root = new TarDecoder().push(
    encodeHeader({ path: "", kind: "directory", mode: 0o755, size: 0 }),
  );
  assert.equal((root[0] as { entry: TarEntry }).entry.path, ".");
  // A short ASCII path needs no pax header at all.
  assert.equal(encodeHeader({ path: "a/b", kind: "file", mode: 0o644, size: 1 }).length, TAR_BLOCK);
});

Deno.test("encoder refuses misuse instead of writing a broken stream", () => {
  const encoder = new TarEncoder();
  encoder.begin({ path: "f", kind: "file", mode: 0o644, size: 10 });
  const out = new Uint8Array(TAR_BLOCK);
  assert.equal(encoder.drain(out), TAR_BLOCK);
  assert.throws(() => encoder.dataWritten(11), TarError);
  assert.throws(() => encoder.begin({ path: "g", kind: "file", mode: 0o644, size: 0 }), TarError);
  assert.throws(() => encoder.end(), TarError);
  assert.equal(encoder.data(out, new Uint8Array(10).fill(65)), 10);
  assert.equal(encoder.pending, TAR_BLOCK - 10, "padding follows the data");
  assert.throws(
    () => new TarEncoder().begin({ path: "", kind: "file", mode: 0, size: 0 }),
    RangeError,
  );
  assert.throws(
    () => new TarEncoder().begin({ path: "a\0b", kind: "file", mode: 0, size: 0 }),
    RangeError,
  );
});

/** A valid one-file archive to corrupt. */
function smallArchive(): Uint8Array {
  const encoder = new TarEncoder();
  const out = new Uint8Array(4 * TAR_BLOCK);
  let used = 0;
  encoder.begin({ path: "hello.txt", kind: "file", mode: 0o644, size: 5 });
  used += encoder.drain(out.subarray(used));
  used += encoder.data(out.subarray(used), new TextEncoder().encode("hello"));
  used += encoder.drain(out.subarray(used));
  encoder.end();
  used += encoder.drain(out.subarray(used));
  assert.equal(used, out.length);
  return out;
}

/** Recomputes the checksum of the header at `at` after a deliberate edit. */
function fixChecksum(stream: Uint8Array, at = 0): void {
  const block = stream.subarray(at, at + TAR_BLOCK);
  block.fill(0x20, 148, 156);
  const sum = block.reduce((total, byte) => total + byte, 0);
  block.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

function decodeAll(stream: Uint8Array): TarEvent[] {
  const decoder = new TarDecoder({ maxPaxBytes: 4096 });
  const events = decoder.push(stream);
  decoder.finish();
  return events;
}

Deno.test("decoder refuses malformed and unsupported streams, naming the problem", () => {
  const good = smallArchive();
  assert.deepEqual(decodeAll(good).map((event) => event.type), [
    "entry",
    "data",
    "entryEnd",
    "end",
  ]);
  const put = (stream: Uint8Array, at: number, text: string) =>
    stream.set(new TextEncoder().encode(text), at);
  const cases: [string, (stream: Uint8Array) => Uint8Array, RegExp][] = [
    ["checksum", (s) => (s[0] ^= 1, s), /checksum mismatch/],
    ["size not octal", (s) => (put(s, 124, "0000000009x"), fixChecksum(s), s), /size field/],
    ["mode not octal", (s) => (put(s, 100, "07a4"), fixChecksum(s), s), /mode field/],
    ["mode beyond 07777", (s) => (put(s, 100, "0017777"), fixChecksum(s), s), /beyond 07777/],
    ["base-256 size", (s) => (s[124] = 0x80, fixChecksum(s), s), /base-256/],
    ["magic", (s) => (put(s, 257, "ustaR"), fixChecksum(s), s), /magic/],
    ["GNU magic", (s) => (put(s, 257, "ustar  \0"), fixChecksum(s), s), /magic/],
    ["hard link", (s) => (s[156] = 0x31, fixChecksum(s), s), /hard link/],
    ["FIFO", (s) => (s[156] = 0x36, fixChecksum(s), s), /FIFO/],
    ["device", (s) => (s[156] = 0x33, fixChecksum(s), s), /character device/],
    ["GNU long name", (s) => (s[156] = 0x4c, fixChecksum(s), s), /GNU long name/],
    ["directory with data", (s) => (s[156] = 0x35, fixChecksum(s), s), /has data/],
    ["name not UTF-8", (s) => (s[0] = 0xff, fixChecksum(s), s), /not valid UTF-8/],
    ["truncated", (s) => s.subarray(0, 700), /truncated/],
    ["truncated in header", (s) => s.subarray(0, 100), /truncated/],
    ["one zero block", (s) => s.subarray(0, 3 * TAR_BLOCK), /one zero block/],
    ["no end marker", (s) => s.subarray(0, 2 * TAR_BLOCK), /truncated/],
    ["data after end", (s) => concatBytes([s, new Uint8Array([0, 0, 7])]), /after the end/],
    ["lone zero block", (s) => concatBytes([new Uint8Array(TAR_BLOCK), s]), /lone zero block/],
  ];
  for (const [name, corrupt, message] of cases) {
    const stream = corrupt(good.slice());
    assert.throws(() => decodeAll(stream), (error: unknown) => {
      assert.ok(error instanceof TarError, `${name}: ${error}`);
      assert.match(error.message, message, name);
      return true;
    }, name);
  }
  // A decoder that refused a stream keeps refusing it: no resync into garbage.
  const poisoned = new TarDecoder();
  const broken = good.slice();
  broken[0] ^= 1;
  assert.throws(() => poisoned.push(broken.subarray(0, 600)), /checksum/);
  assert.throws(() => poisoned.push(good.subarray(600)), /checksum/);
  assert.throws(() => poisoned.finish(), /checksum/);
  // Zero padding after the end marker (tar's record size) is fine.
  assert.equal(decodeAll(concatBytes([good, new Uint8Array(9000)])).at(-1)?.type, "end");
});

Deno.test("decoder refuses bad pax records", () => {
  const pax = (body: string | Uint8Array, declared?: number) => {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const header = encodeHeader({ path: `${"p".repeat(200)}`, kind: "file", mode: 0o644, size: 0 });
    const stream = concatBytes([header.slice(0, TAR_BLOCK), new Uint8Array(2 * TAR_BLOCK)]);
    stream.fill(0, TAR_BLOCK, 2 * TAR_BLOCK);
    stream.set(bytes, TAR_BLOCK);
    const size = (declared ?? bytes.length).toString(8).padStart(11, "0") + "\0";
    stream.set(new TextEncoder().encode(size), 124);
    fixChecksum(stream);
    const entry = encodeHeader({ path: "f", kind: "file", mode: 0o644, size: 0 });
    return concatBytes([stream.subarray(0, 2 * TAR_BLOCK), entry, new Uint8Array(2 * TAR_BLOCK)]);
  };
  assert.equal((decodeAll(pax("9 path=x\n"))[0] as { entry: TarEntry }).entry.path, "x");
  const cases: [string, Uint8Array, RegExp][] = [
    ["length too long", pax("99 path=x\n"), /runs past/],
    ["length not a number", pax("x path=x\n"), /not a decimal/],
    ["no newline", pax("9 path=xy"), /newline/],
    ["no key", pax("5 =x\n"), /no key/],
    ["leading zero", pax("09 path=x\n"), /leading zero/],
    [
      "bad UTF-8",
      pax(new Uint8Array([0x39, 0x20, 0x70, 0x61, 0x74, 0x68, 0x3d, 0xff, 0x0a])),
      /UTF-8/,
    ],
    ["size not a number", pax("12 size=-12\n"), /not a number/],
    ["binary names", pax("21 hdrcharset=BINARY\n"), /hdrcharset/],
    ["too large", pax("9 path=x\n", 5000), /exceeds 4096/],
  ];
  for (const [name, stream, message] of cases) {
    assert.throws(() => decodeAll(stream), (error: unknown) => {
      assert.ok(error instanceof TarError, `${name}: ${error}`);
      assert.match(error.message, message, name);
      return true;
    }, name);
  }
});

Deno.test("decoder fuzz: random corruption only ever raises a TarError", () => {
  const encoder = new TarEncoder();
  const parts: Uint8Array[] = [];
  const entries: [TarEntry, string][] = [
    [{ path: "d", kind: "directory", mode: 0o755, size: 0 }, ""],
    [{ path: `d/${"é".repeat(80)}`, kind: "file", mode: 0o644, size: 700, mtime: 1.5 }, "x"],
    [{ path: "d/l", kind: "symlink", mode: 0o777, size: 0, linkTarget: "ü/".repeat(60) }, ""],
    [{ path: "d/s", kind: "file", mode: 0o600, size: 3 }, "y"],
  ];
  for (const [entry, fill] of entries) {
    encoder.begin(entry);
    const out = new Uint8Array(encoder.pending + entry.size + TAR_BLOCK);
    let used = encoder.drain(out);
    if (entry.size > 0) {
      used += encoder.data(out.subarray(used), new TextEncoder().encode(fill.repeat(entry.size)));
      used += encoder.drain(out.subarray(used));
    }
    parts.push(out.subarray(0, used));
  }
  encoder.end();
  const end = new Uint8Array(encoder.pending);
  encoder.drain(end);
  const good = concatBytes([...parts, end]);
  assert.equal(decodeAll(good).at(-1)?.type, "end");
  const next = random(42);
  let refused = 0;
  for (let round = 0; round < 3000; round++) {
    const stream = good.slice();
    const flips = 1 + Math.floor(next() * 4);
    for (let i = 0; i < flips; i++) {
      stream[Math.floor(next() * stream.length)] = Math.floor(next() * 256);
    }
    try {
      decodeAll(stream.subarray(0, next() < 0.2 ? Math.floor(next() * stream.length) : undefined));
    } catch (error) {
      assert.ok(error instanceof TarError, `round ${round}: ${error}`);
      refused++;
    }
  }
  assert.ok(refused > 1000, `most corruptions are caught (${refused} of 3000)`);
});
