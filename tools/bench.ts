/**
 * `deno task bench`: p2m against what users would otherwise run.
 *
 * Sweeps file size × peers × method, where the methods are both transports
 * with and without digest verification plus the baselines `cp` ×N in
 * parallel, one `tee` to N files, and socat in fork mode when installed.
 * Copies go to a private tmpfs (mounted when running as root) or to
 * `--out-dir`. Each case is run `--runs` times, interleaved with the other
 * methods so that background noise spreads evenly, and every copy is
 * checked after timing. Results go to a table on stdout and to JSON,
 * Markdown and an SVG chart in `--results`.
 *
 * @module
 */
import {
  commandSpec,
  formatBytes,
  gibPerSecond,
  intFlag,
  jsonLine,
  maybeHelp,
  P2mError,
  parseCommand,
  REPORT_OPTIONS,
  Reporter,
  runMain,
  sizeFlag,
  TextBlock,
  UsageError,
} from "../core/mod.ts";
import {
  addNetRatios,
  addRatios,
  type BenchReport,
  type CaseResult,
  chart,
  markdown,
  type MethodInfo,
  netLines,
  type NetSection,
  textTable,
} from "./bench_report.ts";
import {
  type Expected,
  fileSystemType,
  runCopy,
  type RunResult,
  writeRandomFile,
} from "./harness.ts";
import { NATS_SERVER_PATH, NatsServer } from "./nats_server.ts";
import {
  type Baseline,
  buildCBaselines,
  hasSocat,
  NET_METHODS,
  netArgv,
  type NetMethod,
  taskArgv,
  type Transport,
} from "./plans.ts";
import { cpuOf, onInterrupt } from "./runner.ts";
import { p2mArgv } from "../core/permissions.ts";

const USAGE = `
Usage: deno task bench [--quick] [--sizes LIST] [--peers LIST] [--methods LIST] [--runs N]
                       [--out-dir DIR] [--results DIR] [--json] [--quiet]

Measures aggregate GiB/s of p2m's transports (with and without --no-verify)
against cp xN, tee and socat (when installed), copying to tmpfs.

Options:
  --quick          a CI-sized subset: 16MiB x 1,4 peers (unless --sizes/--peers say otherwise)
  --sizes LIST     file sizes, e.g. 64MiB,256MiB,1GiB (the default)
  --peers LIST     receiver counts, e.g. 1,4,16 (the default)
  --methods LIST   any of shm, shm-no-verify, shm-task, socket, socket-no-verify,
                   socket-task, cp, tee, socat, c-ring, c-sendfile, net (default all);
                   the -task forms run through 'deno task', the others as bin/p2m does;
                   net (only when nats-server is installed) times, for each size,
                   one 'net fetch', one 'net fetch --fanout shm --peers 4' with its 4
                   receivers, and 4 separate 'net fetch' processes (hub-and-spoke)
  --runs N         runs per case; the report gives median, min and max (default 3)
  --out-dir DIR    write copies under DIR instead of a private tmpfs mount
                   (mounting needs root; without either, a temp dir is used)
  --results DIR    where bench.json, bench.md and bench.svg go (default bench-results)
  --json           print the report as JSON on stdout instead of the table
  --quiet          print nothing but errors
  -h, --help       show this help

Cases whose copies would not fit in the output area (size x (peers + 1)) are
skipped and listed. Exits 1 if any copy failed.
`;

const spec = commandSpec("p2m bench", USAGE, {
  strings: ["sizes", "peers", "methods", "runs", "out-dir", "results"],
  booleans: ["quick"],
  shared: REPORT_OPTIONS,
});

/** A measured method: a transport with or without verification, or a baseline tool. */
interface Method extends MethodInfo {
  method: Transport | Baseline | NetMethod;
  form?: "direct" | "task";
}

