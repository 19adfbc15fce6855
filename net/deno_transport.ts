/**
 * A NATS transport on Deno's own TCP and TLS sockets, for @nats-io/nats-core.
 *
 * Why: under Deno, `@nats-io/transport-node` goes through Node's `net`
 * compatibility layer, which hands the client 64 KiB frames and tops out
 * near 540 MiB/s on loopback for raw bytes alone; a `Deno.Conn` read
 * returns up to 1 MiB at a time at several GiB/s (docs/nats.md). The NATS
 * protocol handling stays the official client's: this file only moves
 * bytes, exactly as the transport interface asks.
 *
 * Reads go into one large buffer that is handed out in consecutive slices
 * of whole protocol units (a control line, or a MSG/HMSG line with its
 * body), so the client's parser takes every body as one slice and never
 * reassembles it. A slice may be kept as a message body, so handed-out
 * bytes are never overwritten: a fresh buffer is taken when room runs out,
 * and only the incomplete unit moves over. Writes are queued in
 * order. TLS follows the NATS handshake: plain INFO first, then STARTTLS
 * when the server requires or offers it (or TLS first with
 * `handshakeFirst`). Client certificates need `Deno.connectTls`, which only
 * the TLS-first handshake can use, so session.ts falls back to the Node
 * transport when one is given.
 *
 * @module
 */
import type { ConnectionOptions, Server, ServerInfo, Transport } from "@nats-io/nats-core/internal";

const READ_BUFFER = 1 << 20;
const MIN_ROOM = 256 << 10;
const LF = 0x0a;
const LANG = "nats.js (p2m deno transport)";

type Core = typeof import("@nats-io/nats-core/internal");

/** A Transport over `Deno.connect` / `Deno.startTls`. */
export class DenoTransport implements Transport {
  readonly lang = LANG;
  readonly version: string;
  closeError?: Error;
  #core: Core;
  #conn: Deno.Conn | undefined;
  #encrypted = false;
  #connected = false;
  #done = false;
  #first: Uint8Array | undefined;
  #buffer = new Uint8Array(0);
  /** Start of the bytes not yet handed to the client. */
  #start = 0;
  /** End of the bytes read. */
  #end = 0;
  /** Length of the incomplete message at #start (0: unknown). */
  #wanted = 0;
  #writes: Promise<void> = Promise.resolve();
  #closed = Promise.withResolvers<void | Error>();

  /** Creates a transport; `core` is the loaded nats-core internal module. */
  constructor(core: Core, version: string) {
    this.#core = core;
    this.version = version;
  }

  /** Whether the transport is closed. */
  get isClosed(): boolean {
    return this.#done;
  }

  /** Dials the server, reads its INFO, and upgrades to TLS if asked. */
  async connect(server: Server, options: ConnectionOptions): Promise<void> {
    const tls = typeof options.tls === "object" && options.tls !== null ? options.tls : undefined;
    const hostname = server.hostname;
    const tlsName = server.tlsName || hostname;
    try {
      const caCerts = tls?.caFile ? [await Deno.readTextFile(tls.caFile)] : undefined;
      if (tls?.handshakeFirst) {
        this.#conn = await Deno.connectTls({ hostname, port: server.port, caCerts });
        this.#encrypted = true;
      } else {
        this.#conn = await Deno.connect({ hostname, port: server.port });
        (this.#conn as Deno.TcpConn).setNoDelay(true);
      }
      const info = await this.#readInfo();
      this.#core.checkOptions(info, options);
      const wantsTls = info.tls_required === true ||
        (info.tls_available === true && options.tls !== null && tls !== undefined);
      if (!this.#encrypted && wantsTls) {
        this.#conn = await Deno.startTls(this.#conn as Deno.TcpConn, {
          hostname: tlsName,
          caCerts,
        });
        this.#encrypted = true;
        // A TLS error only shows on first use: make it show here.
        await (this.#conn as Deno.TlsConn).handshake();
      }
      if (this.#done) this.#conn.close();
      this.#connected = true;
    } catch (error) {
      try {
        this.#conn?.close();
      } catch { /* already closed */ }
      const message = error instanceof Error ? error.message : String(error);
      if (error instanceof Deno.errors.ConnectionRefused) {
        throw new this.#core.errors.ConnectionError("connection refused", { cause: error });
      }
      throw error instanceof Error ? error : new Error(message);
    }
  }

  /** Reads up to the end of the server's INFO line; keeps the bytes for the parser. */
  async #readInfo(): Promise<ServerInfo> {
    let seen = new Uint8Array(0);
    for (;;) {
      const chunk = new Uint8Array(4096);
      const n = await this.#conn!.read(chunk);
      if (n === null) throw new this.#core.errors.ConnectionError("connection closed before INFO");
      const joined = new Uint8Array(seen.length + n);
      joined.set(seen);
      joined.set(chunk.subarray(0, n), seen.length);
      seen = joined;
      const line = this.#core.extractProtocolMessage(seen);
      if (line !== "") {
        const match = this.#core.INFO.exec(line);
        if (!match) throw new Error("unexpected response from server");
        this.#first = seen;
        return JSON.parse(match[1]);
      }
      if (seen.length > 1 << 20) throw new Error("server INFO too long");
    }
  }

