/**
 * The worker subprocess that serves one peer at a time (started as
 * socket/worker_main.ts, which loads only what a worker needs; `socket.ts
 * worker`, hidden, runs the same code).
 *
 * The server parent starts workers ahead of their peers (Deno takes a while
 * to start) and, once a peer has a slot, writes it a configuration on stdin
 * (socket/worker_protocol.ts; never argv, so the token is not visible in
 * `ps`). The worker opens the source through core/source.ts (its own read
 * lease, and the parent's recorded identity must still hold), listens on a
 * one-time socket (0600) in the private runtime directory and says `ready`.
 *
 * - **Callers**: every connection to the one-time socket is heard at once,
 *   each for at most {@linkcode TOKEN_MS}; the first with the right token
 *   (compared in constant time) is the peer, so silent or wrong callers
 *   delay nobody. Once the parent says `notified`, the peer has
 *   {@linkcode PEER_CONNECT_MS} of this worker's running time (a
 *   {@linkcode StallClock}); then the worker reports `missed` and waits for
 *   its next configuration instead of exiting.
 * - **Bytes**: header, then `sendfile(2)` straight from the page cache
 *   (socket/data_channel.ts says why through libc), then the trailer. Because
 *   sendfile may queue the file's pages rather than copies, the source is
 *   re-checked once the peer has read every byte, and the trailer says
 *   whether it changed.
 * - **Source watch**: every {@linkcode SOURCE_CHECK_MS} the worker polls its
 *   source, so a writer that breaks its lease is let go at once and the
 *   transfer fails at once.
 *
 * stdout reports: `ready`, then `done`, `missed` or `error`. stdin EOF
 * means the parent died: the worker aborts at once.
 *
 * @module
 */
import { onAbort, runAbortCleanups } from "../core/cleanups.ts";
import { fromHex } from "../core/digest.ts";
import { delay } from "../core/delay.ts";
import { describeError, P2mError } from "../core/errors.ts";
import { sharedGroupDir } from "../core/runtime_dir.ts";
import { Source } from "../core/source.ts";
import {
  encodeChunkLength,
  encodeHeader,
  encodeTrailer,
  KEEPALIVE_CHUNK,
  MAX_WIRE_CHUNK,
  TrailerStatus,
} from "../core/wire.ts";
import { RateLimit } from "../core/rate_limit.ts";
import { LibcError, POLLIN, POLLOUT, ReadOnlyFile, UnixSocket, unlinkPath } from "../ffi/mod.ts";
import { DataChannel, SEND_BUFFER } from "./data_channel.ts";
import { chunkSize, constantTimeEqual, LineReader, oneLine, TOKEN_HEX_LENGTH } from "./protocol.ts";
import { StallClock } from "./stall_clock.ts";
import {
  encodeReport,
  parseParentMessage,
  type WorkerConfig,
  type WorkerReport,
} from "./worker_protocol.ts";

/** Bytes per sendfile(2) call without a rate limit; the socket takes what fits. */
const SENDFILE_PIECE = 64 * 1024 * 1024;

/**
 * Most ms the peer may take, once it was sent `connect`, to connect and
 * present its token (counted only while this worker runs, see
 * socket/stall_clock.ts). Short, so that a peer that only said hello does
 * not hold a worker slot; the parent gives such a peer one more turn.
 */
export const PEER_CONNECT_MS = 2000;
/**
 * Most ms one connection to the one-time socket may take to send its
 * token. Several connections are heard at once, so a silent one cannot
 * delay the real peer; it is dropped after this.
 */
export const TOKEN_MS = 1000;
/** Most connections waiting to send a token at once; the oldest is dropped. */
const MAX_PENDING = 64;
/** How often the worker looks for a change to its source (ms). */
const SOURCE_CHECK_MS = 200;

/** The peer did not connect and present its token in time. */
class MissedError extends P2mError {
  constructor(readonly seconds: number) {
    super(`peer did not connect within ${seconds} s to its worker`);
    this.name = "MissedError";
  }
}

const encoder = new TextEncoder();

function report(message: WorkerReport): void {
  try {
    Deno.stdout.writeSync(encodeReport(message));
  } catch { /* parent gone */ }
}

/**
 * The worker's stdin as a sequence of sessions: each `configure` line
 * starts one; `notified` and a late `digest` belong to the current one.
 * stdin EOF means the parent died: abort at once (cleanups unlink the socket).
 */
class ParentInbox {
  #configs: WorkerConfig[] = [];
  #configWaiter = Promise.withResolvers<void>();
  #notified = false;
  #digest = Promise.withResolvers<string>();

