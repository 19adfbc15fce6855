/**
 * The one timer promise p2m uses, and the one cancellable alarm built on
 * it. Waiting through the event loop (rather than in a blocking call) is
 * what lets signal handlers run.
 *
 * With `--allow-ffi`, up to {@linkcode OFF_THREAD_WAITS} waits at a time
 * sleep on Deno's blocking pool ({@link ../ffi/sleep.ts}), which spares
 * each process the ~11 ms of CPU its first `setTimeout` costs. Waits
 * beyond those (tests, tools) take `setTimeout`, so delays never hold
 * more than two pool threads.
 *
 * @module
 */
import { sleepOffThread } from "../ffi/sleep.ts";

/**
 * Most waits that sleep on the blocking pool at once. The pool has 32
 * threads, shared with async file operations; the team's measurements say
 * to keep a process's parked calls to one or two.
 */
export const OFF_THREAD_WAITS = 2;

let offThread: boolean | undefined;
let sleeping = 0;

/** Resolves after `ms` milliseconds (0: on the next turn of the event loop). */
export function delay(ms: number): Promise<void> {
  offThread ??= Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  if (!offThread || sleeping >= OFF_THREAD_WAITS) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
  sleeping++;
  return sleepOffThread(ms).finally(() => sleeping--);
}

/** A pending {@linkcode alarm}. */
export interface Alarm {
  /** Whether it went off. */
  readonly fired: boolean;
  /** Stops it; it never goes off after this. */
  cancel(): void;
}

/**
 * Calls `fire` once, `ms` milliseconds from now, unless cancelled first:
 * a `setTimeout` made of {@linkcode delay}s of at most `sliceMs`, so a
 * cancelled alarm lets go of its wait within one slice.
 */
export function alarm(ms: number, fire: () => void, sliceMs = 100): Alarm {
  const due = performance.now() + ms;
  const state = { fired: false, cancelled: false };
  (async () => {
    // At least one wait, so that `fire` never runs inside alarm() itself.
    let left = ms;
    do {
      await delay(Math.min(Math.max(left, 0), sliceMs));
      left = due - performance.now();
    } while (left > 0 && !state.cancelled);
    if (state.cancelled) return;
    state.fired = true;
    fire();
  })();
  return {
    get fired() {
      return state.fired;
    },
    cancel() {
      state.cancelled = true;
    },
  };
}
