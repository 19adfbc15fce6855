/**
 * The socket server parent: admission, the queue and the control state
 * machine. No file byte passes through it (except with `--raw`).
 *
 * The parent listens on the public socket. Each accepted connection is a
 * JSON-lines control channel (socket/protocol.ts). After the peer's `hello`
 * it waits for a slot (socket/admission.ts), then gets a worker subprocess
 * (socket/worker_handle.ts; the stdio messages are in
 * socket/worker_protocol.ts) configured with the file, the digest the
 * parent computes once (`digestFile` in core/digest.ts) and a one-time
 * token. The parent sends the peer `connect` with the worker's socket and
 * token, and the worker (socket/worker.ts) streams the file to the peer
 * directly. The peer's `verdict` comes back here; the parent answers
 * `commit` only if the worker also saw the transfer through.
 *
 * A peer that does not connect to its worker and present its token within
 * `PEER_CONNECT_MS` (counted by the worker, only while it runs) loses the
 * worker: its slot goes to the next peer, and it goes to the back of the
 * line for one more turn (a peer stopped while it waited is only late), then
 * fails. A slot is given back only when its worker has exited, so at most
 * `--max-active` workers plus the pre-started spares are ever alive.
 *
 * `--raw` is the exception: the parent writes plain bytes itself
 * (socket/raw.ts).
 *
 * @module
 */
import { exitForSignal, onAbort, onSignal } from "../core/cli.ts";
import { delay } from "../core/delay.ts";
import { digestFile } from "../core/digest.ts";
import { describeError, P2mError } from "../core/errors.ts";
import { formatBytes } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { privateRuntimeDir } from "../core/runtime_dir.ts";
import { Source, type SourceInfo } from "../core/source.ts";
import type { DigestAlgorithm } from "../core/digest.ts";
import { AdmissionQueue } from "./admission.ts";
import { listenUnix, type SocketListener } from "./listen.ts";
import {
  encodeMessage,
  LineReader,
  newToken,
  oneLine,
  parseClientMessage,
  PROTOCOL_VERSION,
  socketPathProblem,
  writeAll,
} from "./protocol.ts";
import { closeQuietly, type PeerResult, PeerSession, reportSummary } from "./peer_session.ts";
import { sendRaw } from "./raw.ts";
import { removeSocket, WorkerPool } from "./worker_handle.ts";

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

/** Turns a peer gets at its worker before a missed connect fails it. */
const PEER_TURNS = 2;
/** How often the server looks for a change to the file it serves (ms). */
const SOURCE_CHECK_MS = 200;

/** Runs the server until its peers are done or a signal; returns the exit code. */
export async function runServer(options: ServerOptions): Promise<number> {
  const problem = socketPathProblem(options.socket);
  if (problem) throw new P2mError(problem, { exitCode: 2 });
  // The source stays open (with its read lease) for as long as we serve it.
  const source = Source.open(options.file);
  const weak = source.weakGuardWarning;
  if (weak) options.reporter.warn(weak);
  const workers = new WorkerPool(options.raw ? "" : privateRuntimeDir());
  const unregisterSpares = onAbort(() => workers.discardSpares());
  let server: Server;
  try {
    // Deno takes a while to start: let the first workers boot meanwhile.
    if (!options.raw) workers.prestart(Math.min(options.peers ?? 1, options.maxActive, 16));
    const listener = await listenUnix(options.socket);
    const digest = options.raw ? Promise.resolve("") : digestFile(source, options.digest);
    void digest.catch(() => {});
    server = new Server(options, source, digest, listener, workers);
  } catch (error) {
    source.close();
    workers.discardSpares();
    unregisterSpares();
    throw error;
  }
  const unregister = onAbort(() => server.abort());
  try {
    return await server.run();
  } finally {
    unregister();
    unregisterSpares();
    server.abort();
    source.close();
  }
}

class Server {
  #options: ServerOptions;
  #reporter: Reporter;
  #source: Source;
  #info: SourceInfo;
  /** The source's digest once hashed (null until then). */
  #digestHex: string | null = null;
  #digest: Promise<string>;
  #fatal: unknown;
  #listener: SocketListener;
  #workers: WorkerPool;
  #peers: PeerSession[] = [];
  #queue: AdmissionQueue<PeerSession>;
  #finished = 0;
  #stopping = false;
  #signal: Deno.Signal | undefined;
  #wake = Promise.withResolvers<void>();
  /** Connections that have not said hello yet: closed when the server stops. */
  #greeting = new Set<Deno.UnixConn>();

