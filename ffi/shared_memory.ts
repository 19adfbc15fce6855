/**
 * A POSIX shared-memory object (`shm_open`) mapped into this process, with
 * open-file-description byte locks used as liveness markers.
 *
 * Liveness: each party holds an OFD write lock (`F_OFD_SETLK`) on one byte
 * of the segment's own fd; anyone tests it with `F_OFD_GETLK`. The kernel
 * drops OFD locks when the last fd of the open file description closes, so
 * also when the process dies (kill -9). Unlike a stored pid, this cannot be
 * fooled by pid reuse, and unlike /proc it needs no file permission in Deno.
 * Locks on bytes past the end of the object are allowed, so they take no
 * space and are independent of the segment's contents.
 *
 * Cleaning: the creator holds a flock(2) LOCK_SH on the object for its life
 * ({@linkcode SharedMemory.tryHoldShared}); whoever unlinks a name it did
 * not create (a reaper after its sender died, a new sender replacing a
 * stale segment, a receiver removing one) first takes the "cleaner token",
 * LOCK_EX on the object ({@linkcode SharedMemory.tryLockCleaner}), which no
 * one gets while a creator lives, and only then checks that the name still
 * refers to this inode ({@linkcode SharedMemory.stillNamed}). flock(2)
 * locks never interact with the OFD byte locks above. util-linux `flock(1)`
 * takes the same locks from a shell.
 *
 * Ownership: a handle made with `create(name, mode, { owner: true })` owns
 * the name (as iceoryx2's `has_ownership`): closing it unlinks the name if
 * it still refers to this object.
 *
 * @module
 */
import { errno, fail, LibcError } from "./errors.ts";
import {
  cString,
  EAGAIN,
  EEXIST,
  ENOENT,
  F_OFD_GETLK,
  F_OFD_SETLK,
  F_UNLCK,
  F_WRLCK,
  FLOCK_SIZE,
  KEEP_ID,
  libc,
  LOCK_EX,
  LOCK_NB,
  LOCK_SH,
  LOCK_UN,
  MAP_FAILED,
  MAP_POPULATE,
  MAP_SHARED,
  O_CREAT,
  O_EXCL,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
} from "./libc.ts";
import { fstatOf } from "./stat.ts";

/** What fstat says about a shared-memory object. */
export interface ShmStat {
  /** Size in bytes. */
  size: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Mode bits (type and permissions). */
  mode: number;
  /** Inode number: tells two objects under one name apart. */
  ino: bigint;
  /** Status change time, ns since the epoch (its creation, for a new object). */
  ctimeNs: bigint;
}

/** An open shared-memory object; map it with {@linkcode SharedMemory.map}. */
export class SharedMemory implements Disposable {
  /** The object's name, with its leading slash. */
  readonly name: string;
  #fd: number;
  #ptr: Deno.PointerValue = null;
  #length = 0;
  #buffer: ArrayBuffer | undefined;
  #owner: boolean;
  #ino: bigint | undefined;

  private constructor(name: string, fd: number, owner: boolean) {
    this.name = name;
    this.#fd = fd;
    this.#owner = owner;
    if (owner) this.#ino = this.stat().ino;
  }

  /**
   * Creates a new object with O_CREAT|O_EXCL and `mode` (0600 by default).
   * Returns undefined if the name is taken; throws LibcError otherwise.
   * With `owner`, closing the handle unlinks the name (if still its own).
   */
  static create(
    name: string,
    mode = 0o600,
    { owner = false }: { owner?: boolean } = {},
  ): SharedMemory | undefined {
    const path = shmPath(name);
    const fd = libc().shm_open(cString(path), O_RDWR | O_CREAT | O_EXCL, mode);
    if (fd < 0) {
      const code = errno();
      if (code === EEXIST) return undefined;
      throw new LibcError("shm_open", code, path);
    }
    return new SharedMemory(path, fd, owner);
  }

