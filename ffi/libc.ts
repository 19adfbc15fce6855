/**
 * The one table of libc symbols p2m calls through FFI.
 *
 * Every entry carries its C prototype. Calls are synchronous (about 0.1 µs
 * each), so `errno` can be read right after a failing call; see
 * {@link ./errors.ts}. x86_64 Linux with glibc ≥ 2.30 (for `sem_clockwait`).
 *
 * @module
 */

const SYMBOLS = {
  /** int shm_open(const char *name, int oflag, mode_t mode); */
  shm_open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int shm_unlink(const char *name); */
  shm_unlink: { parameters: ["buffer"], result: "i32" },
  /** int ftruncate(int fd, off_t length); */
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  /** int posix_fallocate(int fd, off_t offset, off_t len); returns an errno value, not -1 */
  posix_fallocate: { parameters: ["i32", "i64", "i64"], result: "i32" },
  /** int fstat(int fd, struct stat *statbuf); */
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  /** void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset); */
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  /** int munmap(void *addr, size_t length); */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /**
   * int fcntl(int fd, int cmd, struct flock *lock);
   * Variadic in C; declared with its third argument as a pointer, which the
   * x86_64 SysV ABI passes exactly like the variadic form.
   */
  fcntl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  /** int sem_init(sem_t *sem, int pshared, unsigned int value); */
  sem_init: { parameters: ["pointer", "i32", "u32"], result: "i32" },
  /** int sem_destroy(sem_t *sem); */
  sem_destroy: { parameters: ["pointer"], result: "i32" },
  /** int sem_post(sem_t *sem); */
  sem_post: { parameters: ["pointer"], result: "i32" },
  /** int sem_trywait(sem_t *sem); */
  sem_trywait: { parameters: ["pointer"], result: "i32" },
  /** int sem_clockwait(sem_t *sem, clockid_t clockid, const struct timespec *abstime); */
  sem_clockwait: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  /** int sem_getvalue(sem_t *sem, int *sval); */
  sem_getvalue: { parameters: ["pointer", "buffer"], result: "i32" },
  /** int clock_gettime(clockid_t clockid, struct timespec *tp); */
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },
  /** pid_t getpid(void); */
  getpid: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let library: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

/** The libc symbols, opened on first use (needs --allow-ffi). */
export function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  library ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return library.symbols;
}

/** open(2) flag: read and write. */
export const O_RDWR = 0o2;
/** open(2) flag: create if missing. */
export const O_CREAT = 0o100;
/** open(2) flag: fail if it exists. */
export const O_EXCL = 0o200;
/** mmap(2) protection: readable. */
export const PROT_READ = 1;
/** mmap(2) protection: writable. */
export const PROT_WRITE = 2;
/** mmap(2) flag: changes are shared with other mappings. */
export const MAP_SHARED = 1;
/** The value mmap(2) returns on failure: (void *)-1, not NULL. */
export const MAP_FAILED = 0xffffffffffffffffn;
/** clock id of the monotonic clock. */
export const CLOCK_MONOTONIC = 1;
/** fcntl(2) command: test for a conflicting open-file-description lock. */
export const F_OFD_GETLK = 36;
/** fcntl(2) command: take or drop an open-file-description lock, without waiting. */
export const F_OFD_SETLK = 37;
/** struct flock l_type: shared lock. */
export const F_RDLCK = 0;
/** struct flock l_type: exclusive lock. */
export const F_WRLCK = 1;
/** struct flock l_type: no lock. */
export const F_UNLCK = 2;
/** errno: the object exists. */
export const EEXIST = 17;
/** errno: no such file. */
export const ENOENT = 2;
/** errno: try again (lock held, semaphore zero). */
export const EAGAIN = 11;
/** errno: timed out. */
export const ETIMEDOUT = 110;
/** errno: interrupted by a signal. */
export const EINTR = 4;
/** Size of sem_t on x86_64 glibc. */
export const SEM_T_SIZE = 32;
/** Size of struct stat on x86_64. */
export const STAT_SIZE = 144;
/** Size of struct flock on x86_64. */
export const FLOCK_SIZE = 32;
