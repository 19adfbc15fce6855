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
import { debugTrace, describeFailure, UsageError } from "./errors.ts";
import { escapeControls } from "./format.ts";
import { abortAllOutputs } from "./output.ts";
import { jsonLine, Reporter, writeText } from "./report.ts";

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

/**
 * Joins `--flag VALUE` into `--flag=VALUE` for string options whose value
 * starts with '-' (`--peers -1`), so that the flag's own check names the
 * valid range instead of Node's "argument is ambiguous". A string option
 * followed by nothing, or by another known option, needs a value.
 */
function joinDashValues(args: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    const name = /^--([^=]+)$/.exec(arg)?.[1];
    if (name === undefined || options[name]?.type !== "string") {
      out.push(arg);
      continue;
    }
    const next = args[i + 1];
    if (next === undefined || isKnownOption(next, options)) {
      throw new UsageError(`--${name} needs a value`);
    }
    out.push(`--${name}=${next}`);
    i++;
  }
  return out;
}

function isKnownOption(arg: string, options: Options): boolean {
  const long = /^--([^=]+)/.exec(arg)?.[1];
  if (long !== undefined) return long in options;
  const short = /^-([^-])$/.exec(arg)?.[1];
  return short !== undefined && Object.values(options).some((o) => o.short === short);
}

/** Parses `args` for a command; throws UsageError on a bad command line. */
export function parseCommand<O extends Options>(
  spec: CommandSpec<O>,
  args: string[],
): ParsedCommand<O> {
  const options = { ...spec.options, ...COMMON };
  let parsed: ParsedCommand<O>;
  try {
    parsed = parseArgs<ParseConfig<O>>({
      args: joinDashValues(args, options),
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message.replace(/\. To specify a positional.*$/s, ""), {
      cause: error,
    });
  }
  const max = spec.positionals?.length ?? 0;
  const { help } = parsed.values as { help?: boolean };
  if (!help && parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[max]}'`);
  }
  return parsed;
}

/**
 * The number grammar of every p2m flag, one form per kind (printed by
 * `--help` through {@linkcode NUMBER_HELP}):
 *
 * - a whole number (`N`): decimal digits only (`4`, `128`);
 * - seconds (`S`): decimal digits with an optional fraction (`5`, `0.5`);
 * - a size in bytes (`B`): a whole number of bytes (`4096`), or a decimal
 *   with a unit (`64K`, `1.5MiB`, `2G`): K, M, G, T and KiB ... TiB are
 *   powers of 1024, KB ... TB powers of 1000; the result is rounded to a
 *   whole byte.
 *
 * No sign, no spaces, no hex (`0x10`), no exponent (`1e3`). A value out of
 * the flag's range is refused with a message naming the range. 0 is in
 * range only where the flag allows it explicitly (`zero`), and --help says
 * what it means there.
 */
export interface FlagRange {
  /** Smallest value allowed (besides 0 with `zero`). */
  min?: number;
  /** Largest value allowed. */
  max?: number;
  /** If set, 0 is also allowed and means this (e.g. "no limit"). */
  zero?: string;
}

/** The `--help` paragraph that explains the number grammar. */
export const NUMBER_HELP = `
Numbers: N is a whole number (4); S is seconds, a decimal (5, 0.5); B is
bytes, plain (4096) or with a unit (64K, 1.5M, 2GiB; K M G T = KiB MiB GiB
TiB, KB MB GB TB = powers of 1000). No signs, spaces, hex or exponents.
0 is accepted only where an option says what it means.
`;

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
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** One kind of number: its form, its default range and how its message reads. */
interface NumberKind {
  /** "a whole number", "a number of seconds", "a size". */
  noun: string;
  /** After the range: the unit, e.g. " bytes". */
  unit: string;
  /** After the range and unit: examples of the form. */
  examples: string;
  /** The range when a flag gives none. */
  min: number;
  max: number;
  /** The value, NaN if `text` is not of this form; may be fractional (rounded later). */
  parse(text: string): number;
  /** Whole values only (the parsed value is rounded). */
  whole: boolean;
}

const WHOLE: NumberKind = {
  noun: "a whole number",
  unit: "",
  examples: "",
  min: 1,
  max: Number.MAX_SAFE_INTEGER,
  parse: (text) => /^[0-9]+$/.test(text) ? Number(text) : NaN,
  whole: true,
};

const SECONDS: NumberKind = {
  noun: "a number of seconds",
  unit: "",
  examples: " (e.g. 5 or 0.5)",
  min: 0.1,
  max: 86_400,
  parse: (text) => /^[0-9]+(?:\.[0-9]+)?$/.test(text) ? Number(text) : NaN,
  whole: false,
};

