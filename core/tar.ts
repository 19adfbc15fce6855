/**
 * POSIX pax tar, written and read incrementally, for sending directory trees.
 *
 * The wire format is plain POSIX.1-2001 (pax) tar, so `p2m … --out - | tar x`
 * works and GNU or BSD tar output can be read back. Hand-written rather than
 * an npm package: a plain file transfer never loads it, and the decoder is
 * the first thing to touch untrusted bytes, so every field is checked here.
 *
 * {@linkcode TarEncoder} never holds file data: it hands out the framing
 * (headers, padding, end marker) into a caller's buffer, and the caller
 * reads file bytes straight into the same buffer (a ring slot, a socket
 * buffer) and reports how many it put there. Memory stays bounded for any
 * file size.
 *
 * {@linkcode TarDecoder} is a push parser: feed it any split of the stream
 * and it returns events (an entry's header, ranges of its data, its end,
 * the end of the archive). Checksums, octal fields, magic, type flags,
 * sizes, pax records and UTF-8 are checked; anything malformed throws a
 * {@linkcode TarError} naming the problem and the byte offset. What a path
 * means on disk (`..`, absolute paths, control characters) is judged by
 * the writer, core/tree_output.ts, not here.
 *
 * @module
 */
import { P2mError } from "./errors.ts";

/** Size of a tar block; headers and data are padded to it. */
export const TAR_BLOCK = 512;

/** What an entry is. Hard links, devices and FIFOs are never written. */
export type TarEntryKind = "file" | "directory" | "symlink";

/** One entry of an archive, as written or as decoded. */
export interface TarEntry {
  /** Relative path, `/`-separated, without a trailing slash. */
  path: string;
  /** What the entry is. */
  kind: TarEntryKind;
  /** Permission bits (up to 0o7777 as decoded; the writer drops setuid/setgid/sticky). */
  mode: number;
  /** Data bytes that follow the header; 0 for directories and symlinks. */
  size: number;
  /** Link target (symlinks only), as stored. */
  linkTarget?: string;
  /** Modification time in seconds since the epoch (may be fractional); 0 if unknown. */
  mtime?: number;
}

/** A malformed or unsupported tar stream. */
export class TarError extends P2mError {
  /** Byte offset in the stream where the problem was found. */
  readonly offset: number;

  /** Creates an error for `problem` at stream byte `offset`. */
  constructor(problem: string, offset: number) {
    super(`bad tar stream at byte ${offset}: ${problem}`);
    this.name = "TarError";
    this.offset = offset;
  }
}

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ZERO_BLOCK = new Uint8Array(TAR_BLOCK);
/** Largest size the 12-byte ustar field holds (11 octal digits). */
const USTAR_MAX_SIZE = 0o77777777777;
/** Largest mtime the 12-byte ustar field holds. */
const USTAR_MAX_TIME = 0o77777777777;

/** ustar header field offsets and lengths. */
const FIELD = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  checksum: [148, 8],
  type: [156, 1],
  linkname: [157, 100],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;

const TYPE_FILE = 0x30; // '0'
const TYPE_FILE_OLD = 0x00; // '\0', pre-POSIX regular file
const TYPE_SYMLINK = 0x32; // '2'
const TYPE_DIRECTORY = 0x35; // '5'
const TYPE_PAX = 0x78; // 'x'
const TYPE_PAX_GLOBAL = 0x67; // 'g'

