/**
 * The benchmark's results and how they are written: a terminal table, JSON,
 * Markdown and an SVG chart of aggregate GiB/s by peers, one line per method.
 *
 * @module
 */
import { formatBytes, formatTable, type TextBlock } from "../core/format.ts";
import { lineChart, type Series } from "./svg_chart.ts";

/** A method the benchmark measures. */
export interface MethodInfo {
  /** Stable id used in JSON and the chart, e.g. `shm-no-verify`. */
  id: string;
  /** Whether it is a baseline tool rather than p2m. */
  baseline: boolean;
  /** Whether p2m verifies the digest (null for baselines). */
  verify: boolean | null;
}

/** The measured figures of one method at one size and peer count. */
export interface CaseResult extends MethodInfo {
  /** File size in bytes. */
  size: number;
  /** Number of receivers. */
  peers: number;
  /** Seconds of each successful run, in run order. */
  seconds: number[];
  /** Median, min and max seconds over the successful runs (null if none). */
  median: number | null;
  /** Fastest successful run. */
  min: number | null;
  /** Slowest successful run. */
  max: number | null;
  /** Aggregate GiB/s at the median: peers × size ÷ median seconds. */
  gibps: number | null;
  /** GiB/s relative to the best baseline at this size and peer count. */
  ratio: number | null;
  /** Which baseline was best here. */
  bestBaseline: string | null;
  /** For a transport, GiB/s relative to its C reference (c-ring for shm, c-sendfile for socket). */
  cRatio: number | null;
  /** Highest peak RSS of the sender seen over the runs, KiB. */
  senderRssKiB: number | null;
  /** Highest peak RSS of the first receiver seen over the runs, KiB. */
  receiverRssKiB: number | null;
  /** Median CPU seconds of the sender with its children (a socket server's workers). */
  senderCpuSeconds?: number | null;
  /** Median CPU seconds of one receiver. */
  receiverCpuSeconds?: number | null;
  /** Copies verified, over all runs. */
  verified: number;
  /** Copies attempted, over all runs (peers × runs). */
  copies: number;
  /** Failure reasons, prefixed by run number. */
  errors: string[];
}

/** The whole report, as written to `bench.json`. */
export interface BenchReport {
  /** Format version of this JSON. */
  version: 1;
  /** ISO time the run started. */
  date: string;
  /** Seconds the whole sweep took. */
  elapsedSeconds: number;
  /** The machine, so that figures are read in context. */
  machine: { cpus: number; cpuModel: string; memoryGiB: number; kernel: string; deno: string };
  /** Where the copies were written. */
  outputs: { how: "private tmpfs mount" | "--out-dir" | "temp dir"; fileSystem: string };
  /** Runs per case. */
  runs: number;
  /** Cases left out, with the reason. */
  skipped: { size: number; peers: number; reason: string }[];
  /** CPU seconds of one process's start-up (`--version`), directly and through `deno task`. */
  startup?: {
    shm: number | null;
    socket: number | null;
    shmTask: number | null;
    socketTask: number | null;
  };
  /** Every measured case. */
  cases: CaseResult[];
  /** The net section (NATS JetStream on loopback), when it ran or was skipped. */
  net?: NetSection;
}

/**
 * `net fetch` alone (one copy), `net fetch --fanout shm` to N local
 * receivers, and hub-and-spoke (N separate fetches), against one
 * nats-server on loopback. Each case's `ratio` is its median time over the
 * lone fetch's at the same size (1.10 is the issue's bound for the fan-out).
 */
export interface NetSection {
  /** Why the section did not run. */
  skipped?: string;
  /** Seconds each `net publish` of a size took, in size order. */
  publishSeconds: { size: number; seconds: number | null }[];
  /** The measured cases (ids net-fetch, net-fanout-shm, net-hub). */
  cases: CaseResult[];
}

/** Sets each net case's ratio: its median time over the lone fetch's at its size. */
export function addNetRatios(section: NetSection): void {
  for (const c of section.cases) {
    const alone = section.cases.find((a) => a.id === "net-fetch" && a.size === c.size);
    c.ratio = alone?.median && c.median !== null ? c.median / alone.median : null;
  }
}

/** The net section's lines (Markdown table rows and a heading), or none. */
export function netLines(report: BenchReport): string[] {
  const net = report.net;
  if (!net) return [];
  if (net.skipped) return ["", "## net (NATS JetStream)", "", `Skipped: ${net.skipped}.`];
  const s = (v: number | null) => v === null ? "–" : v.toFixed(3);
  return [
    "",
    "## net (NATS JetStream, one nats-server on loopback)",
    "",
    "`net-fetch`: one `net fetch` (one copy); `net-fanout-shm`: one `net fetch --fanout shm` " +
    "and its local shm receivers; `net-hub`: that many separate `net fetch` processes " +
    "(hub-and-spoke). \"× fetch\" is the median time over the lone fetch's; the issue's bound " +
    "for the fan-out is 1.10. Publish times: " +
    net.publishSeconds.map((p) => `${formatBytes(p.size)} ${s(p.seconds)} s`).join(", ") + ".",
    "",
    "| size | copies | method | median s | min–max s | × fetch | verified |",
    "|---|---:|---|---:|---:|---:|---:|",
    ...net.cases.map((c) =>
      `| ${formatBytes(c.size)} | ${c.peers} | ${c.id} | ${s(c.median)} | ` +
      `${c.min === null ? "–" : `${s(c.min)}–${s(c.max)}`} | ` +
      `${c.ratio === null ? "–" : c.ratio.toFixed(2)} | ${c.verified}/${c.copies} |`
    ),
  ];
}

