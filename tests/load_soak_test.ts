/**
 * Load and soak: 64 peers at once on each transport on a 2-core machine
 * (every copy verified, nobody falsely evicted), and 100 transfers in a row
 * with no growth in open fds, `/dev/shm` entries, socket files or temp files.
 *
 * @module
 */
import assert from "node:assert/strict";
import { assertSameFile, listDir, makeFile, shmEntries, tempDir, uniqueName } from "./helpers.ts";
import { Party } from "./party.ts";

const MANY = 64;
const SOAK = 100;

/** Open fds of a process, counted through `ls` (Deno will not read /proc). */
async function openFds(pid: number): Promise<number> {
  const out = await new Deno.Command("ls", { args: [`/proc/${pid}/fd`], stdout: "piped" })
    .output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).length;
}

/** Every file under `dir`, recursively, relative to it. */
function tree(dir: string, prefix = ""): string[] {
  return listDir(dir).flatMap((name) => {
    const path = `${dir}/${name}`;
    return Deno.statSync(path).isDirectory ? tree(path, `${prefix}${name}/`) : [prefix + name];
  });
}

/**
 * Asserts that a count sampled after each transfer did not grow: after ten
 * transfers of warm-up, a leak of even one per transfer adds 90.
 */
function assertNoGrowth(what: string, samples: number[]): void {
  const growth = samples.at(-1)! - samples[9];
  assert.ok(growth < 5, `${what} grew by ${growth} over ${samples.length - 10} transfers`);
}

/** A socket server of `file` on `dir`/p2m.sock, printing JSON events. */
function socketServer(dir: string, file: string, env: Env, extra: string[] = []): Party {
  return new Party("server", "socket.ts", [
    "server",
    file,
    "--socket",
    `${dir}/p2m.sock`,
    ...extra,
    "--json",
  ], { env });
}

/** A socket client writing `out`, giving up after `timeout` s. */
function socketClient(label: string, dir: string, out: string, timeout: number, env: Env): Party {
  return new Party(label, "socket.ts", [
    "client",
    "--socket",
    `${dir}/p2m.sock`,
    "--out",
    out,
    "--timeout",
    String(timeout),
    "--quiet",
  ], { env });
}

/** An shm receiver of segment `name` writing `out`, giving up after `timeout` s. */
function shmReceiver(label: string, name: string, out: string, timeout: number): Party {
  return new Party(label, "sharedmem.ts", [
    "receiver",
    "--name",
    name,
    "--out",
    out,
    "--timeout",
    String(timeout),
    "--quiet",
  ]);
}

type Env = { XDG_RUNTIME_DIR: string };

/**
 * Runs `body` with a temp dir holding `payload.bin` of `size` bytes and a
 * private runtime dir for the socket tests; removes it all afterwards.
 */
