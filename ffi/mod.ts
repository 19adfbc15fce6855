/**
 * libc through FFI: shared memory, OFD locks and process-shared semaphores.
 *
 * - {@link ./libc.ts}: the one symbol table and constants.
 * - {@link ./errors.ts}: {@linkcode LibcError} and errno handling.
 * - {@link ./shared_memory.ts}: shm_open/mmap wrapper with liveness locks.
 * - {@link ./semaphore.ts}: unnamed process-shared semaphores.
 * - {@link ./unix_socket.ts}: nonblocking AF_UNIX sockets and sendfile(2).
 * - {@link ./read_only_file.ts}: the file to send: read, pread, fstat, read leases.
 * - {@link ./stat.ts}: fstat(2) with nanosecond times.
 * - {@link ./xxhash.ts}: libxxhash's streaming XXH3, hashing views in place.
 * - {@link ./group.ts}: Unix groups by name or gid (getgrnam, getgrgid).
 * - {@link ./lazy_symbols.ts}: binds each symbol of a table on its first call.
 * - {@link ./sleep.ts}: a timer in poll(2) on Deno's blocking pool (core/delay.ts).
 * - {@link ./directory_watch.ts}: waits for a name in a directory (inotify), using no CPU.
 *
 * @module
 */
export * from "./directory_watch.ts";
export * from "./errors.ts";
export * from "./group.ts";
export * from "./libc.ts";
export * from "./read_only_file.ts";
export * from "./stat.ts";
export * from "./semaphore.ts";
export * from "./shared_memory.ts";
export * from "./unix_socket.ts";
export * from "./xxhash.ts";
