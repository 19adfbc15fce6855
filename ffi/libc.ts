/**
 * The one table of libc symbols p2m calls through FFI.
 *
 * Every entry carries its C prototype. Calls are synchronous (about 0.1 µs
 * each), so `errno` can be read right after a failing call; see
 * {@link ./errors.ts}. The one exception, `poll_nonblocking`, runs on
 * Deno's blocking pool: a timer (ffi/sleep.ts) or the wait of
 * ffi/directory_watch.ts.
 * x86_64 Linux with glibc ≥ 2.30 (for `sem_clockwait`).
 *
 * @module
 */

import { lazySymbols } from "./lazy_symbols.ts";

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
  /** int open(const char *pathname, int flags, mode_t mode); variadic mode, passed as in the SysV ABI */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /**
   * int fcntl(int fd, int cmd, long arg);
   * The integer-argument form (F_GETFL, F_SETFL, F_SETLEASE, F_GETLEASE, F_SETSIG).
   */
  fcntl_int: { name: "fcntl", parameters: ["i32", "i32", "i64"], result: "i32" },
  /** ssize_t pread(int fd, void *buf, size_t count, off_t offset); */
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count); */
  sendfile: { parameters: ["i32", "i32", "buffer", "usize"], result: "isize" },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int sockfd, int backlog); */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags); */
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  /** int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int shutdown(int sockfd, int how); */
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /**
   * int poll(struct pollfd *fds, nfds_t nfds, int timeout); the one
   * nonblocking entry, a wait on Deno's blocking pool that resolves a
   * promise: with no descriptors a sleep (ffi/sleep.ts), with an inotify
   * descriptor a wait for a name (ffi/directory_watch.ts)
   */
  poll_nonblocking: {
    name: "poll",
    parameters: ["pointer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** int inotify_init1(int flags); */
  inotify_init1: { parameters: ["i32"], result: "i32" },
  /** int inotify_add_watch(int fd, const char *pathname, uint32_t mask); */
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** mode_t umask(mode_t mask); */
  umask: { parameters: ["u32"], result: "u32" },
  /** int unlink(const char *pathname); */
  unlink: { parameters: ["buffer"], result: "i32" },
  /**
   * int ioctl(int fd, unsigned long request, int *argp);
   * Variadic in C; declared with its third argument as a pointer (SysV ABI).
   */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /**
   * int renameat2(int olddirfd, const char *oldpath, int newdirfd,
   *               const char *newpath, unsigned int flags);
   */
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  /** int syncfs(int fd); */
  syncfs: { parameters: ["i32"], result: "i32" },
  /** int flock(int fd, int operation); */
  flock: { parameters: ["i32", "i32"], result: "i32" },
  /** int fchown(int fd, uid_t owner, gid_t group); -1 (as 0xffffffff) keeps that id */
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  /** int fchmod(int fd, mode_t mode); */
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  /** struct group *getgrnam(const char *name); NULL if there is no such group */
  getgrnam: { parameters: ["buffer"], result: "pointer" },
  /** struct group *getgrgid(gid_t gid); NULL if there is no such group */
  getgrgid: { parameters: ["u32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

let symbols: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;
let errnoCell: Deno.UnsafePointerView | undefined;

/** The libc symbols, each bound on its first call (ffi/lazy_symbols.ts; needs --allow-ffi). */
export function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  if (symbols === undefined) {
    const table = lazySymbols("libc.so.6", SYMBOLS);
    // JS runs on one thread, so errno has one address: found now, before
    // any call can fail, so that reading it later is one load.
    errnoCell = new Deno.UnsafePointerView(table.__errno_location()!);
    symbols = table;
  }
  return symbols;
}

/**
 * errno as the last failing libc call left it (0 before any libc call).
 *
 * Read it right after that call, before anything else runs on this
 * thread: binding a symbol, allocating, a garbage collection or an
 * `await` may overwrite it. So this is a single load from the cell found
 * with the table, not a call of `__errno_location` (which bound lazily
 * once ran `dlopen` right there, and allocates a pointer object).
 */
export function errno(): number {
  return errnoCell?.getInt32(0) ?? 0;
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
/** mmap(2) flag: fill the page tables at once (one call instead of a fault per page). */
export const MAP_POPULATE = 0x8000;
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
/** x86_64 `struct stat` field offsets (bytes). */
export const STAT = {
  dev: 0,
  ino: 8,
  mode: 24,
  uid: 28,
  gid: 32,
  size: 48,
  mtimeSec: 88,
  mtimeNsec: 96,
  ctimeSec: 104,
  ctimeNsec: 112,
} as const;
/** st_mode: the file type bits. */
export const S_IFMT = 0o170000;
/** st_mode: a regular file. */
export const S_IFREG = 0o100000;
/** st_mode: a directory. */
export const S_IFDIR = 0o040000;
/** st_mode: a FIFO. */
export const S_IFIFO = 0o010000;

/** Size of struct flock on x86_64. */
export const FLOCK_SIZE = 32;
/** open(2) flag: read only. */
export const O_RDONLY = 0;
/** open(2) flag: close on exec. */
export const O_CLOEXEC = 0o2000000;
/** socket(2) domain: Unix sockets. */
export const AF_UNIX = 1;
/** socket(2) type: byte stream. */
export const SOCK_STREAM = 1;
/** socket(2)/accept4(2) flag: nonblocking. */
export const SOCK_NONBLOCK = 0o4000;
/** socket(2)/accept4(2) flag: close on exec. */
export const SOCK_CLOEXEC = 0o2000000;
/** setsockopt(2) level: socket. */
export const SOL_SOCKET = 1;
/** setsockopt(2) option: send buffer size. */
export const SO_SNDBUF = 7;
/** setsockopt(2) option: receive buffer size. */
export const SO_RCVBUF = 8;
/** shutdown(2): no more sends. */
export const SHUT_WR = 1;
/** poll(2) event: readable. */
export const POLLIN = 0x1;
/** poll(2) event: writable. */
export const POLLOUT = 0x4;
/** poll(2) event: error. */
export const POLLERR = 0x8;
/** poll(2) event: hang-up. */
export const POLLHUP = 0x10;
/** poll(2) event: fd not open. */
export const POLLNVAL = 0x20;
/** Size of struct sockaddr_un. */
export const SOCKADDR_UN_SIZE = 110;
/** open(2) flag: do not block (a FIFO's open returns at once). */
export const O_NONBLOCK = 0o4000;
/** fcntl(2) command: get the file status flags. */
export const F_GETFL = 3;
/** fcntl(2) command: set the file status flags. */
export const F_SETFL = 4;
/** fcntl(2) command: which signal announces I/O or a lease break. */
export const F_SETSIG = 10;
/** fcntl(2) command: take or drop a lease. */
export const F_SETLEASE = 1024;
/** fcntl(2) command: the lease held, or the type it is being broken to. */
export const F_GETLEASE = 1025;
/** Signal number of SIGURG, whose default action is to be ignored. */
export const SIGURG = 23;
/** errno: permission denied. */
export const EACCES = 13;
/** errno: operation not permitted. */
export const EPERM = 1;
/** errno: invalid argument. */
export const EINVAL = 22;
/** errno: bad file descriptor. */
export const EBADF = 9;
/** errno: connection reset by peer. */
export const ECONNRESET = 104;
/** errno: broken pipe. */
export const EPIPE = 32;
/** errno: connection refused (nobody listens). */
export const ECONNREFUSED = 111;
/** ioctl(2) request: bytes sent on a socket and not yet read by the peer (SIOCOUTQ). */
export const SIOCOUTQ = 0x5411;
/** `*at()` directory fd meaning "the current directory". */
export const AT_FDCWD = -100;
/** renameat2(2) flag: fail with EEXIST instead of replacing the new path. */
export const RENAME_NOREPLACE = 1;
/** renameat2(2) flag: swap the two paths atomically (both must exist). */
export const RENAME_EXCHANGE = 2;
/** open(2) flag: fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
/** flock(2) operation: shared lock. */
export const LOCK_SH = 1;
/** flock(2) operation: exclusive lock. */
export const LOCK_EX = 2;
/** flock(2) operation: do not wait (EWOULDBLOCK, which is EAGAIN). */
export const LOCK_NB = 4;
/** flock(2) operation: unlock. */
export const LOCK_UN = 8;
/** errno: bad address (a mapped page past the end of its object, passed to a syscall). */
export const EFAULT = 14;

const encoder = new TextEncoder();

/** A NUL-terminated copy of `text` for a `const char *` parameter; refuses an embedded NUL. */
export function cString(text: string, what = "name"): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.includes(0)) throw new RangeError(`${what} contains a NUL byte`);
  const buf = new Uint8Array(bytes.length + 1);
  buf.set(bytes);
  return buf;
}

/** Closes `fd` unless it is already closed (< 0); returns -1, what a closed handle holds. */
export function closeFd(fd: number): -1 {
  if (fd >= 0) libc().close(fd);
  return -1;
}
/** open(2) flag: write only. */
export const O_WRONLY = 0o1;
/** st_mode: a character device. */
export const S_IFCHR = 0o020000;
/** st_mode: a socket. */
export const S_IFSOCK = 0o140000;
/** errno: no such device or address (a FIFO opened for writing has no reader). */
export const ENXIO = 6;
/** fchown(2) id meaning "leave it as it is" ((uid_t) -1). */
export const KEEP_ID = 0xffffffff;
/** x86_64 struct group offsets: gr_name (char *) and gr_gid (gid_t). */
export const GROUP_STRUCT = { name: 0, gid: 16 } as const;
