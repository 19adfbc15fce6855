/**
 * The process runner of demo and bench, and the child-process and
 * JSON-lines helpers that the tests use too: one copy of each.
 *
 * - {@linkcode RunningProcess}: a child with its stdout read as JSON events
 *   and its stderr kept, that can be stopped (SIGTERM to the program, not
 *   to a `time` wrapper) or killed with its whole tree.
 * - {@linkcode eachLine} / {@linkcode parseEvent}: a child's stdout as
 *   lines (through `lines()` of core/lines.ts) and as p2m `--json` events.
 * - {@linkcode stopEverything} / {@linkcode onInterrupt}: nothing the
 *   harness started outlives an interrupted demo or bench.
 *
 * @module
 */
import { exitForSignal, onSignal } from "../core/cli.ts";
import { delay } from "../core/delay.ts";
import { lines } from "../core/lines.ts";

/** One JSON event printed by a p2m process (`--json`). */
export type P2mEvent = Record<string, unknown> & { event: string };

/** Parses one stdout line as a p2m event; anything else gives undefined. */
export function parseEvent(line: string): P2mEvent | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value = JSON.parse(line);
    return typeof value === "object" && value !== null && typeof value.event === "string"
      ? value
      : undefined;
  } catch {
    return undefined;
  }
}

/** Calls `onLine` for each line of `stream`, in order, until it ends. */
export async function eachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  for await (const line of lines(stream)) onLine(line);
}

/** Reads `stream` to its end as UTF-8 text, keeping at most `limit` characters. */
export async function readText(
  stream: ReadableStream<Uint8Array>,
  limit = Infinity,
): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    if (text.length < limit) text += decoder.decode(chunk, { stream: true });
  }
  text += decoder.decode();
  return text.slice(0, limit);
}

/**
 * Starts `argv` with stdout and stderr piped and no stdin (unless
 * `stdin: "piped"`), in a plain environment (`NO_COLOR=1` plus `env`): how
 * tools and tests start every child.
 */
