/**
 * Errors from libc calls, with the function name, errno and its text.
 *
 * errno is thread-local and overwritten by any later libc use on the same
 * thread, so it is read only right after a synchronous call, before any
 * `await` (measured: always right then, often wrong after an await), and
 * with a single load ({@linkcode errno}, ffi/libc.ts).
 * Nonblocking FFI calls run on other threads; their errno is never read.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { errno, libc } from "./libc.ts";

/** A failed libc call: which function, errno and strerror text. */
export class LibcError extends P2mError {
  /** The C function that failed. */
  readonly fn: string;
  /** The errno value it left. */
  readonly errno: number;
  /** strerror text alone, lower-case first letter ("no such file or directory"). */
  readonly reason: string;

  /** Creates an error for `fn` failing with `errno`; `what` names the object. */
  constructor(fn: string, errno: number, what?: string) {
    const text = strerror(errno);
    super(`${fn}(${what ?? ""}): ${text} (errno ${errno})`);
    this.name = "LibcError";
    this.fn = fn;
    this.errno = errno;
    this.reason = text.charAt(0).toLowerCase() + text.slice(1);
  }
}

export { errno };

/** The text libc gives for an errno value. */
export function strerror(code: number): string {
  const ptr = libc().strerror(code);
  return ptr === null ? `error ${code}` : Deno.UnsafePointerView.getCString(ptr);
}

/** Throws a LibcError for `fn` with the current errno. */
export function fail(fn: string, what?: string): never {
  throw new LibcError(fn, errno(), what);
}
