/**
 * `--group GROUP`: a sender (shm) or server (socket) of one user fans a
 * file out to receivers that run as another user of a shared group. The
 * tests make a real second user and group (`groupadd`, `useradd`), run the
 * real receiver as that user (`setpriv`), and check that it gets a
 * verified copy with `--group` and is refused, with nothing written,
 * without it or with another group. They need root, which CI has; elsewhere
 * they are skipped with one loud line.
 *
 * @module
 */
import assert from "node:assert/strict";
import { SHM_PERMISSIONS, SOCKET_PERMISSIONS } from "../core/permissions.ts";
import { SharedMemory } from "../ffi/mod.ts";
import {
  assertSameFile,
  listDir,
  makeFile,
  type P2mProcess,
  shmEntries,
  spawnP2m,
  tempDir,
  uniqueName,
  waitFor,
} from "./helpers.ts";
import { leaveStale } from "./shm_helpers.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const notRoot = Deno.uid() !== 0;
if (notRoot) {
  console.error(
    "!!! SKIPPING the --group tests: they create a user and a group, which needs root. !!!",
  );
}

/** What the other user runs: the project's files and the deno binary, copied if it cannot reach ours. */
const PROGRAM_FILES = ["core", "ffi", "shm", "socket", "sharedmem.ts", "socket.ts", "deno.json"];

