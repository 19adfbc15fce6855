/**
 * Errors that p2m shows to a user, and the one place where a failure
 * becomes what the user reads.
 *
 * The rule, for every layer:
 * - An expected failure (missing file, peer gone, digest mismatch, bad
 *   data on the wire) is a {@linkcode P2mError}: its message is one line
 *   for the user, its `exitCode` the process's. The family: UsageError
 *   (exit 2), VerifyError, WireError (core/wire.ts), LibcError
 *   (ffi/errors.ts: function, errno, strerror).
 * - A layer that adds context wraps once and passes `{ cause }`:
 *   `new P2mError(\`cannot finish ${path}: ${osReason(error)}\`, { cause: error })`.
 *   It does not take a P2mError apart by its message and build another:
 *   a P2mError from below is passed on as it is.
 * - Each process edge maps a thrown value to output exactly once, with
 *   {@linkcode describeFailure}: the CLI's main wrapper (core/cli.ts
 *   runMain) prints one line and exits with the error's code. An error
 *   that is not a P2mError is a bug: it says so, and `--debug` prints the
 *   stack and the chain of causes.
 *
 * @module
 */

/** Exit code for a run that failed at run time. */
export const EXIT_FAILURE = 1;
/** Exit code for a bad command line. */
export const EXIT_USAGE = 2;

/** An expected failure with a one-line message for the user. */
export class P2mError extends Error {
  /** The process exit code this failure maps to. */
  readonly exitCode: number;

  /** Creates an error whose message is shown to the user as is. */
  constructor(message: string, options?: ErrorOptions & { exitCode?: number }) {
    super(message, options);
    this.name = "P2mError";
    this.exitCode = options?.exitCode ?? EXIT_FAILURE;
  }
}

/** A bad command line: the CLI prints the reason plus usage and exits 2. */
export class UsageError extends P2mError {
  /** Creates a usage error with a one-line reason. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, { ...options, exitCode: EXIT_USAGE });
    this.name = "UsageError";
  }
}

/** The received bytes do not match the sender's digest. */
export class VerifyError extends P2mError {
  /** Creates a verification error naming both digests. */
  constructor(expected: string, actual: string) {
    super(`digest mismatch: expected ${expected}, got ${actual}; copy discarded`);
    this.name = "VerifyError";
  }
}

/** Returns a one-line description of any thrown value. */
export function describeError(error: unknown): string {
  if (error instanceof P2mError) return error.message;
  if (error instanceof Deno.errors.NotFound) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/** What a process edge shows for a failure, and how the process exits. */
export interface Failure {
  /** One line for the user (not yet escaped for a terminal). */
  message: string;
  /** The exit code. */
  exitCode: number;
  /** True when the failure is not an expected one: a bug in p2m. */
  bug: boolean;
}

/**
 * The one mapping from a thrown value to the user's message and exit code:
 * a P2mError (LibcError included: "fn(what): strerror (errno N)") as it
 * is; an OS error Deno raised, which no layer gave context, by its reason;
 * anything else as a bug.
 */
export function describeFailure(error: unknown): Failure {
  if (error instanceof P2mError) {
    return { message: error.message, exitCode: error.exitCode, bug: false };
  }
  if (isDenoOsError(error)) {
    return { message: osText(error), exitCode: EXIT_FAILURE, bug: false };
  }
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return {
    message: `internal error (a bug in p2m): ${text}; --debug shows where`,
    exitCode: EXIT_FAILURE,
    bug: true,
  };
}

/** The stack of an error and of each of its causes, for `--debug`. */
export function debugTrace(error: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  for (let e: unknown = error; e !== undefined && !seen.has(e); e = (e as Error).cause) {
    seen.add(e);
    const text = e instanceof Error ? e.stack ?? `${e.name}: ${e.message}` : String(e);
    parts.push(parts.length === 0 ? text : `caused by: ${text}`);
    if (!(e instanceof Error)) break;
  }
  return parts.join("\n");
}

function isDenoOsError(error: unknown): error is Error {
  if (!(error instanceof Error)) return false;
  return Object.values(Deno.errors).some((kind) => error instanceof kind);
}

function osText(error: Error): string {
  const reason = error.message.replace(/\s*\(os error \d+\)/, "");
  return reason.charAt(0).toLowerCase() + reason.slice(1);
}
