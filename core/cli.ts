/**
 * Command-line conventions shared by every p2m command.
 *
 * - `node:util` `parseArgs` in strict mode; every command has `--help`.
 * - A bad command line prints a one-line reason and the usage, exit 2.
 * - A run-time failure prints one line, exit 1; `--debug` adds the stack.
 * - SIGINT and SIGTERM abort cleanly: unfinished outputs are removed,
 *   registered cleanups run, and the exit code is 130 or 143.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { DEFAULT_DIGEST, type DigestAlgorithm, isDigestAlgorithm } from "./digest.ts";
import { describeError, EXIT_FAILURE, P2mError, UsageError } from "./errors.ts";
import { abortAllOutputs } from "./output.ts";
import { Reporter } from "./report.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** A command's name, help text and options. */
export interface CommandSpec<O extends Options> {
  /** Full command name, e.g. `p2m socket server`. */
  name: string;
  /** Help text printed by `--help` and after usage errors. */
  usage: string;
  /** Options in `parseArgs` form (`help` and `debug` are added). */
  options: O;
  /** Names of the positional arguments, in order. */
  positionals?: string[];
}

const COMMON = {
  help: { type: "boolean", short: "h" },
  debug: { type: "boolean" },
} as const satisfies Options;

type ParseConfig<O extends Options> = {
  args: string[];
  options: O & typeof COMMON;
  allowPositionals: true;
  strict: true;
};
/** The parsed flags and positionals of a command. */
export type ParsedCommand<O extends Options> = ReturnType<typeof parseArgs<ParseConfig<O>>>;

/** Parses `args` for a command; throws UsageError on a bad command line. */
export function parseCommand<O extends Options>(
  spec: CommandSpec<O>,
  args: string[],
): ParsedCommand<O> {
  let parsed: ParsedCommand<O>;
  try {
    parsed = parseArgs<ParseConfig<O>>({
      args,
      options: { ...spec.options, ...COMMON },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\. To specify a positional.*$/s, ""));
  }
  const max = spec.positionals?.length ?? 0;
  const { help } = parsed.values as { help?: boolean };
  if (!help && parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[max]}'`);
  }
  return parsed;
}

