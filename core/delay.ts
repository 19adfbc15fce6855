/**
 * The one timer promise p2m uses. Waiting through the event loop (rather
 * than in a blocking call) is what lets signal handlers run.
 *
 * With `--allow-ffi`, one wait at a time sleeps on Deno's blocking pool
 * ({@link ../ffi/sleep.ts}), which spares each process the ~11 ms of CPU
 * its first `setTimeout` costs. Waits that overlap it (tests, tools) take
 * `setTimeout`, so delays never hold more than one pool thread.
 *
 * @module
 */
import { sleepOffThread } from "../ffi/sleep.ts";

let offThread: boolean | undefined;
let sleeping = false;

/** Resolves after `ms` milliseconds (0: on the next turn of the event loop). */
export function delay(ms: number): Promise<void> {
  offThread ??= Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  if (!offThread || sleeping) return new Promise((resolve) => setTimeout(resolve, ms));
  sleeping = true;
  return sleepOffThread(ms).finally(() => sleeping = false);
}
