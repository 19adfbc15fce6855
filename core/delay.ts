/**
 * The one timer promise p2m uses. Waiting through the event loop (rather
 * than in a blocking call) is what lets signal handlers run.
 *
 * @module
 */

/** Resolves after `ms` milliseconds (0: on the next turn of the event loop). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
