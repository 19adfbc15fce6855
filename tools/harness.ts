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
 * @module
 */
import { exitForSignal, onSignal } from "../core/cli.ts";
import { createDigest, digestsEqual } from "../core/digest.ts";
import { programPath, SHM_PERMISSIONS, SOCKET_PERMISSIONS } from "../core/permissions.ts";

/** The two p2m transports. */
export const TRANSPORTS = ["shm", "socket"] as const;
/** A p2m transport. */
export type Transport = typeof TRANSPORTS[number];
/**
 * The baselines: tools a user would otherwise reach for (cp, tee, socat),
 * and the C programs in `tools/baselines/` that set the bar for each
 * transport: a tuned shared-memory ring and a fork-per-client sendfile server.
 */
export const BASELINES = ["cp", "tee", "socat", "c-ring", "c-sendfile"] as const;
/** A baseline tool. */
export type Baseline = typeof BASELINES[number];

/** What one run copies, how, and where. */
export interface RunOptions {
  /** The transport or baseline tool. */
  method: Transport | Baseline;
  /** For transports: verify the digest (false passes `--no-verify`). */
  verify?: boolean;
  /** The file to copy. */
  file: string;
  /** How many receivers. */
  peers: number;
  /** An empty directory for this run's copies; the run fills `peer-<i>/`. */
  outDir: string;
  /** A private directory for socket files. */
  workDir: string;
  /** Unique per run: names the socket file and the shared-memory segment. */
  tag: string;
  /** Kill everything and fail the run after this many seconds. */
  timeoutSeconds: number;
  /** Measure the peak RSS of the sender and of the first receiver. */
  rss?: boolean;
  /** Called with the bytes all receivers hold so far (transports only). */
  onProgress?: (bytes: number) => void;
  /** The C baselines, compiled by {@linkcode buildCBaselines} (c-ring, c-sendfile only). */
  cBaselines?: CBaselines;
}

/** Paths of the compiled C baseline programs. */
export interface CBaselines {
  /** `shm_ring send|receive …` */
  ring: string;
  /** `sendfile_server serve|fetch …` */
  sendfile: string;
}

/**
 * Compiles the C baselines into `dir` with the system C compiler, or
 * returns undefined (and the bench skips them) when there is none.
 */
export async function buildCBaselines(dir: string): Promise<CBaselines | undefined> {
  const source = (name: string) => new URL(`./baselines/${name}.c`, import.meta.url).pathname;
  const built: CBaselines = { ring: `${dir}/shm_ring`, sendfile: `${dir}/sendfile_server` };
  for (const [name, out] of [["shm_ring", built.ring], ["sendfile_server", built.sendfile]]) {
    const cc = await new Deno.Command("cc", {
      args: ["-O2", "-pthread", "-o", out, source(name)],
      stdout: "null",
      stderr: "null",
    }).output().catch(() => undefined);
    if (!cc?.success) return undefined;
  }
  return built;
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
}

/** What a file should look like: its size and xxh64 digest. */
export interface Expected {
  /** Size in bytes. */
  size: number;
  /** Raw xxh64 digest. */
  digest: Uint8Array;
}

const TIME = "/usr/bin/time";
const hasTime = isExecutable(TIME);
const STDERR_LIMIT = 16 * 1024;

/**
 * Copies `file` to `peers` receivers, waits for every process, then checks
 * every copy against `expected` (after the clock has stopped).
 */
