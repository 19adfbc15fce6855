/**
 * Who may remove a segment name, and when: create-or-replace for a sender,
 * remove-stale for anyone who proved a segment's sender dead, and the
 * reaper that removes a killed sender's segment when nobody else comes.
 *
 * The cleaner protocol (iceoryx2's stale-resource cleanup, with flock(2)
 * as the "cleaner token"):
 * - A creator, right after its O_EXCL create, takes a flock LOCK_SH on the
 *   new object and holds it for its whole life, then its liveness lock (OFD
 *   byte 0), then checks that the name is still its own (a cleaner may have
 *   removed the new object in between) and retries if not.
 * - A cleaner leaves an object that is still empty and only just created
 *   alone: its creator may not have taken its hold yet. Otherwise it opens
 *   the name and takes the token, flock LOCK_EX on the object, without
 *   waiting: it cannot get it while the creator lives. It then checks that
 *   no sender holds the liveness lock and that the name still refers to
 *   the inode it holds open, and only then unlinks. While it holds the
 *   object open the inode cannot be reused, and while it holds the token no
 *   other cleaner can unlink that name, so no new segment can appear under
 *   the name between its check and its unlink.
 * - The reaper is `sh`, started by the sender before it creates anything,
 *   blocked on a read of its stdin pipe, which nobody writes. EOF means the
 *   sender exited or died, and with it its LOCK_SH; the reaper then runs the
 *   cleaner steps with util-linux `flock(1)` and `stat(1)`. After a normal
 *   exit the sender has unlinked its name already, and a newer sender's
 *   segment is held by that sender, so the reaper removes nothing else.
 *
 * @module
 */
import { delay, P2mError, type Reporter } from "../core/mod.ts";
import { EACCES, EPERM, LibcError, SharedMemory } from "../ffi/mod.ts";
import { readSenderPid } from "./layout.ts";
import { SENDER_LOCK_BYTE } from "./segment.ts";

/** How long a creator waits for its hold on its own new object (ms). */
const TOKEN_WAIT_MS = 5_000;

/**
 * Removes the segment `memory` (opened by name) if it is proven stale: no
 * sender holds its liveness lock and the name still refers to it. Returns
 * false if it is live, already gone or replaced, or another cleaner is at
 * work (then try again later).
 */
export function removeIfStale(memory: SharedMemory): boolean {
  if (beingCreated(memory)) return false;
  if (!memory.tryLockCleaner()) return false;
  try {
    if (memory.isLocked(SENDER_LOCK_BYTE)) return false;
    if (!memory.stillNamed()) return false;
    return unlinkIfAllowed(memory.name);
  } finally {
    memory.unlockCleaner();
  }
}

/**
 * How long an empty object that nobody holds counts as being created (ms).
 * A creator takes its hold right after its O_EXCL create, microseconds
 * later unless it is descheduled, and sizes the object only after that.
 */
const CREATING_MS = 2_000;

/**
 * Whether `memory` is an object whose creator is between its create and
 * its hold: empty, and younger than {@linkcode CREATING_MS}. The token
 * alone cannot tell, as the creator takes it after the create. Receivers
 * woken by inotify open a new name within microseconds of its creation, and
 * without this rule a crowd of them kept removing every new segment as
 * stale until its sender gave up ("it keeps being replaced"; 2 senders of
 * 20 before 8 receivers, measured). An empty leftover of a creator killed
 * in that instant is removed once it is older.
 */
function beingCreated(memory: SharedMemory): boolean {
  const st = memory.stat();
  const ageMs = Date.now() - Number(st.ctimeNs / 1_000_000n);
  return st.size === 0 && ageMs < CREATING_MS;
}

/**
 * Unlinks `name`; false if it is gone, or if this user may not remove it
 * (a receiver of another user, `--group`: /dev/shm is sticky). Its
 * sender's reaper removes it then.
 */
function unlinkIfAllowed(name: string): boolean {
  try {
    return SharedMemory.unlink(name);
  } catch (error) {
    if (error instanceof LibcError && (error.errno === EPERM || error.errno === EACCES)) {
      return false;
    }
    throw error;
  }
}

/**
 * Creates the segment `name` with O_EXCL, owned by the returned handle (it
 * unlinks the name on close) and holding the sender's liveness lock. A
 * name held by a live sender is refused; a stale one is removed and
 * replaced.
 */
export async function createOrReplace(name: string, reporter: Reporter): Promise<SharedMemory> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const created = SharedMemory.create(name, 0o600, { owner: true });
    if (created) {
      if (await lockCreated(created)) return created;
      created.releaseOwnership(); // a cleaner removed it before we locked it
      created.close();
      continue;
    }
    const old = SharedMemory.open(name);
    if (!old) continue;
    try {
      if (old.isLocked(SENDER_LOCK_BYTE)) {
        const pid = readSenderPid(old);
        throw new P2mError(
          `a live sender${pid ? ` (pid ${pid})` : ""} is using shared memory ${name}; ` +
            `refusing to replace it (choose another --name)`,
        );
      }
      if (removeIfStale(old)) {
        reporter.info(`shm ${name}: removed a stale segment left by a sender that died`);
        reporter.event("stale-removed", { name });
      } else {
        await delay(2); // another cleaner or creator is at work
      }
    } finally {
      old.close();
    }
  }
  throw new P2mError(`cannot create shared memory ${name}: it keeps being replaced`);
}

/** The creator's hold (kept for life), liveness lock, name check: true if the new object is ours. */
async function lockCreated(created: SharedMemory): Promise<boolean> {
  const deadline = performance.now() + TOKEN_WAIT_MS;
  while (!created.tryHoldShared()) {
    if (performance.now() > deadline) return false;
    await delay(1); // a cleaner is looking at it: it may remove it
  }
  return created.tryLock(SENDER_LOCK_BYTE) && created.stillNamed();
}

/**
 * The reaper script. $1 is the segment name (checked by the CLI: letters,
 * digits, '.', '_', '-'). It ignores terminal signals (the sender handles
 * those and cleans up itself) and waits for EOF on stdin. `flock -n -x`
 * fails while any live creator holds its LOCK_SH; a short wait covers
 * another cleaner's brief token.
 */
const REAPER_SCRIPT = `
trap '' INT TERM HUP QUIT
while read _; do :; done
[ -e "/dev/shm/$1" ] || exit 0
exec 3<"/dev/shm/$1" || exit 0
flock -x -w 1 3 || exit 0
[ "$(stat -Lc %i /dev/fd/3)" = "$(stat -c %i "/dev/shm/$1")" ] && rm -f "/dev/shm/$1"
`;

/**
 * A `sh` that removes the sender's segment once the sender is gone, if no
 * live sender holds the object under the name. Started before the segment
 * exists, so a kill -9 at any moment leaves nothing. Costs about a
 * millisecond to start; needs `--allow-run=sh`.
 */
export class Reaper implements Disposable {
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;

  private constructor(child: Deno.ChildProcess) {
    this.#writer = child.stdin.getWriter();
  }

  /** Starts the reaper for segment `name` (before the segment exists). */
  static start(name: string): Reaper {
    const child = new Deno.Command("sh", {
      args: ["-c", REAPER_SCRIPT, "p2m-reaper", name],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    child.unref();
    return new Reaper(child);
  }

  /** Closes its pipe: the reaper looks once (finding nothing after a clean exit) and ends. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writer.close().catch(() => {/* it has ended already */});
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
