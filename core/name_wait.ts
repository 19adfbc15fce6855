/**
 * The wait between two looks for a name that another process is about to
 * create: a shm receiver's for its sender's segment, a socket client's for
 * its server's socket. {@linkcode NameWait}.
 *
 * @module
 */
import { DirectoryWatch } from "../ffi/directory_watch.ts";
import { LibcError } from "../ffi/errors.ts";
import { delay } from "./delay.ts";

/**
 * Longest single wait for a change (ms): a caller's deadline, and anything
 * else it looks at between looks, is looked at this often.
 */
export const NAME_WAIT_SLICE_MS = 250;

/**
 * Waits for the next look at `path` to be worth making. A change that
 * comes through the file system (the name created, renamed into place,
 * removed, chmod'ed, chown'ed) is waited for with inotify and uses no CPU;
 * any other (a mapping or a listener being set up) is looked at again
 * every `pollMs`. So is everything, should inotify not be available.
 */
export class NameWait implements Disposable {
  readonly #dir: string;
  readonly #name: string;
  readonly #pollMs: number;
  /** Opened at the first wait for a change; null if inotify cannot be had. */
  #watch: DirectoryWatch | null | undefined;

  constructor(path: string, pollMs: number) {
    const slash = path.lastIndexOf("/");
    this.#dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
    this.#name = path.slice(slash + 1);
    this.#pollMs = pollMs;
  }

  /**
   * Waits at most `maxMs` (and {@linkcode NAME_WAIT_SLICE_MS}). With
   * `change`, for a change of the name; the first such call only starts
   * watching and returns at once, so that a change made between the
   * caller's last look and the watch is seen by its next look. Without,
   * or with no inotify, for `pollMs`.
   */
  async next(change: boolean, maxMs: number): Promise<void> {
    if (change && this.#watch === undefined) {
      this.#watch = openWatch(this.#dir);
      if (this.#watch) return;
    }
    const ms = Math.max(0, Math.min(maxMs, NAME_WAIT_SLICE_MS));
    if (change && this.#watch) await this.#watch.waitFor(this.#name, ms);
    else await delay(Math.min(ms, this.#pollMs));
  }

  /** Stops watching. */
  close(): void {
    this.#watch?.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A watch of `dir`, or null if inotify refuses (its limits, a missing directory). */
function openWatch(dir: string): DirectoryWatch | null {
  try {
    return DirectoryWatch.open(dir);
  } catch (error) {
    if (error instanceof LibcError) return null;
    throw error;
  }
}
