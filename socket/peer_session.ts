/**
 * One admitted peer as the server parent sees it ({@linkcode PeerSession}):
 * its control connection, where it stands, its verdict deadline, and its
 * outcome for the summary ({@linkcode reportSummary}).
 *
 * @module
 */
import { formatBytes, formatTable, gibPerSecond } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { encodeMessage, type ServerMessage, writeAll } from "./protocol.ts";
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

/** One admitted peer: its control connection and where it stands. */
export class PeerSession {
  readonly id: number;
  readonly pid: number;
  readonly conn: Deno.UnixConn;
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

  /**
   * The peer has every byte: fail it with `expire` if its verdict does not
   * come within `seconds`. Checked twice, so a verdict that waited in the
   * socket while this process was stopped gets read before the second check.
   */
  expectVerdict(seconds: number, expire: () => void): void {
    this.verdictTimer = setTimeout(() => {
      this.verdictTimer = setTimeout(() => {
        if (!this.committing) expire();
      }, 100);
    }, seconds * 1000);
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

/** Closes a connection that may already be closed. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
