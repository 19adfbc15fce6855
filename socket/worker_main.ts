/**
 * The socket worker's own entry point: what the server spawns for each
 * peer (socket/worker_handle.ts).
 *
 * A worker parses no command line, so it does not load socket.ts with the
 * server, the client and the command-line parser behind it: 21 modules
 * instead of 55. Measured on this 2-vCPU VM, 25 interleaved runs, medians
 * of the process's CPU until it waits for its configuration:
 * `socket.ts worker` 63.8 ms, this entry 32.6 ms (`deno run` of an empty
 * script: 28.8 ms). With 16 peers that is half a second of CPU less per
 * transfer.
 *
 * It keeps p2m's process conventions: SIGINT/SIGTERM run the abort
 * cleanups (core/cleanups.ts: the one-time socket is unlinked) and exit
 * 130/143; a failure is one line on stderr and exit 1 (the parent learns
 * why from the worker's `error` report on stdout).
 *
 * @module
 */
import { runAbortCleanups } from "../core/cleanups.ts";
import { describeFailure } from "../core/errors.ts";
import { escapeControls } from "../core/format.ts";
import { workerMain } from "./worker.ts";

/** Exit codes after a signal, as core/cli.ts gives them. */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

const encoder = new TextEncoder();

function say(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(`p2m: ${escapeControls(text)}\n`));
  } catch { /* the parent took the pipe with it */ }
}

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      runAbortCleanups();
      say(`interrupted by ${signal}; aborted`);
      Deno.exit(SIGNAL_EXIT[signal]);
    });
  }
  let code: number;
  try {
    code = await workerMain();
  } catch (error) {
    runAbortCleanups();
    const failure = describeFailure(error);
    say(failure.message);
    code = failure.exitCode;
  }
  Deno.exit(code);
}
