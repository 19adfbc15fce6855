/**
 * Runs one copy of a file to N peers as real processes, times it and checks
 * every copy: the engine shared by `deno task demo` and `deno task bench`.
 *
 * A run starts the sender (or a baseline tool) and N receivers at once, times
 * from the sender's start to the last receiver's exit, and only then reads
 * every output back and compares its size and xxh64 digest with the source.
 * Each peer writes into its own directory `peer-<i>/`, so its copy is the one
 * visible file there whatever name the transport gives it.
 *
 * What each method runs is in tools/plans.ts; how a process is started,
 * read and stopped is in tools/runner.ts.
 *
 * @module
 */
import { createDigest, digestsEqual } from "../core/digest.ts";
import { type PlanOptions, planRun } from "./plans.ts";
import { type Exit, hasTime, RunningProcess } from "./runner.ts";

/** What one run copies, how, and where. */
export interface RunOptions extends Omit<PlanOptions, "events"> {
  /** An empty directory for this run's copies; the run fills `peer-<i>/`. */
  outDir: string;
  /** Measure every process's CPU time and the peak RSS of the sender and first receiver. */
  measure?: boolean;
  /** Called with the bytes all receivers hold so far (transports only). */
  onProgress?: (bytes: number) => void;
}

/** How one run went: its time, its copies, and what failed. */
export interface RunResult {
  /** Seconds from the sender's start to the last receiver's exit. */
  seconds: number;
  /** How many receivers exited 0 and hold a byte-identical copy. */
  verified: number;
  /** Whether every process succeeded and every copy is right. */
  ok: boolean;
  /** One-line reasons for whatever failed, each prefixed by its process. */
  errors: string[];
  /** Peak RSS of the sender (its whole process tree) in KiB, if measured. */
  senderRssKiB?: number;
  /** Peak RSS of the first receiver in KiB, if measured. */
  receiverRssKiB?: number;
  /** CPU seconds of the sender with its children (a socket server's workers), if measured. */
  senderCpuSeconds?: number;
  /** Mean CPU seconds of one receiver, if measured. */
  receiverCpuSeconds?: number;
}

/** What a file should look like: its size and xxh64 digest. */
export interface Expected {
  /** Size in bytes. */
  size: number;
  /** Raw xxh64 digest. */
  digest: Uint8Array;
}

/**
 * Copies `file` to `peers` receivers, waits for every process, then checks
 * every copy against `expected` (after the clock has stopped).
 */
export async function runCopy(options: RunOptions, expected: Expected): Promise<RunResult> {
  const peerDirs = Array.from({ length: options.peers }, (_, i) => `${options.outDir}/peer-${i}`);
  for (const dir of peerDirs) await Deno.mkdir(dir, { recursive: true });
  const plan = planRun({ ...options, events: options.onProgress !== undefined }, peerDirs);
  const measured = options.measure && hasTime;
  const measureFile = (who: string) =>
    measured ? `${options.workDir}/${options.tag}.${who}.time` : undefined;

  const progress = new Array<number>(options.peers).fill(0);
  const report = options.onProgress;
  const onEvent = (i: number) => (event: { event: string; bytes?: unknown }) => {
    if ((event.event !== "progress" && event.event !== "done") || typeof event.bytes !== "number") {
      return;
    }
    progress[i] = event.bytes;
    report?.(progress.reduce((a, b) => a + b, 0));
  };

  const start = performance.now();
  const sender = plan.sender &&
    new RunningProcess("sender", plan.sender, { measureFile: measureFile("sender") });
  const receivers = plan.receivers.map((command, i) =>
    new RunningProcess(`peer ${i}`, command, {
      measureFile: measureFile(`peer-${i}`),
      onEvent: report && onEvent(i),
    })
  );
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    for (const proc of [sender, ...receivers]) proc?.killAll();
  }, options.timeoutSeconds * 1000);

  let exits: Exit[];
  let senderExit: Exit | undefined;
  try {
    exits = await Promise.all(receivers.map((r) => r.exited));
    if (plan.serves) sender?.stop();
    senderExit = await sender?.exited;
  } finally {
    clearTimeout(timer);
    const leftovers = [`${options.workDir}/${options.tag}.sock`, ...plan.leaves ?? []];
    for (const path of leftovers) await Deno.remove(path).catch(() => {});
  }
  // With no separate receivers (tee), the sender's exit is the last one.
  const last = exits.length > 0 ? Math.max(...exits.map((e) => e.at)) : senderExit?.at ?? start;
  const peerCodes = exits.length > 0
    ? exits.map((e) => e.code)
    : new Array<number>(options.peers).fill(senderExit?.code ?? -1);

  const failed = [plan.serves ? undefined : senderExit, ...exits]
    .filter((e): e is Exit => e !== undefined && e.code !== 0);
  const errors = failed.map((e) => `${e.label}: ${e.reason}`);
  if (timedOut) errors.unshift(`timed out after ${options.timeoutSeconds} s; every process killed`);
  const verdicts = await checkCopies(peerDirs, expected);
  let verified = 0;
  verdicts.forEach((verdict, i) => {
    if (verdict !== undefined) errors.push(`peer ${i}: ${verdict}`);
    else if (peerCodes[i] === 0) verified++;
  });
  return {
    seconds: (last - start) / 1000,
    verified,
    ok: errors.length === 0 && verified === options.peers,
    errors,
    senderRssKiB: senderExit?.rssKiB,
    receiverRssKiB: exits[0]?.rssKiB ?? senderExit?.rssKiB,
    senderCpuSeconds: senderExit?.cpuSeconds,
    receiverCpuSeconds: mean(exits.map((e) => e.cpuSeconds)),
  };
}

