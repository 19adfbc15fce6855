/**
 * Who may remove a segment name, and when: create-or-replace for a sender,
 * remove-stale for anyone who proved a segment's sender dead, and the
 * reaper that removes a killed sender's segment when nobody else comes.
 *
 * The cleaner protocol (iceoryx2's stale-resource cleanup, with a flock(2)
 * as the "cleaner token"):
 * - A cleaner opens the name, takes the token (flock LOCK_EX on the object
 *   itself), checks that no sender holds the liveness lock (OFD byte 0) and
 *   that the name still refers to the inode it holds open, and only then
 *   unlinks. While it holds the object open the inode cannot be reused, and
 *   while it holds the token no other cleaner can unlink that inode's name,
 *   so no new segment can appear under the name between check and unlink.
 * - A creator takes the token right after its O_EXCL create, then its
 *   liveness lock, then checks that the name is still its own (a cleaner
 *   may have removed the new, unlocked object in between) and retries if
 *   not. So a cleaner never removes a live sender's segment.
 * - The reaper is `sh`, started by the sender and blocked on a read of its
 *   stdin pipe, which carries only the inode. EOF means the sender
 *   exited or died; it then runs the same cleaner steps with util-linux
 *   `flock(1)` and `stat(1)` (the sender's death stands in for the liveness
 *   check). After a normal exit the sender has unlinked its name already and
 *   the reaper finds nothing of its own.
 *
 * @module
 */
import { delay, P2mError, type Reporter } from "../core/mod.ts";
import { SharedMemory } from "../ffi/mod.ts";
import { readSenderPid } from "./layout.ts";
import { SENDER_LOCK_BYTE } from "./segment.ts";

/** How long a creator waits for the cleaner token on its own new object (ms). */
const TOKEN_WAIT_MS = 5_000;

/**
 * Removes the segment `memory` (opened by name) if it is proven stale: no
 * sender holds its liveness lock and the name still refers to it. Returns
 * false if it is live, already gone or replaced, or another cleaner is at
 * work (then try again later).
 */
export function removeIfStale(memory: SharedMemory): boolean {
  if (!memory.tryLockCleaner()) return false;
  try {
    if (memory.isLocked(SENDER_LOCK_BYTE)) return false;
    if (!memory.stillNamed()) return false;
    return SharedMemory.unlink(memory.name);
  } finally {
    memory.unlockCleaner();
  }
}

/**
 * Creates the segment `name` with O_EXCL, owned by the returned handle (it
 * unlinks the name on close) and holding the sender's liveness lock. A
 * name held by a live sender is refused; a stale one is removed and
 * replaced. `watch` learns the new inode at once (the reaper).
 */
export async function createOrReplace(
  name: string,
  reporter: Reporter,
  watch: (ino: bigint) => Promise<void>,
): Promise<SharedMemory> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const created = SharedMemory.create(name, 0o600, { owner: true });
    if (created) {
      await watch(created.stat().ino);
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

/** Token, liveness lock, name check, token released: true if the new object is ours. */
async function lockCreated(created: SharedMemory): Promise<boolean> {
  const deadline = performance.now() + TOKEN_WAIT_MS;
  while (!created.tryLockCleaner()) {
    if (performance.now() > deadline) return false;
    await delay(1);
  }
  try {
    return created.tryLock(SENDER_LOCK_BYTE) && created.stillNamed();
  } finally {
    created.unlockCleaner();
  }
}

/**
 * The reaper script. $1 is the segment name (checked by the CLI: letters,
 * digits, '.', '_', '-'); the last stdin line before EOF is the inode to
 * guard (a creator that had to retry sends a new one).
 */
const REAPER_SCRIPT = `
trap '' INT TERM HUP QUIT
ino=
while read line; do ino=$line; done
[ -n "$ino" ] || exit 0
[ -e "/dev/shm/$1" ] || exit 0
exec 3<"/dev/shm/$1" || exit 0
flock -w 5 3 || exit 0
[ "$(stat -Lc %i /dev/fd/3)" = "$ino" ] && [ "$(stat -c %i "/dev/shm/$1")" = "$ino" ] &&
  rm -f "/dev/shm/$1"
`;

/**
 * A `sh` that removes the sender's segment once the sender is gone, if the
 * name still refers to the sender's inode. Costs about a millisecond to
 * start; needs `--allow-run=sh`.
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

  /** Tells the reaper which inode is the sender's segment. */
  async watch(ino: bigint): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(`${ino}\n`));
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
