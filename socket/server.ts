/**
 * The socket server parent: admission, the queue and the control state
 * machine; no file byte passes through it except with `--raw` (socket/raw.ts).
 *
 * Each accepted connection is a JSON-lines control channel
 * (socket/protocol.ts). After its `hello` (socket/peer_session.ts) a peer
 * waits for a slot (socket/admission.ts), then gets a worker subprocess
 * (socket/worker_handle.ts, messages in socket/worker_protocol.ts) with the
 * file, its digest (socket/served_file.ts) and a one-time token. The peer is
 * sent `connect`; the worker (socket/worker.ts) streams to it directly. On
 * the peer's good `verdict` the parent answers `commit` only if the worker
 * also saw the transfer through.
 *
 * A peer that does not present its token to its worker within
 * `PEER_CONNECT_MS` of the worker's running time loses the worker to the
 * next peer and goes to the back of the line once (a peer stopped while it
 * waited is only late), then fails. A slot is freed only when its worker
 * has exited, and a worker whose peer never came serves the next one, so at
 * most `--max-active` workers are ever alive, however many peers only say
 * hello.
 *
 * A stream (`-`, a FIFO) or a directory tree is read once into a spool
 * (socket/served_stream.ts, socket/spool.ts) that the workers send from
 * while it grows; the parent still relays no byte to a peer.
 *
 * @module
 */
import { exitForSignal, onAbort, onSignal } from "../core/cli.ts";
import { type Alarm, alarm, delay } from "../core/delay.ts";
import { describeError, P2mError } from "../core/errors.ts";
import { formatBytes } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { socketDir } from "../core/runtime_dir.ts";
import type { UnixGroup } from "../ffi/group.ts";
import type { DigestAlgorithm } from "../core/digest.ts";
import type { SourceInfo } from "../core/source.ts";
import { AdmissionQueue } from "./admission.ts";
import { listenUnix, type SocketListener } from "./listen.ts";
import {
  LineReader,
  newToken,
  oneLine,
  parseClientMessage,
  socketPathProblem,
} from "./protocol.ts";
import {
  closeQuietly,
  type PeerResult,
  PeerSession,
  readHello,
  refuse,
  reportSummary,
} from "./peer_session.ts";
import { sendRaw } from "./raw.ts";
import { ServedFile } from "./served_file.ts";
import { ServedStream } from "./served_stream.ts";
import { inputKind } from "../core/stream_source.ts";
import { WorkerPool } from "./worker_handle.ts";

/** How the server runs. */
export interface ServerOptions {
  /** The file to send: a regular file, `-` (stdin), a FIFO, or a directory tree. */
  file: string;
  /** Where a stream or a tree is spooled (socket/spool.ts). */
  spoolDir: string;
  /** Public socket path. */
  socket: string;
  /** Exit after this many peers finished; undefined serves until a signal. */
  peers?: number;
  /**
   * Seconds to wait for all `peers` to connect; then no new ones are taken,
   * the connected ones finish, and the server fails. Undefined: no limit.
   */
  waitSeconds?: number;
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
  /** `--group`: the sockets and their directory are shared with this group. */
  group?: UnixGroup;
  /** A stream to serve instead of opening `file` (net fetch --fanout); `file` then only names it. */
  served?: ServedStream;
}

/** Turns a peer gets at its worker before a missed connect fails it. */
const PEER_TURNS = 2;

/** Runs the server until its peers are done or a signal; returns the exit code. */
export async function runServer(options: ServerOptions): Promise<number> {
  const problem = socketPathProblem(options.socket);
  if (problem) throw new P2mError(problem, { exitCode: 2 });
  const skip = options.raw ? "skip" : options.digest;
  const kind = options.served ? "stream" : inputKind(options.file);
  if (kind !== "file" && options.raw) {
    throw new P2mError("--raw serves a regular file only, not a stream or a tree", {
      exitCode: 2,
    });
  }
  using file = options.served ??
    (kind === "file"
      ? new ServedFile(options.file, skip, options.reporter)
      : kind === "directory"
      ? ServedStream.fromTree(options.file, options.digest, options.spoolDir, options.reporter)
      : ServedStream.fromStream(options.file, options.digest, options.spoolDir));
  const workers = new WorkerPool(options.raw ? "" : socketDir(options.group));
  const unregisterSpares = onAbort(() => workers.discardSpares());
  let server: Server;
  try {
    // Deno takes a while to start: let the first workers boot meanwhile.
    if (!options.raw) workers.prestart(Math.min(options.peers ?? 1, options.maxActive, 16));
    server = new Server(options, file, await listenUnix(options.socket, options.group), workers);
  } catch (error) {
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
  }
}