const SIZE: NumberKind = {
  noun: "a size",
  unit: " bytes",
  examples: " (e.g. 4096, 64K, 1.5M)",
  min: 0,
  max: Number.MAX_SAFE_INTEGER,
  parse(text) {
    const match = /^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$/.exec(text);
    const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
    // A fraction needs a unit: bytes are whole.
    if (!match || !unit || (unit === 1 && match[1].includes("."))) return NaN;
    return Number(match[1]) * unit;
  },
  whole: true,
};

/** Checks one flag's value against its kind and range, or throws UsageError. */
function numberFlag(
  kind: NumberKind,
  value: string | undefined,
  flag: string,
  fallback: number,
  range: FlagRange,
): number {
  if (value === undefined) return fallback;
  const { min = kind.min, max = kind.max } = range;
  const exact = kind.parse(value);
  const n = kind.whole ? Math.round(exact) : exact;
  if (n === 0 && range.zero) return 0;
  if (!Number.isFinite(n) || n > Number.MAX_SAFE_INTEGER || exact < min || n > max) {
    const zero = range.zero ? `, or 0 for ${range.zero}` : "";
    const unit = min === 1 ? kind.unit.replace(/s$/, "") : kind.unit;
    const span = max >= Number.MAX_SAFE_INTEGER
      ? `of at least ${min}${unit}`
      : `from ${min} to ${max}${kind.unit}`;
    throw new UsageError(
      `--${flag} must be ${kind.noun} ${span}${zero}${kind.examples}, not '${value}'`,
    );
  }
  return n;
}

/** Parses one flag's value (undefined: `fallback`) within `range`, or throws UsageError. */
export type FlagParser = (
  value: string | undefined,
  flag: string,
  fallback: number,
  range?: FlagRange,
) => number;

function parserFor(kind: NumberKind): FlagParser {
  return (value, flag, fallback, range = {}) => numberFlag(kind, value, flag, fallback, range);
}

/** A whole-number flag (default range 1 up). */
export const intFlag: FlagParser = parserFor(WHOLE);
/** A seconds flag: a decimal (default range 0.1 to 86400). */
export const secondsFlag: FlagParser = parserFor(SECONDS);
/** A byte-size flag such as `4096`, `256K` or `1.5MiB` (default range 0 up). */
export const sizeFlag: FlagParser = parserFor(SIZE);

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
    code = failWith(spec, args, error, debug);
  }
  Deno.exit(code);
}

/**
 * The process edge of the error rule in core/errors.ts: maps what `main`
 * threw to one escaped line on stderr (plus usage for a UsageError, an
 * `error` event with --json, the stack and causes with --debug) and
 * returns the exit code.
 */
function failWith(
  spec: { name: string; usage: string },
  args: string[],
  error: unknown,
  debug: boolean,
): number {
  const failure = describeFailure(error);
  const line = escapeControls(failure.message);
  const text = error instanceof UsageError
    ? `${spec.name}: ${line}\n\n${spec.usage.trim()}\n`
    : `p2m: ${line}\n`;
  if (args.includes("--json")) {
    const event = { event: "error", time: Date.now(), message: failure.message };
    writeText(Deno.stdout, jsonLine(event) + "\n");
  }
  writeText(Deno.stderr, text);
  if (debug) writeText(Deno.stderr, debugTrace(error) + "\n");
  return failure.exitCode;
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
  /** `--limit-rate`, bytes per second, at least 1 (0: the flag was not given, no limit). */
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
    // 0 is the internal "no limit" (the flag left out); a rate that rounds
    // to nothing is refused rather than silently meaning no limit.
    limitRate: sizeFlag(values["limit-rate"], "limit-rate", 0, { min: 1 }),
  };
}

/** What a receiver's shared flags mean, checked. */
export interface ReceivingFlags {
  /** `--out`, as given. */
  out: string | undefined;
  /** `--timeout`, seconds: at least 0.1 (0 would always fail). */
  timeoutSeconds: number;
  /** `--force`. */
  force: boolean;
}

/** Parses the flags of {@linkcode RECEIVING_OPTIONS}, or throws UsageError. */
export function receivingFlags(
  values: { out?: string; timeout?: string; force?: boolean },
  defaultTimeout: number,
): ReceivingFlags {
  return {
    out: values.out,
    timeoutSeconds: secondsFlag(values.timeout, "timeout", defaultTimeout),
    force: values.force ?? false,
  };
}