  /** Yields what the server sends, in slices of a large reused-forward buffer. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.#iterate();
  }

  async *#iterate(): AsyncIterableIterator<Uint8Array> {
    if (this.#first) {
      const first = this.#first;
      this.#first = undefined;
      yield first;
    }
    while (!this.#done && this.#conn) {
      // Hand out whole protocol units only: then every message body is in
      // one slice, and the client's parser takes it without copying.
      const complete = this.#completeUnits();
      if (complete > this.#start) {
        const units = this.#buffer.subarray(this.#start, complete);
        this.#start = complete;
        yield units;
        continue;
      }
      this.#makeRoom();
      let n: number | null;
      try {
        n = await this.#conn.read(this.#buffer.subarray(this.#end));
      } catch (error) {
        await this.#finish(error instanceof Error ? error : new Error(String(error)), false);
        return;
      }
      if (n === null) {
        await this.#finish(undefined, false);
        return;
      }
      this.#end += n;
    }
  }

  /**
   * Scans from the first unit not yet known whole; returns the end of the
   * last whole unit. A unit is a control line, or for MSG/HMSG the line
   * plus its body and CRLF (the body's size is the line's last number).
   * Sets {@linkcode #wanted} to the length of an incomplete message.
   */
  #completeUnits(): number {
    const buffer = this.#buffer;
    let at = this.#start;
    this.#wanted = 0;
    while (at < this.#end) {
      const lf = buffer.indexOf(LF, at);
      if (lf < 0 || lf >= this.#end) break;
      const op = buffer[at] | 0x20; // lower case
      let unitEnd = lf + 1;
      if (op === 0x6d /* m */ || (op === 0x68 /* h */ && (buffer[at + 1] | 0x20) === 0x6d)) {
        let size = 0;
        let scale = 1;
        let i = lf - 2; // skip the CR
        while (i > at && buffer[i] >= 0x30 && buffer[i] <= 0x39) {
          size += (buffer[i] - 0x30) * scale;
          scale *= 10;
          i--;
        }
        unitEnd = lf + 1 + size + 2;
        if (unitEnd > this.#end) {
          this.#wanted = unitEnd - at;
          break;
        }
      }
      at = unitEnd;
    }
    return at;
  }

  /** Ensures room for the next read, and for the whole message under way. */
  #makeRoom(): void {
    const pending = this.#end - this.#start;
    const needed = Math.max(this.#wanted, pending) + MIN_ROOM;
    if (
      this.#buffer.length - this.#start >= needed && this.#buffer.length - this.#end >= MIN_ROOM
    ) {
      return;
    }
    // Yielded slices stay valid: the old buffer is left to them, and only
    // the part not yet handed out moves to the new one.
    const next = new Uint8Array(Math.max(READ_BUFFER, needed));
    next.set(this.#buffer.subarray(this.#start, this.#end));
    this.#buffer = next;
    this.#start = 0;
    this.#end = pending;
  }

  /** Whether the connection is TLS. */
  isEncrypted(): boolean {
    return this.#encrypted;
  }

  /** Queues a frame; write errors surface as a closed read side. */
  send(frame: Uint8Array): void {
    const conn = this.#conn;
    if (this.#done || !conn) return;
    this.#writes = this.#writes.then(async () => {
      let offset = 0;
      while (offset < frame.length) offset += await conn.write(frame.subarray(offset));
    }).catch(() => {});
  }

  /** Flushes queued writes and closes. */
  async close(error?: Error): Promise<void> {
    await this.#finish(error, true);
  }

  /** Closes without a flush, as the client asks on a stale connection. */
  disconnect(): void {
    this.#finish(undefined, true).catch(() => {});
  }

  /** Resolves once closed, with the error that closed it, if any. */
  closed(): Promise<void | Error> {
    return this.#closed.promise;
  }

  /** Drops the connection at once (the client gave up on it). */
  discard(): void {
    this.#done = true;
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
  }

  async #finish(error: Error | undefined, internal: boolean): Promise<void> {
    if (!this.#connected) return;
    if (this.#done) {
      try {
        this.#conn?.close();
      } catch { /* already closed */ }
      return;
    }
    this.#done = true;
    this.closeError = error;
    if (!error && internal) await this.#writes;
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    this.#conn = undefined;
    this.#closed.resolve(this.closeError);
  }
}