export function spawnPiped(
  argv: string[],
  options: { cwd?: string; env?: Record<string, string>; stdin?: "piped" | "null" } = {},
): Deno.ChildProcess {
  return new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
    stdin: options.stdin ?? "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Sends `name` to `pid`; a process that is already gone is not an error. */
export function signalPid(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch { /* already gone */ }
}

/** The pids of the direct children of `pid`. */
export function childPids(pid: number): number[] {
  const out = new Deno.Command("ps", {
    args: ["-o", "pid=", "--ppid", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").map(Number).filter((n) => n > 0);
}

/** Whether `path` is a file with an execute bit. */
export function isExecutable(path: string): boolean {
  try {
    return ((Deno.statSync(path).mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

const TIME = "/usr/bin/time";
/** Whether GNU time is there to measure a process's peak RSS and CPU time. */
export const hasTime = isExecutable(TIME);
const STDERR_LIMIT = 16 * 1024;

/** How a process ended. */
export interface Exit {
  /** The label it was started with. */
  label: string;
  /** Exit code (-1 when killed by a signal). */
  code: number;
  /** `performance.now()` when its exit was seen. */
  at: number;
  /** The last error event, else the last stderr line, else the exit status. */
  reason: string;
  /** Peak RSS in KiB, when measured. */
  rssKiB?: number;
  /** User + system CPU seconds of the process and the children it waited for, when measured. */
  cpuSeconds?: number;
}

const running = new Set<RunningProcess>();

/** A child process with its stdout parsed as JSON events and its stderr kept. */
export class RunningProcess {
  /** A label for messages, e.g. `peer 2`. */
  readonly label: string;
  /** Resolves once the process has exited and its output is read. */
  readonly exited: Promise<Exit>;
  #child: Deno.ChildProcess;
  #wrapped: boolean;

  /**
   * Starts `command`; with `measureFile`, under GNU time writing the peak
   * RSS and the CPU time there. `onEvent` sees each `--json` event as it
   * arrives.
   */
  constructor(
    label: string,
    command: string[],
    options: { measureFile?: string; onEvent?: (event: P2mEvent) => void } = {},
  ) {
    this.label = label;
    const file = options.measureFile;
    this.#wrapped = file !== undefined;
    const argv = file ? [TIME, "-f", "%M %U %S", "-o", file, ...command] : command;
    const child = spawnPiped(argv);
    const errorEvents: string[] = [];
    this.#child = child;
    const stdout = eachLine(child.stdout, (line) => {
      const event = parseEvent(line);
      if (!event) return;
      if (event.event === "error" && typeof event.message === "string") {
        errorEvents.push(event.message);
      }
      options.onEvent?.(event);
    });
    const stderr = readText(child.stderr, STDERR_LIMIT);
    running.add(this);
    this.exited = (async () => {
      const status = await child.status;
      const at = performance.now();
      running.delete(this);
      const [text] = await Promise.all([stderr, stdout]);
      const code = status.signal ? -1 : status.code;
      const lastLine = text.trim().split("\n").pop()?.replace(/^p2m: /, "");
      const reason = errorEvents.at(-1) ?? (lastLine ||
        (status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`));
      const measured = file ? await readMeasure(file) : {};
      if (file) await Deno.remove(file).catch(() => {});
      return { label, code, at, reason, ...measured };
    })();
  }

  /** Sends SIGTERM to the program (not to the `time` wrapper, which must report). */
  stop(): void {
    const pids = this.#wrapped ? childPids(this.#child.pid) : [this.#child.pid];
    for (const pid of pids) signalPid(pid, "SIGTERM");
  }

  /** SIGKILLs the process and every descendant (e.g. a socket server's workers). */
  killAll(): void {
    const tree = (pid: number): number[] => [pid, ...childPids(pid).flatMap(tree)];
    for (const pid of tree(this.#child.pid)) signalPid(pid, "SIGKILL");
  }
}

/**
 * Stops every process the harness started, for an interrupted demo or bench:
 * SIGTERM first, so that p2m programs unlink what they created, then SIGKILL
 * whatever is still running after `graceSeconds`.
 */
export async function stopEverything(graceSeconds = 3): Promise<void> {
  const procs = [...running];
  for (const proc of procs) proc.stop();
  const all = Promise.all(procs.map((proc) => proc.exited));
  const late = delay(graceSeconds * 1000).then(() => "late" as const);
  if (await Promise.race([all, late]) === "late") { for (const proc of running) proc.killAll(); }
  await all;
}

/**
 * On SIGINT or SIGTERM: stops every process the harness started, runs
 * `cleanup` (unmount, remove temp dirs), then exits with 130 or 143.
 */
export function onInterrupt(cleanup: () => Promise<void>): void {
  let stopping = false;
  onSignal((signal) => {
    if (stopping) return;
    stopping = true;
    stopEverything().then(cleanup).catch(() => {})
      .finally(() => exitForSignal(signal as "SIGINT" | "SIGTERM"));
  });
}

async function readMeasure(path: string): Promise<{ rssKiB?: number; cpuSeconds?: number }> {
  const text = await Deno.readTextFile(path).catch(() => "");
  // GNU time writes "Command exited with non-zero status N" before the figures.
  const [kib, user, system] = (text.trim().split("\n").pop() ?? "").split(" ").map(Number);
  return {
    rssKiB: Number.isFinite(kib) && kib > 0 ? kib : undefined,
    cpuSeconds: Number.isFinite(user) && Number.isFinite(system) ? user + system : undefined,
  };
}

/**
 * CPU seconds (user + system) that `command` takes, run alone under GNU
 * time; undefined without GNU time or if it failed.
 */
export async function cpuOf(command: string[], measureFile: string): Promise<number | undefined> {
  if (!hasTime) return undefined;
  const exit = await new RunningProcess("probe", command, { measureFile }).exited;
  return exit.code === 0 ? exit.cpuSeconds : undefined;
}
