/**
 * `deno task demo`: the whole system at work in one command.
 *
 * For each transport it starts one sender and N receiver subprocesses, as
 * the original `./socket 5 file` forked its clients, shows their combined
 * progress, checks every copy against the source itself, and prints one
 * table. It exits 1 if any copy failed.
 *
 * @module
 */
import {
  commandSpec,
  intFlag,
  maybeHelp,
  parseCommand,
  REPORT_OPTIONS,
  runMain,
  secondsFlag,
  sizeFlag,
} from "../core/cli.ts";
import { P2mError, UsageError } from "../core/errors.ts";
import { formatBytes, formatTable, gibPerSecond, TextBlock } from "../core/format.ts";
import { Reporter } from "../core/report.ts";
import { type Expected, fileDigest, runCopy, writeRandomFile } from "./harness.ts";
import { type Transport, TRANSPORTS } from "./plans.ts";
import { onInterrupt } from "./runner.ts";

const USAGE = `
Usage: deno task demo [--file F | --size BYTES] [--peers N] [--transport shm|socket|both]
                      [--timeout S] [--json] [--quiet]

Copies one file to N receiver subprocesses over each transport, checks every
copy against the source, and prints one table: transport, peers, size,
seconds, aggregate GiB/s (N x size / wall time) and verified copies.
Everything it creates lives in a temp dir that it removes. Exits 1 if any
copy failed.

Options:
  --file F        send this file (default: a generated file of random data)
  --size BYTES    size of the generated file, e.g. 1MiB or 2G (default 64MiB)
  --peers N       receivers per transport, 1 to 64 (default 4)
  --transport T   shm, socket or both (default both)
  --timeout S     give up on a transfer after S seconds (default 120)
  --json          JSON lines on stdout: progress, a result per transport, summary
  --quiet         print nothing but errors
  -h, --help      show this help
`;

const spec = commandSpec("p2m demo", USAGE, {
  strings: ["file", "size", "peers", "transport", "timeout"],
  shared: REPORT_OPTIONS,
});

/** One line of the demo's table. */
interface Row {
  transport: Transport;
  peers: number;
  bytes: number;
  seconds: number;
  gibps: number;
  verified: number;
  errors: string[];
}

async function main(): Promise<number> {
  const { values } = parseCommand(spec, Deno.args);
  if (maybeHelp(values, USAGE)) return 0;
  if (values.file !== undefined && values.size !== undefined) {
    throw new UsageError("give --file or --size, not both");
  }
  const size = sizeFlag(values.size, "size", 64 * 2 ** 20, { max: 2 ** 40 });
  const peers = intFlag(values.peers, "peers", 4, { min: 1, max: 64 });
  const timeoutSeconds = secondsFlag(values.timeout, "timeout", 120, { min: 1 });
  const transports = transportFlag(values.transport);
  const reporter = new Reporter(values);

  const work = await Deno.makeTempDir({ prefix: "p2m-demo-" });
  const removeWork = () => Deno.remove(work, { recursive: true }).catch(() => {});
  onInterrupt(removeWork);
  try {
    const { file, expected } = await source(values.file, size, work);
    reporter.info(
      `p2m demo: ${formatBytes(expected.size)} to ${peers} receiver subprocesses over ${
        transports.join(" and ")
      }`,
    );
    const rows: Row[] = [];
    for (const transport of transports) {
      const label = `${transport.padEnd(6)} x${peers}`;
      const progress = reporter.progress(label, peers * expected.size);
      const outDir = `${work}/${transport}`;
      const result = await runCopy({
        method: transport,
        file,
        peers,
        outDir,
        workDir: work,
        tag: `demo-${Deno.pid}-${transport}`,
        timeoutSeconds,
        onProgress: (bytes) => progress.update(bytes),
      }, expected);
      await Deno.remove(outDir, { recursive: true });
      const row: Row = {
        transport,
        peers,
        bytes: expected.size,
        seconds: result.seconds,
        gibps: gibPerSecond(peers * expected.size, result.seconds),
        verified: result.verified,
        errors: result.errors,
      };
      rows.push(row);
      reporter.event("result", { ...row });
      for (const error of result.errors) reporter.error(`${transport}: ${error}`);
    }
    reporter.info(new TextBlock(["", ...table(rows).lines]));
    const ok = rows.every((row) => row.verified === row.peers && row.errors.length === 0);
    reporter.event("summary", { ok, rows });
    if (!ok) reporter.error("some copies failed; see above");
    return ok ? 0 : 1;
  } finally {
    await removeWork();
  }
}

/** The file to send: the user's, or a new random one in `work`. */
async function source(
  path: string | undefined,
  size: number,
  work: string,
): Promise<{ file: string; expected: Expected }> {
  if (path === undefined) {
    const file = `${work}/sample-${formatBytes(size).replace(/[ .]/g, "")}.bin`;
    return { file, expected: await writeRandomFile(file, size) };
  }
  const file = await Deno.realPath(path).catch((error) => {
    throw new P2mError(`cannot open ${path}: no such file or directory`, { cause: error });
  });
  const stat = await Deno.stat(file);
  if (!stat.isFile) throw new P2mError(`cannot send ${path}: not a regular file`);
  return { file, expected: { size: stat.size, digest: await fileDigest(file) } };
}

function transportFlag(value: string | undefined): readonly Transport[] {
  if (value === undefined || value === "both") return TRANSPORTS;
  if ((TRANSPORTS as readonly string[]).includes(value)) return [value as Transport];
  throw new UsageError(`--transport must be shm, socket or both, not '${value}'`);
}

function table(rows: Row[]): TextBlock {
  return formatTable(
    ["transport", "peers", "size", "seconds", "aggregate", "verified"],
    rows.map((row) => [
      row.transport,
      String(row.peers),
      formatBytes(row.bytes),
      row.seconds.toFixed(3),
      `${row.gibps.toFixed(2)} GiB/s`,
      `${row.verified}/${row.peers}`,
    ]),
  );
}

if (import.meta.main) await runMain(spec, Deno.args, main);