  constructor() {
    void this.#read();
  }

  async #read(): Promise<void> {
    const stdin = new LineReader(Deno.stdin);
    try {
      for (let line; (line = await stdin.readLine()) !== null;) {
        let message;
        try {
          message = parseParentMessage(line);
        } catch (error) {
          report({ type: "error", message: oneLine(describeError(error)) });
          Deno.exit(1);
        }
        if (message?.type === "configure") {
          this.#configs.push(message.config);
          this.#configWaiter.resolve();
        } else if (message?.type === "notified") this.#notified = true;
        else if (message?.type === "digest") this.#digest.resolve(message.hex);
      }
    } catch { /* treat as EOF */ }
    runAbortCleanups(); // unlinks our one-time socket: Deno.exit runs no cleanups
    report({ type: "error", message: "server went away" });
    try {
      Deno.stderr.writeSync(encoder.encode("p2m: worker: server went away; aborted\n"));
    } catch { /* the server took the pipe with it */ }
    Deno.exit(1);
  }

  /** The next session's configuration; resets `notified` and the digest. */
  async nextConfig(): Promise<WorkerConfig> {
    while (this.#configs.length === 0) {
      await this.#configWaiter.promise;
      this.#configWaiter = Promise.withResolvers<void>();
    }
    this.#notified = false;
    this.#digest = Promise.withResolvers<string>();
    return this.#configs.shift()!;
  }

  /** Whether the parent said it sent the current peer `connect`. */
  get notified(): boolean {
    return this.#notified;
  }

  /** The digest for the current session's trailer. */
  digestFor(config: WorkerConfig): Promise<string> {
    return config.digestHex !== null ? Promise.resolve(config.digestHex) : this.#digest.promise;
  }
}

/**
 * Runs the worker role; returns the exit code. A session whose peer never
 * came (`missed`) leaves the worker alive for the parent to configure again:
 * a flood of peers that only say hello costs no new processes.
 */
export async function workerMain(): Promise<number> {
  const inbox = new ParentInbox();
  try {
    while (true) {
      const config = await inbox.nextConfig();
      try {
        return await serveOne(config, inbox);
      } catch (error) {
        if (!(error instanceof MissedError)) throw error;
        report({ type: "missed", seconds: error.seconds });
      }
    }
  } catch (error) {
    const message = error instanceof P2mError ? error.message : String(error);
    report({ type: "error", message: oneLine(message) });
    throw error;
  }
}

async function serveOne(config: WorkerConfig, inbox: ParentInbox): Promise<number> {
  const digestHex = inbox.digestFor(config);
  const { source, spool } = config;
  if (spool) {
    // The parent's spool of a stream or a tree: it only grows, and every byte
    // is in it once the digest arrives. No lease: nobody else writes it.
    let file: ReadOnlyFile;
    try {
      file = ReadOnlyFile.open(spool.path);
    } catch (error) {
      throw new P2mError(`cannot open the server's spool: ${describeError(error)}`);
    }
    using _file = file;
    return await stream(config, file, {
      notified: () => inbox.notified,
      digestHex,
      sourceChange: () => undefined,
      finalChange: () => undefined,
      setChannel: () => {},
    });
  }
  // Our own lease and identity check: the bytes we send must be the bytes
  // the parent hashed, so the file must still be exactly what it recorded.
  using file = Source.open(source.path);
  const before = file.differsFrom(source);
  if (before) throw new P2mError(`source ${source.path} changed before sending: ${before}`);
  // Our lease too must let a writer go at once: look for a change often,
  // and fail the transfer the moment there is one.
  let sourceChange: P2mError | undefined;
  let channel: DataChannel | undefined;
  let watching = true;
  (async () => {
    while (watching && !sourceChange) {
      await delay(SOURCE_CHECK_MS);
      const changed = watching ? file.changed() : undefined;
      if (!changed) continue;
      sourceChange = new P2mError(`source ${source.path} changed while it was sent: ${changed}`);
      channel?.abort(sourceChange);
    }
  })();
  try {
    return await stream(config, file.file, {
      notified: () => inbox.notified,
      digestHex,
      sourceChange: () => sourceChange,
      finalChange: () => file.changed() ?? file.differsFrom(source),
      setChannel: (opened) => channel = opened,
    });
  } finally {
    watching = false;
  }
}