  constructor(
    options: ServerOptions,
    source: Source,
    digest: Promise<string>,
    listener: SocketListener,
    workers: WorkerPool,
  ) {
    this.#options = options;
    this.#reporter = options.reporter;
    this.#source = source;
    this.#info = source.info;
    this.#digest = digest;
    this.#queue = new AdmissionQueue(options.maxActive);
    digest.then((hex) => this.#digestHex = hex, (error) => {
      this.#fatal = error;
      this.#wake.resolve();
    });
    this.#listener = listener;
    this.#workers = workers;
  }

  async run(): Promise<number> {
    const { socket, raw, digest, peers } = this.#options;
    const mode = raw ? "raw, unverified" : digest === "none" ? "no digest" : digest;
    this.#reporter.event("listening", {
      socket,
      file: this.#info.path,
      size: this.#info.size,
      digest: raw ? "none" : digest,
      raw,
      peers: peers ?? null,
    });
    this.#reporter.info(
      `serving ${this.#info.name} (${formatBytes(this.#info.size)}, ${mode}) on ${socket}` +
        (peers ? ` to ${peers} peer${peers === 1 ? "" : "s"}` : "; Ctrl-C to stop"),
    );
    onSignal((signal) => {
      // A second signal does not wait for the grace period.
      if (this.#signal) exitForSignal(signal as "SIGINT" | "SIGTERM");
      this.#signal = signal;
      this.#wake.resolve();
    });
    const accepting = this.#acceptLoop();
    // A writer that breaks our read lease waits until we let go: notice it
    // promptly, and stop serving a file that is no longer the one we hashed.
    const watch = setInterval(() => {
      const changed = this.#source.changed();
      if (!changed || this.#fatal) return;
      this.#fatal = new P2mError(
        `${this.#info.path} changed while it was sent; unfinished transfers fail (${changed})`,
      );
      this.#wake.resolve();
    }, SOURCE_CHECK_MS);
    if (this.#allDone()) this.#wake.resolve();
    await this.#wake.promise;
    clearInterval(watch);
    if (this.#fatal) {
      // The source changed (or could not be hashed): nobody gets a copy.
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
    reportSummary(this.#reporter, results);
    if (this.#signal) return this.#signal === "SIGINT" ? 130 : 143;
    return results.every((x) => x.ok) ? 0 : 1;
  }

  /** Kills every worker and stops listening (for aborts). */
  abort(): void {
    this.#listener.close();
    this.#workers.discardSpares();
    for (const peer of this.#peers) {
      peer.worker?.kill("SIGKILL"); // even a stopped worker
      if (peer.worker) removeSocket(peer.worker.socketPath);
      peer.close();
    }
  }

  #allDone(): boolean {
    return this.#options.peers !== undefined && this.#finished >= this.#options.peers;
  }

  async #stop(): Promise<void> {
    this.#reporter.info(`${this.#signal}: no new peers; letting running transfers finish`);
    for (const peer of [...this.#queue.waiting]) this.#finish(peer, false, 0, "server stopped");
    const pending = () => this.#peers.some((p) => p.phase === "active");
    const deadline = performance.now() + this.#options.graceSeconds * 1000;
    while (pending() && performance.now() < deadline) await delay(20);
    for (const peer of this.#peers) {
      if (peer.phase !== "active") continue;
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
        this.#reporter.error(`accept failed: ${describeError(error)}`);
        await delay(50);
        continue;
      }
      if (conn === null) break;
      handlers.push(
        this.#handle(conn).catch((error) => {
          this.#reporter.error(`connection failed: ${describeError(error)}`);
        }),
      );
      // Keep the list short under a connection flood.
      if (handlers.length > 256) handlers.splice(0, handlers.length - 256);
    }
    await Promise.all(handlers);
  }

  /** Admits a connection if there is room; returns the new peer or undefined. */
  #admit(conn: Deno.UnixConn, pid: number): PeerSession | undefined {
    const { peers } = this.#options;
    if (this.#stopping || (peers !== undefined && this.#peers.length >= peers)) return undefined;
    const peer = new PeerSession(this.#peers.length + 1, pid, conn);
    this.#peers.push(peer);
    this.#reporter.event("peer", { peer: peer.id, pid });
    return peer;
  }

  async #handle(conn: Deno.UnixConn): Promise<void> {
    if (this.#options.raw) {
      const peer = this.#admit(conn, 0);
      if (!peer) return void conn.close();
      return this.#enqueue(peer);
    }
    const reader = new LineReader(conn);
    let hello;
    this.#greeting.add(conn);
    try {
      if (this.#stopping) throw new P2mError("server is stopping");
      const line = await this.#hello(reader.readLine(), conn);
      if (line === null) return void conn.close(); // connect and drop: not a peer
      hello = parseClientMessage(line);
      if (hello.type !== "hello") throw new P2mError("peer did not start with hello");
      if (hello.version !== PROTOCOL_VERSION) {
        throw new P2mError(`peer speaks protocol ${hello.version}, not ${PROTOCOL_VERSION}`);
      }
    } catch (error) {
      // Garbage, a timeout or a wrong version: drop this connection only.
      const message = oneLine(describeError(error));
      this.#reporter.event("rejected", { message });
      await writeAll(conn, encodeMessage({ type: "error", message })).catch(() => {});
      return closeQuietly(conn);
    } finally {
      this.#greeting.delete(conn);
    }
    const peer = this.#admit(conn, hello.pid);
    if (!peer) {
      const refusal = encodeMessage({ type: "error", message: "server is not accepting peers" });
      await writeAll(conn, refusal).catch(() => {});
      return closeQuietly(conn);
    }
    void peer.send({ type: "accepted", peer: peer.id });
    this.#enqueue(peer);
    await this.#control(peer, reader);
  }

  /**
   * Reads the peer's control lines: its verdict, then (after `commit`) its
   * `committed`, or EOF.
   */
  async #control(peer: PeerSession, reader: LineReader): Promise<void> {
    try {
      while (peer.phase !== "finished") {
        const line = await reader.readLine();
        if (line === null) {
          this.#finish(peer, false, peer.bytes, "peer disconnected before it kept its copy");
          return;
        }
        const message = parseClientMessage(line);
        if (message.type === "verdict" && peer.phase === "active" && !peer.committing) {
          clearTimeout(peer.verdictTimer);
          peer.bytes = message.bytes;
          if (!message.ok) {
            this.#finish(peer, false, message.bytes, message.message);
            continue;
          }
          peer.committing = true;
          // The copy is kept only if its worker also saw the transfer through.
          const exit = await this.#workerExit(peer);
          if (exit?.report?.type !== "done") {
            this.#finish(peer, false, message.bytes, exit?.failure ?? "its worker did not finish");
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

  /** Waits for the hello line; a peer silent past the stall timeout is dropped. */
  async #hello<T>(promise: Promise<T>, conn: Deno.UnixConn): Promise<T> {
    let timedOut = false;
    const stall = this.#options.stallSeconds;
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(conn);
    }, stall * 1000);
    try {
      return await promise;
    } catch (error) {
      if (timedOut) throw new P2mError(`peer sent no hello within ${stall} s`, { cause: error });
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #enqueue(peer: PeerSession): void {
    const position = this.#queue.offer(peer);
    if (position === 0) return this.#start(peer);
    this.#reporter.event("queued", { peer: peer.id, position });
    void peer.send({ type: "queued", position });
  }

  #pump(): void {
    for (let peer; !this.#stopping && (peer = this.#queue.next());) {
      this.#start(peer);
      this.#queue.waiting.forEach((p, i) => void p.send({ type: "queued", position: i + 1 }));
    }
  }

  /** Starts a peer's turn in the slot it was just given. */
  #start(peer: PeerSession): void {
    peer.phase = "active";
    peer.started = performance.now();
    peer.turns++;
    peer.turnOver = Promise.withResolvers<void>();
    const run = this.#options.raw ? this.#sendRaw(peer) : this.#serveThroughWorker(peer);
    const over = run.catch((error) => this.#finish(peer, false, 0, oneLine(describeError(error))));
    // The slot is free once the turn is over on both sides: its worker has
    // exited and the peer has finished (or gone back to the line).
    void Promise.all([over, peer.turnOver.promise]).then(() => {
      this.#queue.release();
      this.#pump();
    });
  }

  async #sendRaw(peer: PeerSession): Promise<void> {
    const sent = await sendRaw(peer.conn, this.#info, this.#options.limitRate);
    this.#finish(peer, true, sent);
  }

  async #serveThroughWorker(peer: PeerSession): Promise<void> {
    const token = newToken();
    const worker = this.#workers.take();
    peer.worker = worker;
    peer.workerSeconds = undefined;
    const { digest, stallSeconds, limitRate } = this.#options;
    const digestHex = this.#digestHex; // null: the digest follows once hashed
    const config = { source: this.#info, digest, digestHex, token, stallSeconds, limitRate };
    const late = digestHex === null ? this.#digest : undefined;
    const end = await worker.configure(config, late, (report) => {
      if (report.type === "ready") {
        void peer.send({ type: "connect", path: worker.socketPath, token })
          .then(() => worker.notified());
      } else if (report.type === "done") {
        peer.workerSeconds = report.seconds;
        // The peer has every byte; a peer that stops now must not hold a slot.
        if (!peer.committing) {
          peer.expectVerdict(stallSeconds, () => {
            this.#finish(
              peer,
              false,
              0,
              `peer sent no verdict within ${stallSeconds} s of the last byte`,
            );
          });
        }
      }
    });
    if (end.report?.type === "done") return; // every byte reached the peer: its verdict decides
    if (end.reusable) {
      // Its peer never came: the live worker serves the next peer in line.
      peer.worker = undefined; // no longer this peer's to kill
      if (this.#stopping) worker.discard();
      else this.#workers.giveBack(worker);
      if (peer.phase === "active" && peer.turns < PEER_TURNS) return this.#requeue(peer);
    }
    this.#finish(peer, false, 0, end.failure);
  }

  /** A peer that missed its worker loses its slot and goes to the back of the line. */
  #requeue(peer: PeerSession): void {
    peer.phase = "queued";
    peer.turnOver.resolve();
    const position = this.#queue.offer(peer);
    this.#reporter.event("requeued", { peer: peer.id, position });
    if (position === 0) return this.#start(peer);
    void peer.send({ type: "queued", position });
  }

  /** Waits (boundedly) for a worker to exit after the peer's verdict. */
  async #workerExit(peer: PeerSession) {
    const exited = peer.worker?.exited;
    if (!exited) return undefined;
    const limit = delay(Math.max(2, this.#options.stallSeconds) * 1000).then(() => undefined);
    return await Promise.race([exited, limit]);
  }

  #finish(peer: PeerSession, ok: boolean, bytes: number, message?: string): void {
    if (peer.phase === "finished") return;
    clearTimeout(peer.verdictTimer);
    const wasActive = peer.phase === "active";
    peer.phase = "finished";
    this.#queue.remove(peer);
    peer.turnOver.resolve();
    this.#finished++;
    const seconds = wasActive ? (performance.now() - peer.started) / 1000 : 0;
    const unverified = this.#options.raw || this.#options.digest === "none";
    peer.result = {
      peer: peer.id,
      pid: peer.pid,
      bytes,
      verified: !ok ? "no" : unverified ? "unverified" : "yes",
      ok,
      seconds: ok && peer.workerSeconds !== undefined ? peer.workerSeconds : seconds,
      ...(ok ? {} : { message: message ?? "failed" }),
    };
    if (!ok) {
      peer.worker?.kill("SIGTERM");
      void peer.send({ type: "error", message: message ?? "transfer failed" })
        .finally(() => peer.close());
    } else {
      peer.close();
    }
    this.#reporter.event("peer-done", { ...peer.result });
    if (ok) {
      const what = peer.result.verified === "yes" ? "verified" : "delivered, unverified";
      this.#reporter.info(
        `${peer.label}: ${what}, ${formatBytes(bytes)} in ${peer.result.seconds.toFixed(3)} s`,
      );
    } else {
      this.#reporter.error(`${peer.label} failed: ${message ?? "transfer failed"}`, {
        peer: peer.id,
      });
    }
    if (this.#allDone()) this.#wake.resolve();
  }
}
