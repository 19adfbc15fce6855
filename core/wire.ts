/**
 * The file header and trailer that both transports carry.
 *
 * The socket transport sends them on the stream; the shared-memory
 * transport stores the same encoded header inside its segment, so one
 * strict decoder guards both. Every field is checked before it is
 * trusted: a hostile or corrupt peer gets a {@linkcode WireError}, never
 * an out-of-bounds read or an absurd allocation.
 *
 * ```text
 * header (little-endian)             trailer
 *  0  magic   "P2MH"                  0  magic   "P2MT"
 *  4  version u16 = 2                 4  status  u8  (0 complete, 1 source changed)
 *  6  digest  u8  algorithm code      5  length  u8  digest bytes that follow
 *  7  flags   u8  (bit 0 size         6  reserved u16 = 0
 *             unknown, bit 1 tree)    8  size    u64 payload bytes sent
 *  8  size    u64 payload bytes (0   16  digest  `length` bytes
 *             when unknown)
 * 16  mode    u32 permission bits
 * 20  nameLen u32
 * 24  name    nameLen bytes of UTF-8
 * ```
 *
 * - **size unknown** (a stream: stdin, a FIFO): the payload comes in
 *   chunks, each a u32 length (1 to {@linkcode MAX_WIRE_CHUNK}) and that
 *   many bytes, ended by a zero length; the trailer then says how many
 *   bytes there were. With a known size the payload is exactly `size` raw
 *   bytes and the trailer repeats that size. The length
 *   {@linkcode KEEPALIVE_CHUNK} carries no bytes: it says "still here, the
 *   producer pauses", so a receiver's stall timeout measures the sender,
 *   not the producer.
 * - **tree**: the payload is a pax tar stream (core/tar.ts), to be unpacked
 *   by a sanitising writer (core/tree_output.ts), not written as one file.
 *
 * Version 2 added the flags and the trailer's size; a version 1 peer is
 * refused with both versions named.
 *
 * @module
 */
import { DIGEST_LENGTH, type DigestAlgorithm, digestCode, digestFromCode } from "./digest.ts";
import { P2mError } from "./errors.ts";

/** Wire format version this build speaks. */
export const WIRE_VERSION = 2;
/** Bytes before the name in an encoded header. */
export const HEADER_FIXED_LENGTH = 24;
/** Longest name accepted on the wire, in bytes (it is sanitised later). */
export const MAX_WIRE_NAME_BYTES = 64 * 1024;
/** Longest encoded header. */
export const MAX_HEADER_LENGTH = HEADER_FIXED_LENGTH + MAX_WIRE_NAME_BYTES;
/** Bytes before the digest in an encoded trailer. */
export const TRAILER_FIXED_LENGTH = 16;
/** Longest digest a trailer may carry. */
export const MAX_DIGEST_BYTES = 64;

/** Bytes of a chunk length in a payload of unknown size. */
export const CHUNK_LENGTH_BYTES = 4;
/** Longest chunk of a payload of unknown size. */
export const MAX_WIRE_CHUNK = 64 * 1024 * 1024;

/** A chunk length that carries no bytes: the sender is alive, the producer pauses. */
export const KEEPALIVE_CHUNK = 0xffffffff;

/** Header flag: the size is not known in advance (chunked payload). */
const FLAG_SIZE_UNKNOWN = 1;
/** Header flag: the payload is a pax tar stream of a directory tree. */
const FLAG_TREE = 2;
const KNOWN_FLAGS = FLAG_SIZE_UNKNOWN | FLAG_TREE;

const HEADER_MAGIC = 0x484d3250; // "P2MH" read as little-endian u32
const TRAILER_MAGIC = 0x544d3250; // "P2MT"

/** What a receiver learns about the file before the bytes. */
export interface FileHeader {
  /** Payload size in bytes (0 when {@linkcode FileHeader.sizeUnknown}). */
  size: number;
  /** The size is not known in advance: the payload is chunked. */
  sizeUnknown?: true;
  /** The payload is a pax tar stream of a tree named `name`. */
  tree?: true;
  /** Permission bits (0o7777 at most). */
  mode: number;
  /** The sender's file name, untrusted until sanitised. */
  name: string;
  /** Digest that the trailer will carry. */
  digest: DigestAlgorithm;
}