/** What {@linkcode stream} learns from the parent and the source watch. */
interface StreamHooks {
  /** Whether the parent said it sent the peer `connect`. */
  notified: () => boolean;
  /** The digest for the trailer (the parent may still be hashing). */
  digestHex: Promise<string>;
  /** Why the source changed, once it did. */
  sourceChange: () => P2mError | undefined;
  /** Why the source changed, checked once the peer has read every byte. */
  finalChange: () => string | undefined;
  /** Hands over the data channel, so a source change can abort it. */
  setChannel: (channel: DataChannel) => void;
}

/** How long a producer's pause lasts before the peer gets a keepalive (ms). */
const KEEPALIVE_MS = 250;

/** How often a worker looks at a growing spool while it waits for more (ms). */
const SPOOL_POLL_MS = 5;

/** Listens, accepts the peer and streams the file (or the spool) to it. */
async function stream(
  config: WorkerConfig,
  raw: ReadOnlyFile,
  hooks: StreamHooks,
): Promise<number> {
  const { sourceChange, setChannel, digestHex, notified } = hooks;
  const { source, spool } = config;

  const stallMs = config.stallSeconds * 1000;
  let listener: UnixSocket;
  try {
    listener = UnixSocket.listen(config.socketPath);
    // In a --group server's runtime dir (setgid: the socket has its group),
    // the group's peers must reach it too. Before "ready": no one knows it yet.
    const dir = config.socketPath.slice(0, config.socketPath.lastIndexOf("/"));
    if (sharedGroupDir(dir)) Deno.chmodSync(config.socketPath, 0o660);
  } catch (error) {
    throw new P2mError(`cannot listen on ${config.socketPath}: ${describeError(error)}`);
  }
  const closeListener = () => {
    if (listener.closed) return;
    listener.close();
    unlinkPath(config.socketPath);
  };
  const unregister = onAbort(closeListener);
  let conn: UnixSocket;
  try {
    report({ type: "ready" });
    conn = await acceptPeer(listener, config.token, {
      notified,
      connectMs: Math.min(stallMs, PEER_CONNECT_MS),
      failure: sourceChange,
    });
  } finally {
    closeListener();
    unregister();
  }
  using _conn = conn;
  conn.setBufferSize("send", SEND_BUFFER);

  const start = performance.now();
  const channel = new DataChannel(
    conn,
    stallMs,
    () => new P2mError(`peer stalled: no progress for ${config.stallSeconds} s; transfer aborted`),
  );
  setChannel(channel);
  const changedNow = sourceChange();
  if (changedNow) channel.abort(changedNow);
  try {
    const unknown = spool !== undefined && spool.size === null;
    await channel.writeAll(
      encodeHeader({
        size: spool ? spool.size ?? 0 : source.size,
        ...(unknown ? { sizeUnknown: true } : {}),
        ...(spool?.tree ? { tree: true } : {}),
        mode: source.mode,
        name: source.name,
        digest: config.digest,
      }),
    );
    const limit = new RateLimit(config.limitRate);
    // Unlimited: as much per call as the socket takes. Limited: rate-sized pieces.
    const piece = limit.enabled ? chunkSize(config.limitRate) : SENDFILE_PIECE;
    const send = async (from: number, count: number) => {
      for (let sent = 0; sent < count;) {
        const n = conn.sendFile(raw, from + sent, Math.min(piece, count - sent));
        if (n === null) {
          await channel.wait(POLLOUT);
          continue;
        }
        if (n === 0) {
          throw new P2mError(`source ${source.path} shrank while it was sent; transfer aborted`);
        }
        sent += n;
        channel.progress();
        if (limit.enabled) await limit.pace(n);
        await channel.breathe(); // also throws at once if the source changed
      }
    };
    let sent = 0;
    if (spool) {
      // The spool grows while we send: send what is there, then look again.
      // Every byte is in it once the digest (computed as it was spooled) arrived.
      let ended = false;
      digestHex.then(() => ended = true, () => {});
      let lastSent = performance.now();
      while (true) {
        const end = ended; // read before the size: the size is then final
        const available = raw.stat().size;
        if (spool.size !== null && available > spool.size) {
          throw new P2mError(`the spool grew past the announced ${spool.size} bytes`);
        }
        if (available > sent) {
          const count = Math.min(available - sent, unknown ? MAX_WIRE_CHUNK : available);
          if (unknown) await channel.writeAll(encodeChunkLength(count));
          await send(sent, count);
          sent += count;
          lastSent = performance.now();
        } else if (end) break;
        else {
          channel.progress(); // waiting on the producer is no peer stall
          if (unknown && performance.now() - lastSent >= KEEPALIVE_MS) {
            // The peer's stall clock measures us, not the producer's pauses.
            await channel.writeAll(encodeChunkLength(KEEPALIVE_CHUNK));
            lastSent = performance.now();
          }
          await delay(SPOOL_POLL_MS);
        }
      }
      if (spool.size !== null && sent !== spool.size) {
        throw new P2mError(`the spool ended at ${sent} of ${spool.size} bytes`);
      }
      if (unknown) await channel.writeAll(encodeChunkLength(0));
    } else {
      await send(0, source.size);
      sent = source.size;
    }
    // sendfile(2) may have queued the file's pages, not copies: the bytes are
    // only fixed once the peer has read them, so check the source after that.
    await channel.drain();
    const hex = await digestHex; // the parent may still be hashing: the peer waits
    const changed = hooks.finalChange();
    await channel.writeAll(
      encodeTrailer({
        status: changed ? TrailerStatus.SourceChanged : TrailerStatus.Complete,
        size: sent,
        digest: fromHex(hex),
      }),
    );
    if (changed) throw new P2mError(`source ${source.path} changed while it was sent: ${changed}`);
    // Stay until the peer has read everything: it closes once it has the
    // trailer. A worker killed before that fails its peer, as it should.
    conn.shutdownWrite();
    channel.progress();
    const seconds = (performance.now() - start) / 1000;
    try {
      const one = new Uint8Array(1);
      while (await channel.read(one) !== 0) { /* the peer sends nothing here */ }
    } catch (error) {
      if (!(error instanceof LibcError)) throw error;
      // A reset after the last byte: the peer read everything and went.
    }
    report({ type: "done", bytes: sent, seconds });
    return 0;
  } catch (error) {
    if (error instanceof P2mError && !(error instanceof LibcError)) throw error;
    throw new P2mError(`peer connection failed: ${describeError(error)}`);
  }
}

