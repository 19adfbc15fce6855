/**
 * Helpers for the shared-memory tests: start real senders and receivers,
 * a slow transfer to hit at a chosen moment, and the checks that nothing is
 * left in /dev/shm and that a name can be used again.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { SharedMemory } from "../ffi/mod.ts";
import { geometry, writeHeader } from "../shm/layout.ts";
import { parseEvent } from "../tools/runner.ts";
import {
  listDir,
  makeFile,
  type P2mProcess,
  shmEntries,
  spawnP2m,
  spawnReceiving,
  uniqueName,
  waitFor,
  withTempDir,
} from "./helpers.ts";

/** The file size of a slow transfer. */
export const SLOW_SIZE = 4 * 1024 * 1024;
/** A small, rate-limited ring: about two seconds for SLOW_SIZE, so that a fault lands mid-transfer. */
export const SLOW_RING = [
  "--chunk",
  "65536",
  "--slots",
  "4",
  "--limit-rate",
  String(SLOW_SIZE / 2),
];

/** Starts `sharedmem.ts sender FILE --name NAME ...`. */
export function sender(file: string, name: string, args: string[] = []): P2mProcess {
  return spawnP2m("sharedmem.ts", ["sender", file, "--name", name, "--wait", "20", ...args]);
}

/** Starts `sharedmem.ts receiver --name NAME --out DIR/ ...`. */
export function receiver(name: string, out: string, args: string[] = []): P2mProcess {
  return spawnReceiving("sharedmem.ts", ["receiver", "--name", name], out, args);
}

/** Bytes in the unfinished (`.part`) outputs of a directory. */
export function partBytes(dir: string): number {
  let total = 0;
  for (const name of listDir(dir)) {
    if (!name.endsWith(".part")) continue;
    try {
      total += Deno.statSync(`${dir}/${name}`).size;
    } catch { /* renamed meanwhile */ }
  }
  return total;
}

/** Waits until a receiver's unfinished output in `dir` holds at least `bytes`. */
export async function waitForPart(dir: string, bytes: number, ms = 15_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (partBytes(dir) < bytes) {
    if (performance.now() > deadline) throw new Error(`no ${bytes} bytes in ${dir} after ${ms} ms`);
    await delay(10);
  }
}

/** Asserts a directory holds no file at all (no final copy, no temp file). */
export function assertEmptyDir(dir: string, what: string): void {
  assert.deepEqual(listDir(dir), [], `${what}: ${dir} should be empty`);
}

/** Asserts nothing with `name` is left in /dev/shm. */
export async function assertNoSegment(name: string): Promise<void> {
  assert.deepEqual(await shmEntries(name), [], `/dev/shm still holds ${name}`);
}

/** Waits until the segment `name` exists. */
export async function waitForSegment(name: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while ((await shmEntries(name)).length === 0) {
    if (performance.now() > deadline) throw new Error(`segment ${name} never appeared`);
    await delay(20);
  }
}

/** Asserts two files hold the same bytes, using cmp(1) (fast on 64 MiB files). */
export async function assertSameBytes(actual: string, expected: string): Promise<void> {
  const out = await new Deno.Command("cmp", { args: ["--", actual, expected], stdout: "piped" })
    .output();
  assert.ok(
    out.success,
    `${actual} differs from ${expected}: ${new TextDecoder().decode(out.stdout)}`,
  );
}

/** Waits up to `ms` for /dev/shm to hold nothing named `name`. */
export async function waitForNoSegment(name: string, ms: number, what: string): Promise<void> {
  await waitFor(async () => (await shmEntries(name)).length === 0, ms, what);
}

/** A slow transfer under way: its segment name, source file, sender and receivers. */
export interface SlowTransfer {
  name: string;
  /** `DIR/data.bin`, SLOW_SIZE bytes. */
  file: string;
  /** One output directory per receiver: `DIR/a`, `DIR/b`, ... */
  outs: string[];
  send: P2mProcess;
  receivers: P2mProcess[];
}

/**
 * Starts a SLOW_RING transfer of `DIR/data.bin` (made if it is not there
 * yet) to `peers` quiet receivers under a fresh name starting `prefix`.
 */
