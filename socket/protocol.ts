/**
 * The socket transport's control protocol and stream helpers.
 *
 * Two connections per peer:
 *
 * - **control** (peer ↔ server parent): JSON lines, at most
 *   {@linkcode MAX_LINE_BYTES} each. The peer says `hello`; the server answers
 *   `accepted`, `queued` (zero or more times), then `connect` with a one-time
 *   socket path and token, or `error` at any time.
 * - **data** (peer ↔ worker subprocess): the peer sends the token and a
 *   newline; the worker sends the core header, the file bytes and the core
 *   trailer (core/wire.ts) and shuts down its side; the peer closes when it
 *   has read it all, so the worker lives until the peer has every byte.
 * - **commit** (control again): the peer sends its `verdict`. If it is good
 *   and the worker finished cleanly the server answers `commit`; only then
 *   does the peer give the copy its final name, and it reports `committed`.
 *   So a copy is kept only if the server saw the whole transfer succeed, and
 *   the server's summary never disagrees with what the peers kept.
 *
 * Every message is validated field by field before it is trusted.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";

/** Control protocol version. */
export const PROTOCOL_VERSION = 1;
/** Longest control line accepted, in bytes, newline excluded. */
export const MAX_LINE_BYTES = 4096;
/**
 * Bytes per read where the bytes pass through JavaScript: the `--raw`
 * stream on both sides (the server's hashing reads the same amount, in
 * core/digest.ts); also the largest rate-limited piece. One
 * buffer, reused. The framed data path no longer depends on it: the worker
 * `sendfile(2)`s as much as its 4 MiB send buffer takes (see
 * socket/data_channel.ts, which also says why Deno's 208 KiB default made
 * chunk size irrelevant before).
 */
export const DATA_CHUNK = 1024 * 1024;
/** Chunk size for a rate-limited stream: small enough to pace smoothly. */
export function chunkSize(limitRate: number): number {
  if (!(limitRate > 0)) return DATA_CHUNK;
  return Math.min(DATA_CHUNK, Math.max(16 * 1024, Math.floor(limitRate / 16)));
}

/** Length of a one-time token in hex characters. */
export const TOKEN_HEX_LENGTH = 32;
/** Longest socket path that fits in `sun_path` (108 bytes with its NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** A control-channel message that broke the protocol. */
export class ProtocolError extends P2mError {
  /** Creates a protocol error with a one-line reason. */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** Peer → server: the first line on the control connection. */
export interface HelloMessage {
  /** Message type. */
  type: "hello";
  /** Protocol version the peer speaks. */
  version: number;
  /** The peer's process id, for the summary (untrusted). */
  pid: number;
}

/** Peer → server: the outcome of the copy. */
export interface VerdictMessage {
  /** Message type. */
  type: "verdict";
  /** Whether the copy was received, verified (if a digest was sent) and kept. */
  ok: boolean;
  /** Bytes received. */
  bytes: number;
  /** Why it failed, when it did. */
  message?: string;
}

/** Peer → server: the copy is (or could not be) under its final name. */
export interface CommittedMessage {
  /** Message type. */
  type: "committed";
  /** Whether the copy now exists under its final name. */
  ok: boolean;
  /** Why not, when it failed. */
  message?: string;
}

/** A message from a peer to the server. */
export type ClientMessage = HelloMessage | VerdictMessage | CommittedMessage;

/** Server → peer: admitted; a worker is being started or the peer is queued. */
export interface AcceptedMessage {
  /** Message type. */
  type: "accepted";
  /** The peer's number in the server's summary. */
  peer: number;
}

/** Server → peer: all workers are busy; wait. */
export interface QueuedMessage {
  /** Message type. */
  type: "queued";
  /** 1-based place in the queue. */
  position: number;
}

/** Server → peer: connect to this one-time socket and send the token. */
export interface ConnectMessage {
  /** Message type. */
  type: "connect";
  /** Absolute path of the worker's one-time socket. */
  path: string;
  /** One-time token, {@linkcode TOKEN_HEX_LENGTH} hex characters. */
  token: string;
}

/** Server → peer: the whole transfer succeeded; keep the copy. */
export interface CommitMessage {
  /** Message type. */
  type: "commit";
}

/** Server → peer: the transfer is refused or failed on the server side. */
export interface ErrorMessage {
  /** Message type. */
  type: "error";
  /** One-line reason. */
  message: string;
}

/** A message from the server to a peer. */
export type ServerMessage =
  | AcceptedMessage
  | QueuedMessage
  | ConnectMessage
  | CommitMessage
  | ErrorMessage;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parseObject(line: string, from: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new ProtocolError(`${from} sent a line that is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${from} sent a message that is not an object`);
  }
  return value as Record<string, unknown>;
}

function count(value: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new ProtocolError(`bad ${what} in message`);
  }
  return value;
}

/** Makes untrusted text printable on one bounded line. */
export function oneLine(text: string, max = 300): string {
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\x00-\x1f\x7f-\x9f]/g, " ");
  return clean.length > max ? clean.slice(0, max) + "…" : clean;
}