async function withPayload(
  size: number,
  seed: number,
  body: (dir: string, file: string, env: Env) => Promise<void>,
): Promise<void> {
  const dir = await tempDir();
  try {
    const file = `${dir}/payload.bin`;
    await makeFile(file, size, seed);
    const env = { XDG_RUNTIME_DIR: `${dir}/run` };
    await Deno.mkdir(env.XDG_RUNTIME_DIR, { mode: 0o700 });
    await body(dir, file, env);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function expectExit(party: Party, code: number): Promise<void> {
  const exit = await party.exited;
  assert.equal(exit.code, code, `${party.label} ended ${exit.code}:\n${party.stderr}`);
}

Deno.test({
  name: `socket: ${MANY} peers at once all verify`,
  sanitizeResources: false,
}, () =>
  withPayload(2 * 2 ** 20 + 13, 3, async (dir, file, env) => {
    const server = socketServer(dir, file, env, [
      "--peers",
      String(MANY),
      "--max-active",
      String(MANY),
    ]);
    const clients = Array.from(
      { length: MANY },
      (_, i) => socketClient(`client ${i}`, dir, `${dir}/out-${i}/`, 60, env),
    );
    await Promise.all(clients.map((c) => expectExit(c, 0)));
    for (let i = 0; i < MANY; i++) await assertSameFile(`${dir}/out-${i}/payload.bin`, file);
    await expectExit(server, 0);
    const summary = server.events.findLast((e) => e.event === "summary");
    assert.ok(summary, "no summary");
    assert.equal((summary.peers as unknown[]).length, MANY);
    assert.deepEqual(listDir(`${dir}/run/p2m`), []);
    assert.deepEqual(listDir(dir).filter((n) => n.endsWith(".sock")), []);
  }));

Deno.test({
  name: `socket: ${SOAK} transfers in a row leak no fds, sockets or temp files`,
  sanitizeResources: false,
}, () =>
  withPayload(256 * 1024 + 1, 4, async (dir, file, env) => {
    const server = socketServer(dir, file, env);
    await Deno.mkdir(`${dir}/out`);
    const fds: number[] = [];
    const ownFds: number[] = [];
    for (let i = 0; i < SOAK; i++) {
      const client = socketClient(`client ${i}`, dir, `${dir}/out/copy-${i}`, 30, env);
      await expectExit(client, 0);
      // The server records the peer just after the client exits.
      await server.waitEvent((e) => e.event === "peer-done" && e.peer === i + 1, 10_000);
      fds.push(await openFds(server.pid));
      ownFds.push(await openFds(Deno.pid));
      assert.deepEqual(listDir(`${dir}/run/p2m`), [], `worker socket left after transfer ${i}`);
    }
    // Warm-up aside, nothing grows.
    assertNoGrowth("server fds", fds);
    assertNoGrowth("test process fds", ownFds);
    assert.deepEqual(tree(`${dir}/out`).length, SOAK);
    assert.deepEqual(tree(`${dir}/out`).filter((n) => n.endsWith(".part")), []);
    server.signal("SIGTERM");
    await expectExit(server, 143);
    assert.deepEqual(listDir(dir).filter((n) => n.endsWith(".sock")), []);
    assert.deepEqual(listDir(`${dir}/run/p2m`), []);
  }));

Deno.test({
  name: `shm: ${MANY} receivers at once all verify, none falsely evicted`,
  sanitizeResources: false,
}, () =>
  // Several times the ring, so slow starters really gate the sender.
  withPayload(6 * 2 ** 20 + 5, 5, async (dir, file) => {
    const name = uniqueName("p2m-load");
    const sender = new Party("sender", "sharedmem.ts", [
      "sender",
      file,
      "--name",
      name,
      "--peers",
      String(MANY),
      "--wait",
      "120",
      "--slots",
      "4",
      "--chunk",
      "256K",
      "--json",
    ]);
    const receivers = Array.from(
      { length: MANY },
      (_, i) => shmReceiver(`receiver ${i}`, name, `${dir}/out-${i}/`, 120),
    );
    await Promise.all(receivers.map((r) => expectExit(r, 0)));
    await expectExit(sender, 0);
    for (let i = 0; i < MANY; i++) await assertSameFile(`${dir}/out-${i}/payload.bin`, file);
    const summary = sender.events.findLast((e) => e.event === "summary");
    assert.ok(summary, "no summary");
    const peers = summary.peers as { status: string }[];
    assert.equal(peers.length, MANY);
    assert.deepEqual(peers.filter((p) => p.status !== "verified"), [], "false evictions");
    assert.deepEqual(await shmEntries(name), []);
  }));

Deno.test({
  name: `shm: ${SOAK} transfers in a row leak no fds, segments or temp files`,
  sanitizeResources: false,
}, () =>
  withPayload(256 * 1024 + 1, 6, async (dir, file) => {
    const name = uniqueName("p2m-soak");
    await Deno.mkdir(`${dir}/out`);
    const ownFds: number[] = [];
    for (let i = 0; i < SOAK; i++) {
      const sender = new Party("sender", "sharedmem.ts", [
        "sender",
        file,
        "--name",
        name,
        "--wait",
        "30",
        "--quiet",
      ]);
      const receiver = shmReceiver("receiver", name, `${dir}/out/copy-${i}`, 30);
      await Promise.all([expectExit(sender, 0), expectExit(receiver, 0)]);
      assert.deepEqual(await shmEntries(name), [], `segment left after transfer ${i}`);
      ownFds.push(await openFds(Deno.pid));
    }
    assertNoGrowth("test process fds", ownFds);
    assert.deepEqual(await shmEntries(name), []);
    assert.equal(tree(`${dir}/out`).length, SOAK);
    assert.deepEqual(tree(`${dir}/out`).filter((n) => n.endsWith(".part")), []);
  }));
