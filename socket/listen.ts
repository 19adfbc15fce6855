/**
 * Claiming a Unix socket path safely.
 *
 * - A path that does not fit `sun_path` is refused with a clear message.
 * - A stale socket file (nobody accepts on it) is removed and reused.
 * - A live server on the path means refuse.
 * - A path that exists but is not a socket is refused and never deleted.
 * - The new socket is chmod 0600 at once; with `--group GROUP`, 0660 and
 *   that group (its directory is the operator's, or the group runtime dir
 *   of core/runtime_dir.ts).
 *
 * @module
 */
import { P2mError, UsageError } from "../core/errors.ts";
import { osReason } from "../core/source.ts";
import { socketPathProblem } from "./protocol.ts";
import type { UnixGroup } from "../ffi/group.ts";

/** A listening socket that removes its file when closed. */
export class SocketListener implements Disposable {
  /** Path of the socket file. */
  readonly path: string;
  #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #ino: number | null;
  #closed = false;

  constructor(path: string, listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>) {
    this.path = path;
    this.#listener = listener;
    this.#ino = inode(path);
  }

  /** Accepts the next connection, or null once closed. */
  async accept(): Promise<Deno.UnixConn | null> {
    if (this.#closed) return null;
    try {
      return await this.#listener.accept();
    } catch (error) {
      if (this.#closed) return null;
      throw error;
    }
  }

  /** Stops listening and removes the socket file if it is still ours. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    // Only remove the file we created: a successor may have claimed the path.
    if (this.#ino !== null && inode(this.path) === this.#ino) {
      try {
        Deno.removeSync(this.path);
      } catch { /* already gone */ }
    }
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function inode(path: string): number | null {
  try {
    return Deno.lstatSync(path).ino;
  } catch {
    return null;
  }
}

/** Listens on `path` (see the module rules); throws a P2mError saying why not. */
export async function listenUnix(path: string, group?: UnixGroup): Promise<SocketListener> {
  const problem = socketPathProblem(path);
  if (problem) throw new UsageError(problem);
  // Two servers starting on one stale path must not both remove and claim
  // it: the check-remove-listen step holds a short flock on the directory.
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : path.slice(0, slash) || "/";
  let dirLock: Deno.FsFile | undefined;
  try {
    dirLock = Deno.openSync(dir, { read: true });
    await dirLock.lock(true);
  } catch {
    dirLock?.close(); // no such directory: listen() below says so clearly
    dirLock = undefined;
  }
  try {
    return await claim(path, group);
  } finally {
    dirLock?.close(); // releases the lock
  }
}

async function claim(path: string, group: UnixGroup | undefined): Promise<SocketListener> {
  let stat: Deno.FileInfo | undefined;
  try {
    stat = Deno.lstatSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new P2mError(`cannot use socket path ${path}: ${osReason(error)}`);
    }
  }
  if (stat) {
    if (!stat.isSocket) {
      throw new P2mError(`${path} exists and is not a socket; refusing to replace it`);
    }
    if (await isLive(path)) {
      throw new P2mError(`another server is already listening on ${path}`);
    }
    try {
      Deno.removeSync(path); // stale: nobody accepts on it
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new P2mError(`cannot remove stale socket ${path}: ${osReason(error)}`);
      }
    }
  }
  let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  try {
    listener = Deno.listen({ transport: "unix", path });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      throw new P2mError(`another server claimed ${path} at the same moment`);
    }
    throw new P2mError(`cannot listen on ${path}: ${osReason(error)}`);
  }
  const socket = new SocketListener(path, listener);
  try {
    if (group) Deno.chownSync(path, null, group.gid);
    Deno.chmodSync(path, group ? 0o660 : 0o600);
  } catch (error) {
    socket.close();
    const why = group && error instanceof Deno.errors.PermissionDenied
      ? `this user is not a member of group ${group.name}`
      : osReason(error);
    throw new P2mError(`cannot set the mode of ${path}: ${why}`);
  }
  return socket;
}

/**
 * Whether a server accepts on `path`. Only a refused connection proves the
 * socket stale; any other failure (a full backlog, a permission problem)
 * might hide a live server, so the path is left alone.
 */
async function isLive(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionRefused || error instanceof Deno.errors.NotFound) {
      return false;
    }
    throw new P2mError(`cannot tell whether ${path} is in use: ${osReason(error)}; leaving it`);
  }
}
