/**
 * Helpers for the socket transport tests: real servers and clients, plus a
 * fake server and fake clients that speak (or break) the protocol on purpose.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { privateRuntimeDir } from "../core/runtime_dir.ts";
import { LineReader, readFull, TOKEN_HEX_LENGTH, writeAll } from "../socket/protocol.ts";
import {
  listDir,
  makeFile,
  type P2mProcess,
  spawnP2m,
  spawnReceiving,
  tempDir,
  waitFor,
} from "./helpers.ts";

const encoder = new TextEncoder();

/** A temp dir with a short socket path in it; removed on dispose. */
export async function socketPlace(): Promise<
  { dir: string; socket: string; [Symbol.asyncDispose](): Promise<void> }
> {
  const dir = await tempDir("p2m-sock-");
  return {
    dir,
    socket: `${dir}/s.sock`,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Starts a socket server on `socket` serving `file`. */
export function startServer(file: string, socket: string, args: string[] = []): P2mProcess {
  return spawnP2m("socket.ts", ["server", file, "--socket", socket, ...args]);
}

/** Writes `size` bytes (from `seed`) to `place.dir/f.bin`; returns that path. */
export async function newFile(place: { dir: string }, size: number, seed = 1): Promise<string> {
  const file = `${place.dir}/f.bin`;
  await makeFile(file, size, seed);
  return file;
}

/**
 * Writes `size` bytes (from `seed`) to `place.dir/f.bin` and starts a server
 * of it on `place.socket` with `args`; returns once the socket is there.
 */
export async function serveNewFile(
  place: { dir: string; socket: string },
  size: number,
  args: string[] = [],
  seed = 1,
): Promise<{ file: string; data: Uint8Array; server: P2mProcess }> {
  const file = `${place.dir}/f.bin`;
  const data = await makeFile(file, size, seed);
  const server = startServer(file, place.socket, args);
  await waitForSocket(place.socket);
  return { file, data, server };
}

/**
 * Waits for `server` to end and asserts its exit `code`, that its stdout
 * says `says`, and that it left no worker socket behind.
 */
export async function assertServed(server: P2mProcess, code: number, says: RegExp): Promise<void> {
  const served = await server.done();
  assert.equal(served.code, code, served.stderr);
  assert.match(served.stdout, says);
  assert.deepEqual(workerSockets(server.child.pid), []);
}

/** Starts a client writing into `out/`. */
export function startClient(socket: string, out: string, args: string[] = []): P2mProcess {
  return spawnReceiving("socket.ts", ["client", "--socket", socket], out, args);
}

/** Waits until a socket file exists at `path`. */
export async function waitForSocket(path: string): Promise<void> {
  await waitFor(
    () => {
      try {
        return Deno.lstatSync(path).isSocket === true;
      } catch {
        return false;
      }
    },
    15_000,
    `socket ${path}`,
  );
}

/** Waits until a server accepts connections on `path` (a probe it ignores). */
export async function waitForListener(path: string): Promise<void> {
  await waitFor(
    async () => {
      try {
        (await Deno.connect({ transport: "unix", path })).close();
        return true;
      } catch {
        return false;
      }
    },
    15_000,
    `a server on ${path}`,
  );
}

/** Worker socket files a server with this pid left in the runtime dir. */
export function workerSockets(serverPid: number): string[] {
  return listDir(privateRuntimeDir()).filter((n) => n.startsWith(`w-${serverPid}-`));
}

/** Asserts a directory holds no temp (`.p2m-…part`) files. */
export function assertNoTempFiles(dir: string): void {
  const temps = listDir(dir).filter((n) => n.endsWith(".part"));
  assert.deepEqual(temps, [], `temp files left in ${dir}`);
}

/** Pids of the direct children of `pid` (e.g. a server's workers). */
export function childPids(pid: number): number[] {
  const out = new Deno.Command("ps", {
    args: ["-o", "pid=", "--ppid", String(pid)],
    stdout: "piped",
  })
    .outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").map(Number).filter((n) => n > 0);
}

/**
 * Connects to `path`, retrying briefly while it is refused: a socket file
 * exists from bind(2) on, a moment before its server listen(2)s.
 */
async function connectListening(path: string): Promise<Deno.UnixConn> {
  for (let tries = 0;; tries++) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused) || tries >= 100) throw error;
      await delay(20);
    }
  }
}

/** A protocol-speaking peer driven by the test, to misbehave precisely. */
export class FakeClient implements Disposable {
  /** The control connection. */
  readonly control: Deno.UnixConn;
  /** Lines from the server. */
  readonly lines: LineReader;
  /** The data connection, once {@linkcode connectData} ran. */
  data?: Deno.UnixConn;