const METHODS: Method[] = [
  { id: "shm", method: "shm", baseline: false, verify: true },
  { id: "shm-no-verify", method: "shm", baseline: false, verify: false },
  { id: "socket", method: "socket", baseline: false, verify: true },
  { id: "socket-no-verify", method: "socket", baseline: false, verify: false },
  { id: "shm-task", method: "shm", baseline: false, verify: true, form: "task" },
  { id: "socket-task", method: "socket", baseline: false, verify: true, form: "task" },
  { id: "cp", method: "cp", baseline: true, verify: null },
  { id: "tee", method: "tee", baseline: true, verify: null },
  { id: "socat", method: "socat", baseline: true, verify: null },
  { id: "c-ring", method: "c-ring", baseline: true, verify: null },
  { id: "c-sendfile", method: "c-sendfile", baseline: true, verify: null },
];

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Memory left to everything else on the machine while the tmpfs is full. */
const HEADROOM = 4 * GiB;

async function main(): Promise<number> {
  const { values } = parseCommand(spec, Deno.args);
  if (maybeHelp(values, USAGE)) return 0;
  const quick = values.quick ?? false;
  const sizes = listFlag(values.sizes, "sizes", quick ? ["16MiB"] : ["64MiB", "256MiB", "1GiB"])
    .map((s) => sizeFlag(s, "sizes", 0, { min: 1, max: 64 * GiB }));
  const peerCounts = listFlag(values.peers, "peers", quick ? ["1", "4"] : ["1", "4", "16"])
    .map((p) => intFlag(p, "peers", 0, { min: 1, max: 64 }));
  const methodIds = listFlag(values.methods, "methods", [...METHODS.map((m) => m.id), "net"]);
  const methods = methodsFlag(methodIds.filter((id) => id !== "net"));
  const runs = intFlag(values.runs, "runs", 3, { min: 1, max: 100 });
  const resultsDir = values.results ?? "bench-results";
  const reporter = new Reporter({ quiet: values.quiet || values.json });
  const skipped: BenchReport["skipped"] = [];
  const dropped = methods.filter((m) => m.method === "socat" && !hasSocat());
  for (const m of dropped) {
    reporter.info("socat is not installed: its baseline is skipped");
    methods.splice(methods.indexOf(m), 1);
  }

  const wantNet = methodIds.includes("net");
  const mostPeers = Math.max(...peerCounts, wantNet ? NET_PEERS : 0);
  const largest = Math.max(...sizes.map((s) => s * (mostPeers + 1)));
  const area = await OutputArea.open(values["out-dir"], largest);
  const work = await Deno.makeTempDir({ prefix: "p2m-bench-" });
  const cBaselines = methods.some((m) => m.method.startsWith("c-"))
    ? await buildCBaselines(work)
    : undefined;
  if (!cBaselines) {
    for (const m of methods.filter((m) => m.method.startsWith("c-"))) {
      reporter.info(`no C compiler: the ${m.id} baseline is skipped`);
      methods.splice(methods.indexOf(m), 1);
    }
  }
  const cleanup = async () => {
    await area.close();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  };
  onInterrupt(cleanup);
  const started = new Date();
  const startup = await startupCpu(work);
  const cases: CaseResult[] = [];
  let net: NetSection | undefined;
  try {
    reporter.info(
      `p2m bench: copies on ${area.fileSystem} (${area.how}, ${
        formatBytes(area.capacity)
      } free), ` +
        `${runs} run${runs === 1 ? "" : "s"} per case`,
    );
    let tag = 0;
    for (const size of sizes) {
      const file = `${area.dir}/src-${formatBytes(size).replace(/[ .]/g, "")}.bin`;
      const fits = peerCounts.filter((peers) => size * (peers + 1) <= area.capacity);
      for (const peers of peerCounts.filter((p) => !fits.includes(p))) {
        const reason = `${formatBytes(size * (peers + 1))} of copies would not fit in ${
          formatBytes(area.capacity)
        }`;
        skipped.push({ size, peers, reason });
        reporter.info(`skipped ${formatBytes(size)} x ${peers}: ${reason}`);
      }
      if (fits.length === 0) continue;
      const expected = await writeRandomFile(file, size);
      for (const peers of fits) {
        const results = new Map<Method, RunResult[]>(methods.map((m) => [m, []]));
        // Interleave: run r of every method, then run r + 1.
        for (let run = 0; run < runs; run++) {
          for (const m of methods) {
            const outDir = `${area.dir}/out`;
            const result = await runCopy({
              method: m.method,
              verify: m.verify ?? undefined,
              form: m.form,
              file,
              peers,
              outDir,
              workDir: work,
              tag: `bench-${Deno.pid}-${++tag}`,
              timeoutSeconds: 60 + (size * peers) / (50 * MiB),
              measure: true,
              cBaselines,
            }, expected);
            await Deno.remove(outDir, { recursive: true });
            results.get(m)!.push(result);
          }
        }
        for (const m of methods) {
          const c = summarise(m, size, peers, results.get(m)!);
          cases.push(c);
          reporter.info(line(c));
          for (const e of c.errors) {
            reporter.error(`${m.id}, ${formatBytes(size)} x ${peers}: ${e}`);
          }
        }
      }
      await Deno.remove(file);
    }
    if (wantNet) net = await benchNet(sizes, runs, area, work, reporter);
  } finally {
    await cleanup();
  }

  addRatios(cases);
  const report: BenchReport = {
    version: 1,
    date: started.toISOString(),
    elapsedSeconds: Math.round((Date.now() - started.getTime()) / 100) / 10,
    machine: await machine(),
    outputs: { how: area.how, fileSystem: area.fileSystem },
    runs,
    skipped,
    startup,
    cases,
    ...(net ? { net } : {}),
  };
  await Deno.mkdir(resultsDir, { recursive: true });
  await Deno.writeTextFile(`${resultsDir}/bench.json`, JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(`${resultsDir}/bench.md`, markdown(report));
  await Deno.writeTextFile(`${resultsDir}/bench.svg`, chart(report));
  if (values.json) console.log(jsonLine(report));
  reporter.info(
    new TextBlock([
      "",
      ...cases.length > 0 ? textTable(report).lines : [],
      ...netLines(report),
      "",
      `Wrote ${resultsDir}/bench.{json,md,svg}`,
    ]),
  );
  return [...cases, ...net?.cases ?? []].every((c) => c.errors.length === 0) ? 0 : 1;
}

/** Median, min, max, throughput and peak memory of one case's runs. */
function summarise(m: Method, size: number, peers: number, runs: RunResult[]): CaseResult {
  const good = runs.filter((r) => r.ok);
  const sorted = good.map((r) => r.seconds).sort((a, b) => a - b);
  const median = sorted.length === 0
    ? null
    : sorted.length % 2 === 1
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  const peak = (pick: (r: RunResult) => number | undefined) => {
    const seen = runs.map(pick).filter((v): v is number => v !== undefined);
    return seen.length > 0 ? Math.max(...seen) : null;
  };
  return {
    id: m.id,
    baseline: m.baseline,
    verify: m.verify,
    size,
    peers,
    seconds: good.map((r) => round(r.seconds)),
    median: median === null ? null : round(median),
    min: sorted.length > 0 ? round(sorted[0]) : null,
    max: sorted.length > 0 ? round(sorted.at(-1)!) : null,
    gibps: median === null ? null : round(gibPerSecond(size * peers, median)),
    ratio: null,
    bestBaseline: null,
    cRatio: null,
    senderRssKiB: m.method === "cp" ? null : peak((r) => r.senderRssKiB),
    receiverRssKiB: m.method === "tee" ? null : peak((r) => r.receiverRssKiB),
    senderCpuSeconds: middle(good.map((r) => r.senderCpuSeconds)),
    receiverCpuSeconds: middle(good.map((r) => r.receiverCpuSeconds)),
    verified: runs.reduce((n, r) => n + r.verified, 0),
    copies: peers * runs.length,
    errors: runs.flatMap((r, i) => r.errors.map((e) => `run ${i + 1}: ${e}`)),
  };
}

function line(c: CaseResult): string {
  const what = `${formatBytes(c.size).padStart(9)} x${String(c.peers).padEnd(3)} ${
    c.id.padEnd(17)
  }`;
  if (c.median === null) return `${what} failed`;
  return `${what} ${c.median.toFixed(3)} s (${c.min!.toFixed(3)}–${c.max!.toFixed(3)})  ${
    c.gibps!.toFixed(2)
  } GiB/s  ${c.verified}/${c.copies} verified`;
}

/** Local receivers of the net section's fan-out and hub-and-spoke cases. */
const NET_PEERS = 4;

/**
 * The net section: one nats-server on loopback (its store in the work dir),
 * each size published once, then `net-fetch`, `net-fanout-shm` and
 * `net-hub` interleaved `runs` times, every copy checked after timing.
 * Skipped, with the reason, when nats-server is not installed.
 */
async function benchNet(
  sizes: number[],
  runs: number,
  area: OutputArea,
  work: string,
  reporter: Reporter,
): Promise<NetSection> {
  const section: NetSection = { publishSeconds: [], cases: [] };
  if (!NATS_SERVER_PATH) {
    section.skipped = "nats-server is not installed (apt-get install nats-server)";
    reporter.info(`net: ${section.skipped}; skipped`);
    return section;
  }
  await using server = await NatsServer.start();
  let tag = 0;
  for (const size of sizes.filter((s) => s * (NET_PEERS + 1) <= area.capacity)) {
    const file = `${area.dir}/net-src.bin`;
    const expected = await writeRandomFile(file, size);
    const key = `bench-${size}`;
    const started = performance.now();
    const publish = netArgv(["publish", file, "--server", server.url, "--key", key, "--quiet"]);
    const published = await new Deno.Command(publish[0], { args: publish.slice(1) }).output();
    section.publishSeconds.push({
      size,
      seconds: published.success ? round((performance.now() - started) / 1000) : null,
    });
    await Deno.remove(file);
    if (!published.success) {
      reporter.error(`net: publishing ${formatBytes(size)} failed`);
      continue;
    }
    const results = new Map<NetMethod, RunResult[]>(NET_METHODS.map((m) => [m, []]));
    for (let run = 0; run < runs; run++) {
      for (const method of NET_METHODS) {
        const peers = method === "net-fetch" ? 1 : NET_PEERS;
        const result = await netRun(method, size, peers, area, work, `net-${Deno.pid}-${++tag}`, {
          url: server.url,
          key,
        }, expected);
        results.get(method)!.push(result);
      }
    }
    for (const method of NET_METHODS) {
      const peers = method === "net-fetch" ? 1 : NET_PEERS;
      const m = { id: method, method, baseline: false, verify: true };
      const c = summarise(m, size, peers, results.get(method)!);
      section.cases.push(c);
      reporter.info(line(c));
      for (const e of c.errors) reporter.error(`${method}, ${formatBytes(size)}: ${e}`);
    }
  }
  addNetRatios(section);
  return section;
}

/** One timed net run into a fresh output dir, removed afterwards. */
async function netRun(
  method: NetMethod,
  size: number,
  peers: number,
  area: OutputArea,
  work: string,
  tag: string,
  nats: { url: string; key: string },
  expected: Expected,
): Promise<RunResult> {
  const outDir = `${area.dir}/out`;
  try {
    return await runCopy({
      method,
      file: `${area.dir}/net-src.bin`,
      peers,
      outDir,
      workDir: work,
      tag,
      timeoutSeconds: 60 + (size * peers) / (50 * MiB),
      measure: true,
      nats,
    }, expected);
  } finally {
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Where the copies go: a private tmpfs mounted for the run when we are root,
 * else `--out-dir` (or a temp dir), with the room there is.
 */
class OutputArea {
  readonly dir: string;
  readonly how: BenchReport["outputs"]["how"];
  readonly fileSystem: string;
  /** Bytes the copies may use. */
  readonly capacity: number;
  #mounted: boolean;

  private constructor(
    dir: string,
    how: OutputArea["how"],
    fileSystem: string,
    capacity: number,
    mounted: boolean,
  ) {
    this.dir = dir;
    this.how = how;
    this.fileSystem = fileSystem;
    this.capacity = capacity;
    this.#mounted = mounted;
  }

  /** Mounts a tmpfs sized for `wanted` bytes (within free memory), or uses `outDir`. */
  static async open(outDir: string | undefined, wanted: number): Promise<OutputArea> {
    if (outDir !== undefined) {
      const stat = await Deno.stat(outDir).catch(() => undefined);
      if (!stat?.isDirectory) throw new P2mError(`--out-dir ${outDir} is not a directory`);
      const dir = await Deno.makeTempDir({ dir: outDir, prefix: "p2m-bench-" });
      return new OutputArea(
        dir,
        "--out-dir",
        await fileSystemType(dir),
        await freeBytes(dir),
        false,
      );
    }
    const dir = await Deno.makeTempDir({ prefix: "p2m-bench-out-" });
    if (Deno.uid() === 0) {
      const memory = Deno.systemMemoryInfo().available;
      const size = Math.floor(Math.min(wanted + 64 * MiB, memory - HEADROOM) / MiB) * MiB;
      const mount = size > 0
        ? await new Deno.Command("mount", {
          args: ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir],
          stderr: "piped",
        }).output()
        : undefined;
      if (mount?.success) return new OutputArea(dir, "private tmpfs mount", "tmpfs", size, true);
    }
    return new OutputArea(dir, "temp dir", await fileSystemType(dir), await freeBytes(dir), false);
  }

  /** Unmounts the tmpfs (if any) and removes the directory. */
  async close(): Promise<void> {
    if (this.#mounted) {
      await new Deno.Command("umount", { args: [this.dir] }).output();
      this.#mounted = false;
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

async function freeBytes(dir: string): Promise<number> {
  const out = await new Deno.Command("df", {
    args: ["-B1", "--output=avail", dir],
    stdout: "piped",
  }).output();
  const n = Number(new TextDecoder().decode(out.stdout).trim().split("\n").pop());
  return Number.isFinite(n) ? n : 0;
}

async function machine(): Promise<BenchReport["machine"]> {
  const grep = await new Deno.Command("grep", {
    args: ["-m1", "model name", "/proc/cpuinfo"],
    stdout: "piped",
  }).output().catch(() => undefined);
  const cpuModel = grep ? new TextDecoder().decode(grep.stdout).replace(/^.*:\s*/, "").trim() : "";
  return {
    cpus: navigator.hardwareConcurrency,
    cpuModel: cpuModel || "unknown CPU",
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / GiB),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
  };
}

function listFlag(value: string | undefined, flag: string, fallback: string[]): string[] {
  if (value === undefined) return fallback;
  const items = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length === 0) throw new UsageError(`--${flag} needs at least one value`);
  return [...new Set(items)];
}

function methodsFlag(ids: string[]): Method[] {
  return ids.map((id) => {
    const m = METHODS.find((m) => m.id === id);
    if (!m) {
      throw new UsageError(
        `--methods: unknown method '${id}'; choose from ${
          [...METHODS.map((m) => m.id), "net"].join(", ")
        }`,
      );
    }
    return m;
  });
}

function round(v: number): number {
  return Math.round(v * 10_000) / 10_000;
}

if (import.meta.main) await runMain(spec, Deno.args, main);

/** The median of the known values, rounded; null if none. */
function middle(values: (number | undefined)[]): number | null {
  const known = values.filter((v): v is number => v !== undefined).sort((a, b) => a - b);
  if (known.length === 0) return null;
  const mid = known.length / 2;
  return round(known.length % 2 ? known[Math.floor(mid)] : (known[mid - 1] + known[mid]) / 2);
}

/**
 * CPU seconds one process spends before its first useful syscall: a run of
 * `--version`, which returns once the runtime is up and every module of the
 * program is loaded. Median of 5, for each program, directly and through
 * `deno task`.
 */
async function startupCpu(work: string): Promise<BenchReport["startup"]> {
  const probe = async (command: string[]) => {
    const seen: (number | undefined)[] = [];
    for (let i = 0; i < 5; i++) seen.push(await cpuOf(command, `${work}/startup.time`));
    return middle(seen);
  };
  return {
    shm: await probe(p2mArgv("sharedmem.ts", ["receiver", "--version"])),
    socket: await probe(p2mArgv("socket.ts", ["client", "--version"])),
    shmTask: await probe(taskArgv("sharedmem.ts", ["receiver", "--version"])),
    socketTask: await probe(taskArgv("socket.ts", ["client", "--version"])),
  };
}