/** Parses an integer flag within bounds, or throws UsageError. */
export function intFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  { min = 0, max = Number.MAX_SAFE_INTEGER } = {},
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${flag} must be a whole number from ${min} to ${max}, not '${value}'`);
  }
  return n;
}

/** Parses a seconds flag (fractions allowed), or throws UsageError. */
export function secondsFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  { min = 0, max = 86_400 } = {},
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(
      `--${flag} must be a number of seconds from ${min} to ${max}, not '${value}'`,
    );
  }
  return n;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

/** Parses a byte size such as `4096`, `256K` or `64MiB`, or throws UsageError. */
export function sizeFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  { min = 0, max = Number.MAX_SAFE_INTEGER } = {},
): number {
  if (value === undefined) return fallback;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
  const n = match && unit ? Math.round(Number(match[1]) * unit) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `--${flag} must be a size from ${min} to ${max} bytes (e.g. 1M), not '${value}'`,
    );
  }
  return n;
}

const cleanups = new Set<() => void>();

/** Registers a synchronous cleanup to run if the process is interrupted. */
export function onAbort(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Runs every registered cleanup and removes unfinished outputs. */
export function runCleanups(): void {
  for (const cleanup of [...cleanups]) {
    try {
      cleanup();
    } catch { /* best effort while aborting */ }
  }
  cleanups.clear();
  abortAllOutputs();
}

const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;
let signalHook: ((signal: Deno.Signal) => void) | undefined;

/**
 * Lets a command handle SIGINT/SIGTERM itself (e.g. a server's graceful
 * stop). Without a hook, a signal aborts at once.
 */
export function onSignal(hook: ((signal: Deno.Signal) => void) | undefined): void {
  signalHook = hook;
}

/** Ends the process after a signal: cleanups, a message, exit 130 or 143. */
export function exitForSignal(signal: "SIGINT" | "SIGTERM"): never {
  runCleanups();
  Deno.stderr.writeSync(new TextEncoder().encode(`p2m: interrupted by ${signal}; aborted\n`));
  Deno.exit(SIGNAL_EXIT[signal]);
}

/**
 * Runs a command's main function with p2m's error and signal conventions,
 * then exits with its code.
 */
export async function runMain(
  spec: { name: string; usage: string },
  args: string[],
  main: (debug: boolean) => Promise<number>,
): Promise<never> {
  const debug = args.includes("--debug");
  // `deno task` runs from the project root; resolve paths where the user was.
  const initCwd = Deno.env.get("INIT_CWD");
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  if (initCwd && Deno.cwd() === root) Deno.chdir(initCwd);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (signalHook) signalHook(signal);
      else exitForSignal(signal);
    });
  }
  let code: number;
  try {
    code = await main(debug);
  } catch (error) {
    runCleanups();
    code = error instanceof P2mError ? error.exitCode : EXIT_FAILURE;
    const text = error instanceof UsageError
      ? `${spec.name}: ${error.message}\n\n${spec.usage.trim()}\n`
      : `p2m: ${describeError(error)}\n`;
    if (args.includes("--json")) {
      const event = { event: "error", time: Date.now(), message: describeError(error) };
      console.log(JSON.stringify(event));
    }
    Deno.stderr.writeSync(new TextEncoder().encode(text));
    if (debug && error instanceof Error && error.stack) console.error(error.stack);
  }
  Deno.exit(code);
}

/** Prints help when asked; returns true if it did. */
export function maybeHelp(values: { help?: boolean }, usage: string): boolean {
  if (!values.help) return false;
  console.log(usage.trim());
  return true;
}

/** `--json` and `--quiet`: every command that reports has them. */
export const REPORT_OPTIONS = {
  json: { type: "boolean" },
  quiet: { type: "boolean" },
} as const satisfies Options;

/** The flags both senders (socket server, shm sender) share. */
export const SENDING_OPTIONS = {
  digest: { type: "string" },
  "no-verify": { type: "boolean" },
  "stall-timeout": { type: "string" },
  "limit-rate": { type: "string" },
  ...REPORT_OPTIONS,
} as const satisfies Options;

/** The flags both receivers (socket client, shm receiver) share. */
export const RECEIVING_OPTIONS = {
  out: { type: "string" },
  timeout: { type: "string" },
  force: { type: "boolean" },
  ...REPORT_OPTIONS,
} as const satisfies Options;

/** Makes the reporter that `--json` / `--quiet` ask for; they exclude each other. */
export function reporterFor(values: { json?: boolean; quiet?: boolean }): Reporter {
  if (values.json && values.quiet) throw new UsageError("--json and --quiet exclude each other");
  return new Reporter(values);
}

/** What a sender's shared flags mean, checked. */
export interface SendingFlags {
  /** The digest to send (`none` with `--no-verify`). */
  digest: DigestAlgorithm;
  /** `--stall-timeout`, seconds (default 10). */
  stallSeconds: number;
  /** `--limit-rate`, bytes per second (0: no limit). */
  limitRate: number;
}

/** Parses the flags of {@linkcode SENDING_OPTIONS}, or throws UsageError. */
export function sendingFlags(values: {
  digest?: string;
  "no-verify"?: boolean;
  "stall-timeout"?: string;
  "limit-rate"?: string;
}): SendingFlags {
  const digest = values.digest ?? DEFAULT_DIGEST;
  if (!isDigestAlgorithm(digest) || digest === "none") {
    throw new UsageError(`--digest must be xxh64 or sha256, not '${digest}'`);
  }
  if (values.digest && values["no-verify"]) {
    throw new UsageError("--no-verify sends no digest; drop --digest");
  }
  return {
    digest: values["no-verify"] ? "none" : digest,
    stallSeconds: secondsFlag(values["stall-timeout"], "stall-timeout", 10, { min: 0.1 }),
    limitRate: sizeFlag(values["limit-rate"], "limit-rate", 0),
  };
}