  private constructor(control: Deno.UnixConn) {
    this.control = control;
    this.lines = new LineReader(control);
  }

  /** Connects to a server's public socket and says hello. */
  static async hello(socket: string): Promise<FakeClient> {
    const control = await connectListening(socket);
    await writeAll(control, encoder.encode(`{"type":"hello","version":1,"pid":${Deno.pid}}\n`));
    return new FakeClient(control);
  }

  /** Says hello, connects to its worker and reads the first `bytes` of the data stream. */
  static async reading(socket: string, bytes: number): Promise<FakeClient> {
    const fake = await FakeClient.hello(socket);
    await fake.connectData();
    await fake.readData(bytes);
    return fake;
  }

  /** Skips server messages up to the next `error`; returns it (null: the channel ended). */
  async nextError(): Promise<Record<string, unknown> | null> {
    let msg;
    do msg = await this.next(); while (msg && msg.type !== "error");
    return msg;
  }

  /** Next server message, parsed. */
  async next(): Promise<Record<string, unknown> | null> {
    const line = await this.lines.readLine();
    return line === null ? null : JSON.parse(line);
  }

  /** Waits for `connect` (past `accepted` and `queued`): the worker's socket and token. */
  async nextConnect(): Promise<{ path: string; token: string }> {
    let msg;
    do msg = await this.next(); while (msg?.type === "queued" || msg?.type === "accepted");
    assert.equal(msg?.type, "connect", `expected connect, got ${JSON.stringify(msg)}`);
    return { path: msg.path as string, token: msg.token as string };
  }

  /** Waits for `connect` (unless given), connects to the worker and sends the token. */
  async connectData(connect?: { path: string; token: string }): Promise<Deno.UnixConn> {
    const { path, token } = connect ?? await this.nextConnect();
    this.data = await Deno.connect({ transport: "unix", path });
    await writeAll(this.data, encoder.encode(`${token}\n`));
    return this.data;
  }

  /** Sends a control message (a verdict or `committed`). */
  async say(message: Record<string, unknown>): Promise<void> {
    await writeAll(this.control, encoder.encode(JSON.stringify(message) + "\n"));
  }

  /** Reads exactly `n` bytes of the data stream. */
  async readData(n: number): Promise<Uint8Array> {
    const buf = new Uint8Array(n);
    await readFull(this.data!, buf, "data");
    return buf;
  }

  /** Closes both connections. */
  close(): void {
    for (const conn of [this.data, this.control]) {
      try {
        conn?.close();
      } catch { /* closed */ }
    }
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A fake server that hands every peer a crafted data stream: `stream`
 * gets the data connection after the token checked out.
 */
export class FakeServer implements AsyncDisposable {
  #control: Deno.Listener;
  #data: Deno.Listener;
  #dataPath: string;
  #token = "ab".repeat(TOKEN_HEX_LENGTH / 2);
  #serving: Promise<void>;
  /** Verdicts the peers sent. */
  readonly verdicts: Record<string, unknown>[] = [];

  /** Listens on `socket` (and a data socket next to it). */
  constructor(socket: string, stream: (conn: Deno.UnixConn) => Promise<void>) {
    this.#control = Deno.listen({ transport: "unix", path: socket });
    this.#dataPath = `${socket}.data`;
    this.#data = Deno.listen({ transport: "unix", path: this.#dataPath });
    this.#serving = this.#serve(stream);
  }

  async #serve(stream: (conn: Deno.UnixConn) => Promise<void>): Promise<void> {
    const control = await this.#control.accept() as Deno.UnixConn;
    const lines = new LineReader(control);
    await lines.readLine(); // hello
    await writeAll(
      control,
      encoder.encode(
        JSON.stringify({ type: "connect", path: this.#dataPath, token: this.#token }) + "\n",
      ),
    );
    const data = await this.#data.accept() as Deno.UnixConn;
    const token = new Uint8Array(TOKEN_HEX_LENGTH + 1);
    await readFull(data, token, "token");
    try {
      await stream(data);
    } catch { /* the peer may hang up on a bad stream */ }
    try {
      data.close();
    } catch { /* closed */ }
    const verdict = await lines.readLine().catch(() => null);
    if (verdict) {
      const parsed = JSON.parse(verdict);
      this.verdicts.push(parsed);
      if (parsed.ok) {
        await writeAll(control, encoder.encode('{"type":"commit"}\n')).catch(() => {});
        const committed = await lines.readLine().catch(() => null);
        if (committed) this.verdicts.push(JSON.parse(committed));
      }
    }
    control.close();
  }

  /** Waits for the one peer to finish and closes the listeners. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#serving;
    this.#control.close();
    this.#data.close();
  }
}