  /** Opens an existing object read-write; undefined if there is none. */
  static open(name: string): SharedMemory | undefined {
    const path = shmPath(name);
    const fd = libc().shm_open(cString(path), O_RDWR, 0);
    if (fd < 0) {
      const code = errno();
      if (code === ENOENT) return undefined;
      throw new LibcError("shm_open", code, path);
    }
    return new SharedMemory(path, fd, false);
  }

  /** Removes a name; returns false if it did not exist. */
  static unlink(name: string): boolean {
    const path = shmPath(name);
    if (libc().shm_unlink(cString(path)) === 0) return true;
    const code = errno();
    if (code === ENOENT) return false;
    throw new LibcError("shm_unlink", code, path);
  }

  /** Whether this handle owns the name (unlinks it on close). */
  get owner(): boolean {
    return this.#owner;
  }

  /** Gives up ownership: closing no longer unlinks the name. */
  releaseOwnership(): void {
    this.#owner = false;
  }

  /**
   * Whether the name still refers to this object (same inode). While this
   * handle is open the inode cannot be reused, so a match is exact.
   */
  stillNamed(): boolean {
    const current = SharedMemory.open(this.name);
    if (!current) return false;
    try {
      return current.stat().ino === (this.#ino ?? this.stat().ino);
    } finally {
      current.close();
    }
  }

  /** Unlinks the name if it still refers to this object; true if it did. */
  unlinkIfOwn(): boolean {
    return this.stillNamed() && SharedMemory.unlink(this.name);
  }

  /**
   * Takes the cleaner token (flock LOCK_EX on the object) without waiting;
   * false if another cleaner or creator holds it.
   */
  tryLockCleaner(): boolean {
    if (libc().flock(this.#checkFd(), LOCK_EX | LOCK_NB) === 0) return true;
    const code = errno();
    if (code === EAGAIN) return false;
    throw new LibcError("flock", code, this.name);
  }

  /**
   * Takes a flock LOCK_SH on the object without waiting (the creator, for
   * its whole life: no cleaner gets the token meanwhile); false if a
   * cleaner holds the token.
   */
  tryHoldShared(): boolean {
    if (libc().flock(this.#checkFd(), LOCK_SH | LOCK_NB) === 0) return true;
    const code = errno();
    if (code === EAGAIN) return false;
    throw new LibcError("flock", code, this.name);
  }

  /** Drops this fd's flock (the cleaner token, or a creator's shared hold). */
  unlockCleaner(): void {
    if (libc().flock(this.#checkFd(), LOCK_UN) !== 0) fail("flock", this.name);
  }

  /**
   * Shares the object with group `gid`: that group, mode 0660 (fchown and
   * fchmod, so the umask does not matter). EPERM if this process is not a
   * member of the group.
   */
  shareWithGroup(gid: number): void {
    const fd = this.#checkFd();
    if (libc().fchown(fd, KEEP_ID, gid) !== 0) fail("fchown", this.name);
    if (libc().fchmod(fd, 0o660) !== 0) fail("fchmod", this.name);
  }

  /** Sets the object's size. */
  truncate(size: number): void {
    if (libc().ftruncate(this.#checkFd(), BigInt(size)) !== 0) fail("ftruncate", this.name);
  }

  /**
   * Reserves `size` bytes of memory for the object now, so that a full
   * /dev/shm is a clear ENOSPC here rather than a SIGBUS on first touch.
   */
  allocate(size: number): void {
    const code = libc().posix_fallocate(this.#checkFd(), 0n, BigInt(size));
    if (code !== 0) throw new LibcError("posix_fallocate", code, this.name);
  }

  /** Size, owner and mode from fstat. */
  stat(): ShmStat {
    const { ino, mode, uid, gid, size, ctimeNs } = fstatOf(this.#checkFd(), this.name);
    return { ino, mode, uid, gid, size, ctimeNs };
  }

  /** Maps `length` bytes read-write and shared; returns a zero-copy buffer. */
  map(length: number): ArrayBuffer {
    if (this.#buffer) throw new Error("already mapped");
    if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`bad length ${length}`);
    const ptr = libc().mmap(
      null,
      BigInt(length),
      PROT_READ | PROT_WRITE,
      // Each page fault is a VM exit here (pvm_irq_enable tops the profile):
      // fill the ring's page tables in one call, before streaming starts.
      MAP_SHARED | MAP_POPULATE,
      this.#checkFd(),
      0n,
    );
    if (ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED) fail("mmap", this.name);
    this.#ptr = ptr;
    this.#length = length;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, length);
    return this.#buffer;
  }

  /** The mapped buffer; throws if not mapped or already closed. */
  get buffer(): ArrayBuffer {
    if (!this.#buffer) throw new Error(`${this.name} is not mapped`);
    return this.#buffer;
  }

  /** Pointer to `offset` bytes into the mapping (for semaphores). */
  pointer(offset: number): Deno.PointerObject {
    if (this.#ptr === null || offset < 0 || offset >= this.#length) {
      throw new RangeError(`offset ${offset} outside the mapping of ${this.name}`);
    }
    return Deno.UnsafePointer.offset(this.#ptr, offset)!;
  }

  /** Whether the mapping is still in place. */
  get mapped(): boolean {
    return this.#buffer !== undefined;
  }

  /** Takes an exclusive lock on byte `index` without waiting; false if held elsewhere. */
  tryLock(index: number): boolean {
    const lock = flock(F_WRLCK, index);
    if (libc().fcntl(this.#checkFd(), F_OFD_SETLK, lock) === 0) return true;
    const code = errno();
    if (code === 11 /* EAGAIN */ || code === 13 /* EACCES */) return false;
    throw new LibcError("fcntl", code, `${this.name}, F_OFD_SETLK`);
  }

  /** Drops this fd's lock on byte `index`. */
  unlock(index: number): void {
    const lock = flock(F_UNLCK, index);
    if (libc().fcntl(this.#checkFd(), F_OFD_SETLK, lock) !== 0) fail("fcntl", this.name);
  }

  /** Whether another open file description (a live process) holds a lock on byte `index`. */
  isLocked(index: number): boolean {
    const lock = flock(F_WRLCK, index);
    if (libc().fcntl(this.#checkFd(), F_OFD_GETLK, lock) !== 0) fail("fcntl", this.name);
    return new DataView(lock.buffer).getInt16(0, true) !== F_UNLCK;
  }

  /**
   * Unmaps and closes the fd (which drops this process's locks); an owner
   * first unlinks its name if the name still refers to this object. Safe to
   * call twice.
   */
  close(): void {
    if (this.#owner && this.#fd >= 0) {
      this.#owner = false;
      try {
        this.unlinkIfOwn();
      } catch { /* the name is gone or unreachable: nothing of ours to remove */ }
    }
    if (this.#buffer) {
      // The ArrayBuffer outlives munmap; callers must drop their views first.
      libc().munmap(this.#ptr, BigInt(this.#length));
      this.#buffer = undefined;
      this.#ptr = null;
    }
    if (this.#fd >= 0) {
      libc().close(this.#fd);
      this.#fd = -1;
    }
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkFd(): number {
    if (this.#fd < 0) throw new Error(`${this.name} is closed`);
    return this.#fd;
  }
}

/** Where glibc's shm_open keeps the names (`/NAME` is `/dev/shm/NAME`). */
export const SHM_DIRECTORY = "/dev/shm";

/** The object name with one leading slash, as shm_open wants it. */
export function shmPath(name: string): string {
  return name.startsWith("/") ? name : `/${name}`;
}

/** x86_64 struct flock: l_type i16 @0, l_whence i16 @2, l_start @8, l_len @16, l_pid @24. */
function flock(type: number, byte: number): Uint8Array {
  const buf = new Uint8Array(FLOCK_SIZE);
  const view = new DataView(buf.buffer);
  view.setInt16(0, type, true);
  view.setInt16(2, 0, true); // SEEK_SET
  view.setBigInt64(8, BigInt(byte), true);
  view.setBigInt64(16, 1n, true);
  view.setInt32(24, 0, true); // must be 0 for OFD locks
  return buf;
}
