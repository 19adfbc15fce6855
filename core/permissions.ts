/**
 * The exact Deno permissions each program runs with.
 *
 * `deno.json` tasks spell the same flags (a test keeps them in step); the
 * socket server passes {@linkcode SOCKET_PERMISSIONS} to the worker
 * subprocesses it starts, so a worker never has more than its parent.
 *
 * @module
 */

/**
 * Flags for socket.ts: files, subprocesses (its workers), Unix sockets, libc
 * through FFI, env, uid. FFI is for the data connection (socket/data_channel.ts):
 * Deno's UnixConn has no fd, so neither a larger socket buffer nor
 * sendfile(2) is reachable without it. Deno 2.9 checks `Deno.listen`/`Deno.connect` on a Unix path against
 * `--allow-net` (it accepts only an exact `unix:PATH`, no directory), so the
 * programs, whose socket paths come from the user, need `--allow-net`.
 */
export const SOCKET_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-net",
  "--allow-ffi",
  "--allow-env",
  "--allow-sys=uid",
] as const;

/**
 * Flags for sharedmem.ts: files, `sh` (the sender's reaper, which removes its
 * segment if it is killed; see shm/stale.ts), libc through FFI, env, uid.
 */
export const SHM_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-run=sh",
  "--allow-ffi",
  "--allow-env",
  "--allow-sys=uid",
] as const;

/** Absolute path of a program file in the project root. */
export function programPath(file: "socket.ts" | "sharedmem.ts"): string {
  return new URL(`../${file}`, import.meta.url).pathname;
}

/**
 * The command line that runs `program` as its users do: `deno run` with the
 * program's exact permissions (what tests, demo and bench spawn).
 */
export function p2mArgv(program: "socket.ts" | "sharedmem.ts", args: string[]): string[] {
  const permissions = program === "socket.ts" ? SOCKET_PERMISSIONS : SHM_PERMISSIONS;
  return [Deno.execPath(), "run", ...permissions, programPath(program), ...args];
}
