/**
 * The registry of synchronous cleanups that run when a process is aborted
 * (a signal, a dead parent, a fatal error): {@linkcode onAbort} and
 * {@linkcode runAbortCleanups}.
 *
 * It lives apart from core/cli.ts so that a process that parses no
 * command line (the socket worker, socket/worker_main.ts) can use it
 * without loading the flag parser and everything it imports; core/cli.ts
 * builds `runCleanups` on it.
 *
 * @module
 */

const cleanups = new Set<() => void>();

/** Registers a synchronous cleanup to run if the process is interrupted; returns its removal. */
export function onAbort(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Runs every registered cleanup once (best effort) and forgets them. */
export function runAbortCleanups(): void {
  for (const cleanup of [...cleanups]) {
    try {
      cleanup();
    } catch { /* best effort while aborting */ }
  }
  cleanups.clear();
}
