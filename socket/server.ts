/**
 * The socket server: one parent, one worker subprocess per peer.
 *
 * The parent listens on the public socket. Each accepted connection is a
 * JSON-lines control channel (socket/protocol.ts). After the peer's `hello`
 * the parent starts a worker (`socket.ts worker`) with the file, the digest it
 * computed once at start and a one-time token on the worker's stdin. The
 * worker listens on a one-time socket; the parent sends the peer `connect`
 * with that path and token, and the worker streams the file to the peer
 * directly. The peer's `verdict` comes back on the control channel.
 *
 * `--raw` is the one exception: there is no handshake in which to pass a
 * second socket, and Deno cannot hand an accepted connection to a child, so
 * the parent writes the plain file bytes to the accepted connection itself.
 *
 * @module
 */
import { exitForSignal, onAbort, onSignal } from "../core/cli.ts";
import { createDigest, type DigestAlgorithm, toHex } from "../core/digest.ts";
import { describeError, P2mError } from "../core/errors.ts";
import { formatBytes, formatTable, gibPerSecond } from "../core/format.ts";
import { programPath, SOCKET_PERMISSIONS } from "../core/permissions.ts";
import type { Reporter } from "../core/report.ts";
import { privateRuntimeDir } from "../core/runtime_dir.ts";
import { Source, type SourceInfo } from "../core/source.ts";
import { RateLimit } from "../core/rate_limit.ts";
import { lines } from "../core/lines.ts";
import { listenUnix, type SocketListener } from "./listen.ts";
import {
  chunkSize,
  DATA_CHUNK,
  encodeMessage,
  LineReader,
  newToken,
  oneLine,
  parseClientMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
  socketPathProblem,
  writeAll,
} from "./protocol.ts";
import { DIGEST_LINE, NOTIFIED, type WorkerConfig, type WorkerReport } from "./worker.ts";

/** How the server runs. */
export interface ServerOptions {
  /** The file to send. */
  file: string;
  /** Public socket path. */
  socket: string;
  /** Exit after this many peers finished; undefined serves until a signal. */
  peers?: number;
  /** Most workers alive at once; more peers wait in order. */
  maxActive: number;
  /** Plain bytes, no framing, no verification. */
  raw: boolean;
  /** Digest algorithm (`none` for `--no-verify`). */
  digest: DigestAlgorithm;
  /** Seconds a peer may be silent in a handshake or take no data. */
  stallSeconds: number;
  /** Bytes per second per peer; 0 for no limit. */
  limitRate: number;
  /** Seconds running transfers get to finish after SIGINT/SIGTERM. */
  graceSeconds: number;
  /** Where messages go. */
  reporter: Reporter;
}

/** One peer's outcome, as the summary shows it. */
export interface PeerResult {
  /** 1-based peer number in order of admission. */
  peer: number;
  /** The pid the peer claimed (0 if unknown). */
  pid: number;
  /** Bytes the peer received. */
  bytes: number;
  /** `yes`, `no` or `unverified` (raw or `--no-verify`). */
  verified: "yes" | "no" | "unverified";
  /** Whether the peer got and kept its copy. */
  ok: boolean;
  /** Seconds from streaming start to the peer's verdict. */
  seconds: number;
  /** Why it failed. */
  message?: string;
}

type State = "queued" | "active" | "finished";

class Peer {
  readonly id: number;
  readonly pid: number;
  readonly conn: Deno.UnixConn;
  state: State = "queued";
  worker?: Deno.ChildProcess;
  /** The worker's one-time socket path. */
  workerSocket?: string;
  /** Settles once the worker's stdout is fully read and it has exited. */
  workerGone?: Promise<void>;
  workerReport?: WorkerReport;
  workerStderr = "";
  started = 0;
  /** Bytes the peer said it received and verified. */
  bytes = 0;
  /** Set once the peer's good verdict arrived: waiting for `committed`. */
  committing = false;
  /** Fails a peer that does not give its verdict after the worker finished. */
  verdictTimer?: ReturnType<typeof setTimeout>;
  result?: PeerResult;
  #closed = false;
  #sending: Promise<void> = Promise.resolve();

  constructor(id: number, pid: number, conn: Deno.UnixConn) {
    this.id = id;
    this.pid = pid;
    this.conn = conn;
  }

