/**
 * One admitted peer as the server parent sees it ({@linkcode PeerSession}):
 * its `hello` ({@linkcode readHello}), its control connection, where it
 * stands, its verdict deadline, and its outcome, one by one and in the
 * summary ({@linkcode reportSummary}).
 *
 * @module
 */
import { formatBytes, formatTable, gibPerSecond } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { P2mError } from "../core/errors.ts";
import {
  encodeMessage,
  type HelloMessage,
  type LineReader,
  parseClientMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
  writeAll,
} from "./protocol.ts";
import type { WorkerHandle } from "./worker_handle.ts";

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

/** Where a peer is: waiting for a slot, holding one, or done. */
export type PeerPhase = "queued" | "active" | "finished";

/** How a peer's turn ended, for {@linkcode PeerSession.conclude}. */
export interface Outcome {
  /** Whether the peer got and kept a good copy. */
  ok: boolean;
  /** Bytes it received. */
  bytes: number;
  /** Why it failed. */
  message?: string;
  /** Raw or `--no-verify`: a good copy is "unverified". */
  unverified: boolean;
  /** Whether it held a slot when it ended (else its time is 0). */
  wasActive: boolean;
}

/**
 * Reads the peer's first line, which must be a `hello` in our protocol
 * version; null if it connected and left. A peer silent for `stallSeconds`
 * is dropped; anything else throws a P2mError saying why.
 */
export async function readHello(
  reader: LineReader,
  conn: Deno.UnixConn,
  stallSeconds: number,
): Promise<HelloMessage | null> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, stallSeconds * 1000);
  let line: string | null;
  try {
    line = await reader.readLine();
  } catch (error) {
    if (timedOut) {
      throw new P2mError(`peer sent no hello within ${stallSeconds} s`, { cause: error });
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
  if (line === null) return null;
  const hello = parseClientMessage(line);
  if (hello.type !== "hello") throw new P2mError("peer did not start with hello");
  if (hello.version !== PROTOCOL_VERSION) {
    throw new P2mError(`peer speaks protocol ${hello.version}, not ${PROTOCOL_VERSION}`);
  }
  return hello;
}

/** One admitted peer: its control connection and where it stands. */
export class PeerSession {
  readonly id: number;
  readonly pid: number;
  readonly conn: Deno.UnixConn;
  /** A `--raw` peer: its connection carries the file's bytes and nothing else. */
  readonly raw: boolean;
  phase: PeerPhase = "queued";
  /** Turns started (a peer that missed its worker may get another). */
  turns = 0;
  worker?: WorkerHandle;
  started = 0;
  /** Bytes the peer said it received and verified. */
  bytes = 0;
  /** Set once the peer's good verdict arrived: waiting for `committed`. */
  committing = false;
  /** Seconds its worker took, once it reported `done`. */
  workerSeconds?: number;
  /** Fails a peer that does not give its verdict after the worker finished. */
  verdictTimer?: ReturnType<typeof setTimeout>;
  /** Resolves when the current turn's peer side is over (finished or requeued). */
  turnOver = Promise.withResolvers<void>();
  result?: PeerResult;
  #closed = false;
  #sending: Promise<void> = Promise.resolve();

  constructor(id: number, pid: number, conn: Deno.UnixConn, raw = false) {
    this.id = id;
    this.pid = pid;
    this.conn = conn;
    this.raw = raw;
  }

  get label(): string {
    return this.pid ? `peer ${this.id} (pid ${this.pid})` : `peer ${this.id}`;
  }

  /**
   * Sends a control message after any still being written, in order. A raw
   * peer gets none: a "queued" or "error" line would land in its copy.
   */
  send(message: ServerMessage): Promise<void> {
    if (this.raw) return this.#sending;
    const bytes = encodeMessage(message);
    this.#sending = this.#sending.then(async () => {
      if (this.#closed) return;
      try {
        await writeAll(this.conn, bytes);
      } catch { /* the peer is gone; its reader notices */ }
    });
    return this.#sending;
  }

  /**
   * The peer has every byte: call `expire` with the reason if its verdict
   * does not come within `seconds`. Checked twice, so a verdict that waited
   * in the socket while this process was stopped gets read first.
   */
  expectVerdict(seconds: number, expire: (why: string) => void): void {
    if (this.committing) return;
    this.verdictTimer = setTimeout(() => {
      this.verdictTimer = setTimeout(() => {
        if (!this.committing) expire(`peer sent no verdict within ${seconds} s of the last byte`);
      }, 100);
    }, seconds * 1000);
  }

  /**
   * Records and reports the peer's outcome; a failed peer's worker is
   * stopped and the peer told why before its connection closes.
   */
  conclude(outcome: Outcome, reporter: Reporter): void {
    const { ok, bytes, unverified } = outcome;
    const message = outcome.message ?? "transfer failed";
    const elapsed = outcome.wasActive ? (performance.now() - this.started) / 1000 : 0;
    const result: PeerResult = {
      peer: this.id,
      pid: this.pid,
      bytes,
      verified: !ok ? "no" : unverified ? "unverified" : "yes",
      ok,
      seconds: ok && this.workerSeconds !== undefined ? this.workerSeconds : elapsed,
      ...(ok ? {} : { message: outcome.message ?? "failed" }),
    };
    this.result = result;
    if (ok) this.close();
    else {
      this.worker?.kill("SIGTERM");
      void this.send({ type: "error", message }).finally(() => this.close());
    }
    reporter.event("peer-done", { ...result });
    if (!ok) return reporter.error(`${this.label} failed: ${message}`, { peer: this.id });
    const what = result.verified === "yes" ? "verified" : "delivered, unverified";
    reporter.info(
      `${this.label}: ${what}, ${formatBytes(bytes)} in ${result.seconds.toFixed(3)} s`,
    );
  }

  /** Closes the control connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.conn);
  }
}

/** Reports the outcome of every peer: one event, and a table for humans. */
export function reportSummary(reporter: Reporter, results: PeerResult[]): void {
  const ok = results.filter((x) => x.ok).length;
  reporter.event("summary", { peers: results, ok, failed: results.length - ok });
  if (reporter.mode !== "human") return;
  if (results.length === 0) return reporter.info("no peers were served");
  const rows = results.map((x) => [
    x.pid ? `${x.peer} (pid ${x.pid})` : String(x.peer),
    formatBytes(x.bytes),
    x.verified,
    x.seconds.toFixed(3),
    x.ok ? gibPerSecond(x.bytes, x.seconds).toFixed(2) : "-",
    x.message ?? "",
  ]);
  reporter.info(
    formatTable(["peer", "bytes", "verified", "seconds", "GiB/s", "note"], rows),
  );
  reporter.info(`${ok} of ${results.length} peers ok`);
}

/** Tells a connection that is not (or no longer) a peer why, and closes it. */
export async function refuse(conn: Deno.UnixConn, message: string): Promise<void> {
  await writeAll(conn, encodeMessage({ type: "error", message })).catch(() => {});
  closeQuietly(conn);
}

/** Closes a connection that may already be closed. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
