/**
 * The worker subprocess that serves one peer (`socket.ts worker`, hidden).
 *
 * The server parent starts one per admitted peer and writes a
 * {@linkcode WorkerConfig} line to its stdin (never argv, so the token is not
 * visible in `ps`). The worker listens on a one-time socket (0600) in the
 * private runtime directory and says `ready` on stdout. The peer connects and
 * sends the token; the worker compares it in constant time, unlinks its
 * socket and streams header, bytes and trailer straight from the file: file
 * bytes never pass through the parent.
 *
 * stdout lines (JSON): `ready`, then `done` {bytes, seconds} or `error`
 * {message}. stdin EOF means the parent died: the worker aborts at once.
 *
 * @module
 */
import { onAbort } from "../core/cli.ts";
import { type DigestAlgorithm, isDigestAlgorithm } from "../core/digest.ts";
import { P2mError } from "../core/errors.ts";
import { openSource, sourceChange, type SourceInfo } from "../core/source.ts";
import { encodeHeader, encodeTrailer, TrailerStatus } from "../core/wire.ts";
import { listenUnix } from "./listen.ts";
import { RateLimit } from "../core/rate_limit.ts";
import {
  chunkSize,
  constantTimeEqual,
  LineReader,
  oneLine,
  readFull,
  StallWatch,
  TOKEN_HEX_LENGTH,
} from "./protocol.ts";

/** What the parent tells a worker on its stdin. */
export interface WorkerConfig {
  /** The source as the parent opened and hashed it. */
  source: SourceInfo;
  /** Digest algorithm of the header. */
  digest: DigestAlgorithm;
  /** Hex digest the parent computed (empty for `none`). */
  digestHex: string;
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
  const s = c?.source;
  if (
    typeof s?.path !== "string" || typeof s.name !== "string" || !Number.isSafeInteger(s.size) ||
    typeof s.mode !== "number" || typeof s.mtimeMs !== "number" ||
    typeof c.digest !== "string" || !isDigestAlgorithm(c.digest) ||
    typeof c.digestHex !== "string" || !/^([0-9a-f]{2})*$/.test(c.digestHex) ||
    typeof c.token !== "string" || c.token.length !== TOKEN_HEX_LENGTH ||
    typeof c.socketPath !== "string" || typeof c.stallSeconds !== "number" ||
    typeof c.limitRate !== "number"
  ) {
    throw new P2mError("worker got a bad configuration");
  }
  return c;
}

/** Resolves with `promise`, or runs `onTimeout` and rejects after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  promise.catch(() => {}); // a late rejection after the timeout is expected
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new P2mError(`peer did not ${what} within ${ms / 1000} s`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
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
  let notify = () => {};
  const notified = new Promise<void>((resolve) => notify = resolve);
  void (async () => {
    try {
      for (let line; (line = await stdin.readLine()) !== null;) {
        if (line === NOTIFIED) notify();
      }
    } catch { /* treat as EOF */ }
    report({ type: "error", message: "server went away" });
    Deno.stderr.writeSync(encoder.encode("p2m: worker: server went away; aborted\n"));
    Deno.exit(1);
  })();

  const { source } = config;
  const { file, info } = openSource(source.path);
  using _file = file;
  const before = sourceChange(file, source) ??
    (info.size !== source.size ? "size changed" : undefined);
  if (before) throw new P2mError(`source ${source.path} changed before sending: ${before}`);

  const stallMs = config.stallSeconds * 1000;
  const listener = await listenUnix(config.socketPath);
  const unregister = onAbort(() => listener.close());
  let conn: Deno.UnixConn;
  try {
    const accepting = acceptPeer(listener, config.token);
    accepting.catch(() => {}); // awaited below; a rejection before that is not lost
    report({ type: "ready" });
    // The connect deadline starts once the peer was told where to go, so a
    // parent that is merely slow or stopped does not fail its peer.
    await Promise.race([notified, accepting]);
    conn = await within(accepting, stallMs, "connect", () => listener.close());
  } finally {
    listener.close();
    unregister();
  }
  using _conn = conn;

  const start = performance.now();
  const watch = new StallWatch(stallMs, () => {
    try {
      conn.close();
    } catch { /* closed */ }
  });
  /** Writes all of `bytes`, counting each partial write as progress. */
  const send = async (bytes: Uint8Array) => {
    for (let at = 0; at < bytes.length; watch.progress()) {
      at += await conn.write(bytes.subarray(at));
    }
  };
  try {
    await send(
      encodeHeader({
        size: source.size,
        mode: source.mode,
        name: source.name,
        digest: config.digest,
      }),
    );
    const limit = new RateLimit(config.limitRate);
    const buf = new Uint8Array(chunkSize(config.limitRate));
    let sent = 0;
    while (sent < source.size) {
      const n = file.readSync(buf.subarray(0, Math.min(buf.length, source.size - sent)));
      if (n === null || n === 0) {
        throw new P2mError(`source ${source.path} shrank while it was sent; transfer aborted`);
      }
      await send(buf.subarray(0, n));
      sent += n;
      await limit.pace(n);
      watch.progress();
    }
    const changed = sourceChange(file, source);
    await send(
      encodeTrailer({
        status: changed ? TrailerStatus.SourceChanged : TrailerStatus.Complete,
        digest: fromHex(config.digestHex),
      }),
    );
    if (changed) throw new P2mError(`source ${source.path} changed while it was sent: ${changed}`);
    // Stay until the peer has read everything: it closes once it has the
    // trailer. A worker killed before that fails its peer, as it should.
    await conn.closeWrite();
    watch.progress();
    const seconds = (performance.now() - start) / 1000;
    try {
      while (await conn.read(buf.subarray(0, 1)) !== null) { /* the peer sends nothing here */ }
    } catch (error) {
      if (watch.stalled) throw error;
      // A reset after the last byte: the peer read everything and went.
    }
    report({ type: "done", bytes: sent, seconds });
    return 0;
  } catch (error) {
    if (watch.stalled) {
      throw new P2mError(
        `peer stalled: no progress for ${config.stallSeconds} s; transfer aborted`,
      );
    }
    if (error instanceof P2mError) throw error;
    throw new P2mError(`peer connection failed: ${(error as Error).message}`);
  } finally {
    watch.close();
  }
}

/** Accepts connections until one presents the right token. */
async function acceptPeer(
  listener: Awaited<ReturnType<typeof listenUnix>>,
  token: string,
): Promise<Deno.UnixConn> {
  const buf = new Uint8Array(TOKEN_HEX_LENGTH + 1);
  while (true) {
    const conn = await listener.accept();
    if (conn === null) throw new P2mError("worker stopped before the peer connected");
    try {
      await readFull(conn, buf, "token");
      const text = new TextDecoder().decode(buf);
      if (constantTimeEqual(text, token + "\n")) return conn;
    } catch { /* a wrong or broken caller: keep waiting for the peer */ }
    conn.close();
  }
}
