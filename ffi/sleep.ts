/**
 * A timer without `setTimeout`: `poll(NULL, 0, ms)` on Deno's blocking
 * pool, whose promise resolves on a turn of the event loop like a timer's.
 *
 * Why: in Deno 2.9 the first `setTimeout` of a process loads the Node
 * compatibility layer's timers (`ext:deno_node/timers.ts` with its
 * `async_hooks`, `errors` and `validators`), about 11 ms of CPU. Measured
 * here, medians of 20 interleaved runs: a script that awaits one
 * `setTimeout(0)` costs 43.5 ms of CPU against 31.9 ms for an empty one;
 * awaiting this sleep costs 32.6 ms. Every p2m party waits at least once,
 * and a transfer to 16 receivers starts 17 of them.
 *
 * @module
 */
import { libc } from "./libc.ts";

/**
 * Resolves after `ms` milliseconds, at least one. The floor matters. With
 * `poll(…, 0)`, shm receivers that yielded every 200 ms sometimes never
 * saw the SIGINT or SIGTERM sent to them: 3 cells of the fault matrix
 * verified instead of exiting 130/143. Our reading is that a zero-length
 * call can complete before the event loop parks in the runtime's I/O
 * driver, where signals are picked up. With one millisecond the matrix
 * passed in every run since.
 */
export async function sleepOffThread(ms: number): Promise<void> {
  // Should a signal be handled on the pool thread, poll ends early
  // (EINTR): sleep again until the time is up.
  const due = performance.now() + Math.max(1, ms);
  for (let left = due - performance.now(); left > 0; left = due - performance.now()) {
    await libc().poll_nonblocking(null, 0n, Math.ceil(left));
  }
}
