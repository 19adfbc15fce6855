import assert from "node:assert/strict";
import { LibcError, Semaphore, SharedMemory } from "../ffi/mod.ts";
import { shmEntries, uniqueName, waitFor } from "./helpers.ts";

const HOLDER = new URL("./ffi_lock_holder.ts", import.meta.url).pathname;

function startHolder(name: string, byte: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", HOLDER, name, String(byte)],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  return {
    child,
    async firstLine(): Promise<string> {
      const { value } = await reader.read();
      return (value ?? "").trim();
    },
    async finish(): Promise<void> {
      await reader.cancel();
      await child.stderr.cancel();
      await child.status;
    },
  };
}

Deno.test("shared memory: create O_EXCL, map, see writes through a second mapping, unlink", () => {
  const name = uniqueName("p2m-ffi");
  using a = SharedMemory.create(name)!;
  assert.ok(a);
  assert.equal(SharedMemory.create(name), undefined, "O_EXCL refuses an existing name");
  a.truncate(8192);
  const st = a.stat();
  assert.equal(st.size, 8192);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.uid, Deno.uid());
  const viewA = new Int32Array(a.map(8192));
  using b = SharedMemory.open(name)!;
  const viewB = new Int32Array(b.map(8192));
  Atomics.store(viewA, 100, 42);
  assert.equal(Atomics.load(viewB, 100), 42);
  assert.equal(Atomics.add(viewB, 100, 1), 42);
  assert.equal(viewA[100], 43);
  assert.ok(SharedMemory.unlink(name));
  assert.equal(SharedMemory.unlink(name), false);
  assert.equal(SharedMemory.open(name), undefined);
});

Deno.test("shared memory: errors carry function, errno and text", () => {
  const error = assert.throws(() => SharedMemory.open("bad/name"), LibcError);
  try {
    SharedMemory.open("bad/name");
    assert.fail("opened a name with a slash inside");
  } catch (e) {
    assert.ok(e instanceof LibcError);
    assert.equal(e.fn, "shm_open");
    assert.equal(e.errno, 22);
    assert.match(e.message, /^shm_open\(\/bad\/name\): .+ \(errno 22\)$/);
  }
  void error;
  const name = uniqueName("p2m-ffi");
  using m = SharedMemory.create(name)!;
  SharedMemory.unlink(name);
  assert.throws(() => m.map(0), RangeError);
  // posix_fallocate returns its errno; an impossible size is a clear error, not a SIGBUS later.
  assert.throws(
    () => m.allocate(2 ** 50),
    (e) => e instanceof LibcError && e.fn === "posix_fallocate" && e.errno > 0,
  );
  m.allocate(8192);
  assert.equal(m.stat().size, 8192);
  // An impossible length makes mmap return MAP_FAILED (-1, not NULL): detected.
  assert.throws(() => m.map(2 ** 50), (e) => e instanceof LibcError && e.fn === "mmap");
  assert.equal(m.mapped, false);
  assert.throws(() => m.truncate(-1), LibcError);
});

Deno.test("semaphore: post, trywait, timed wait and value inside a segment", () => {
  const name = uniqueName("p2m-ffi");
  using m = SharedMemory.create(name)!;
  SharedMemory.unlink(name);
  m.truncate(4096);
  m.map(4096);
  const sem = new Semaphore(m, 64);
  sem.init(0);
  assert.equal(sem.tryWait(), false);
  const t0 = performance.now();
  assert.equal(sem.wait(30), false);
  assert.ok(performance.now() - t0 >= 25, "a timed wait waits");
  sem.post();
  sem.post();
  assert.equal(sem.value(), 2);
  assert.equal(sem.wait(1000), true);
  assert.equal(sem.tryWait(), true);
  assert.equal(sem.value(), 0);
  sem.destroy();
  m.close();
  assert.throws(() => sem.post(), RangeError, "a closed mapping is never touched");
});

Deno.test("OFD locks are seen by other processes and released by kill -9", async () => {
  const name = uniqueName("p2m-ffi");
  using m = SharedMemory.create(name)!;
  try {
    m.truncate(4096);
    assert.equal(m.isLocked(3), false);
    const holder = startHolder(name, 3);
    assert.equal(await holder.firstLine(), "locked");
    assert.equal(m.isLocked(3), true);
    assert.equal(m.isLocked(4), false, "only the one byte");
    assert.equal(m.tryLock(3), false, "held by the other process");
    holder.child.kill("SIGKILL");
    await holder.finish();
    await waitFor(() => !m.isLocked(3), 2000, "the kernel to drop the dead holder's lock");
    assert.equal(m.tryLock(3), true);
    // Our own lock is invisible to our own fd but visible to another process.
    const other = startHolder(name, 3);
    assert.equal(await other.firstLine(), "busy");
    await other.finish();
    m.unlock(3);
  } finally {
    SharedMemory.unlink(name);
  }
  assert.deepEqual(await shmEntries(name), []);
});
