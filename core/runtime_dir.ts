/**
 * The private directory that holds p2m's socket files.
 *
 * `$XDG_RUNTIME_DIR/p2m` when the session has one, else `/tmp/p2m-<uid>`.
 * The directory must be ours, a real directory (not a symlink) and mode
 * 0700, so that no other user can connect to, replace or watch our sockets.
 *
 * @module
 */
import { P2mError } from "./errors.ts";
import { osReason } from "./source.ts";

/** Returns the private runtime directory, creating it with mode 0700. */
export function privateRuntimeDir(): string {
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  const uid = Deno.uid() ?? 0;
  const dir = xdg ? `${xdg}/p2m` : `/tmp/p2m-${uid}`;
  try {
    Deno.mkdirSync(dir, { mode: 0o700 });
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
  if (((stat.mode ?? 0) & 0o077) !== 0) Deno.chmodSync(dir, 0o700);
  return dir;
}
