/**
 * The worker subprocess that serves one peer (`socket.ts worker`, hidden).
 *
 * The server parent starts workers ahead of their peers (Deno takes a while
 * to start) and, once a peer is admitted, writes a {@linkcode WorkerConfig}
 * line to one's stdin (never argv, so the token is not visible in `ps`). The
 * worker listens on a one-time socket (0600) in the private runtime
 * directory and says `ready` on stdout. The peer connects and sends the
 * token; the worker compares it in constant time, unlinks its socket and
 * sends header, bytes and trailer: the bytes go with `sendfile(2)` straight
 * from the page cache (socket/data_channel.ts says why through libc), never
 * through the parent. Because sendfile may queue the file's pages rather
 * than copies, the source is re-checked only once the peer has read every
 * byte, and the trailer says whether it changed.
 *
 * stdout lines (JSON): `ready`, then `done` {bytes, seconds} or `error`
 * {message}. stdin EOF means the parent died: the worker aborts at once.
 *
 * @module
 */
import { onAbort, runCleanups } from "../core/cli.ts";
import { type DigestAlgorithm, isDigestAlgorithm } from "../core/digest.ts";
import { describeError, P2mError } from "../core/errors.ts";
import { isSourceInfo, Source, type SourceInfo } from "../core/source.ts";
import { encodeHeader, encodeTrailer, TrailerStatus } from "../core/wire.ts";
import { RateLimit } from "../core/rate_limit.ts";
import { LibcError, POLLIN, POLLOUT, UnixSocket, unlinkPath } from "../ffi/mod.ts";
import { DataChannel, SEND_BUFFER } from "./data_channel.ts";
import { chunkSize, constantTimeEqual, LineReader, oneLine, TOKEN_HEX_LENGTH } from "./protocol.ts";

/** Bytes per sendfile(2) call without a rate limit; the socket takes what fits. */
const SENDFILE_PIECE = 64 * 1024 * 1024;

/** What the parent tells a worker on its stdin. */
export interface WorkerConfig {
  /** The source as the parent opened and hashed it. */
  source: SourceInfo;
  /** Digest algorithm of the header. */
  digest: DigestAlgorithm;
  /**
   * Hex digest the parent computed (empty for `none`), or null while the
   * parent is still hashing: it then sends a {@linkcode DIGEST_LINE} line.
   */
  digestHex: string | null;
  /** The one-time token the peer must present. */
  token: string;
  /** Where to listen for the peer. */
  socketPath: string;
  /** Seconds the peer may take to connect, or to take the next chunk. */
  stallSeconds: number;
  /** Bytes per second; 0 for no limit. */
  limitRate: number;
}

/** The line the parent writes to a worker's stdin after sending `connect`. */
export const NOTIFIED = "notified";
/** Starts the stdin line `digest <hex>` that brings a digest computed late. */
export const DIGEST_LINE = "digest";
const HEX = /^([0-9a-f]{2})*$/;

/** A worker's report on stdout. */
export type WorkerReport =
  | { type: "ready" }
  | { type: "done"; bytes: number; seconds: number }
  | { type: "error"; message: string };

const encoder = new TextEncoder();

function report(message: WorkerReport): void {
  try {
    Deno.stdout.writeSync(encoder.encode(JSON.stringify(message) + "\n"));
  } catch { /* parent gone */ }
}

function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function parseConfig(line: string | null): WorkerConfig {
  if (line === null) throw new P2mError("worker got no configuration on stdin");
  const c = JSON.parse(line) as WorkerConfig;
  if (
    !isSourceInfo(c?.source) ||
    typeof c.digest !== "string" || !isDigestAlgorithm(c.digest) ||
    (c.digestHex !== null && (typeof c.digestHex !== "string" || !HEX.test(c.digestHex))) ||
    typeof c.token !== "string" || c.token.length !== TOKEN_HEX_LENGTH ||
    typeof c.socketPath !== "string" || typeof c.stallSeconds !== "number" ||
    typeof c.limitRate !== "number"
  ) {
    throw new P2mError("worker got a bad configuration");
  }
  return c;
}

/** Runs the worker role; returns the exit code. */
export async function workerMain(): Promise<number> {
  try {
    return await serveOne();
  } catch (error) {
    const message = error instanceof P2mError ? error.message : String(error);
    report({ type: "error", message: oneLine(message) });
    throw error;
  }
}