/** What {@linkcode acceptPeer} waits for and gives up on. */
interface AcceptRules {
  /** Whether the parent said it sent the peer `connect`: the deadline starts then. */
  notified: () => boolean;
  /** Ms the peer then has to connect and present its token. */
  connectMs: number;
  /** A reason to stop at once (the source changed). */
  failure: () => P2mError | undefined;
}

/** A connection to the one-time socket that has not sent its whole token yet. */
interface Caller {
  conn: UnixSocket;
  since: number;
  token: Uint8Array;
  got: number;
}

/**
 * Hears every connection to the one-time socket at once, each for at most
 * {@linkcode TOKEN_MS}, and returns the first that presents the right
 * token; a silent or wrong caller is dropped without delaying anyone. Throws
 * a {@linkcode MissedError} once the peer, told where to connect, has taken
 * `connectMs` of this worker's running time (a parent that is merely slow
 * or stopped does not fail its peer: the clock starts at `notified`).
 */
async function acceptPeer(
  listener: UnixSocket,
  token: string,
  rules: AcceptRules,
): Promise<UnixSocket> {
  const callers: Caller[] = [];
  const drop = (caller: Caller) => {
    callers.splice(callers.indexOf(caller), 1);
    caller.conn.close();
  };
  let clock: StallClock | undefined;
  try {
    while (true) {
      const failure = rules.failure();
      if (failure) throw failure;
      if (!clock && rules.notified()) clock = new StallClock(rules.connectMs, 200);
      if (clock?.tick()) throw new MissedError(rules.connectMs / 1000);
      for (let conn; (conn = listener.accept()) !== null;) {
        if (callers.length >= MAX_PENDING) drop(callers[0]);
        callers.push({
          conn,
          since: performance.now(),
          token: new Uint8Array(TOKEN_HEX_LENGTH + 1),
          got: 0,
        });
      }
      for (const caller of [...callers]) {
        let n: number | null;
        try {
          n = caller.conn.read(caller.token.subarray(caller.got));
        } catch {
          drop(caller); // reset by a caller that gave up
          continue;
        }
        if (n === 0) drop(caller);
        else if (n !== null) {
          caller.got += n;
          if (caller.got < caller.token.length) continue;
          if (constantTimeEqual(new TextDecoder().decode(caller.token), token + "\n")) {
            callers.splice(callers.indexOf(caller), 1);
            return caller.conn;
          }
          drop(caller); // a wrong token
        } else if (performance.now() - caller.since > TOKEN_MS) drop(caller);
      }
      // Ends early when a caller arrives or, once one has, when its token
      // does: polling only the listener would read a token that came at
      // once up to 10 ms late.
      (callers.at(-1)?.conn ?? listener).poll(POLLIN, 10);
      await delay(0);
    }
  } finally {
    for (const caller of callers) caller.conn.close();
  }
}