/** Transfer outcome carried by the trailer. */
export const TrailerStatus = {
  /** Every byte was sent from an unchanged file. */
  Complete: 0,
  /** The source changed while it was sent: the bytes are not to be kept. */
  SourceChanged: 1,
} as const;
/** A trailer status value. */
export type TrailerStatus = typeof TrailerStatus[keyof typeof TrailerStatus];

/** What follows the file bytes. */
export interface FileTrailer {
  /** Whether the sender vouches for the bytes. */
  status: TrailerStatus;
  /** Payload bytes sent (the whole stream's length when it was unknown). */
  size: number;
  /** Raw digest of the bytes (empty when the digest is `none`). */
  digest: Uint8Array;
}

/** Malformed or hostile data on the wire or in a segment. */
export class WireError extends P2mError {
  /** Creates an error describing what was wrong with the data. */
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

/** Encodes a header; throws RangeError for values it cannot represent. */
export function encodeHeader(header: FileHeader): Uint8Array {
  const name = encoder.encode(header.name);
  if (name.length > MAX_WIRE_NAME_BYTES) throw new RangeError("file name too long");
  if (!Number.isSafeInteger(header.size) || header.size < 0) {
    throw new RangeError(`bad file size ${header.size}`);
  }
  if (header.sizeUnknown && header.size !== 0) {
    throw new RangeError("a header of unknown size carries size 0");
  }
  const bytes = new Uint8Array(HEADER_FIXED_LENGTH + name.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, HEADER_MAGIC, true);
  view.setUint16(4, WIRE_VERSION, true);
  view.setUint8(6, digestCode(header.digest));
  view.setUint8(7, (header.sizeUnknown ? FLAG_SIZE_UNKNOWN : 0) | (header.tree ? FLAG_TREE : 0));
  view.setBigUint64(8, BigInt(header.size), true);
  view.setUint32(16, header.mode & 0o7777, true);
  view.setUint32(20, name.length, true);
  bytes.set(name, HEADER_FIXED_LENGTH);
  return bytes;
}

/**
 * Checks the fixed part of a header and returns the full header length.
 * Needs at least {@linkcode HEADER_FIXED_LENGTH} bytes.
 */
export function headerLength(fixed: Uint8Array): number {
  if (fixed.length < HEADER_FIXED_LENGTH) throw new WireError("truncated header");
  const view = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
  if (view.getUint32(0, true) !== HEADER_MAGIC) {
    throw new WireError("not a p2m stream (bad header magic)");
  }
  const version = view.getUint16(4, true);
  if (version !== WIRE_VERSION) {
    throw new WireError(
      `unsupported wire version ${version} (this build speaks ${WIRE_VERSION}); ` +
        "run the same p2m version on both ends",
    );
  }
  const nameLength = view.getUint32(20, true);
  if (nameLength > MAX_WIRE_NAME_BYTES) {
    throw new WireError(`header name length ${nameLength} exceeds ${MAX_WIRE_NAME_BYTES}`);
  }
  return HEADER_FIXED_LENGTH + nameLength;
}

/** Decodes and validates a complete header. */
export function decodeHeader(bytes: Uint8Array): FileHeader {
  const length = headerLength(bytes);
  if (bytes.length < length) throw new WireError("truncated header");
  if (bytes.length > length) throw new WireError("trailing bytes after header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const digest = digestFromCode(view.getUint8(6));
  if (digest === undefined) throw new WireError(`unknown digest code ${view.getUint8(6)}`);
  const flags = view.getUint8(7);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new WireError(`unknown header flags ${flags}`);
  const size = view.getBigUint64(8, true);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new WireError(`absurd file size ${size}`);
  if ((flags & FLAG_SIZE_UNKNOWN) && size !== 0n) {
    throw new WireError(`a header of unknown size carries size ${size}, not 0`);
  }
  const mode = view.getUint32(16, true);
  if (mode > 0o7777) throw new WireError(`bad file mode ${mode.toString(8)}`);
  const name = decoder.decode(bytes.subarray(HEADER_FIXED_LENGTH, length));
  const header: FileHeader = { size: Number(size), mode, name, digest };
  if (flags & FLAG_SIZE_UNKNOWN) header.sizeUnknown = true;
  if (flags & FLAG_TREE) header.tree = true;
  return header;
}

/** Encodes a trailer. */
export function encodeTrailer(trailer: FileTrailer): Uint8Array {
  if (trailer.digest.length > MAX_DIGEST_BYTES) throw new RangeError("digest too long");
  if (!Number.isSafeInteger(trailer.size) || trailer.size < 0) {
    throw new RangeError(`bad trailer size ${trailer.size}`);
  }
  const bytes = new Uint8Array(TRAILER_FIXED_LENGTH + trailer.digest.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, TRAILER_MAGIC, true);
  view.setUint8(4, trailer.status);
  view.setUint8(5, trailer.digest.length);
  view.setBigUint64(8, BigInt(trailer.size), true);
  bytes.set(trailer.digest, TRAILER_FIXED_LENGTH);
  return bytes;
}

/**
 * Checks the fixed part of a trailer against the header's algorithm and
 * returns the full trailer length.
 */
export function trailerLength(fixed: Uint8Array, algorithm: DigestAlgorithm): number {
  if (fixed.length < TRAILER_FIXED_LENGTH) throw new WireError("truncated trailer");
  const view = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
  if (view.getUint32(0, true) !== TRAILER_MAGIC) {
    throw new WireError("bad trailer magic: the stream holds more or fewer bytes than announced");
  }
  const status = view.getUint8(4);
  if (status !== TrailerStatus.Complete && status !== TrailerStatus.SourceChanged) {
    throw new WireError(`unknown trailer status ${status}`);
  }
  if (view.getUint16(6, true) !== 0) throw new WireError("trailer reserved bits set");
  if (view.getBigUint64(8, true) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WireError(`absurd trailer size ${view.getBigUint64(8, true)}`);
  }
  const length = view.getUint8(5);
  if (length !== DIGEST_LENGTH[algorithm]) {
    throw new WireError(
      `trailer digest is ${length} bytes, ${algorithm} needs ${DIGEST_LENGTH[algorithm]}`,
    );
  }
  return TRAILER_FIXED_LENGTH + length;
}

/** Decodes and validates a complete trailer. */
export function decodeTrailer(bytes: Uint8Array, algorithm: DigestAlgorithm): FileTrailer {
  const length = trailerLength(bytes, algorithm);
  if (bytes.length !== length) throw new WireError("trailer length mismatch");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    status: bytes[4] as TrailerStatus,
    size: Number(view.getBigUint64(8, true)),
    digest: bytes.slice(TRAILER_FIXED_LENGTH, length),
  };
}

/**
 * Encodes the length of a chunk of a payload of unknown size (0 ends the
 * payload; {@linkcode KEEPALIVE_CHUNK} is a keepalive).
 */
export function encodeChunkLength(length: number): Uint8Array {
  const valid = Number.isSafeInteger(length) && length >= 0 && length <= MAX_WIRE_CHUNK;
  if (!valid && length !== KEEPALIVE_CHUNK) {
    throw new RangeError(`bad chunk length ${length}`);
  }
  const bytes = new Uint8Array(CHUNK_LENGTH_BYTES);
  new DataView(bytes.buffer).setUint32(0, length, true);
  return bytes;
}

/**
 * Decodes and checks a chunk length (0: the payload has ended;
 * {@linkcode KEEPALIVE_CHUNK}: no bytes, more to come).
 */
export function decodeChunkLength(bytes: Uint8Array): number {
  if (bytes.length !== CHUNK_LENGTH_BYTES) throw new WireError("truncated chunk length");
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (length > MAX_WIRE_CHUNK && length !== KEEPALIVE_CHUNK) {
    throw new WireError(`chunk of ${length} bytes exceeds ${MAX_WIRE_CHUNK}`);
  }
  return length;
}