async function serveOne(): Promise<number> {
  const stdin = new LineReader(Deno.stdin);
  const config = parseConfig(await stdin.readLine());
  // The parent says `notified` once it told the peer where to connect.
  // Parent death closes our stdin: abort at once (cleanups unlink the socket).
  let setDigest: (hex: string) => void = () => {};
  const digestHex = config.digestHex !== null
    ? Promise.resolve(config.digestHex)
    : new Promise<string>((resolve) => setDigest = resolve);
  let notify = () => {};
  const notified = new Promise<void>((resolve) => notify = resolve);
  void (async () => {
    try {
      for (let line; (line = await stdin.readLine()) !== null;) {
        if (line === NOTIFIED) notify();
        const [word, hex] = line.split(" ");
        if (word === DIGEST_LINE && hex !== undefined && HEX.test(hex)) setDigest(hex);
      }
    } catch { /* treat as EOF */ }
    runCleanups(); // unlinks our one-time socket: Deno.exit runs no cleanups
    report({ type: "error", message: "server went away" });
    try {
      Deno.stderr.writeSync(encoder.encode("p2m: worker: server went away; aborted\n"));
    } catch { /* the server took the pipe with it */ }
    Deno.exit(1);
  })();

  const { source } = config;
  // Our own lease and identity check: the bytes we send must be the bytes
  // the parent hashed, so the file must still be exactly what it recorded.
  using file = Source.open(source.path);
  const before = file.differsFrom(source);
  if (before) throw new P2mError(`source ${source.path} changed before sending: ${before}`);
  const raw = file.file;

  const stallMs = config.stallSeconds * 1000;
  let listener: UnixSocket;
  try {
    listener = UnixSocket.listen(config.socketPath);
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
    let deadline = Infinity;
    void notified.then(() => deadline = performance.now() + stallMs);
    report({ type: "ready" });
    // The connect deadline starts once the peer was told where to go, so a
    // parent that is merely slow or stopped does not fail its peer.
    conn = await acceptPeer(listener, config.token, () => deadline, stallMs);
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
  try {
    await channel.writeAll(
      encodeHeader({
        size: source.size,
        mode: source.mode,
        name: source.name,
        digest: config.digest,
      }),
    );
    const limit = new RateLimit(config.limitRate);
    // Unlimited: as much per call as the socket takes. Limited: rate-sized pieces.
    const piece = limit.enabled ? chunkSize(config.limitRate) : SENDFILE_PIECE;
    let sent = 0;
    while (sent < source.size) {
      const n = conn.sendFile(raw, sent, Math.min(piece, source.size - sent));
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
      else await channel.breathe();
    }
    // sendfile(2) may have queued the file's pages, not copies: the bytes are
    // only fixed once the peer has read them, so check the source after that.
    await channel.drain();
    const hex = await digestHex; // the parent may still be hashing: the peer waits
    const changed = file.changed() ?? file.differsFrom(source);
    await channel.writeAll(
      encodeTrailer({
        status: changed ? TrailerStatus.SourceChanged : TrailerStatus.Complete,
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

/**
 * Accepts connections until one presents the right token, or throws once
 * `deadline()` (a performance.now() time) passes.
 */
async function acceptPeer(
  listener: UnixSocket,
  token: string,
  deadline: () => number,
  stallMs: number,
): Promise<UnixSocket> {
  const buf = new Uint8Array(TOKEN_HEX_LENGTH + 1);
  const expired = () => performance.now() > deadline();
  const late = () => new P2mError(`peer did not connect within ${stallMs / 1000} s`);
  while (true) {
    if (expired()) throw late();
    const ready = listener.poll(POLLIN, 10);
    const conn = ready & POLLIN ? listener.accept() : null;
    if (conn === null) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      continue;
    }
    // The token must arrive before the connect deadline too.
    const remaining = Math.max(0, deadline() - performance.now());
    const channel = new DataChannel(
      conn,
      Math.min(stallMs, remaining),
      () => new P2mError("no token in time"),
    );
    try {
      await channel.readFull(buf, "token");
      const text = new TextDecoder().decode(buf);
      if (constantTimeEqual(text, token + "\n")) return conn;
    } catch { /* a wrong or broken caller: keep waiting for the peer */ }
    conn.close();
  }
}
