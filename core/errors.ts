/**
 * Errors that p2m shows to a user.
 *
 * A {@linkcode P2mError} is an expected failure (missing file, peer gone,
 * digest mismatch). The CLI prints its message on one line and exits with
 * its code; anything else is a bug and prints a stack trace.
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
  constructor(message: string) {
    super(message, { exitCode: EXIT_USAGE });
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
