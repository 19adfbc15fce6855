/**
 * Command-line conventions shared by every p2m command.
 *
 * - core/args.ts's strict parser (`parseArgs`' grammar without loading
 *   `node:util`); every command has `--help`.
 *   A command's flags are listed by name and type in its
 *   {@linkcode commandSpec}, plus the table it shares with its kind
 *   ({@linkcode SENDING_OPTIONS}, {@linkcode RECEIVING_OPTIONS}).
 *   A value that starts with '-' (`--peers -1`) is the flag's value, so
 *   its own check answers.
 * - Numbers (`N`, `S`, `B`) have one grammar, in core/flags.ts
 *   (re-exported here); the shared sender and receiver flags are read by
 *   {@linkcode sendingFlags} and {@linkcode receivingFlags}; `--group`,
 *   which every sender and receiver has, by {@linkcode groupFlag}.
 * - A bad command line prints a one-line reason and the usage, exit 2.
 * - A run-time failure prints one escaped line, exit 1; `--debug` adds the
 *   stack and its causes. {@linkcode runMain} is the process edge of the
 *   error rule in core/errors.ts: the one place a failure becomes output.
 * - SIGINT and SIGTERM abort cleanly: unfinished outputs are removed,
 *   registered cleanups run, and the exit code is 130 or 143.
 *
 * @module
 */
import { FlagError, type FlagOptions, type FlagValues, parseFlags } from "./args.ts";
import { type FormatVersions, versionText } from "./version.ts";
import {
  DEFAULT_DIGEST,
  type DigestAlgorithm,
  ExpectedDigest,
  SELECTABLE_DIGESTS,
} from "./digest.ts";
import { debugTrace, describeFailure, UsageError } from "./errors.ts";
import { escapeControls } from "./format.ts";
import { abortAllOutputs } from "./output.ts";
import { runAbortCleanups } from "./cleanups.ts";
import { secondsFlag, sizeFlag } from "./flags.ts";
import { jsonLine, Reporter, writeText } from "./report.ts";
import { lookupGroup, type UnixGroup } from "../ffi/group.ts";

export {
  type FlagParser,
  type FlagRange,
  intFlag,
  NUMBER_HELP,
  secondsFlag,
  sizeFlag,
} from "./flags.ts";

type Options = FlagOptions;

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

/** A table of flags of one `type`: `{ [name]: { type } }` for each of `names`. */
export function flagsOf<const T extends "string" | "boolean", const N extends string>(
  type: T,
  names: readonly N[],
): { [K in N]: { type: T } } {
  return Object.fromEntries(names.map((name) => [name, { type }])) as { [K in N]: { type: T } };
}

/**
 * A command's spec: its name, help text, positionals, its own flags listed
 * by name (`strings`, `booleans`), and a table it shares with other
 * commands (e.g. {@linkcode SENDING_OPTIONS}).
 */
export function commandSpec<
  const S extends string = never,
  const B extends string = never,
  X extends Options = Record<never, never>,
>(
  name: string,
  usage: string,
  flags: { positionals?: string[]; strings?: readonly S[]; booleans?: readonly B[]; shared?: X },
): CommandSpec<{ [K in S]: { type: "string" } } & { [K in B]: { type: "boolean" } } & X> {
  const options = {
    ...flagsOf("string", flags.strings ?? []),
    ...flagsOf("boolean", flags.booleans ?? []),
    ...flags.shared,
  } as { [K in S]: { type: "string" } } & { [K in B]: { type: "boolean" } } & X;
  return { name, usage, options, positionals: flags.positionals };
}

const COMMON = {
  help: { type: "boolean", short: "h" },
  debug: { type: "boolean" },
} as const satisfies Options;

/** The parsed flags and positionals of a command. */
export type ParsedCommand<O extends Options> = {
  values: FlagValues<O> & FlagValues<typeof COMMON>;
  positionals: string[];
};