/** Fills in each case's ratio to the best baseline at its size and peer count. */
export function addRatios(cases: CaseResult[]): void {
  for (const c of cases) {
    const baselines = cases.filter((b) =>
      b.baseline && b.size === c.size && b.peers === c.peers && b.gibps !== null
    );
    const best = baselines.reduce<CaseResult | undefined>(
      (a, b) => a === undefined || b.gibps! > a.gibps! ? b : a,
      undefined,
    );
    c.bestBaseline = best?.id ?? null;
    c.ratio = best && c.gibps !== null ? c.gibps / best.gibps! : null;
    const referenceId = C_REFERENCE[c.id.split("-")[0]];
    const reference = baselines.find((b) => b.id === referenceId);
    c.cRatio = reference && c.gibps !== null ? c.gibps / reference.gibps! : null;
  }
}

/** The C program that sets the bar for each transport. */
const C_REFERENCE: Record<string, string> = { shm: "c-ring", socket: "c-sendfile" };

/** The results as an aligned text table for the terminal. */
export function textTable(report: BenchReport): TextBlock {
  return formatTable(HEADERS, report.cases.map(cells));
}

/** The results as a Markdown document. */
export function markdown(report: BenchReport): string {
  const m = report.machine;
  const lines = [
    "# p2m benchmark",
    "",
    `${report.date} · ${m.cpus} vCPU (${m.cpuModel}) · ${m.memoryGiB} GiB RAM · Linux ${m.kernel}` +
    ` · Deno ${m.deno}`,
    "",
    `Copies written to ${report.outputs.fileSystem} (${report.outputs.how}). ` +
    `Time runs from the sender's start to the last receiver's exit; every copy is checked ` +
    `after timing. Median of ${report.runs} run${report.runs === 1 ? "" : "s"}, with min–max. ` +
    `GiB/s is aggregate: peers × size ÷ median time. "× best" compares with the fastest ` +
    `baseline at the same size and peer count; "× C" compares a transport with its C ` +
    `reference (c-ring for shm, c-sendfile for socket). RSS is the peak of the sender's process tree ` +
    `and of one receiver.`,
    "",
    "![GiB/s by peers](bench.svg)",
    "",
    `| ${HEADERS.join(" | ")} |`,
    `|${HEADERS.map((_, i) => i < 3 ? "---" : "---:").join("|")}|`,
    ...report.cases.map((c) => `| ${cells(c).join(" | ")} |`),
  ];
  lines.push(...whereTimeGoes(report), ...netLines(report));
  if (report.skipped.length > 0) {
    lines.push("", "Skipped:", "");
    for (const s of report.skipped) {
      lines.push(`- ${formatBytes(s.size)} × ${s.peers}: ${s.reason}`);
    }
  }
  const failures = [...report.cases, ...report.net?.cases ?? []].filter((c) => c.errors.length > 0);
  if (failures.length > 0) {
    lines.push("", "Failures:", "");
    for (const c of failures) {
      for (const e of c.errors) lines.push(`- ${c.id}, ${formatBytes(c.size)} × ${c.peers}: ${e}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** Style of each method's line in the chart. */
const STYLE: Record<string, Omit<Series, "name">> = {
  "shm": { color: "#1f6fb4" },
  "shm-no-verify": { color: "#1f6fb4", dash: "6 4" },
  "socket": { color: "#d0312d" },
  "socket-no-verify": { color: "#d0312d", dash: "6 4" },
  "cp": { color: "#555555", dash: "2 3" },
  "tee": { color: "#a0a000", dash: "2 3" },
  "socat": { color: "#8e44ad", dash: "2 3" },
  "c-ring": { color: "#1f6fb4", dash: "1 2" },
  "c-sendfile": { color: "#d0312d", dash: "1 2" },
};

/** The results as an SVG chart: one panel per size, GiB/s by peers, one line per method. */
export function chart(report: BenchReport): string {
  const sizes = unique(report.cases.map((c) => c.size)).sort((a, b) => a - b);
  const peers = unique(report.cases.map((c) => c.peers)).sort((a, b) => a - b);
  const methods = unique(report.cases.map((c) => c.id));
  const m = report.machine;
  return lineChart({
    title: "p2m: aggregate GiB/s by number of peers",
    caption:
      `${m.cpus} vCPU ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Deno ${m.deno}; ` +
      `${report.date.slice(0, 10)}; median of ${report.runs} runs`,
    xLabels: peers.map(String),
    xCaption: "peers",
    yCaption: "aggregate GiB/s",
    series: methods.map((name) => ({ name, ...(STYLE[name] ?? { color: "#000000" }) })),
    panels: sizes.map((size) => ({
      title: formatBytes(size),
      values: Object.fromEntries(methods.map((id) => [
        id,
        peers.map((p) =>
          report.cases.find((c) => c.id === id && c.size === size && c.peers === p)?.gibps ?? null
        ),
      ])),
    })),
  });
}

const HEADERS = [
  "size",
  "peers",
  "method",
  "median s",
  "min–max s",
  "GiB/s",
  "× best",
  "× C",
  "sender RSS",
  "receiver RSS",
  "sender CPU s",
  "receiver CPU s",
  "verified",
];

function cells(c: CaseResult): string[] {
  const kib = (v: number | null) => v === null ? "–" : formatBytes(v * 1024);
  return [
    formatBytes(c.size),
    String(c.peers),
    c.id,
    c.median === null ? "failed" : c.median.toFixed(3),
    c.min === null ? "–" : `${c.min.toFixed(3)}–${c.max!.toFixed(3)}`,
    c.gibps === null ? "–" : c.gibps.toFixed(2),
    c.ratio === null ? "–" : c.ratio.toFixed(2),
    c.cRatio === null ? "–" : c.cRatio.toFixed(2),
    kib(c.senderRssKiB),
    kib(c.receiverRssKiB),
    c.senderCpuSeconds == null ? "–" : c.senderCpuSeconds.toFixed(2),
    c.receiverCpuSeconds == null ? "–" : c.receiverCpuSeconds.toFixed(2),
    `${c.verified}/${c.copies}`,
  ];
}

function unique<T>(values: T[]): T[] {
  return [...new Set(values)];
}

/**
 * "Where the time goes": each transport's CPU per role, split into start-up
 * (a `--version` run: runtime and modules), the digest (verified minus
 * `--no-verify`) and the rest (moving the data), with the cost of the
 * `deno task` form beside it.
 */
export function whereTimeGoes(report: BenchReport): string[] {
  const startup = report.startup;
  if (!startup) return [];
  const find = (id: string, size: number, peers: number) =>
    report.cases.find((c) => c.id === id && c.size === size && c.peers === peers);
  const rows: string[] = [];
  const s = (v: number | null | undefined) => v === null || v === undefined ? "–" : v.toFixed(2);
  for (const transport of ["shm", "socket"] as const) {
    const start = transport === "shm" ? startup.shm : startup.socket;
    const taskStart = transport === "shm" ? startup.shmTask : startup.socketTask;
    for (const c of report.cases.filter((c) => c.id === transport && c.median !== null)) {
      const plain = find(`${transport}-no-verify`, c.size, c.peers);
      const task = find(`${transport}-task`, c.size, c.peers);
      const split = (verified?: number | null, unverified?: number | null, starts = 1) => {
        if (verified == null || unverified == null || start === null) return "–";
        const digest = Math.max(0, verified - unverified);
        const data = Math.max(0, unverified - start * starts);
        return `${s(verified)} = ${s(start * starts)} + ${s(data)} + ${s(digest)}`;
      };
      // A socket server's figure includes its workers: one more start each.
      const serverStarts = transport === "socket" ? 1 + c.peers : 1;
      const tree = c.senderCpuSeconds != null && c.receiverCpuSeconds != null
        ? c.senderCpuSeconds + c.peers * c.receiverCpuSeconds
        : null;
      rows.push(
        `| ${formatBytes(c.size)} × ${c.peers} | ${transport} | ${s(c.median)} | ${s(tree)} | ` +
          `${split(c.senderCpuSeconds, plain?.senderCpuSeconds, serverStarts)} | ` +
          `${split(c.receiverCpuSeconds, plain?.receiverCpuSeconds)} | ${s(task?.median)} | ` +
          `${s(taskStart !== null && start !== null ? taskStart - start : null)} |`,
      );
    }
  }
  if (rows.length === 0) return [];
  return [
    "",
    "## Where the time goes",
    "",
    `CPU seconds (user + system, from GNU time) per role, verified, split as start-up + data + ` +
    `digest. Start-up is the CPU of a \`--version\` run (the runtime and every module loaded): ` +
    `${s(startup.shm)} s for sharedmem.ts, ${s(startup.socket)} s for socket.ts. The digest is ` +
    `the verified run's CPU minus the \`--no-verify\` run's; data is the rest. The socket ` +
    `server's figure includes its workers (one start each). The last two columns are the wall ` +
    `time through \`deno task\` and the extra CPU each process pays for its second runtime.`,
    "",
    "| case | transport | wall s | tree CPU s | sender CPU s | receiver CPU s (each) | " +
    "via deno task, wall s | deno task, extra CPU s per process |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
    ...rows,
  ];
}
