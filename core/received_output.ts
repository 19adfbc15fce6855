/**
 * What an output being received has in common, whether one file
 * (`OutputFile` in core/output.ts) or a tree (`TreeOutput` in
 * core/tree_output.ts): it is in its module's live set, which a signal
 * handler discards, from creation until it is committed or discarded; it is
 * discarded at most once; and close() and `using` discard it unless it was
 * committed.
 *
 * @module
 */

/** An output that is committed under its final name or discarded, once. */
export abstract class ReceivedOutput implements Disposable {
  readonly #live: Set<ReceivedOutput>;
  #settled = false;

  /** Registers the new output in `live` (its module's set of unfinished outputs). */
  protected constructor(live: Set<ReceivedOutput>) {
    this.#live = live;
    live.add(this);
  }

  /** Discards every output still in `live` (for signal handlers). */
  static abortAll(live: Set<ReceivedOutput>): void {
    for (const output of [...live]) output.abort();
  }

  /** Whether it was committed or discarded already. */
  protected get settled(): boolean {
    return this.#settled;
  }

  /** Marks it committed: it leaves the live set, and abort() no longer discards it. */
  protected settle(): void {
    this.#settled = true;
    this.#live.delete(this);
  }

  /** Discards it unless it was committed or discarded already. Safe to call twice. */
  abort(): void {
    if (this.#settled) return;
    this.settle();
    this.discard();
  }

  /** Closes what is open and removes what was written (temp file, staging directory). */
  protected abstract discard(): void;

  /** Same as {@linkcode abort}: an output that was not committed is discarded. */
  close(): void {
    this.abort();
  }

  /** Discards it unless it was committed. */
  [Symbol.dispose](): void {
    this.abort();
  }
}
