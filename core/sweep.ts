/**
 * Stale-leftover cleanup for receivers' outputs, in one place: the temp
 * files of core/output.ts and the staging directories of
 * core/tree_output.ts.
 *
 * A writer holds an exclusive `flock` on what it is writing for as long as
 * it lives. The kernel drops the lock when the process dies, however it
 * dies (no pid to be reused), so anything of ours whose lock can be taken
 * has no living writer and may be removed by the next writer there.
 *
 * @module
 */

/**
 * Removes every entry of `dir` that `isOurs` accepts and whose `flock`
 * can be taken (its writer is gone), with `remove`; returns how many.
 * Errors (gone already, not ours to judge) skip that entry.
 */
export function sweepUnlocked(
  dir: string,
  isOurs: (entry: Deno.DirEntry) => boolean,
  remove: (path: string) => void,
): number {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return 0;
  }
  let removed = 0;
  for (const entry of entries) {
    if (!isOurs(entry)) continue;
    const path = `${dir}/${entry.name}`;
    let held: Deno.FsFile | undefined;
    try {
      held = Deno.openSync(path, { read: true });
      if (held.tryLockSync(true)) {
        remove(path);
        removed++;
      }
    } catch {
      /* gone already, or not ours to judge */
    } finally {
      held?.close();
    }
  }
  return removed;
}