/**
 * Checks each peer's copy against the source; returns one verdict per peer
 * directory: undefined when the copy is right, else the reason.
 */
export async function checkCopies(
  peerDirs: string[],
  expected: Expected,
): Promise<(string | undefined)[]> {
  const verdicts: (string | undefined)[] = [];
  for (const dir of peerDirs) {
    const files = [];
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith(".")) files.push(entry.name);
    }
    if (files.length !== 1) {
      verdicts.push(files.length === 0 ? "no copy" : `${files.length} files, expected one`);
      continue;
    }
    const path = `${dir}/${files[0]}`;
    const { size } = await Deno.stat(path);
    if (size !== expected.size) {
      verdicts.push(`${path}: ${size} bytes, expected ${expected.size}`);
    } else if (!digestsEqual(await fileDigest(path), expected.digest)) {
      verdicts.push(`${path}: digest differs from the source`);
    } else {
      verdicts.push(undefined);
    }
  }
  return verdicts;
}

/** xxh64 of a file, read in 4 MiB blocks. */
export async function fileDigest(path: string): Promise<Uint8Array> {
  const digest = await createDigest("xxh64");
  using file = Deno.openSync(path, { read: true });
  const buffer = new Uint8Array(4 << 20);
  for (;;) {
    const n = file.readSync(buffer);
    if (n === null) break;
    digest.update(buffer.subarray(0, n));
  }
  return digest.digest();
}

/** Writes `size` bytes of random data to a new file at `path`; returns its size and digest. */
export async function writeRandomFile(path: string, size: number): Promise<Expected> {
  const digest = await createDigest("xxh64");
  using file = Deno.openSync(path, { write: true, createNew: true, mode: 0o644 });
  const block = new Uint8Array(Math.min(size, 4 << 20));
  for (let done = 0; done < size;) {
    const part = block.subarray(0, Math.min(block.length, size - done));
    // getRandomValues fills at most 64 KiB per call.
    for (let o = 0; o < part.length; o += 65536) {
      crypto.getRandomValues(part.subarray(o, o + 65536));
    }
    for (let o = 0; o < part.length;) o += file.writeSync(part.subarray(o));
    digest.update(part);
    done += part.length;
  }
  return { size, digest: digest.digest() };
}

/** Describes a file system for the report, e.g. `tmpfs`, via `stat -f`. */
export async function fileSystemType(path: string): Promise<string> {
  const out = await new Deno.Command("stat", { args: ["-f", "-c", "%T", path], stdout: "piped" })
    .output().catch(() => undefined);
  return out?.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
}

function mean(values: (number | undefined)[]): number | undefined {
  const known = values.filter((v): v is number => v !== undefined);
  return known.length === 0 ? undefined : known.reduce((a, b) => a + b, 0) / known.length;
}
