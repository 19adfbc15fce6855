/**
 * core/source.ts on real files: a change is seen whichever way it is made,
 * including an in-place rewrite whose mtime is set back, and no open of a
 * FIFO or a directory ever blocks.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Source } from "../core/source.ts";
import { P2mError } from "../core/errors.ts";
import { digestFile } from "../core/digest.ts";
import { delay } from "../core/delay.ts";

async function withFile(fn: (path: string, dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f.bin`;
    Deno.writeFileSync(path, crypto.getRandomValues(new Uint8Array(65536)));
    await fn(path, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Rewrites 3 bytes in place, the same size, then sets atime and mtime back exactly. */
function rewriteKeepingMtime(path: string): void {
  const before = Deno.statSync(path);
  const file = Deno.openSync(path, { write: true });
  file.seekSync(100, Deno.SeekMode.Start);
  file.writeSync(new Uint8Array([1, 2, 3]));
  file.close();
  Deno.utimeSync(path, before.atime!, before.mtime!);
}

Deno.test("source: an in-place rewrite with mtime set back is seen (lease)", () =>
  withFile(async (path, dir) => {
    using source = Source.open(path);
    assert.equal(source.guard, "lease");
    assert.equal(source.changed(), undefined);
    // Another process, as in real life: this one holds the lease, so its own
    // open for writing would wait out the lease-break time.
    const script = `cp -p '${path}' '${dir}/ref' && ` +
      `printf abc | dd of='${path}' bs=1 seek=100 conv=notrunc status=none && ` +
      `touch -r '${dir}/ref' '${path}'`;
    const writer = new Deno.Command("sh", { args: ["-c", script] }).spawn();
    let seen: string | undefined;
    for (let i = 0; i < 250 && !seen; i++) {
      await delay(20);
      seen = source.changed();
    }
    assert.match(seen ?? "", /opened it for writing/);
    assert.equal((await writer.status).code, 0);
    assert.equal(
      Deno.statSync(path).mtime?.getTime(),
      Deno.statSync(`${dir}/ref`).mtime?.getTime(),
    );
    assert.ok(source.changed(), "once changed, always changed");
  }));

Deno.test("source: the same rewrite is seen without a lease, through ctime", () =>
  withFile((path) => {
    using source = Source.open(path, { lease: false });
    assert.equal(source.guard, "identity");
    assert.ok(source.weakGuardWarning);
    rewriteKeepingMtime(path);
    assert.ok(source.changed(), "ctime moved, so the change is seen");
  }));

Deno.test("source: a file already open for writing gets no lease, and a warning", () =>
  withFile((path) => {
    const writer = Deno.openSync(path, { write: true });
    try {
      using source = Source.open(path);
      assert.equal(source.guard, "identity");
      assert.match(source.weakGuardWarning ?? "", /open for writing/);
    } finally {
      writer.close();
    }
  }));

Deno.test("source: a writer breaking the lease is let through within one check", () =>
  withFile(async (path) => {
    using source = Source.open(path);
    const writer = new Deno.Command("sh", { args: ["-c", `printf x >> '${path}'`] }).spawn();
    let seen: string | undefined;
    for (let i = 0; i < 100 && !seen; i++) {
      await delay(20);
      seen = source.changed();
    }
    assert.ok(seen, "the break was seen");
    const status = await writer.status; // released: the writer's open goes on
    assert.equal(status.code, 0);
    assert.equal(Deno.statSync(path).size, 65537);
  }));

Deno.test("source: truncate and replace are seen", () =>
  withFile((path, dir) => {
    using a = Source.open(path, { lease: false });
    Deno.truncateSync(path, 10);
    assert.match(a.changed() ?? "", /size changed/);
    using b = Source.open(path, { lease: false });
    Deno.writeFileSync(`${dir}/g`, new Uint8Array(10));
    Deno.renameSync(`${dir}/g`, path);
    using c = Source.open(path, { lease: false });
    assert.match(b.differsFrom(c.info) ?? "", /replaced/);
  }));

Deno.test("source: a FIFO with no writer, a directory and a missing file fail at once", () =>
  withFile(async (_path, dir) => {
    const fifo = `${dir}/fifo`;
    assert.equal((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
    const started = performance.now();
    assert.throws(
      () => Source.open(fifo),
      (e) => e instanceof P2mError && /not a regular/.test(e.message),
    );
    assert.ok(performance.now() - started < 1000, "open did not block");
    assert.throws(() => Source.open(dir), /it is a directory/);
    assert.throws(() => Source.open(`${dir}/none`), /no such file or directory/);
  }));

Deno.test("source: the server's digest is the same with a lease or without, and a broken lease is seen", () =>
  withFile(async (path) => {
    Deno.writeFileSync(path, crypto.getRandomValues(new Uint8Array(65536)).subarray(0, 60001));
    using leased = Source.open(path);
    using plain = Source.open(path, { lease: false });
    assert.equal(await digestFile(leased, "xxh3-128"), await digestFile(plain, "xxh3-128"));
    const writer = new Deno.Command("sh", { args: ["-c", `printf x >> '${path}'`] }).spawn();
    for (let i = 0; i < 200 && !leased.changed(); i++) await delay(10);
    assert.match(leased.changed() ?? "", /opened it for writing or truncated it/);
    assert.equal((await writer.status).code, 0);
    await assert.rejects(() => digestFile(leased, "xxh3-128"), /changed while it was hashed/);
  }));