/** The parent's state: who is waiting, who is served, and when to stop. */
class Server {
  #reporter: Reporter;
  #info: SourceInfo;
  #fatal: unknown;
  #peers: PeerSession[] = [];
  #queue: AdmissionQueue<PeerSession>;
  #finished = 0;
  #stopping = false;
  #signal: Deno.Signal | undefined;
  /** `--wait`'s alarm, until all `--peers` have come. */
  #waiting: Alarm | undefined;
  /** `--wait` ran out before `--peers` peers came. */
  #late = false;
  #wake = Promise.withResolvers<void>();
  /** Connections that have not said hello yet: closed when the server stops. */
  #greeting = new Set<Deno.UnixConn>();

  constructor(
    readonly options: ServerOptions,
    readonly file: ServedFile | ServedStream,
    readonly listener: SocketListener,
    readonly workers: WorkerPool,
  ) {
    this.#reporter = options.reporter;
    this.#info = file.info;
    this.#queue = new AdmissionQueue(options.maxActive);
  }

  async run(): Promise<number> {
    const { socket, raw, digest, peers } = this.options;
    const mode = raw ? "raw, unverified" : digest === "none" ? "no digest" : digest;
    this.#reporter.event("listening", {
      socket,
      file: this.#info.path,
      // null: a stream, whose size is known only at its end
      size: this.file instanceof ServedStream && !this.file.spool.tree ? null : this.#info.size,
      tree: this.file instanceof ServedStream && this.file.spool.tree,
      digest: raw ? "none" : digest,
      raw,
      peers: peers ?? null,
    });
    this.#reporter.info(
      `serving ${this.#info.name} (${this.#describeSize()}, ${mode}) on ${socket}` +
        (peers ? ` to ${peers} peer${peers === 1 ? "" : "s"}` : "; Ctrl-C to stop"),
    );
    onSignal((signal) => {
      // A second signal does not wait for the grace period.
      if (this.#signal) exitForSignal(signal as "SIGINT" | "SIGTERM");
      this.#signal = signal;
      this.#wake.resolve();
    });
    const accepting = this.#acceptLoop();
    // A changed (or unhashable) source: nobody gets a copy.
    this.file.watch((error) => {
      this.#fatal = error;
      this.#wake.resolve();
    });
    this.#waiting = this.#waitForPeers();
    if (this.#allDone()) this.#wake.resolve();
    await this.#wake.promise;
    this.#waiting?.cancel();
    this.#failIfFatal();
    this.#stopping = true;
    this.listener.close();
    for (const conn of this.#greeting) closeQuietly(conn);
    if (this.#late && !this.#signal && !this.#cameAllDone()) {
      // The peers that came are served to the end (a signal still stops them).
      this.#wake = Promise.withResolvers<void>();
      await this.#wake.promise;
      this.#failIfFatal();
    }
    this.file.unwatch();
    if (this.#signal) await this.#stop();
    await accepting;
    onSignal(undefined);
    const results = this.#peers.map((p) => p.result).filter((x): x is PeerResult => !!x);
    reportSummary(this.#reporter, results);
    if (this.#signal) return this.#signal === "SIGINT" ? 130 : 143;
    if (this.#late) {
      throw new P2mError(
        `only ${this.#peers.length} of ${this.options.peers} peers came within ` +
          `${this.options.waitSeconds} s (--wait)`,
      );
    }
    return results.every((x) => x.ok) ? 0 : 1;
  }

  /**
   * With `--wait`: an alarm that, unless all `--peers` have come by then,
   * stops taking new peers. Undefined without `--wait` or `--peers`.
   */
  #waitForPeers(): Alarm | undefined {
    const { peers, waitSeconds } = this.options;
    if (peers === undefined || waitSeconds === undefined) return undefined;
    return alarm(waitSeconds * 1000, () => {
      this.#late = true;
      this.#reporter.event("wait-expired", {
        came: this.#peers.length,
        peers,
        seconds: waitSeconds,
      });
      this.#reporter.info(
        `${this.#peers.length} of ${peers} peers came within ${waitSeconds} s: ` +
          "no new peers; letting those finish",
      );
      this.#wake.resolve();
    }, 250);
  }

  /** A changed (or unhashable) source: nobody gets a copy. */
  #failIfFatal(): void {
    if (!this.#fatal) return;
    this.file.unwatch();
    const message = describeError(this.#fatal);
    for (const peer of this.#peers) this.#finish(peer, false, 0, message);
    throw this.#fatal;
  }

  #describeSize(): string {
    if (!(this.file instanceof ServedStream)) return formatBytes(this.#info.size);
    if (this.file.spool.tree) return `tree, ${formatBytes(this.#info.size)} of tar`;
    return "a stream of unknown size";
  }

  /** Kills every worker and stops listening (for aborts). */
  abort(): void {
    this.listener.close();
    this.workers.discardSpares();
    for (const peer of this.#peers) {
      peer.worker?.discard(); // SIGKILL: even a stopped worker
      peer.close();
    }
  }

  #allDone(): boolean {
    return this.options.peers !== undefined && this.#finished >= this.options.peers;
  }

  /** After `--wait` ran out: every peer that came has finished (none can join now). */
  #cameAllDone(): boolean {
    return this.#late && this.#finished >= this.#peers.length;
  }

  async #stop(): Promise<void> {
    this.#reporter.info(`${this.#signal}: no new peers; letting running transfers finish`);
    for (const peer of [...this.#queue.waiting]) this.#finish(peer, false, 0, "server stopped");
    const pending = () => this.#peers.some((p) => p.phase === "active");
    const deadline = performance.now() + this.options.graceSeconds * 1000;
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
        conn = await this.listener.accept();
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
    const { peers } = this.options;
    if (this.#stopping || this.#late || (peers !== undefined && this.#peers.length >= peers)) {
      return undefined;
    }
    const peer = new PeerSession(this.#peers.length + 1, pid, conn, this.options.raw);
    this.#peers.push(peer);
    if (this.#peers.length === peers) this.#waiting?.cancel(); // all came in time
    this.#reporter.event("peer", { peer: peer.id, pid });
    return peer;
  }

  async #handle(conn: Deno.UnixConn): Promise<void> {
    if (this.options.raw) {
      const peer = this.#admit(conn, 0);
      if (!peer) return void conn.close();
      return this.#enqueue(peer);
    }
    const reader = new LineReader(conn);
    let hello;
    this.#greeting.add(conn);
    try {
      if (this.#stopping) throw new P2mError("server is stopping");
      hello = await readHello(reader, conn, this.options.stallSeconds);
      if (hello === null) return closeQuietly(conn); // connect and drop: not a peer
    } catch (error) {
      // Garbage, a timeout or a wrong version: drop this connection only.
      const message = oneLine(describeError(error));
      this.#reporter.event("rejected", { message });
      return await refuse(conn, message);
    } finally {
      this.#greeting.delete(conn);
    }
    const peer = this.#admit(conn, hello.pid);
    if (!peer) return await refuse(conn, "server is not accepting peers");
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
          const bound = Math.max(2, this.options.stallSeconds) * 1000;
          const exit = await peer.worker?.exitedWithin(bound);
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

  #enqueue(peer: PeerSession): void {
    const position = this.#queue.offer(peer);
    if (position === 0) return this.#start(peer);
    this.#reporter.event("queued", { peer: peer.id, position });
    void peer.send({ type: "queued", position });
  }

  #pump(): void {
    // Stopped by a signal, the queue is dropped (#stop); otherwise those in
    // line still get their turn.
    for (let peer; !this.#signal && (peer = this.#queue.next());) {
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
    const run = this.options.raw
      ? sendRaw(peer.conn, this.#info, this.options.limitRate)
        .then((sent) => this.#finish(peer, true, sent))
      : this.#serveThroughWorker(peer);
    const over = run.catch((error) => this.#finish(peer, false, 0, oneLine(describeError(error))));
    // The slot is free once the turn is over on both sides: its worker has
    // exited and the peer has finished (or gone back to the line).
    void Promise.all([over, peer.turnOver.promise]).then(() => {
      this.#queue.release();
      this.#pump();
    });
  }

  async #serveThroughWorker(peer: PeerSession): Promise<void> {
    const token = newToken();
    const worker = this.workers.take();
    peer.worker = worker;
    peer.workerSeconds = undefined;
    const { digest, stallSeconds, limitRate } = this.options;
    const digestHex = this.file.digestHex; // null: the digest follows once hashed
    const spool = this.file instanceof ServedStream ? this.file.spool : undefined;
    const config = {
      source: this.#info,
      digest,
      digestHex,
      token,
      stallSeconds,
      limitRate,
      ...(spool ? { spool } : {}),
    };
    const late = digestHex === null ? this.file.digest : undefined;
    const end = await worker.configure(config, late, (report) => {
      if (report.type === "ready") {
        void peer.send({ type: "connect", path: worker.socketPath, token })
          .then(() => worker.notified());
      } else if (report.type === "done") {
        peer.workerSeconds = report.seconds;
        // The peer has every byte; a peer that stops now must not hold a slot.
        peer.expectVerdict(stallSeconds, (why) => this.#finish(peer, false, 0, why));
      }
    });
    if (end.report?.type === "done") return; // every byte reached the peer: its verdict decides
    if (end.reusable) {
      // Its peer never came: the live worker serves the next peer in line.
      peer.worker = undefined; // no longer this peer's to kill
      if (this.#stopping) worker.discard();
      else this.workers.giveBack(worker);
      // Not after a signal: #stop has already dropped the line.
      if (peer.phase === "active" && peer.turns < PEER_TURNS && !this.#signal) {
        return this.#requeue(peer);
      }
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

  #finish(peer: PeerSession, ok: boolean, bytes: number, message?: string): void {
    if (peer.phase === "finished") return;
    clearTimeout(peer.verdictTimer);
    const wasActive = peer.phase === "active";
    peer.phase = "finished";
    this.#queue.remove(peer);
    peer.turnOver.resolve();
    this.#finished++;
    const unverified = this.options.raw || this.options.digest === "none";
    peer.conclude({ ok, bytes, message, unverified, wasActive }, this.#reporter);
    if (this.#allDone() || this.#cameAllDone()) this.#wake.resolve();
  }
}
