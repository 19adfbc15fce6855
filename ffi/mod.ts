/**
 * libc through FFI: shared memory, OFD locks and process-shared semaphores.
 *
 * - {@link ./libc.ts}: the one symbol table and constants.
 * - {@link ./errors.ts}: {@linkcode LibcError} and errno handling.
 * - {@link ./shared_memory.ts}: shm_open/mmap wrapper with liveness locks.
 * - {@link ./semaphore.ts}: unnamed process-shared semaphores.
 *
 * @module
 */
export * from "./errors.ts";
export * from "./libc.ts";
export * from "./semaphore.ts";
export * from "./shared_memory.ts";
