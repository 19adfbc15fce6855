/**
 * Test helpers: real processes, real files, real sockets and shared memory.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { delay } from "../core/delay.ts";
import { p2mArgv } from "../core/permissions.ts";
import { spawnPiped } from "../tools/runner.ts";

/** How a child process ended, with its output as text (stdout also as bytes). */
export interface Finished {
  /** Exit code. */
  code: number;
  /** The signal that ended it, if one did. */
  signal: Deno.Signal | null;
  /** Standard output as text. */
  stdout: string;
  /** Standard output as bytes (for `--out -`). */
  stdoutBytes: Uint8Array;
  /** Standard error as text. */
  stderr: string;
}

/** Starts collecting `child`'s output now; the function returned waits for its end. */
export function whenDone(child: Deno.ChildProcess): () => Promise<Finished> {
  const output = child.output();
  return async () => {
    const result = await output;
    const text = new TextDecoder();
    return {
      code: result.code,
      signal: result.signal,
      stdout: text.decode(result.stdout),
      stdoutBytes: result.stdout,
      stderr: text.decode(result.stderr),
    };
  };
}

/** A running p2m process started by a test. */
export interface P2mProcess {
  /** The child process. */
  child: Deno.ChildProcess;
  /** Waits for exit and returns code plus captured stdout/stderr text. */
  done(): Promise<Finished>;
}

/** Starts `socket.ts` or `sharedmem.ts` with its real permissions. */
export function spawnP2m(
  program: "socket.ts" | "sharedmem.ts",
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): P2mProcess {
  const child = spawnPiped(p2mArgv(program, args), options);
  return { child, done: whenDone(child) };
}

/**
 * Starts a receiving side (`sharedmem.ts receiver --name N`, `socket.ts
 * client --socket S`) that writes into `out/` and gives up after 20 s.
 */
export function spawnReceiving(
  program: "socket.ts" | "sharedmem.ts",
  role: string[],
  out: string,
  args: string[],
): P2mProcess {
  return spawnP2m(program, [...role, "--out", `${out}/`, "--timeout", "20", ...args]);
}

/** Creates a temp directory for one test; remove it with the returned function. */
export async function tempDir(prefix = "p2m-test-"): Promise<string> {
  return await Deno.makeTempDir({ prefix });
}

/** Runs `body` in a fresh temp directory, removed afterwards whatever `body` does; returns what it returns. */
export async function withTempDir<T>(
  prefix: string,
  body: (dir: string) => T | Promise<T>,
): Promise<Awaited<T>> {
  const dir = await tempDir(prefix);
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `size` bytes of seeded pseudo-random data to `path` and returns them. */
export async function makeFile(path: string, size: number, seed = 1): Promise<Uint8Array> {
  const data = new Uint8Array(size);
  // xorshift32: fast, deterministic, and not a run of one byte value.
  let x = seed >>> 0 || 1;
  const words = new Uint32Array(data.buffer, 0, Math.floor(size / 4));
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < size; i++) data[i] = (i * 31 + seed) & 0xff;
  await Deno.writeFile(path, data);
  return data;
}

/** Asserts that two files hold the same bytes. */
export async function assertSameFile(actual: string, expected: string): Promise<void> {
  const [a, b] = await Promise.all([Deno.readFile(actual), Deno.readFile(expected)]);
  assert.equal(a.length, b.length, `${actual}: size ${a.length}, expected ${b.length}`);
  assert.ok(Buffer.compare(a, b) === 0, `${actual} differs from ${expected}`);
}

/** Names of the entries in a directory (empty if it does not exist). */
export function listDir(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/**
 * Entries in /dev/shm whose name contains `needle`. Deno's file APIs refuse
 * /dev/shm without -A, so this asks `ls`.
 */
export async function shmEntries(needle = "p2m"): Promise<string[]> {
  const out = await new Deno.Command("ls", { args: ["-1", "/dev/shm"], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((n) => n.includes(needle));
}

/** Waits until `predicate` holds, polling every 20 ms, or fails after `ms`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await predicate())) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await delay(20);
  }
}

/** A unique short name for sockets and segments in one test. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Deno.pid}-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
}

/**
 * Mounts a private tmpfs of `size` (e.g. "1m") on a new temp dir, for
 * disk-full tests. Returns undefined when mounting is not permitted.
 */
export async function smallTmpfs(size: string): Promise<
  { dir: string; [Symbol.asyncDispose](): Promise<void> } | undefined
> {
  const dir = await Deno.makeTempDir({ prefix: "p2m-full-" });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir],
    stderr: "null",
  }).output();
  if (!mount.success) {
    await Deno.remove(dir);
    return undefined;
  }
  return {
    dir,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Runs `deno task <task>` in the project root as a user would, bounded to 90 s. */
export async function runTask(
  task: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", task, ...args],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(90_000),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** The bytes of `parts`, one after the other, in one new array. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Size of the largest hidden temp file (`.part`) in a directory (0 if none). */
export function largestPart(dir: string): number {
  let size = 0;
  for (const name of listDir(dir)) {
    if (!name.endsWith(".part")) continue;
    try {
      size = Math.max(size, Deno.statSync(`${dir}/${name}`).size);
    } catch { /* just committed or removed */ }
  }
  return size;
}

/** `argv` as one sh command line, each word single-quoted. */
export function shellQuote(argv: string[]): string {
  return argv.map((word) => `'${word.replaceAll("'", `'\\''`)}'`).join(" ");
}