export async function startSlowTransfer(
  dir: string,
  options: { peers?: number; senderArgs?: string[]; prefix?: string } = {},
): Promise<SlowTransfer> {
  const { peers = 2, senderArgs = [], prefix = "p2m-t" } = options;
  const name = uniqueName(prefix);
  const file = `${dir}/data.bin`;
  const exists = await Deno.stat(file).then(() => true, () => false);
  if (!exists) await makeFile(file, SLOW_SIZE);
  const send = sender(file, name, ["--peers", String(peers), ...SLOW_RING, ...senderArgs]);
  const outs = Array.from({ length: peers }, (_, i) => `${dir}/${String.fromCharCode(97 + i)}`);
  const receivers = outs.map((out) => receiver(name, out, ["--quiet"]));
  return { name, file, outs, send, receivers };
}

/**
 * The next sender under `name` serves a receiver into `out`: its copy is
 * `file`'s bytes, both exit 0 and the segment is gone afterwards.
 */
export async function assertNameReusable(
  file: string,
  name: string,
  out: string,
  senderArgs: string[] = ["--quiet"],
): Promise<void> {
  const next = sender(file, name, senderArgs);
  const got = await receiver(name, out, ["--quiet"]).done();
  assert.equal(got.code, 0, got.stderr);
  const sent = await next.done();
  assert.equal(sent.code, 0, sent.stderr);
  await assertSameBytes(`${out}/data.bin`, file);
  await assertNoSegment(name);
}

/** A temp dir and a fresh segment name, for one shm test. */
export interface ShmPlace {
  dir: string;
  name: string;
}

/**
 * Runs `body` in a fresh temp dir (named `dirPrefix`...) with a fresh segment
 * name (`namePrefix`-...); then asserts that /dev/shm holds nothing of that
 * name. The dir is removed whatever happens.
 */
export async function withShm(
  dirPrefix: string,
  namePrefix: string,
  body: (place: ShmPlace) => Promise<void>,
): Promise<void> {
  await withTempDir(dirPrefix, async (dir) => {
    const name = uniqueName(namePrefix);
    await body({ dir, name });
    await assertNoSegment(name);
  });
}

/**
 * Asserts that every one of `results` is an exit 1 saying `reason`, and that
 * none of `outs` holds anything (no copy, no temp file).
 */
export function assertAllFailed(
  results: { code: number; stderr: string }[],
  outs: string[],
  reason: RegExp,
  what: string,
): void {
  for (const result of results) {
    assert.equal(result.code, 1);
    assert.match(result.stderr, reason);
  }
  for (const out of outs) assertEmptyDir(out, what);
}

/** {@link assertAllFailed} for `receivers`, once they have ended. */
export async function assertReceiversFailed(
  receivers: P2mProcess[],
  outs: string[],
  reason: RegExp,
  what: string,
): Promise<void> {
  assertAllFailed(await Promise.all(receivers.map((r) => r.done())), outs, reason, what);
}

/** The first `event` in a `--json` stdout, if there is one. */
export function eventIn<T>(stdout: string, event: string): T | undefined {
  return stdout.split("\n").map(parseEvent).find((e) => e?.event === event) as T | undefined;
}

/** A sender's `summary` event: the verdict per receiver. */
export interface SenderSummary {
  ok: boolean;
  bytes: number;
  peers: { verified: boolean; status: string; bytes: number }[];
}

/** The sender's `summary` event in its `--json` stdout (asserted to be there). */
export function summaryOf(stdout: string): SenderSummary {
  const summary = eventIn<SenderSummary>(stdout, "summary");
  assert.ok(summary, "the sender emits a summary event");
  return summary;
}

/**
 * Leaves a segment nobody holds the sender lock of, in one of three shapes:
 * empty, sized but without a header, or with a full header (a sender that
 * died after writing it). With `gid`, it is first shared with that group
 * (as a `--group` sender's is).
 */
export function leaveStale(
  name: string,
  shape: "empty" | "no-magic" | "full",
  options: { gid?: number } = {},
): void {
  const memory = SharedMemory.create(name)!;
  try {
    if (options.gid !== undefined) memory.shareWithGroup(options.gid);
    const geo = geometry(4096, 2);
    if (shape !== "empty") memory.truncate(geo.segmentSize);
    if (shape === "full") {
      writeHeader(memory.map(geo.segmentSize), {
        ...geo,
        fileSize: 5000,
        mode: 0o644,
        name: "old.bin",
        digestCode: 1,
        digestLength: 8,
        peers: 1,
        pid: 1,
      });
    }
  } finally {
    memory.close(); // its "sender" is gone: no liveness lock
  }
}
