/**
 * The conventions of a Unix tool, on real processes: `--version` everywhere,
 * a checksum line that `xxhsum -c` and `sha256sum -c` accept, `--expect`
 * against a digest published elsewhere, and peers of another wire version
 * refused with both versions named.
 *
 * @module
 */
import assert from "node:assert/strict";
import { encodeHeader } from "../core/wire.ts";
import { P2M_VERSION } from "../core/version.ts";
import { assertSameFile, listDir, makeFile, spawnP2m, tempDir, uniqueName } from "./helpers.ts";
import { receiver, sender } from "./shm_helpers.ts";
import { FakeServer, socketPlace, startClient, startServer } from "./socket_helpers.ts";

const root = new URL("../", import.meta.url).pathname;

async function has(tool: string): Promise<boolean> {
  try {
    return (await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output())
      .success;
  } catch {
    return false;
  }
}

/** Runs `tool -c` on `line` in `cwd`; the check passes only on exit 0 and "OK". */
async function checkSum(tool: string, line: string, cwd: string): Promise<void> {
  const sums = `${cwd}/copy.sum`;
  await Deno.writeTextFile(sums, line + "\n");
  const out = await new Deno.Command(tool, { args: ["-c", sums], cwd }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${tool} -c: ${text}`);
  assert.match(text, /: OK/);
  await Deno.remove(sums);
}

/** The last line of a receiver's stdout: `<hex>  <path>`. */
function checksumLineOf(stdout: string): string {
  const line = stdout.trim().split("\n").pop() ?? "";
  assert.match(line, /^[0-9a-f]{16,64} {2}\S/, `a checksum line ends the output: ${stdout}`);
  return line;
}

Deno.test("--version: every program names p2m's version, the formats and the digest", async () => {
  const pkg = JSON.parse(await Deno.readTextFile(`${root}package.json`));
  assert.equal(pkg.version, P2M_VERSION, "package.json and core/version.ts agree");
  for (
    const [program, args, format] of [
      ["sharedmem.ts", ["sender", "--version"], /shm segment 3/],
      ["sharedmem.ts", ["receiver", "--version"], /shm segment 3/],
      ["socket.ts", ["server", "--version"], /socket protocol 1/],
      ["socket.ts", ["client", "--version"], /socket protocol 1/],
    ] as const
  ) {
    const result = await spawnP2m(program, [...args]).done();
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      new RegExp(`^p2m \\S+( \\S+)? ${P2M_VERSION.replace(/\./g, "\\.")}`),
    );
    assert.match(result.stdout, /wire 2/);
    assert.match(result.stdout, format);
    assert.match(result.stdout, /digest: xxh3-128 \((native|WebAssembly)/);
  }
});

Deno.test("shm: the printed checksum line passes xxhsum -c and sha256sum -c", async () => {
  const dir = await tempDir();
  try {
    await makeFile(`${dir}/src.bin`, 300_000);
    for (const [digest, tool] of [["xxh3-128", "xxhsum"], ["sha256", "sha256sum"]] as const) {
      if (!await has(tool)) {
        console.warn(
          `WARNING: ${tool} is missing; install it (apt-get install xxhash) to run this check`,
        );
        continue;
      }
      const name = uniqueName("p2m-conv");
      const out = `${dir}/${digest}/`;
      const s = sender(`${dir}/src.bin`, name, ["--digest", digest]);
      const r = receiver(name, out);
      const [rs, ss] = [await r.done(), await s.done()];
      assert.equal(ss.code, 0, ss.stderr);
      assert.equal(rs.code, 0, rs.stderr);
      await checkSum(tool, checksumLineOf(rs.stdout), root);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("socket: the printed checksum line passes xxhsum -c", async () => {
  if (!await has("xxhsum")) {
    console.warn(
      "WARNING: xxhsum is missing; install it (apt-get install xxhash) to run this check",
    );
    return;
  }
  const place = await socketPlace();
  try {
    await makeFile(`${place.dir}/src.bin`, 200_000);
    const server = startServer(`${place.dir}/src.bin`, place.socket, ["--peers", "1"]);
    const client = startClient(place.socket, `${place.dir}/out/`);
    const [cs, ss] = [await client.done(), await server.done()];
    assert.equal(ss.code, 0, ss.stderr);
    assert.equal(cs.code, 0, cs.stderr);
    await checkSum("xxhsum", checksumLineOf(cs.stdout), root);
  } finally {
    await place[Symbol.asyncDispose]();
  }
});

Deno.test("--expect: a wrong digest is refused even though the sender's matched", async () => {
  const dir = await tempDir();
  try {
    await makeFile(`${dir}/src.bin`, 100_000);
    const wrong = "0".repeat(31) + "1";
    // shm
    const name = uniqueName("p2m-expect");
    const s = sender(`${dir}/src.bin`, name);
    const r = receiver(name, `${dir}/shm/`, ["--expect", wrong]);
    const [rs, ss] = [await r.done(), await s.done()];
    assert.equal(rs.code, 1);
    assert.match(rs.stderr, /not --expect: expected 0+1, got [0-9a-f]{32}; copy discarded/);
    assert.equal(ss.code, 1, "the sender counts that receiver failed");
    assert.deepEqual(listDir(`${dir}/shm`), [], "no file, no temp file");
    // the right digest, then the wrong length, then a sender with no digest
    const right = (rs.stderr.match(/got ([0-9a-f]{32})/) ?? [])[1];
    const n2 = uniqueName("p2m-expect");
    const s2 = sender(`${dir}/src.bin`, n2);
    const r2 = receiver(n2, `${dir}/ok/`, ["--expect", right.toUpperCase()]);
    assert.equal((await r2.done()).code, 0);
    assert.equal((await s2.done()).code, 0);
    await assertSameFile(`${dir}/ok/src.bin`, `${dir}/src.bin`);
    const n3 = uniqueName("p2m-expect");
    const s3 = sender(`${dir}/src.bin`, n3, ["--digest", "sha256"]);
    const r3 = receiver(n3, `${dir}/len/`, ["--expect", right]);
    const r3s = await r3.done();
    await s3.done();
    assert.equal(r3s.code, 1);
    assert.match(r3s.stderr, /--expect has 32 hex digits but the sender's digest is sha256/);
    const bad = await spawnP2m("sharedmem.ts", ["receiver", "--expect", "xyz"]).done();
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--expect must be a digest in hex/);
    // socket
    const place = await socketPlace();
    try {
      const server = startServer(`${dir}/src.bin`, place.socket, ["--peers", "1"]);
      const client = startClient(place.socket, `${place.dir}/out/`, ["--expect", wrong]);
      const [cs, ss2] = [await client.done(), await server.done()];
      assert.equal(cs.code, 1);
      assert.match(cs.stderr, /not --expect/);
      assert.equal(ss2.code, 1, "the server reports that peer failed");
      assert.deepEqual(listDir(`${place.dir}/out`), []);
    } finally {
      await place[Symbol.asyncDispose]();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a peer of another wire version is refused with both versions named", async () => {
  const place = await socketPlace();
  try {
    const header = encodeHeader({ size: 4, mode: 0o644, name: "f", digest: "xxh3-128" });
    new DataView(header.buffer, header.byteOffset).setUint16(4, 3, true);
    const fake = new FakeServer(place.socket, async (conn) => {
      await conn.write(header);
    });
    const client = startClient(place.socket, `${place.dir}/out/`);
    const result = await client.done();
    await fake[Symbol.asyncDispose]();
    assert.equal(result.code, 1);
    assert.match(result.stderr, /wire version 3 \(this build speaks 2\)/);
  } finally {
    await place[Symbol.asyncDispose]();
  }
});
