/**
 * Splitting a byte stream into lines, for the JSON-lines channels between
 * p2m processes (worker reports, child events in tools and tests).
 *
 * @module
 */

/** Longest line kept; a longer one is dropped, since it is no report. */
export const MAX_LINE = 65536;

/**
 * Yields each complete line of `stream` (without its newline), decoding
 * UTF-8 across chunk boundaries. A line longer than {@linkcode MAX_LINE}
 * is dropped. A last line without a newline is yielded at the end.
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, nl);
      pending = pending.slice(nl + 1);
    }
    if (pending.length > MAX_LINE) pending = "";
  }
  pending += decoder.decode();
  if (pending !== "") yield pending;
}
