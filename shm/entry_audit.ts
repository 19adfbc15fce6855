/**
 * The sender's own record of what it saw in each receiver entry, so that it
 * never trusts the table: {@linkcode EntryAudit}.
 *
 * Any process of the same user can write the table. So the sender counts a
 * receiver as verified only when everything it can see agrees: the entry
 * moved through its states in an order the protocol allows (as far as the
 * sender observed it), its cursor never went back and is at the end, the pid
 * is the one recorded when it attached, and the verdict came after the
 * sender published the digest. States only the sender writes (died,
 * stalled) must be ones it wrote. Anything else is a corrupt segment.
 *
 * @module
 */
import { formatBytes } from "../core/mod.ts";
import { PEER_STATE_TEXT, ReceiverState } from "./layout.ts";

/** What the sender knows of the transfer when it looks at an entry. */
export interface SenderView {
  /** Chunks it published. */
  published: number;
  /** Chunks in the file. */
  total: number;
  /** Whether it has published the digest (state Final or later). */
  digestPublished: boolean;
  /** Bytes per chunk, for messages. */
  chunkSize: number;
  /** File size, for messages. */
  fileSize: number;
}

/** What one entry's words say. */
export interface EntryWords {
  /** State word. */
  state: number;
  /** Cursor word. */
  cursor: number;
  /** Pid word. */
  pid: number;
}

interface Observed {
  state: number;
  cursor: number;
  pid: number;
  /** A state the sender itself moved the entry to (died, stalled). */
  senderWrote?: number;
}

/** The states a receiver moves its own entry to from Attached. */
const RECEIVER_VERDICTS: readonly number[] = [
  ReceiverState.Verified,
  ReceiverState.Failed,
  ReceiverState.Left,
];

/** Per-entry observations; {@linkcode EntryAudit.observe} returns the cause of an inconsistency. */
export class EntryAudit {
  #seen: Observed[] = [];

  /** The pid recorded when entry `index` was first seen attached (0 if never). */
  pid(index: number): number {
    return this.#seen[index]?.pid ?? 0;
  }

  /** Records that the sender itself moved entry `index` to `state` (died or stalled). */
  senderMoved(index: number, state: number): void {
    const seen = this.#seen[index];
    if (seen) {
      seen.senderWrote = state;
      seen.state = state;
    }
  }

  /**
   * Checks entry `index`'s words against what was seen before and what the
   * sender knows; records them. Returns undefined if consistent, otherwise
   * the cause ("receiver #0's entry says verified at 107 MiB of 256 MiB").
   */
  observe(index: number, words: EntryWords, view: SenderView): string | undefined {
    const who = `receiver #${index}'s entry`;
    const text = (state: number) => PEER_STATE_TEXT[state] ?? `state ${state}`;
    const seen = this.#seen[index];
    const before = seen?.state ?? ReceiverState.Free;
    if (PEER_STATE_TEXT[words.state] === undefined) return `${who} holds ${text(words.state)}`;
    if (words.state === ReceiverState.Free) {
      return before === ReceiverState.Free ? undefined : `${who} went back to free`;
    }
    if (words.cursor < 0 || words.cursor > view.published) {
      return `${who} has consumed ${words.cursor} chunks of the ${view.published} published`;
    }
    if (seen && words.cursor < seen.cursor) {
      return `${who}'s cursor went back from ${seen.cursor} to ${words.cursor}`;
    }
    if (seen && seen.pid !== words.pid) {
      return `${who}'s pid changed from ${seen.pid} to ${words.pid}`;
    }
    const senderOnly = words.state === ReceiverState.Dead || words.state === ReceiverState.Stalled;
    if (senderOnly && seen?.senderWrote !== words.state) {
      return `${who} says ${text(words.state)}, which only the sender writes`;
    }
    if (words.state !== before) {
      const allowed = before === ReceiverState.Free
        ? words.state === ReceiverState.Attached || RECEIVER_VERDICTS.includes(words.state)
        : before === ReceiverState.Attached && RECEIVER_VERDICTS.includes(words.state);
      if (!allowed) return `${who} went from ${text(before)} to ${text(words.state)}`;
    }
    if (!seen && words.pid <= 0) return `${who} says ${text(words.state)} but names no pid`;
    if (words.state === ReceiverState.Verified && words.state !== before) {
      if (!view.digestPublished || words.cursor !== view.total) {
        const at = Math.min(view.fileSize, words.cursor * view.chunkSize);
        return `${who} says verified at ${formatBytes(at)} of ${formatBytes(view.fileSize)}` +
          (view.digestPublished ? "" : ", before the digest was published");
      }
    }
    this.#seen[index] = { ...words, senderWrote: seen?.senderWrote };
    return undefined;
  }
}