  get label(): string {
    return this.pid ? `peer ${this.id} (pid ${this.pid})` : `peer ${this.id}`;
  }

  /** Sends a control message after any still being written, in order. */
  send(message: ServerMessage): Promise<void> {
    const bytes = encodeMessage(message);
    this.#sending = this.#sending.then(async () => {
      if (this.#closed) return;
      try {
        await writeAll(this.conn, bytes);
      } catch { /* the peer is gone; its reader notices */ }
    });
    return this.#sending;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

const encoder = new TextEncoder();

/** Bytes hashed between turns of the event loop. */
const HASH_SLICE = 32 * 1024 * 1024;

/**
 * Hashes the whole source once; returns its digest in hex. It runs while
 * the server already accepts peers (giving the event loop a turn every
 * {@linkcode HASH_SLICE} bytes): workers need the digest only for the
 * trailer, so hashing overlaps the transfers instead of delaying them.
 */
async function digestFile(source: Source, algorithm: DigestAlgorithm) {
  const info = source.info;
  const digest = await createDigest(algorithm);
  if (algorithm === "none") return "";
  const buf = new Uint8Array(DATA_CHUNK);
  let done = 0;
  let slice = 0;
  while (done < info.size) {
    const n = source.pread(buf.subarray(0, Math.min(buf.length, info.size - done)), done);
    if (n === 0) throw new P2mError(`${info.path} shrank while it was hashed`);
    digest.update(buf.subarray(0, n));
    done += n;
    slice += n;
    if (slice >= HASH_SLICE) {
      slice = 0;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  const changed = source.changed();
  if (changed) throw new P2mError(`${info.path} changed while it was hashed: ${changed}`);
  return toHex(digest.digest());
}

/** A worker process started ahead of its peer, waiting for its configuration. */
interface Spawned {
  child: Deno.ChildProcess;
  socketPath: string;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
}

/**
 * The worker's flags: its parent's, less subprocesses and network (its one
 * socket is made through libc, see socket/data_channel.ts).
 */
const WORKER_PERMISSIONS = SOCKET_PERMISSIONS.filter((flag) =>
  flag !== "--allow-net" && flag !== "--allow-run"
);

let spawned = 0;

/** Starts a worker process; it waits for its configuration on stdin. */
function startWorker(runtimeDir: string): Spawned {
  const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const socketPath = `${runtimeDir}/w-${Deno.pid}-${++spawned}-${suffix}.sock`;
  if (socketPathProblem(socketPath)) {
    throw new P2mError(`runtime directory ${runtimeDir} is too long for socket paths`);
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...WORKER_PERMISSIONS, programPath("socket.ts"), "worker"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return { child, socketPath, stdin: child.stdin.getWriter() };
}

/** Kills workers that never got a peer. */
function killSpare(workers: Spawned[]): void {
  for (const w of workers.splice(0)) {
    try {
      w.child.kill("SIGKILL");
    } catch { /* already exited */ }
    w.stdin.close().catch(() => {});
  }
}

/** Runs the server until its peers are done or a signal; returns the exit code. */
export async function runServer(options: ServerOptions): Promise<number> {
  const problem = socketPathProblem(options.socket);
  if (problem) throw new P2mError(problem, { exitCode: 2 });
  // The source stays open (with its read lease) for as long as we serve it.
  const source = Source.open(options.file);
  const weak = source.weakGuardWarning;
  if (weak) options.reporter.warn(weak);
  const spare: Spawned[] = [];
  const unregisterSpare = onAbort(() => killSpare(spare));
  let server: Server;
  try {
    const runtimeDir = options.raw ? "" : privateRuntimeDir();
    if (!options.raw) {
      // Deno takes a while to start: let the first workers boot meanwhile.
      const ahead = Math.min(options.peers ?? 1, options.maxActive, 16);
      for (let i = 0; i < ahead; i++) spare.push(startWorker(runtimeDir));
    }
    const listener = await listenUnix(options.socket);
    const digest = options.raw ? Promise.resolve("") : digestFile(source, options.digest);
    void digest.catch(() => {});
    server = new Server(options, source, digest, runtimeDir, listener, spare);
  } catch (error) {
    source.close();
    killSpare(spare);
    unregisterSpare();
    throw error;
  }
  const unregister = onAbort(() => server.abort());
  try {
    return await server.run();
  } finally {
    unregister();
    unregisterSpare();
    server.abort();
    source.close();
  }
}

/** How often the server looks for a change to the file it serves (ms). */
const SOURCE_CHECK_MS = 200;

class Server {
  #o: ServerOptions;
  #source: Source;
  #info: SourceInfo;
  /** The source's digest once hashed (null until then). */
  #digestHex: string | null = null;
  #digest: Promise<string>;
  #fatal: unknown;
  #runtimeDir: string;
  #listener: SocketListener;
  #spare: Spawned[];
  #peers: Peer[] = [];
  #queue: Peer[] = [];
  #active = 0;
  #finished = 0;
  #stopping = false;
  #signal: Deno.Signal | undefined;
  #wake: () => void = () => {};
  /** Connections that have not said hello yet: closed when the server stops. */
  #greeting = new Set<Deno.UnixConn>();

  constructor(
    options: ServerOptions,
    source: Source,
    digest: Promise<string>,
    runtimeDir: string,
    listener: SocketListener,
    spare: Spawned[],
  ) {
    this.#spare = spare;
    this.#o = options;
    this.#source = source;
    this.#info = source.info;
    this.#digest = digest;
    digest.then((hex) => this.#digestHex = hex, (error) => {
      this.#fatal = error;
      this.#wake();
    });
    this.#runtimeDir = runtimeDir;
    this.#listener = listener;
  }

  async run(): Promise<number> {
    const o = this.#o;
    const r = o.reporter;
    const mode = o.raw ? "raw, unverified" : o.digest === "none" ? "no digest" : o.digest;
    r.event("listening", {
      socket: o.socket,
      file: this.#info.path,
      size: this.#info.size,
      digest: o.raw ? "none" : o.digest,
      raw: o.raw,
      peers: o.peers ?? null,
    });
    r.info(
      `serving ${this.#info.name} (${formatBytes(this.#info.size)}, ${mode}) on ${o.socket}` +
        (o.peers ? ` to ${o.peers} peer${o.peers === 1 ? "" : "s"}` : "; Ctrl-C to stop"),
    );
    onSignal((signal) => {
      // A second signal does not wait for the grace period.
      if (this.#signal) exitForSignal(signal as "SIGINT" | "SIGTERM");
      this.#signal = signal;
      this.#wake();
    });
    const accepting = this.#acceptLoop();
    // A writer that breaks our read lease waits until we let go: notice it
    // promptly, and stop serving a file that is no longer the one we hashed.
    const watch = setInterval(() => {
      const changed = this.#source.changed();
      if (!changed || this.#fatal) return;
      this.#fatal = new P2mError(`${this.#info.path} changed while it was served (${changed})`);
      this.#wake();
    }, SOURCE_CHECK_MS);
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (this.#signal || this.#allDone() || this.#fatal) resolve();
    });
    clearInterval(watch);
    if (this.#fatal) {
      // The source could not be hashed (it changed): nobody gets a copy.
      const message = describeError(this.#fatal);
      for (const peer of this.#peers) this.#finish(peer, false, 0, message);
      throw this.#fatal;
    }
    this.#stopping = true;
    this.#listener.close();
    for (const conn of this.#greeting) closeQuietly(conn);
    if (this.#signal) await this.#stop();
    await accepting;
    onSignal(undefined);
    const results = this.#peers.map((p) => p.result).filter((x): x is PeerResult => !!x);
    this.#summary(results);
    if (this.#signal) return this.#signal === "SIGINT" ? 130 : 143;
    return results.every((x) => x.ok) ? 0 : 1;
  }

  /** Kills every worker and stops listening (for aborts). */
  abort(): void {
    this.#listener.close();
    killSpare(this.#spare);
    for (const peer of this.#peers) {
      try {
        peer.worker?.kill("SIGKILL"); // even a stopped worker
      } catch { /* already exited */ }
      if (peer.workerSocket) removeSocket(peer.workerSocket);
      peer.close();
    }
  }

  #allDone(): boolean {
    return this.#o.peers !== undefined && this.#finished >= this.#o.peers;
  }

  async #stop(): Promise<void> {
    const r = this.#o.reporter;
    r.info(`${this.#signal}: no new peers; letting running transfers finish`);
    for (const peer of [...this.#queue]) this.#finish(peer, false, 0, "server stopped");
    const pending = () => this.#peers.filter((p) => p.state === "active").length;
    const deadline = performance.now() + this.#o.graceSeconds * 1000;
    while (pending() > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const peer of this.#peers) {
      if (peer.state !== "active") continue;
      this.#finish(peer, false, 0, `server stopped by ${this.#signal} before the peer finished`);
    }
  }

  async #acceptLoop(): Promise<void> {
    const handlers: Promise<void>[] = [];
    while (true) {
      let conn: Deno.UnixConn | null;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping) break;
        this.#o.reporter.error(`accept failed: ${describeError(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      if (conn === null) break;
      const handler = this.#handle(conn).catch((error) => {
        this.#o.reporter.error(`connection failed: ${describeError(error)}`);
      });
      handlers.push(handler);
      if (handlers.length > 256) {
        // Keep the list short under a connection flood.
        handlers.splice(0, handlers.length - 256);
      }
    }
    await Promise.all(handlers);
  }

  /** Admits a connection if there is room; returns the new peer or undefined. */
  #admit(conn: Deno.UnixConn, pid: number): Peer | undefined {
    if (this.#stopping || (this.#o.peers !== undefined && this.#peers.length >= this.#o.peers)) {
      return undefined;
    }
    const peer = new Peer(this.#peers.length + 1, pid, conn);
    this.#peers.push(peer);
    this.#o.reporter.event("peer", { peer: peer.id, pid });
    return peer;
  }

  async #handle(conn: Deno.UnixConn): Promise<void> {
    if (this.#o.raw) {
      const peer = this.#admit(conn, 0);
      if (!peer) return void conn.close();
      this.#enqueue(peer);
      return;
    }
    const reader = new LineReader(conn);
    let hello;
    this.#greeting.add(conn);
    try {
      if (this.#stopping) throw new P2mError("server is stopping");
      const line = await this.#timed(reader.readLine(), conn);
      if (line === null) return void conn.close(); // connect and drop: not a peer
      hello = parseClientMessage(line);
      if (hello.type !== "hello") throw new P2mError("peer did not start with hello");
      if (hello.version !== PROTOCOL_VERSION) {
        throw new P2mError(`peer speaks protocol ${hello.version}, not ${PROTOCOL_VERSION}`);
      }
    } catch (error) {
      // Garbage, a timeout or a wrong version: drop this connection only.
      const message = oneLine(describeError(error));
      this.#o.reporter.event("rejected", { message });
      try {
        await writeAll(conn, encodeMessage({ type: "error", message }));
      } catch { /* gone */ }
      closeQuietly(conn);
      return;
    } finally {
      this.#greeting.delete(conn);
    }
    const peer = this.#admit(conn, hello.pid);
    if (!peer) {
      try {
        await writeAll(
          conn,
          encodeMessage({ type: "error", message: "server is not accepting peers" }),
        );
      } catch { /* gone */ }
      return void conn.close();
    }
    void peer.send({ type: "accepted", peer: peer.id });
    this.#enqueue(peer);
    await this.#control(peer, reader);
  }

  /**
   * Reads the peer's control lines: its verdict, then (after `commit`) its
   * `committed`, or EOF.
   */
  async #control(peer: Peer, reader: LineReader): Promise<void> {
    try {
      while (peer.state !== "finished") {
        const line = await reader.readLine();
        if (line === null) {
          this.#finish(peer, false, peer.bytes, "peer disconnected before it kept its copy");
          return;
        }
        const message = parseClientMessage(line);
        if (message.type === "verdict" && peer.state === "active" && !peer.committing) {
          clearTimeout(peer.verdictTimer);
          peer.bytes = message.bytes;
          if (!message.ok) {
            this.#finish(peer, false, message.bytes, message.message);
            continue;
          }
          peer.committing = true;
          // The copy is kept only if its worker also saw the transfer through.
          await this.#workerExit(peer);
          const report = peer.workerReport;
          if (report?.type !== "done") {
            const why = report?.type === "error" ? report.message : "its worker did not finish";
            this.#finish(peer, false, message.bytes, why);
            continue;
          }
          await peer.send({ type: "commit" });
        } else if (message.type === "committed" && peer.committing) {
          this.#finish(peer, message.ok, peer.bytes, message.message);
        } else {
          throw new P2mError(`peer sent an unexpected ${message.type}`);
        }
      }
    } catch (error) {
      this.#finish(peer, false, 0, oneLine(describeError(error)));
    }
  }

  async #timed<T>(promise: Promise<T>, conn: Deno.UnixConn): Promise<T> {
    let timedOut = false;
    const stall = this.#o.stallSeconds;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        conn.close();
      } catch { /* closed */ }
    }, stall * 1000);
    try {
      return await promise;
    } catch (error) {
      if (timedOut) throw new P2mError(`peer sent no hello within ${stall} s`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #enqueue(peer: Peer): void {
    if (this.#active < this.#o.maxActive) {
      this.#start(peer);
      return;
    }
    this.#queue.push(peer);
    this.#o.reporter.event("queued", { peer: peer.id, position: this.#queue.length });
    void peer.send({ type: "queued", position: this.#queue.length });
  }

  #pump(): void {
    while (!this.#stopping && this.#active < this.#o.maxActive && this.#queue.length > 0) {
      this.#start(this.#queue.shift()!);
      this.#queue.forEach((p, i) => void p.send({ type: "queued", position: i + 1 }));
    }
  }

  #start(peer: Peer): void {
    this.#queue = this.#queue.filter((p) => p !== peer);
    peer.state = "active";
    peer.started = performance.now();
    this.#active++;
    const run = this.#o.raw ? this.#sendRaw(peer) : this.#spawnWorker(peer);
    run.catch((error) => this.#finish(peer, false, 0, oneLine(describeError(error))));
  }

  /** Raw mode: the parent writes plain bytes (see the module note). */
  async #sendRaw(peer: Peer): Promise<void> {
    using file = Source.open(this.#info.path);
    const before = file.differsFrom(this.#info);
    if (before) throw new P2mError(`source changed before it was sent (${before})`);
    const size = this.#info.size;
    const limit = new RateLimit(this.#o.limitRate);
    const buf = new Uint8Array(chunkSize(this.#o.limitRate));
    let sent = 0;
    try {
      while (sent < size) {
        const n = file.pread(buf.subarray(0, Math.min(buf.length, size - sent)), sent);
        if (n === 0) throw new P2mError("source shrank while it was sent");
        await writeAll(peer.conn, buf.subarray(0, n));
        sent += n;
        await limit.pace(n);
      }
    } catch (error) {
      if (error instanceof P2mError) throw error;
      throw new P2mError(`peer connection failed after ${sent} bytes: ${(error as Error).message}`);
    }
    const changed = file.changed() ?? file.differsFrom(this.#info);
    if (changed) throw new P2mError(`source changed while it was sent (${changed})`);
    this.#finish(peer, true, sent);
  }

  async #spawnWorker(peer: Peer): Promise<void> {
    const token = newToken();
    const { child, socketPath, stdin } = this.#spare.shift() ?? startWorker(this.#runtimeDir);
    const config: WorkerConfig = {
      source: this.#info,
      digest: this.#o.digest,
      // null: the digest follows on stdin once hashed.
      digestHex: this.#digestHex,
      token,
      socketPath,
      stallSeconds: this.#o.stallSeconds,
      limitRate: this.#o.limitRate,
    };
    peer.worker = child;
    peer.workerSocket = socketPath;
    if (peer.state === "finished") child.kill("SIGKILL");
    stdin.write(encoder.encode(JSON.stringify(config) + "\n")).catch(() => {});
    if (config.digestHex === null) {
      this.#digest.then((hex) => stdin.write(encoder.encode(`${DIGEST_LINE} ${hex}\n`)))
        .catch(() => {});
    }
    // stdin stays open: its EOF tells the worker that this parent died.
    const stderr = (async () => {
      for await (const chunk of child.stderr) {
        if (peer.workerStderr.length < 4096) peer.workerStderr += new TextDecoder().decode(chunk);
      }
    })();
    const reports = (async () => {
      for await (const line of lines(child.stdout)) {
        let report: WorkerReport;
        try {
          report = JSON.parse(line);
        } catch {
          continue;
        }
        if (report.type === "ready") {
          void peer.send({ type: "connect", path: socketPath, token }).then(() =>
            stdin.write(encoder.encode(NOTIFIED + "\n"))
          ).catch(() => {});
        } else {
          peer.workerReport = report;
          if (report.type === "done" && !peer.committing) {
            // The peer has every byte; a peer that stops now must not hold a slot.
            const stall = this.#o.stallSeconds;
            const expire = () => {
              if (peer.committing) return;
              this.#finish(
                peer,
                false,
                0,
                `peer sent no verdict within ${stall} s of the last byte`,
              );
            };
            // Check twice: a verdict that waited in the socket while this
            // process was stopped gets read before the second check.
            peer.verdictTimer = setTimeout(() => {
              peer.verdictTimer = setTimeout(expire, 100);
            }, stall * 1000);
          }
        }
      }
    })();
    peer.workerGone = Promise.all([reports, child.status]).then(() => {});
    await reports;
    const status = await child.status;
    await stderr;
    await stdin.close().catch(() => {}); // the worker is gone: free the pipe
    // A worker killed before its peer connected cannot unlink its socket.
    removeSocket(socketPath);
    const report = peer.workerReport;
    if (report?.type === "done") return; // every byte reached the peer: its verdict decides
    const why = report?.type === "error"
      ? report.message
      : status.signal
      ? `worker was killed by ${status.signal}`
      : `worker exited with code ${status.code}`;
    this.#finish(peer, false, 0, why);
  }

  /** Waits (boundedly) for a worker to exit after the peer's verdict. */
  async #workerExit(peer: Peer): Promise<void> {
    const gone = peer.workerGone;
    if (!gone) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      gone,
      new Promise((resolve) => {
        timer = setTimeout(resolve, Math.max(2, this.#o.stallSeconds) * 1000);
      }),
    ]);
    clearTimeout(timer);
  }

  #finish(peer: Peer, ok: boolean, bytes: number, message?: string): void {
    if (peer.state === "finished") return;
    clearTimeout(peer.verdictTimer);
    const wasActive = peer.state === "active";
    peer.state = "finished";
    this.#queue = this.#queue.filter((p) => p !== peer);
    if (wasActive) this.#active--;
    this.#finished++;
    const report = peer.workerReport;
    const seconds = report?.type === "done" && ok
      ? report.seconds
      : wasActive
      ? (performance.now() - peer.started) / 1000
      : 0;
    const unverified = this.#o.raw || this.#o.digest === "none";
    peer.result = {
      peer: peer.id,
      pid: peer.pid,
      bytes,
      verified: !ok ? "no" : unverified ? "unverified" : "yes",
      ok,
      seconds,
      ...(ok ? {} : { message: message ?? "failed" }),
    };
    if (!ok) {
      try {
        peer.worker?.kill("SIGTERM");
      } catch { /* already exited */ }
      void peer.send({ type: "error", message: message ?? "transfer failed" }).finally(() =>
        peer.close()
      );
    } else {
      peer.close();
    }
    const r = this.#o.reporter;
    r.event("peer-done", { ...peer.result });
    if (ok) {
      r.info(
        `${peer.label}: ${peer.result.verified === "yes" ? "verified" : "delivered, unverified"}, ${
          formatBytes(bytes)
        } in ${seconds.toFixed(3)} s`,
      );
    } else {
      r.error(`${peer.label} failed: ${message ?? "transfer failed"}`, { peer: peer.id });
    }
    this.#pump();
    if (this.#allDone()) this.#wake();
  }

  #summary(results: PeerResult[]): void {
    const r = this.#o.reporter;
    const ok = results.filter((x) => x.ok).length;
    r.event("summary", { peers: results, ok, failed: results.length - ok });
    if (r.mode !== "human") return;
    if (results.length === 0) {
      r.info("no peers were served");
      return;
    }
    const rows = results.map((x) => [
      x.pid ? `${x.peer} (pid ${x.pid})` : String(x.peer),
      formatBytes(x.bytes),
      x.verified,
      x.seconds.toFixed(3),
      x.ok ? gibPerSecond(x.bytes, x.seconds).toFixed(2) : "-",
      x.message ?? "",
    ]);
    r.info(formatTable(["peer", "bytes", "verified", "seconds", "GiB/s", "note"], rows));
    r.info(`${ok} of ${results.length} peers ok`);
  }
}

function removeSocket(path: string): void {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch { /* gone, as it should be */ }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
