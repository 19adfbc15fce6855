/**
 * Helpers for the shared-memory tests: start real senders and receivers,
 * and watch a receiver's bytes arrive to hit a transfer at a chosen moment.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { listDir, type P2mProcess, shmEntries, spawnP2m } from "./helpers.ts";

/** Starts `sharedmem.ts sender FILE --name NAME ...`. */
export function sender(file: string, name: string, args: string[] = []): P2mProcess {
  return spawnP2m("sharedmem.ts", ["sender", file, "--name", name, "--wait", "20", ...args]);
}

/** Starts `sharedmem.ts receiver --name NAME --out DIR/ ...`. */
export function receiver(name: string, out: string, args: string[] = []): P2mProcess {
  return spawnP2m("sharedmem.ts", [
    "receiver",
    "--name",
    name,
    "--out",
    `${out}/`,
    "--timeout",
    "20",
    ...args,
  ]);
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