async function run(cmd: string, args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

async function must(cmd: string, args: string[]): Promise<string> {
  const result = await run(cmd, args);
  assert.equal(result.code, 0, `${cmd} ${args.join(" ")}: ${result.output}`);
  return result.output;
}

/** A real second user in a new group, with a home it owns; all removed on dispose. */
class OtherUser implements AsyncDisposable {
  readonly name: string;
  readonly group: string;
  /** Scratch space: 0755, holds the home and a staged copy of the program if needed. */
  readonly dir: string;
  readonly home: string;
  gid = -1;
  #deno = Deno.execPath();
  #root = root;

  private constructor(dir: string) {
    const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    this.name = `p2mu${suffix}`;
    this.group = `p2mg${suffix}`;
    this.dir = dir;
    this.home = `${dir}/home`;
  }

  static async create(): Promise<OtherUser> {
    const user = new OtherUser(await tempDir("p2m-group-"));
    try {
      await Deno.chmod(user.dir, 0o755);
      await must("groupadd", [user.group]);
      await must("useradd", ["-M", "-N", "-g", user.group, "-s", "/bin/sh", user.name]);
      user.gid = Number((await must("getent", ["group", user.group])).split(":")[2]);
      await Deno.mkdir(`${user.home}/out`, { recursive: true });
      await must("chown", ["-R", `${user.name}:${user.group}`, user.home]);
      await user.#stageIfUnreachable();
    } catch (error) {
      await user[Symbol.asyncDispose]();
      throw error;
    }
    return user;
  }

  /** Runs `command` as this user (its uid, gid and groups), in a clean environment. */
  as(command: string[]): string[] {
    return [
      "setpriv",
      "--reuid",
      this.name,
      "--regid",
      this.group,
      "--init-groups",
      "env",
      "-i",
      `HOME=${this.home}`,
      `DENO_DIR=${this.home}/deno`,
      "NO_COLOR=1",
      `PATH=${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      ...command,
    ];
  }

  /** Runs a p2m program as this user with its real permissions; code and output. */
  async p2m(
    program: "socket.ts" | "sharedmem.ts",
    args: string[],
  ): Promise<{ code: number; output: string }> {
    const permissions = program === "socket.ts" ? SOCKET_PERMISSIONS : SHM_PERMISSIONS;
    const [cmd, ...rest] = this.as([
      this.#deno,
      "run",
      ...permissions,
      `${this.#root}/${program}`,
      ...args,
    ]);
    return await run(cmd, rest);
  }

  /**
   * The other user needs read and search on the deno binary, the project's
   * files and every parent dir. Where a parent is closed to it (a checkout
   * under /root), it gets a copy in this user's scratch dir.
   */
  async #stageIfUnreachable(): Promise<void> {
    const probe = this.as(["test", "-x", this.#deno, "-a", "-r", `${root}/ffi/libc.ts`]);
    if ((await run(probe[0], probe.slice(1))).code === 0) return;
    const stage = `${this.dir}/stage`;
    await Deno.mkdir(stage);
    await must("cp", ["-R", ...PROGRAM_FILES.map((f) => `${root}/${f}`), `${stage}/`]);
    await Deno.copyFile(this.#deno, `${stage}/deno`);
    await Deno.chmod(`${stage}/deno`, 0o755);
    await must("chmod", ["-R", "a+rX", stage]);
    this.#deno = `${stage}/deno`;
    this.#root = stage;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await run("userdel", [this.name]);
    await run("groupdel", [this.group]);
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Ends a sender or server the test started (SIGTERM unless it has exited) and waits for it. */
async function stop(process: P2mProcess): Promise<void> {
  try {
    process.child.kill("SIGTERM");
  } catch { /* it has exited */ }
  await process.done();
}

/** The permission bits of `path`, or -1 while it does not exist. */
function modeOf(path: string): number {
  try {
    return (Deno.lstatSync(path).mode ?? 0) & 0o777;
  } catch {
    return -1;
  }
}

/** Asserts a refusal: exit 1, the reason on stderr, nothing in the output dir. */
function assertRefused(result: { code: number; output: string }, reason: RegExp, out: string) {
  assert.equal(result.code, 1, result.output);
  assert.match(result.output, reason);
  assert.deepEqual(listDir(out), [], "a refused receiver writes nothing");
}

/**
 * A receiver of another user is refused, writing nothing, both without
 * `--group` (the object is not its own: `owner` says whose, and the message
 * says to pass --group) and with a group that is not the object's (root).
 */
async function assertRefusedUnlessGroup(
  receive: (args: string[]) => Promise<{ code: number; output: string }>,
  owner: RegExp,
  gid: number,
  out: string,
  timeout: string,
): Promise<void> {
  assertRefused(
    await receive(["--timeout", timeout]),
    new RegExp(`${owner.source}, not \\d+; refusing to trust it .*pass --group GROUP`),
    out,
  );
  assertRefused(
    await receive(["--group", "root", "--timeout", timeout]),
    new RegExp(`belongs to gid ${gid}, not to group root \\(gid 0\\)`),
    out,
  );
}

Deno.test({
  name: "group: a shm receiver of another user receives with --group and is refused without it",
  ignore: notRoot,
  async fn() {
    await using user = await OtherUser.create();
    const file = `${user.dir}/data.bin`;
    await makeFile(file, 3 * 1024 * 1024 + 17, 7);
    const name = uniqueName("p2m-group");
    const out = `${user.home}/out`;
    const receive = (args: string[]) =>
      user.p2m("sharedmem.ts", ["receiver", "--name", name, "--out", `${out}/`, ...args]);

    // Without --group the segment stays 0600: the other user cannot open it.
    const closed = spawnP2m("sharedmem.ts", ["sender", file, "--name", name, "--wait", "20"]);
    try {
      assertRefused(
        await receive(["--group", user.group, "--timeout", "10"]),
        /shared memory .* exists but this user may not open it \(permission denied\)/,
        out,
      );
    } finally {
      await stop(closed);
    }

    const sender = spawnP2m("sharedmem.ts", [
      ...["sender", file, "--name", name, "--group", user.group, "--wait", "30"],
    ]);
    try {
      await assertRefusedUnlessGroup(receive, /belongs to uid 0/, user.gid, out, "20");
      const ok = await receive(["--group", user.group, "--timeout", "20"]);
      assert.equal(ok.code, 0, ok.output);
      await assertSameFile(`${out}/data.bin`, file);
      const result = await sender.done();
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout + result.stderr, /1 of 1 receiver\(s\) verified/);
    } finally {
      await stop(sender);
    }
    assert.deepEqual(await shmEntries(name), [], "no segment left");
  },
});

Deno.test({
  name: "group: a socket client of another user receives with --group and is refused without it",
  ignore: notRoot,
  async fn() {
    await using user = await OtherUser.create();
    const file = `${user.dir}/data.bin`;
    await makeFile(file, 2 * 1024 * 1024 + 5, 9);
    const out = `${user.home}/out`;
    // The default socket of a --group server: its group runtime dir.
    const runtimeDir = `/tmp/p2m-0-g${user.gid}`;
    const socket = `${runtimeDir}/p2m.sock`;
    const receive = (args: string[]) =>
      user.p2m("socket.ts", ["client", "--socket", socket, "--out", `${out}/`, ...args]);
    const server = spawnP2m("socket.ts", ["server", file, "--group", user.group, "--peers", "1"]);
    try {
      // The socket exists from listen(2) on, a moment before its chmod.
      await waitFor(() => modeOf(socket) === 0o660, 15_000, "the socket's mode 0660");
      const dir = Deno.statSync(runtimeDir);
      assert.equal((dir.mode ?? 0) & 0o7777, 0o2750, "the runtime dir is 2750");
      assert.equal(dir.gid, user.gid, "the runtime dir has the group");
      assert.equal(Deno.lstatSync(socket).gid, user.gid, "the socket has the group");

      await assertRefusedUnlessGroup(receive, /socket .* belongs to uid 0/, user.gid, out, "10");
      const ok = await receive(["--group", user.group, "--timeout", "20"]);
      assert.equal(ok.code, 0, ok.output);
      assert.match(ok.output, /xxh3-128 verified/);
      await assertSameFile(`${out}/data.bin`, file);
      const result = await server.done();
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(listDir(runtimeDir), [], "no socket left in the runtime dir");
    } finally {
      await stop(server);
      await Deno.remove(runtimeDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "group: a stale group segment that the receiver may not remove does not crash it",
  ignore: notRoot,
  async fn() {
    await using user = await OtherUser.create();
    const name = uniqueName("p2m-group");
    // A --group sender's segment whose sender and reaper both died: root's,
    // 0660 of the group, no liveness lock. /dev/shm is sticky, so the other
    // user may not unlink it.
    leaveStale(name, "full", { gid: user.gid });
    try {
      const out = `${user.home}/out`;
      const result = await user.p2m("sharedmem.ts", [
        ...["receiver", "--name", name, "--group", user.group, "--out", `${out}/`],
        ...["--timeout", "1"],
      ]);
      assertRefused(result, new RegExp(`no sender on ${name} within 1 s`), out);
      assert.doesNotMatch(result.output, /shm_unlink|Operation not permitted/);
      assert.equal((await shmEntries(name)).length, 1, "left for its owner to remove");
    } finally {
      SharedMemory.unlink(name);
    }
  },
});

Deno.test("group: a group that does not exist is a usage error (exit 2) on every side", async () => {
  const missing = `p2m-no-such-group-${uniqueName("g")}`;
  for (
    const [program, args] of [
      ["sharedmem.ts", ["sender", "deno.json", "--group", missing]],
      ["sharedmem.ts", ["receiver", "--group", missing]],
      ["socket.ts", ["server", "deno.json", "--group", missing]],
      ["socket.ts", ["client", "--group", missing]],
    ] as const
  ) {
    const result = await spawnP2m(program, [...args], { cwd: root }).done();
    assert.equal(result.code, 2, `${program} ${args[0]}: ${result.stderr}`);
    assert.match(
      result.stderr,
      new RegExp(`--group: there is no group '${missing}' on this system`),
    );
    assert.deepEqual(await shmEntries(missing), []);
  }
});