export async function runCopy(options: RunOptions, expected: Expected): Promise<RunResult> {
  const peerDirs = Array.from({ length: options.peers }, (_, i) => `${options.outDir}/peer-${i}`);
  for (const dir of peerDirs) await Deno.mkdir(dir, { recursive: true });
  const plan = planRun(options, peerDirs);
  const rssFiles = options.rss && hasTime
    ? [`${options.workDir}/${options.tag}.sender.rss`, `${options.workDir}/${options.tag}.peer.rss`]
    : [];

  const progress = new Array<number>(options.peers).fill(0);
  const report = options.onProgress;
  const onEvent = (i: number) => (event: Record<string, unknown>) => {
    if ((event.event !== "progress" && event.event !== "done") || typeof event.bytes !== "number") {
      return;
    }
    progress[i] = event.bytes;
    report?.(progress.reduce((a, b) => a + b, 0));
  };

  const start = performance.now();
  const sender = plan.sender && new Proc("sender", plan.sender, { rssFile: rssFiles[0] });
  const receivers = plan.receivers.map((command, i) =>
    new Proc(`peer ${i}`, command, {
      rssFile: i === 0 ? rssFiles[1] : undefined,
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
    await Deno.remove(`${options.workDir}/${options.tag}.sock`).catch(() => {});
    for (const file of rssFiles) await Deno.remove(file).catch(() => {});
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

function requireC(options: RunOptions): CBaselines {
  if (!options.cBaselines) throw new Error(`${options.method} needs the compiled C baselines`);
  return options.cBaselines;
}

/** Whether `socat` is installed (the socat baseline is skipped otherwise). */
export function hasSocat(): boolean {
  return ["/usr/bin/socat", "/usr/local/bin/socat", "/bin/socat"].some(isExecutable);
}

// ---------------------------------------------------------------------------

/** Commands for one run: an optional sender and one command per receiver. */
interface Plan {
  sender?: string[];
  receivers: string[][];
  /** The sender serves forever (socat): stop it once every receiver is done. */
  serves?: boolean;
}

function planRun(options: RunOptions, peerDirs: string[]): Plan {
  const { file, peers } = options;
  const name = file.slice(file.lastIndexOf("/") + 1);
  const socket = `${options.workDir}/${options.tag}.sock`;
  const json = options.onProgress ? "--json" : "--quiet";
  const noVerify = options.verify === false ? ["--no-verify"] : [];
  const deno = (program: "socket.ts" | "sharedmem.ts", args: string[]) => [
    Deno.execPath(),
    "run",
    ...(program === "socket.ts" ? SOCKET_PERMISSIONS : SHM_PERMISSIONS),
    programPath(program),
    ...args,
  ];
  // Generous, as the machine may be busy; the run's own timeout is the bound.
  const wait = String(Math.ceil(options.timeoutSeconds));
  switch (options.method) {
    case "shm": {
      const shmName = `p2m-${options.tag}`;
      return {
        sender: deno("sharedmem.ts", [
          "sender",
          file,
          "--name",
          shmName,
          "--peers",
          String(peers),
          "--wait",
          wait,
          ...noVerify,
          "--quiet",
        ]),
        receivers: peerDirs.map((dir) =>
          deno("sharedmem.ts", [
            "receiver",
            "--name",
            shmName,
            "--out",
            `${dir}/`,
            "--timeout",
            wait,
            json,
          ])
        ),
      };
    }
    case "socket":
      return {
        sender: deno("socket.ts", [
          "server",
          file,
          "--socket",
          socket,
          "--peers",
          String(peers),
          ...noVerify,
          "--quiet",
        ]),
        receivers: peerDirs.map((dir) =>
          deno("socket.ts", [
            "client",
            "--socket",
            socket,
            "--out",
            `${dir}/`,
            "--timeout",
            wait,
            json,
          ])
        ),
      };
    case "cp":
      return { receivers: peerDirs.map((dir) => ["cp", "--", file, `${dir}/${name}`]) };
    case "tee":
      // One tee writes every copy; sh only sets up the redirections, then execs it.
      return {
        sender: [
          "sh",
          "-c",
          'exec tee -- "$@" <"$0" >/dev/null',
          file,
          ...peerDirs.map((dir) => `${dir}/${name}`),
        ],
        receivers: [],
      };
    case "c-ring": {
      const ring = requireC(options).ring;
      const shmName = `/p2m-c-${options.tag}`;
      return {
        sender: [ring, "send", file, shmName, String(peers)],
        receivers: peerDirs.map((dir) => [ring, "receive", shmName, `${dir}/${name}`]),
      };
    }
    case "c-sendfile": {
      const server = requireC(options).sendfile;
      return {
        sender: [server, "serve", file, socket, String(peers)],
        receivers: peerDirs.map((dir) => [server, "fetch", socket, `${dir}/${name}`]),
      };
    }
    case "socat":
      // socat's fork mode: each connection gets a child that opens the file.
      return {
        sender: ["socat", "-U", `UNIX-LISTEN:${socket},fork,mode=600`, `OPEN:${file},rdonly`],
        receivers: peerDirs.map((dir) => [
          "socat",
          "-u",
          `UNIX-CONNECT:${socket},retry=1000,interval=0.01`,
          `CREATE:${dir}/${name}`,
        ]),
        serves: true,
      };
  }
}

const running = new Set<Proc>();

/**
 * Stops every process the harness started, for an interrupted demo or bench:
 * SIGTERM first, so that p2m programs unlink what they created, then SIGKILL
 * whatever is still running after `graceSeconds`.
 */
export async function stopEverything(graceSeconds = 3): Promise<void> {
  const procs = [...running];
  for (const proc of procs) proc.stop();
  const all = Promise.all(procs.map((proc) => proc.exited));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), graceSeconds * 1000);
  });
  if (await Promise.race([all, late]) === "late") { for (const proc of running) proc.killAll(); }
  clearTimeout(timer);
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

/** How a process ended. */
interface Exit {
  label: string;
  code: number;
  /** `performance.now()` when its exit was seen. */
  at: number;
  reason: string;
  rssKiB?: number;
}

/** A child process with its stdout parsed as JSON events and its stderr kept. */
class Proc {
  readonly label: string;
  readonly exited: Promise<Exit>;
  #child: Deno.ChildProcess;
  #wrapped: boolean;

  constructor(
    label: string,
    command: string[],
    options: { rssFile?: string; onEvent?: (event: Record<string, unknown>) => void },
  ) {
    this.label = label;
    this.#wrapped = options.rssFile !== undefined;
    const argv = options.rssFile ? [TIME, "-f", "%M", "-o", options.rssFile, ...command] : command;
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errorEvents: string[] = [];
    this.#child = child;
    const stdout = readLines(child.stdout, (line) => {
      const event = parseEvent(line);
      if (!event) return;
      if (event.event === "error" && typeof event.message === "string") {
        errorEvents.push(event.message);
      }
      options.onEvent?.(event);
    });
    const stderr = readText(child.stderr);
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
      const rssKiB = options.rssFile ? await readRss(options.rssFile) : undefined;
      return { label, code, at, reason, rssKiB };
    })();
  }

  /** Sends SIGTERM to the program (not to the `time` wrapper, which must report). */
  stop(): void {
    const pids = this.#wrapped ? childPids(this.#child.pid) : [this.#child.pid];
    for (const pid of pids) signal(pid, "SIGTERM");
  }

  /** SIGKILLs the process and every descendant (e.g. a socket server's workers). */
  killAll(): void {
    const tree = (pid: number): number[] => [pid, ...childPids(pid).flatMap(tree)];
    for (const pid of tree(this.#child.pid)) signal(pid, "SIGKILL");
  }
}

function signal(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch { /* already gone */ }
}

function childPids(pid: number): number[] {
  const out = new Deno.Command("ps", {
    args: ["-o", "pid=", "--ppid", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").map(Number).filter((n) => n > 0);
}

async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      onLine(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
  }
  pending += decoder.decode();
  if (pending !== "") onLine(pending);
}

async function readText(stream: ReadableStream<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    if (text.length < STDERR_LIMIT) text += decoder.decode(chunk, { stream: true });
  }
  return text.slice(0, STDERR_LIMIT);
}

function parseEvent(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const value = JSON.parse(line);
    return typeof value === "object" && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

async function readRss(path: string): Promise<number | undefined> {
  const text = await Deno.readTextFile(path).catch(() => "");
  // GNU time writes "Command exited with non-zero status N" before the figure.
  const kib = Number(text.trim().split("\n").pop());
  return Number.isFinite(kib) && kib > 0 ? kib : undefined;
}

function isExecutable(path: string): boolean {
  try {
    return ((Deno.statSync(path).mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}