/** Parses and validates a peer's control line. */
export function parseClientMessage(line: string): ClientMessage {
  const msg = parseObject(line, "peer");
  switch (msg.type) {
    case "hello":
      return {
        type: "hello",
        version: count(msg.version, "version"),
        pid: count(msg.pid ?? 0, "pid", 2 ** 31),
      };
    case "verdict": {
      if (typeof msg.ok !== "boolean") throw new ProtocolError("bad ok in verdict");
      const verdict: VerdictMessage = {
        type: "verdict",
        ok: msg.ok,
        bytes: count(msg.bytes, "bytes"),
      };
      if (msg.message !== undefined) {
        if (typeof msg.message !== "string") throw new ProtocolError("bad message in verdict");
        verdict.message = oneLine(msg.message);
      }
      return verdict;
    }
    case "committed": {
      if (typeof msg.ok !== "boolean") throw new ProtocolError("bad ok in committed");
      const committed: CommittedMessage = { type: "committed", ok: msg.ok };
      if (msg.message !== undefined) {
        if (typeof msg.message !== "string") throw new ProtocolError("bad message in committed");
        committed.message = oneLine(msg.message);
      }
      return committed;
    }
    default:
      throw new ProtocolError("peer sent an unknown message type");
  }
}

/** Parses and validates a server's control line. */
export function parseServerMessage(line: string): ServerMessage {
  const msg = parseObject(line, "server");
  switch (msg.type) {
    case "accepted":
      return { type: "accepted", peer: count(msg.peer, "peer") };
    case "queued":
      return { type: "queued", position: count(msg.position, "position") };
    case "connect": {
      const { path, token } = msg;
      if (
        typeof path !== "string" || !path.startsWith("/") ||
        encoder.encode(path).length > MAX_SOCKET_PATH_BYTES || path.includes("\0")
      ) {
        throw new ProtocolError("server sent a bad data socket path");
      }
      if (
        typeof token !== "string" || !/^[0-9a-f]+$/.test(token) || token.length !== TOKEN_HEX_LENGTH
      ) {
        throw new ProtocolError("server sent a bad token");
      }
      return { type: "connect", path, token };
    }
    case "commit":
      return { type: "commit" };
    case "error":
      if (typeof msg.message !== "string") throw new ProtocolError("bad error message");
      return { type: "error", message: oneLine(msg.message) };
    default:
      throw new ProtocolError("server sent an unknown message type");
  }
}

/** Encodes a control message as one JSON line. */
export function encodeMessage(message: ClientMessage | ServerMessage): Uint8Array {
  return encoder.encode(JSON.stringify(message) + "\n");
}

/** A fresh one-time token. */
export function newToken(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(TOKEN_HEX_LENGTH / 2)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Compares two strings in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** Anything with a `read` like `Deno.Conn`. */
export interface Readable {
  /** Reads into `p`; resolves to the count, or null at EOF. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything with a `write` like `Deno.Conn`. */
export interface Writable {
  /** Writes some of `p`; resolves to the count written. */
  write(p: Uint8Array): Promise<number>;
}

/** Writes all of `bytes`. */
export async function writeAll(w: Writable, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await w.write(bytes.subarray(offset));
}

/** Fills `buf` completely; throws a P2mError naming `what` on early EOF. */
export async function readFull(r: Readable, buf: Uint8Array, what: string): Promise<void> {
  let offset = 0;
  while (offset < buf.length) {
    const n = await r.read(buf.subarray(offset));
    if (n === null) throw new P2mError(`connection closed in the middle of the ${what}`);
    offset += n;
  }
}

/** Reads bounded lines from a connection, one at a time. */
export class LineReader {
  #r: Readable;
  #buf = new Uint8Array(MAX_LINE_BYTES + 1);
  #start = 0;
  #end = 0;

  /** Creates a reader over `r`. */
  constructor(r: Readable) {
    this.#r = r;
  }

  /** Next line without its newline, or null at EOF; throws ProtocolError if too long. */
  async readLine(): Promise<string | null> {
    while (true) {
      const nl = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (nl >= 0) {
        const line = decoder.decode(this.#buf.subarray(this.#start, this.#start + nl));
        this.#start += nl + 1;
        return line;
      }
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#end >= this.#buf.length) {
        throw new ProtocolError(`control line longer than ${MAX_LINE_BYTES} bytes`);
      }
      const n = await this.#r.read(this.#buf.subarray(this.#end));
      if (n === null) {
        if (this.#end > 0) throw new ProtocolError("connection closed in the middle of a line");
        return null;
      }
      this.#end += n;
    }
  }
}

/** Throws a UsageError-worthy reason if a socket path cannot fit `sun_path`. */
export function socketPathProblem(path: string): string | undefined {
  const bytes = encoder.encode(path).length;
  if (bytes === 0) return "socket path is empty";
  if (path.includes("\0")) return "socket path contains a NUL byte";
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    return `socket path is ${bytes} bytes; Unix sockets allow at most ${MAX_SOCKET_PATH_BYTES}: ${
      oneLine(path, 60)
    }`;
  }
  return undefined;
}