/** Parses `args` for a command; throws UsageError on a bad command line. */
export function parseCommand<O extends Options>(
  spec: CommandSpec<O>,
  args: string[],
): ParsedCommand<O> {
  const options = { ...spec.options, ...COMMON };
  let parsed: ParsedCommand<O>;
  try {
    parsed = parseFlags(args, options) as ParsedCommand<O>;
  } catch (error) {
    if (!(error instanceof FlagError)) throw error;
    throw new UsageError(error.message, { cause: error });
  }
  const max = spec.positionals?.length ?? 0;
  const { help } = parsed.values as { help?: boolean };
  if (!help && parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[max]}'`);
  }
  return parsed;
}

export { onAbort } from "./cleanups.ts";

/** Runs every registered cleanup (core/cleanups.ts) and removes unfinished outputs. */
export function runCleanups(): void {
  runAbortCleanups();
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
  spec: { name: string; usage: string; formats?: FormatVersions },
  args: string[],
  main: (debug: boolean) => Promise<number>,
): Promise<never> {
  const debug = args.includes("--debug");
  const flags = args.indexOf("--") < 0 ? args : args.slice(0, args.indexOf("--"));
  if (flags.includes("--version")) {
    console.log(versionText(spec.name, spec.formats));
    Deno.exit(0);
  }
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
  expect: { type: "string" },
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
  if (!(SELECTABLE_DIGESTS as readonly string[]).includes(digest)) {
    throw new UsageError(`--digest must be ${SELECTABLE_DIGESTS.join(", ")}, not '${digest}'`);
  }
  if (values.digest && values["no-verify"]) {
    throw new UsageError("--no-verify sends no digest; drop --digest");
  }
  return {
    digest: values["no-verify"] ? "none" : digest as DigestAlgorithm,
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
  /** `--expect DIGEST`: a digest published elsewhere the copy must match too. */
  expect: ExpectedDigest | undefined;
}

/** Parses the flags of {@linkcode RECEIVING_OPTIONS}, or throws UsageError. */
export function receivingFlags(
  values: { out?: string; timeout?: string; force?: boolean; expect?: string },
  defaultTimeout: number,
): ReceivingFlags {
  let expect: ExpectedDigest | undefined;
  try {
    expect = values.expect === undefined ? undefined : ExpectedDigest.parse(values.expect);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return {
    out: values.out,
    timeoutSeconds: secondsFlag(values.timeout, "timeout", defaultTimeout),
    force: values.force ?? false,
    expect,
  };
}

/** Parses `--group` (a group name or gid that exists here), or throws UsageError. */
export function groupFlag(value: string | undefined): UnixGroup | undefined {
  if (value === undefined) return undefined;
  let group: UnixGroup | undefined;
  try {
    group = value === "" ? undefined : lookupGroup(value);
  } catch (error) {
    throw new UsageError(`--group: ${(error as Error).message}`);
  }
  if (!group) throw new UsageError(`--group: there is no group '${value}' on this system`);
  return group;
}

/** Who owns a segment or a socket file, and its mode bits. */
export interface OwnerBits {
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Mode bits (permissions at least). */
  mode: number;
}

/**
 * What `--group` means to a receiver: why it must not use `what` (a
 * segment, a socket) with these owner bits, or undefined. With `group`,
 * `what` must belong to that group and be closed to users outside it,
 * whoever made it. Without, it must be this user's, and with `closed`
 * also closed to everyone else (0600).
 */
export function ownerProblem(
  what: string,
  owner: OwnerBits,
  group: UnixGroup | undefined,
  closed: boolean,
): string | undefined {
  const mode = (owner.mode & 0o777).toString(8);
  if (group) {
    if (owner.gid !== group.gid) {
      return `${what} belongs to gid ${owner.gid}, not to group ${group.name} ` +
        `(gid ${group.gid}); refusing to trust it`;
    }
    if ((owner.mode & 0o007) !== 0) {
      return `${what} is open to users outside group ${group.name} (mode ${mode}); ` +
        `refusing to trust it`;
    }
    return undefined;
  }
  const uid = Deno.uid();
  if (uid !== null && owner.uid !== uid) {
    return `${what} belongs to uid ${owner.uid}, not ${uid}; refusing to trust it ` +
      `(to receive from another user who shares it with a group, pass --group GROUP)`;
  }
  if (closed && (owner.mode & 0o077) !== 0) {
    return `${what} is open to other users (mode ${mode}); refusing to trust it`;
  }
  return undefined;
}