/** Rounds `size` up to a whole number of blocks. */
export function padded(size: number): number {
  return Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

/** The header blocks (pax extended header if needed, then ustar) for one entry. */
export function encodeHeader(entry: TarEntry): Uint8Array {
  checkEntry(entry);
  const records: [string, string][] = [];
  // The root directory itself is "./", never "/".
  const name = entry.kind === "directory" ? `${entry.path || "."}/` : entry.path;
  const split = splitUstarPath(name);
  if (split === undefined) records.push(["path", name]);
  const link = entry.linkTarget ?? "";
  const linkFits = isAscii(link) && link.length <= 100;
  if (!linkFits) records.push(["linkpath", link]);
  const size = entry.kind === "file" ? entry.size : 0;
  if (size > USTAR_MAX_SIZE) records.push(["size", String(size)]);
  const mtime = entry.mtime ?? 0;
  const wholeSeconds = Math.floor(mtime);
  if (mtime !== wholeSeconds || mtime < 0 || mtime > USTAR_MAX_TIME) {
    records.push(["mtime", formatSeconds(mtime)]);
  }

  const ustar = new Uint8Array(TAR_BLOCK);
  if (split !== undefined) {
    putString(ustar, FIELD.name, split.name);
    putString(ustar, FIELD.prefix, split.prefix);
  } else {
    // Readers without pax support still get a usable, ASCII, bounded name.
    putString(ustar, FIELD.name, asciiFallback(name, 99));
  }
  putOctal(ustar, FIELD.mode, entry.mode & 0o7777);
  putOctal(ustar, FIELD.uid, 0);
  putOctal(ustar, FIELD.gid, 0);
  putOctal(ustar, FIELD.size, size > USTAR_MAX_SIZE ? 0 : size);
  putOctal(ustar, FIELD.mtime, Math.min(Math.max(wholeSeconds, 0), USTAR_MAX_TIME));
  ustar[FIELD.type[0]] = entry.kind === "file"
    ? TYPE_FILE
    : entry.kind === "directory"
    ? TYPE_DIRECTORY
    : TYPE_SYMLINK;
  if (entry.kind === "symlink") putString(ustar, FIELD.linkname, linkFits ? link : "");
  putString(ustar, FIELD.magic, "ustar\0");
  putString(ustar, FIELD.version, "00");
  putChecksum(ustar);
  if (records.length === 0) return ustar;

  const body = encoder.encode(records.map(([key, value]) => paxRecord(key, value)).join(""));
  const pax = new Uint8Array(TAR_BLOCK);
  putString(pax, FIELD.name, asciiFallback(`PaxHeaders/${name.split("/").pop() || "entry"}`, 99));
  putOctal(pax, FIELD.mode, 0o644);
  putOctal(pax, FIELD.uid, 0);
  putOctal(pax, FIELD.gid, 0);
  putOctal(pax, FIELD.size, body.length);
  putOctal(pax, FIELD.mtime, 0);
  pax[FIELD.type[0]] = TYPE_PAX;
  putString(pax, FIELD.magic, "ustar\0");
  putString(pax, FIELD.version, "00");
  putChecksum(pax);
  const out = new Uint8Array(TAR_BLOCK + padded(body.length) + TAR_BLOCK);
  out.set(pax, 0);
  out.set(body, TAR_BLOCK);
  out.set(ustar, TAR_BLOCK + padded(body.length));
  return out;
}

/** Bytes one entry takes in the stream: header blocks plus padded data. */
export function entryLength(entry: TarEntry): number {
  return encodeHeader(entry).length + (entry.kind === "file" ? padded(entry.size) : 0);
}

/** Bytes a whole archive of `entries` takes, end marker included. */
export function archiveLength(entries: Iterable<TarEntry>): number {
  let total = 2 * TAR_BLOCK;
  for (const entry of entries) total += entryLength(entry);
  return total;
}

/**
 * Writes an archive into caller-provided buffers without holding file data.
 *
 * ```ts
 * encoder.begin(entry);                       // header becomes pending
 * while (encoder.pending > 0 || encoder.dataRemaining > 0) {
 *   let used = encoder.drain(slot);            // framing bytes
 *   if (encoder.pending === 0 && encoder.dataRemaining > 0) {
 *     const want = Math.min(encoder.dataRemaining, slot.length - used);
 *     const n = file.readSync(slot.subarray(used, used + want)) ?? 0;
 *     encoder.dataWritten(n);                  // the caller put n data bytes there
 *     used += n;
 *   }
 *   send(slot.subarray(0, used));
 * }
 * encoder.end();                              // then drain the end marker
 * ```
 */
export class TarEncoder {
  #pending: Uint8Array = new Uint8Array(0);
  #pendingOffset = 0;
  #dataRemaining = 0;
  #dataPadding = 0;
  #ended = false;
  #written = 0;

  /** Framing bytes queued and not yet drained. */
  get pending(): number {
    return this.#pending.length - this.#pendingOffset;
  }

  /** File data bytes the current entry still needs from the caller. */
  get dataRemaining(): number {
    return this.#dataRemaining;
  }

  /** Bytes of archive handed out so far (framing and data). */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Starts an entry. The previous entry's data must be complete and drained. */
  begin(entry: TarEntry): void {
    if (this.#ended) throw new TarError("entry after the end of the archive", this.#written);
    if (this.#dataRemaining > 0 || this.pending > 0) {
      throw new TarError("entry started before the previous one was complete", this.#written);
    }
    this.#queue(encodeHeader(entry));
    this.#dataRemaining = entry.kind === "file" ? entry.size : 0;
    this.#dataPadding = entry.kind === "file" ? padded(entry.size) - entry.size : 0;
  }

  /** Queues the end-of-archive marker (two zero blocks). */
  end(): void {
    if (this.#dataRemaining > 0 || this.pending > 0) {
      throw new TarError("archive ended inside an entry", this.#written);
    }
    this.#ended = true;
    this.#queue(new Uint8Array(2 * TAR_BLOCK));
  }

  /** Copies pending framing bytes into `out`; returns how many. */
  drain(out: Uint8Array): number {
    const count = Math.min(out.length, this.pending);
    out.set(this.#pending.subarray(this.#pendingOffset, this.#pendingOffset + count));
    this.#pendingOffset += count;
    this.#written += count;
    return count;
  }

  /** Records that the caller placed `count` bytes of the current file's data itself. */
  dataWritten(count: number): void {
    if (this.pending > 0) {
      throw new TarError("file data before its header was drained", this.#written);
    }
    if (!Number.isSafeInteger(count) || count < 0 || count > this.#dataRemaining) {
      throw new TarError(
        `${count} data bytes given, ${this.#dataRemaining} expected`,
        this.#written,
      );
    }
    this.#dataRemaining -= count;
    this.#written += count;
    if (this.#dataRemaining === 0 && this.#dataPadding > 0) {
      this.#queue(ZERO_BLOCK.subarray(0, this.#dataPadding));
      this.#dataPadding = 0;
    }
  }

  /** Copies file data from `data` into `out` (for callers that already hold it); returns bytes used. */
  data(out: Uint8Array, data: Uint8Array): number {
    const count = Math.min(out.length, data.length, this.#dataRemaining);
    out.set(data.subarray(0, count));
    this.dataWritten(count);
    return count;
  }

  #queue(bytes: Uint8Array): void {
    const rest = this.#pending.subarray(this.#pendingOffset);
    if (rest.length === 0) {
      this.#pending = bytes;
    } else {
      const joined = new Uint8Array(rest.length + bytes.length);
      joined.set(rest);
      joined.set(bytes, rest.length);
      this.#pending = joined;
    }
    this.#pendingOffset = 0;
  }
}

/** One thing the decoder found. Data ranges are views of the pushed chunk, valid until the next push. */
export type TarEvent =
  | { type: "entry"; entry: TarEntry }
  | { type: "data"; bytes: Uint8Array }
  | { type: "entryEnd" }
  | { type: "end" };

/** Bounds for {@linkcode TarDecoder}. */
export interface TarDecoderLimits {
  /** Largest pax extended header body accepted, in bytes (default 64 KiB). */
  maxPaxBytes?: number;
}

/**
 * An incremental, strict tar reader: {@linkcode push} any split of the
 * stream, then {@linkcode finish} once it has ended.
 */
export class TarDecoder {
  #maxPaxBytes: number;
  #state: "header" | "pax" | "data" | "padding" | "trailer" | "done" = "header";
  #block = new Uint8Array(TAR_BLOCK);
  #blockFill = 0;
  #pax: Uint8Array | undefined;
  #paxFill = 0;
  #paxRecords: Map<string, string> | undefined;
  #paxGlobal = false;
  #error: TarError | undefined;
  #dataSize = 0;
  #remaining = 0;
  #offset = 0;
  #headerOffset = 0;

  /** Creates a decoder with the given bounds. */
  constructor(limits: TarDecoderLimits = {}) {
    this.#maxPaxBytes = limits.maxPaxBytes ?? 64 * 1024;
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** True once the end-of-archive marker has been read. */
  get ended(): boolean {
    return this.#state === "done";
  }

  /** Parses `chunk`; returns the events it completes, in order. After a TarError every call repeats it. */
  push(chunk: Uint8Array): TarEvent[] {
    if (this.#error !== undefined) throw this.#error;
    try {
      return this.#parse(chunk);
    } catch (error) {
      if (error instanceof TarError) this.#error = error;
      throw error;
    }
  }

  #parse(chunk: Uint8Array): TarEvent[] {
    const events: TarEvent[] = [];
    let at = 0;
    while (at < chunk.length) {
      switch (this.#state) {
        case "data": {
          const count = Math.min(this.#remaining, chunk.length - at);
          events.push({ type: "data", bytes: chunk.subarray(at, at + count) });
          at += count;
          this.#offset += count;
          this.#remaining -= count;
          if (this.#remaining === 0) this.#endData(events);
          break;
        }
        case "padding": {
          const count = Math.min(this.#remaining, chunk.length - at);
          at += count;
          this.#offset += count;
          this.#remaining -= count;
          if (this.#remaining === 0) this.#state = "header";
          break;
        }
        case "pax": {
          const pax = this.#pax!;
          const count = Math.min(pax.length - this.#paxFill, chunk.length - at);
          pax.set(chunk.subarray(at, at + count), this.#paxFill);
          this.#paxFill += count;
          at += count;
          this.#offset += count;
          if (this.#paxFill === pax.length) this.#endPax();
          break;
        }
        case "done": {
          // Writers pad the archive to a record size with zero bytes.
          const rest = chunk.subarray(at);
          const bad = rest.findIndex((byte) => byte !== 0);
          if (bad >= 0) throw new TarError("data after the end of the archive", this.#offset + bad);
          this.#offset += rest.length;
          at = chunk.length;
          break;
        }
        case "header":
        case "trailer": {
          const count = Math.min(TAR_BLOCK - this.#blockFill, chunk.length - at);
          this.#block.set(chunk.subarray(at, at + count), this.#blockFill);
          this.#blockFill += count;
          at += count;
          this.#offset += count;
          if (this.#blockFill === TAR_BLOCK) {
            this.#blockFill = 0;
            this.#headerBlock(events);
          }
          break;
        }
      }
    }
    return events;
  }

  /** Checks that the stream ended cleanly, after the end-of-archive marker. */
  finish(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#state !== "done") {
      throw new TarError(
        this.#state === "trailer"
          ? "the end-of-archive marker has one zero block, not two"
          : "the stream ended before the end-of-archive marker (truncated)",
        this.#offset,
      );
    }
  }

  #endData(events: TarEvent[]): void {
    events.push({ type: "entryEnd" });
    this.#remaining = padded(this.#dataSize) - this.#dataSize;
    this.#state = this.#remaining > 0 ? "padding" : "header";
  }

  #endPax(): void {
    const body = this.#pax!;
    const records = parsePax(body, this.#headerOffset + TAR_BLOCK);
    this.#paxRecords = this.#paxGlobal ? undefined : records;
    this.#pax = undefined;
    this.#remaining = padded(body.length) - body.length;
    this.#state = this.#remaining > 0 ? "padding" : "header";
  }

  #headerBlock(events: TarEvent[]): void {
    const block = this.#block;
    const start = this.#offset - TAR_BLOCK;
    this.#headerOffset = start;
    if (block.every((byte) => byte === 0)) {
      if (this.#paxRecords !== undefined) {
        throw new TarError("pax extended header not followed by an entry", start);
      }
      if (this.#state === "trailer") {
        this.#state = "done";
        events.push({ type: "end" });
      } else {
        this.#state = "trailer";
      }
      return;
    }
    if (this.#state === "trailer") {
      throw new TarError("a lone zero block inside the archive", start);
    }
    const fail = (problem: string): never => {
      throw new TarError(problem, start);
    };
    const stored = readOctal(block, FIELD.checksum, "checksum", start);
    if (stored !== checksum(block)) {
      fail(`header checksum mismatch (stored ${stored}, computed ${checksum(block)})`);
    }
    if (readString(block, [257, 6]) !== "ustar" || block[262] !== 0) {
      fail("not a POSIX ustar header (bad magic)");
    }
    if (block[263] !== 0x30 || block[264] !== 0x30) fail("unsupported ustar version");
    const type = block[FIELD.type[0]];
    const size = readOctal(block, FIELD.size, "size", start);
    const mode = readOctal(block, FIELD.mode, "mode", start);
    if (mode > 0o7777) fail(`mode ${mode.toString(8)} has bits beyond 07777`);
    readOctal(block, FIELD.uid, "uid", start);
    readOctal(block, FIELD.gid, "gid", start);
    const mtimeField = readOctal(block, FIELD.mtime, "mtime", start);

    if (type === TYPE_PAX || type === TYPE_PAX_GLOBAL) {
      if (this.#paxRecords !== undefined) fail("two pax extended headers in a row");
      if (size > this.#maxPaxBytes) {
        fail(`pax extended header of ${size} bytes exceeds ${this.#maxPaxBytes}`);
      }
      // Global records (GNU tar never writes them by default) are checked
      // and then ignored: nothing here depends on them.
      this.#paxGlobal = type === TYPE_PAX_GLOBAL;
      this.#pax = new Uint8Array(size);
      this.#paxFill = 0;
      this.#state = "pax";
      if (size === 0) this.#endPax();
      return;
    }

    let kind: TarEntryKind;
    if (type === TYPE_FILE || type === TYPE_FILE_OLD) kind = "file";
    else if (type === TYPE_DIRECTORY) kind = "directory";
    else if (type === TYPE_SYMLINK) kind = "symlink";
    else kind = fail(unsupportedType(type));

    const records = this.#paxRecords ?? new Map<string, string>();
    this.#paxRecords = undefined;
    let path: string;
    if (records.has("path")) {
      path = records.get("path")!;
    } else {
      const name = readUtf8(block, FIELD.name, "name", start);
      const prefix = readUtf8(block, FIELD.prefix, "prefix", start);
      path = prefix === "" ? name : `${prefix}/${name}`;
    }
    let entrySize = size;
    if (records.has("size")) entrySize = parseDecimal(records.get("size")!, "pax size", start);
    let mtime = mtimeField;
    if (records.has("mtime")) mtime = parseSeconds(records.get("mtime")!, start);
    if (kind === "file" && path.endsWith("/")) {
      fail(`regular file ${JSON.stringify(path)} ends in "/"`);
    }
    if (kind === "directory") path = path.replace(/\/+$/, "");
    if (kind !== "file" && entrySize !== 0) {
      fail(`${kind} ${JSON.stringify(path)} has data (size ${entrySize})`);
    }
    if (path === "" && kind !== "directory") fail(`${kind} with an empty path`);
    const entry: TarEntry = { path, kind, mode, size: entrySize, mtime };
    if (kind === "symlink") {
      const target = records.get("linkpath") ?? readUtf8(block, FIELD.linkname, "linkname", start);
      if (target === "") fail(`symlink ${JSON.stringify(path)} has an empty target`);
      entry.linkTarget = target;
    }
    events.push({ type: "entry", entry });
    this.#dataSize = entrySize;
    this.#remaining = entrySize;
    if (entrySize > 0) {
      this.#state = "data";
    } else {
      events.push({ type: "entryEnd" });
      this.#state = "header";
    }
  }
}

/** Parses "<len> <key>=<value>\n" records; every length must be exact. */
function parsePax(body: Uint8Array, offset: number): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < body.length) {
    const fail = (problem: string): never => {
      throw new TarError(`pax record: ${problem}`, offset + at);
    };
    let space = at;
    while (space < body.length && space - at < 20 && body[space] >= 0x30 && body[space] <= 0x39) {
      space++;
    }
    if (space === at || body[space] !== 0x20) {
      fail("length is not a decimal number followed by a space");
    }
    if (body[at] === 0x30) fail("length has a leading zero");
    const length = Number(String.fromCharCode(...body.subarray(at, space)));
    if (!Number.isSafeInteger(length) || at + length > body.length || length <= space - at + 1) {
      fail(`length ${length} runs past the header`);
    }
    const end = at + length;
    if (body[end - 1] !== 0x0a) fail("record does not end in a newline");
    const record = body.subarray(space + 1, end - 1);
    const equals = record.indexOf(0x3d);
    if (equals <= 0) fail("record has no key");
    let key: string;
    let value: string;
    try {
      key = utf8.decode(record.subarray(0, equals));
      value = utf8.decode(record.subarray(equals + 1));
    } catch {
      key = value = fail("record is not valid UTF-8");
    }
    if (key === "hdrcharset" && value !== "ISO-IR 10646 2000 UTF-8") {
      fail(`hdrcharset ${JSON.stringify(value)} is not supported (names must be UTF-8)`);
    }
    records.set(key, value);
    at = end;
  }
  return records;
}

function unsupportedType(type: number): string {
  const char = String.fromCharCode(type);
  const names: Record<string, string> = {
    "1": "hard link",
    "3": "character device",
    "4": "block device",
    "6": "FIFO",
    "7": "contiguous file",
    "L": "GNU long name",
    "K": "GNU long link name",
    "S": "GNU sparse file",
  };
  const shown = type >= 0x20 && type < 0x7f ? `'${char}'` : `0x${type.toString(16)}`;
  return `unsupported entry type ${shown}${names[char] ? ` (${names[char]})` : ""}`;
}

function checkEntry(entry: TarEntry): void {
  if (entry.path === "" && entry.kind !== "directory") throw new RangeError("empty tar path");
  if (entry.path.includes("\0")) throw new RangeError("tar path contains a NUL byte");
  if (entry.kind !== "directory" && entry.path.endsWith("/")) {
    throw new RangeError(`a ${entry.kind} path ends in "/"`);
  }
  if (!Number.isSafeInteger(entry.size) || entry.size < 0) {
    throw new RangeError("bad tar entry size");
  }
  if (entry.kind !== "file" && entry.size !== 0) {
    throw new RangeError(`a ${entry.kind} has no data`);
  }
  if (entry.kind === "symlink" && !entry.linkTarget) {
    throw new RangeError("symlink without a target");
  }
  if (entry.kind !== "symlink" && entry.linkTarget !== undefined) {
    throw new RangeError("only symlinks have a target");
  }
  if (!Number.isInteger(entry.mode) || entry.mode < 0 || entry.mode > 0o7777) {
    throw new RangeError("bad tar entry mode");
  }
}

/** Splits an ASCII path into ustar prefix (≤155) and name (≤100), or undefined. */
function splitUstarPath(path: string): { prefix: string; name: string } | undefined {
  if (!isAscii(path)) return undefined;
  if (path.length <= 100) return { prefix: "", name: path };
  // The name part may end with the directory's "/", so search from the end.
  for (
    let cut = path.lastIndexOf("/", path.length - 2);
    cut > 0;
    cut = path.lastIndexOf("/", cut - 1)
  ) {
    const prefix = path.slice(0, cut);
    const name = path.slice(cut + 1);
    if (name.length > 100) return undefined;
    if (prefix.length <= 155 && name.length > 0) return { prefix, name };
  }
  return undefined;
}

function isAscii(text: string): boolean {
  // Printable ASCII only; anything else goes in a pax record.
  return /^[\x20-\x7e]*$/.test(text);
}

function asciiFallback(text: string, max: number): string {
  return text.replace(/[^\x20-\x7e]/g, "_").slice(0, max);
}

function paxRecord(key: string, value: string): string {
  const payload = ` ${key}=${value}\n`;
  const bytes = encoder.encode(payload).length;
  let length = bytes + String(bytes).length;
  if (String(length).length !== String(length - bytes).length) {
    length = bytes + String(length).length;
  }
  return `${length}${payload}`;
}

function formatSeconds(seconds: number): string {
  if (Number.isInteger(seconds)) return String(seconds);
  return seconds.toFixed(9).replace(/0+$/, "");
}

function putString(block: Uint8Array, [at, length]: readonly [number, number], text: string): void {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new RangeError(`tar field too long: ${text}`);
  block.set(bytes, at);
}

function putOctal(block: Uint8Array, [at, length]: readonly [number, number], value: number): void {
  const digits = value.toString(8).padStart(length - 1, "0");
  if (digits.length > length - 1) throw new RangeError(`tar field overflow: ${value}`);
  block.set(encoder.encode(digits), at);
  block[at + length - 1] = 0;
}

function checksum(block: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const inField = i >= FIELD.checksum[0] && i < FIELD.checksum[0] + FIELD.checksum[1];
    sum += inField ? 0x20 : block[i];
  }
  return sum;
}

function putChecksum(block: Uint8Array): void {
  const digits = checksum(block).toString(8).padStart(6, "0");
  block.set(encoder.encode(digits), FIELD.checksum[0]);
  block[FIELD.checksum[0] + 6] = 0;
  block[FIELD.checksum[0] + 7] = 0x20;
}

/** Reads an octal field: optional leading spaces, digits, then only NUL or space. */
function readOctal(
  block: Uint8Array,
  [at, length]: readonly [number, number],
  what: string,
  offset: number,
): number {
  let i = at;
  const end = at + length;
  if (block[i] & 0x80) {
    throw new TarError(`${what} field uses base-256, not supported`, offset + at);
  }
  while (i < end && block[i] === 0x20) i++;
  let value = 0;
  const first = i;
  while (i < end && block[i] >= 0x30 && block[i] <= 0x37) value = value * 8 + block[i++] - 0x30;
  if (i === first && what !== "uid" && what !== "gid") {
    // An all-NUL uid/gid occurs in some writers' output; every other field needs digits.
    throw new TarError(`${what} field is not an octal number`, offset + at);
  }
  for (; i < end; i++) {
    if (block[i] !== 0 && block[i] !== 0x20) {
      throw new TarError(`${what} field is not an octal number`, offset + at);
    }
  }
  return value;
}

function readString(block: Uint8Array, [at, length]: readonly [number, number]): string {
  const field = block.subarray(at, at + length);
  const nul = field.indexOf(0);
  return String.fromCharCode(...field.subarray(0, nul < 0 ? length : nul));
}

function readUtf8(
  block: Uint8Array,
  [at, length]: readonly [number, number],
  what: string,
  offset: number,
): string {
  const field = block.subarray(at, at + length);
  const nul = field.indexOf(0);
  try {
    return utf8.decode(field.subarray(0, nul < 0 ? length : nul));
  } catch {
    throw new TarError(`${what} field is not valid UTF-8`, offset + at);
  }
}

function parseDecimal(text: string, what: string, offset: number): number {
  if (!/^[0-9]{1,16}$/.test(text)) {
    throw new TarError(`${what} ${JSON.stringify(text)} is not a number`, offset);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new TarError(`${what} ${text} is too large`, offset);
  return value;
}

function parseSeconds(text: string, offset: number): number {
  if (!/^-?[0-9]{1,16}(\.[0-9]{1,9})?$/.test(text)) {
    throw new TarError(`pax mtime ${JSON.stringify(text)} is not a number of seconds`, offset);
  }
  return Number(text);
}
