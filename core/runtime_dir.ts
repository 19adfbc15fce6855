/**
 * The directory that holds p2m's socket files.
 *
 * {@linkcode privateRuntimeDir}: `$XDG_RUNTIME_DIR/p2m` when the session has
 * one, else `/tmp/p2m-<uid>`. The directory must be ours, a real directory
 * (not a symlink) and mode 0700, so that no other user can connect to,
 * replace or watch our sockets.
 *
 * {@linkcode groupRuntimeDir} (`--group GROUP`): `/tmp/p2m-<uid>-g<gid>`
 * (the session's runtime dir is closed to other users), ours, of that group
 * and mode 2750: the group may enter it and reach the sockets in it, which
 * then are mode 0660, but only we create or remove anything there. The
 * setgid bit gives every socket made in it that group, so a worker knows
 * from its directory alone that its one-time socket is to be shared
 * ({@linkcode sharedGroupDir}).
 *
 * @module
 */
import { P2mError } from "./errors.ts";
import { osReason } from "./source.ts";
import type { UnixGroup } from "../ffi/group.ts";

/** Mode of a group-shared runtime dir: setgid, the group may enter and list. */
const GROUP_DIR_MODE = 0o2750;

/** Returns the private runtime directory, creating it with mode 0700. */
export function privateRuntimeDir(): string {
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  const uid = Deno.uid() ?? 0;
  const dir = xdg ? `${xdg}/p2m` : `/tmp/p2m-${uid}`;
  const stat = ownDirectory(dir, 0o700);
  if (((stat.mode ?? 0) & 0o7077) !== 0) Deno.chmodSync(dir, 0o700);
  return dir;
}

/** Returns the runtime directory shared with `group`, creating it with mode 2750. */
export function groupRuntimeDir(group: UnixGroup): string {
  const dir = `/tmp/p2m-${Deno.uid() ?? 0}-g${group.gid}`;
  const stat = ownDirectory(dir, 0o700);
  try {
    if (stat.gid !== group.gid) Deno.chownSync(dir, null, group.gid);
    if (((stat.mode ?? 0) & 0o7777) !== GROUP_DIR_MODE) Deno.chmodSync(dir, GROUP_DIR_MODE);
  } catch (error) {
    const why = error instanceof Deno.errors.PermissionDenied
      ? "this user is not a member of it"
      : osReason(error);
    throw new P2mError(`cannot share ${dir} with group ${group.name}: ${why}`, { cause: error });
  }
  return dir;
}

/** The runtime dir for sockets: shared with `group` if given, else private. */
export function socketDir(group: UnixGroup | undefined): string {
  return group ? groupRuntimeDir(group) : privateRuntimeDir();
}

/** Whether `dir` is a group-shared runtime dir: its sockets are for the group too. */
export function sharedGroupDir(dir: string): boolean {
  try {
    return ((Deno.statSync(dir).mode ?? 0) & 0o2000) !== 0;
  } catch {
    return false;
  }
}

/** Creates `dir` (with `mode`) if missing; checks it is our own real directory. */
function ownDirectory(dir: string, mode: number): Deno.FileInfo {
  const uid = Deno.uid() ?? 0;
  try {
    Deno.mkdirSync(dir, { mode });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new P2mError(`cannot create ${dir}: ${osReason(error)}`, { cause: error });
    }
  }
  const stat = Deno.lstatSync(dir);
  if (!stat.isDirectory || stat.isSymlink) {
    throw new P2mError(`${dir} is not a directory; refusing to use it for sockets`);
  }
  if (stat.uid !== uid) {
    throw new P2mError(`${dir} belongs to uid ${stat.uid}, not ${uid}; refusing to use it`);
  }
  return stat;
}
