/**
 * The shared-memory segment: its layout, and a strict validator that a
 * receiver runs before it trusts any field.
 *
 * ```text
 * offset  size        what
 * 0       4096        header (fields below), sender semaphore, digest, name
 * 4096    128 × 128   receiver table: 128 entries of 128 bytes
 * 20480   K × 4       slot lengths (i32 per slot), padded to 64 bytes
 * after   K × chunk   the ring: K slots of `chunk` bytes
 *
 * header (i32 little-endian unless noted)
 *   0 magic "P2MS"     4 version          8 state           12 abort reason
 *  16 chunk size      20 slot count      24 table entries   28 table offset
 *  32 slots offset    36 sender sem off  40 peers wanted    44 digest code
 *  48 digest length   52 file mode       56 name length     60 sender waiting
 *  64 next entry      68 sender pid      72 published       76 total chunks
 *  80 segment size (f64)                 88 file size (f64)
 *  96 flags (PayloadFlag)  100 slot lengths offset  104 final chunks
 * 108 lap (1 for the first)                112 final size (f64)
 * 128 sender "space" sem_t (32 bytes, its own cache line)
 * 192 final digest (64 bytes)           256 name (at most 1024 bytes)
 *
 * receiver entry (128 bytes)
 *   0 state   4 waiting flag   8 pid   12 cursor (chunks consumed)
 *  16 committing flag (fsync and rename under way)
 *  64 the receiver's own sem_t (32 bytes)
 * ```
 *
 * A file or a tree of known size fills every slot but the last; its slot
 * lengths follow from the size. A stream of unknown size
 * (`PayloadFlag.SizeUnknown`: file size and total chunks are 0 in the
 * header) publishes each slot with its byte length in the slot-length
 * table, a partial slot whenever the input pauses, and at the end its
 * final chunk count and size, then Final.
 *
 * Counters are Atomics on an Int32Array view (atomic across processes);
 * the sem_t areas are never touched by Atomics. Liveness is an OFD lock on
 * byte 0 (sender) or byte 1 + i (receiver i) of the segment's fd.
 *
 * @module
 */
import { DIGEST_LENGTH, type DigestAlgorithm, digestFromCode } from "../core/digest.ts";
import { WireError } from "../core/wire.ts";
import type { SharedMemory } from "../ffi/mod.ts";

/** "P2MS" as a little-endian u32. */
export const SEGMENT_MAGIC = 0x534d3250;
/** Layout version this build speaks. */
export const SEGMENT_VERSION = 3;
/** Bytes of the header area. */
export const HEADER_AREA = 4096;
/** Bytes per receiver table entry. */
export const ENTRY_SIZE = 128;
/** Receiver table entries (the most receivers one transfer serves). */
export const MAX_RECEIVERS = 128;
/** Offset of the sender's semaphore. */
export const SENDER_SEM_OFFSET = 128;
/** Offset of the final digest. */
export const DIGEST_OFFSET = 192;
/** Room for the digest. */
export const DIGEST_AREA = 64;
/** Offset of the file name. */
export const NAME_OFFSET = 256;
/** Room for the file name (it is sanitised again by the receiver). */
export const NAME_AREA = 1024;
/** Offset of a receiver's semaphore inside its entry. */
export const ENTRY_SEM_OFFSET = 64;
/** Smallest chunk (one page); chunks are whole pages. */
export const MIN_CHUNK = 4096;
/** Largest chunk. */
export const MAX_CHUNK = 64 * 1024 * 1024;
/** Most slots in a ring. */
export const MAX_SLOTS = 65_536;
/** Largest ring (slots × chunk). */
export const MAX_RING = 4 * 1024 ** 3;
/** Largest file, in chunks (the counters are i32). */
export const MAX_CHUNKS = 2 ** 31 - 1;

/** Header fields, as Int32Array indices (accessed only through shm/segment.ts). */
export const HeaderField = {
  magic: 0,
  version: 1,
  state: 2,
  abortReason: 3,
  chunkSize: 4,
  slotCount: 5,
  tableEntries: 6,
  tableOffset: 7,
  slotsOffset: 8,
  senderSemOffset: 9,
  peers: 10,
  digestCode: 11,
  digestLength: 12,
  mode: 13,
  nameLength: 14,
  senderWaiting: 15,
  nextEntry: 16,
  senderPid: 17,
  published: 18,
  totalChunks: 19,
  flags: 24,
  lengthsOffset: 25,
  finalChunks: 26,
  lap: 27,
  claimed: 30,
} as const;
/** Byte offset of a stream's final size (float64, written before Final). */
export const FINAL_SIZE_OFFSET = 112;

/** Bits of the header's flags word. */
export const PayloadFlag = {
  /** A stream: size unknown until Final; slots carry their own lengths. */
  SizeUnknown: 1,
  /** The bytes are a pax tar stream of a directory tree. */
  Tree: 2,
  /**
   * The sender lingers (`--linger`): a receiver too late for this lap waits
   * for the next one, a new segment under the same name with a higher lap.
   */
  Laps: 4,
} as const;
const KNOWN_FLAGS = PayloadFlag.SizeUnknown | PayloadFlag.Tree | PayloadFlag.Laps;
/** Byte offset of the segment size (float64: exact below 2^53). */
export const SEGMENT_SIZE_OFFSET = 80;
/** Byte offset of the file size (float64: exact below 2^53). */
export const FILE_SIZE_OFFSET = 88;

/** Receiver entry fields, as Int32Array indices relative to the entry. */
export const EntryField = { state: 0, waiting: 1, pid: 2, cursor: 3, committing: 4 } as const;
/**
 * Least time a receiver that says it is committing (fsync of a large copy
 * on a slow disk) gets before it counts as stalled.
 */
export const COMMIT_GRACE_MS = 60_000;

/** Transfer states stored in the header. */
export const TransferState = {
  /** Waiting for receivers to attach. */
  Waiting: 1,
  /** Chunks are being published. */
  Streaming: 2,
  /** Every chunk and the digest are published. */
  Final: 3,
  /** Verdicts are in; the sender is leaving. No new receivers. */
  Closed: 4,
  /** The transfer was aborted; see the abort reason. */
  Aborted: 5,
} as const;

/** Why a transfer was aborted. */
export const AbortReason = {
  /** Not aborted. */
  None: 0,
  /** The sender was interrupted (SIGINT/SIGTERM). */
  Interrupted: 1,
  /** The source file changed while it was sent. */
  SourceChanged: 2,
  /** The sender failed (e.g. a read error, too few receivers). */
  Failed: 3,
  /** The sender found the segment corrupt (overwritten by another process). */
  Corrupt: 4,
} as const;

/** Receiver entry states. */
export const ReceiverState = {
  /** Unused entry. */
  Free: 0,
  /** Attached and consuming. */
  Attached: 1,
  /** Finished: the copy verified and was committed. */
  Verified: 2,
  /** Finished: digest mismatch or a write error; copy discarded. */
  Failed: 3,
  /** Evicted by the sender: its process died. */
  Dead: 4,
  /** Evicted by the sender: alive but stopped consuming. */
  Stalled: 5,
  /** Left on its own (interrupted, or refused as a late joiner). */
  Left: 6,
} as const;

/** Text for a receiver entry state, for summaries. */
export const PEER_STATE_TEXT: Readonly<Record<number, string>> = {
  [ReceiverState.Free]: "free",
  [ReceiverState.Attached]: "attached",
  [ReceiverState.Verified]: "verified",
  [ReceiverState.Failed]: "failed",
  [ReceiverState.Dead]: "died",
  [ReceiverState.Stalled]: "stalled",
  [ReceiverState.Left]: "left",
};

/** The shape of a segment, fixed by the sender. */
export interface Geometry {
  /** Bytes per slot. */
  chunkSize: number;
  /** Slots in the ring. */
  slotCount: number;
  /** Offset of the receiver table. */
  tableOffset: number;
  /** Entries in the receiver table. */
  tableEntries: number;
  /** Offset of the slot-length table (one i32 per slot). */
  lengthsOffset: number;
  /** Offset of slot 0. */
  slotsOffset: number;
  /** Total bytes of the segment. */
  segmentSize: number;
}

/** Everything a receiver learns from a validated header. */
export interface SegmentInfo extends Geometry {
  /** File size in bytes (0 while a stream's size is unknown). */
  fileSize: number;
  /** Chunks in the file (0 while a stream's size is unknown). */
  totalChunks: number;
  /** Whether the size is known in advance (false: a stream; see the final size). */
  sizeKnown: boolean;
  /** Whether the bytes are a tar stream of a tree. */
  tree: boolean;
  /** Whether a later lap will serve a receiver too late for this one. */
  laps: boolean;
  /** This segment's lap (1 for the first). */
  lap: number;
  /** Permission bits of the file. */
  mode: number;
  /** The sender's file name (untrusted; sanitised when used). */
  name: string;
  /** Digest algorithm. */
  digest: DigestAlgorithm;
  /** Receivers the sender waits for. */
  peers: number;
}

/** Computes the geometry for a ring of `slotCount` × `chunkSize`. */
export function geometry(chunkSize: number, slotCount: number): Geometry {
  const tableOffset = HEADER_AREA;
  const lengthsOffset = tableOffset + MAX_RECEIVERS * ENTRY_SIZE;
  const slotsOffset = lengthsOffset + lengthsArea(slotCount);
  return {
    chunkSize,
    slotCount,
    tableOffset,
    tableEntries: MAX_RECEIVERS,
    lengthsOffset,
    slotsOffset,
    segmentSize: slotsOffset + chunkSize * slotCount,
  };
}

/** Bytes of the slot-length table for `slotCount` slots (a whole number of cache lines). */
function lengthsArea(slotCount: number): number {
  return Math.ceil((slotCount * 4) / 64) * 64;
}

/** Chunks needed for `size` bytes. */
export function chunksFor(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

const decoder = new TextDecoder("utf-8", { fatal: false });

/**
 * Validates a segment's header against its real size and returns what it
 * says; throws WireError naming the first bad field. Returns undefined if
 * the sender has not finished writing it yet (magic still 0).
 */
export function readHeader(buffer: ArrayBuffer, realSize: number): SegmentInfo | undefined {
  if (realSize < HEADER_AREA || buffer.byteLength < HEADER_AREA) {
    if (realSize === 0) return undefined; // created, not yet sized
    throw new WireError(`segment is ${realSize} bytes, smaller than a header`);
  }
  const i32 = new Int32Array(buffer, 0, HEADER_AREA / 4);
  const f64 = new Float64Array(buffer, 0, HEADER_AREA / 8);
  const magic = Atomics.load(i32, HeaderField.magic) >>> 0;
  if (magic === 0) return undefined;
  if (magic !== SEGMENT_MAGIC) throw new WireError("not a p2m segment (bad magic)");
  const version = i32[HeaderField.version];
  if (version !== SEGMENT_VERSION) {
    throw new WireError(
      `unsupported segment version ${version} (this build speaks ${SEGMENT_VERSION})`,
    );
  }
  const segmentSize = f64[SEGMENT_SIZE_OFFSET / 8];
  if (segmentSize !== realSize) {
    throw new WireError(`header says ${segmentSize} bytes but the segment has ${realSize}`);
  }
  const chunkSize = i32[HeaderField.chunkSize];
  const slotCount = i32[HeaderField.slotCount];
  const tableEntries = i32[HeaderField.tableEntries];
  const tableOffset = i32[HeaderField.tableOffset];
  const slotsOffset = i32[HeaderField.slotsOffset];
  const lengthsOffset = i32[HeaderField.lengthsOffset];
  if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK || chunkSize % MIN_CHUNK !== 0) {
    throw new WireError(`bad chunk size ${chunkSize}`);
  }
  if (slotCount < 1 || slotCount > MAX_SLOTS) throw new WireError(`bad slot count ${slotCount}`);
  if (tableEntries < 1 || tableEntries > MAX_RECEIVERS) {
    throw new WireError(`bad receiver table size ${tableEntries}`);
  }
  if (i32[HeaderField.senderSemOffset] !== SENDER_SEM_OFFSET) {
    throw new WireError("bad semaphore offset");
  }
  if (tableOffset < HEADER_AREA || tableOffset % 64 !== 0) {
    throw new WireError(`bad receiver table offset ${tableOffset}`);
  }
  const tableEnd = tableOffset + tableEntries * ENTRY_SIZE;
  if (slotsOffset < tableEnd || slotsOffset % 64 !== 0) {
    throw new WireError(`bad ring offset ${slotsOffset}`);
  }
  if (slotsOffset + chunkSize * slotCount !== realSize) {
    throw new WireError(
      `ring of ${slotCount} × ${chunkSize} bytes at ${slotsOffset} does not end at the segment's end (${realSize})`,
    );
  }
  if (
    lengthsOffset < tableEnd || lengthsOffset % 64 !== 0 ||
    lengthsOffset + lengthsArea(slotCount) > slotsOffset
  ) {
    throw new WireError(`bad slot-length table offset ${lengthsOffset}`);
  }
  const flags = i32[HeaderField.flags];
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new WireError(`unknown flags ${flags}`);
  const sizeKnown = (flags & PayloadFlag.SizeUnknown) === 0;
  const fileSize = f64[FILE_SIZE_OFFSET / 8];
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) throw new WireError(`bad file size`);
  const totalChunks = i32[HeaderField.totalChunks];
  if (totalChunks !== chunksFor(fileSize, chunkSize)) {
    throw new WireError(`chunk count ${totalChunks} does not match the file size`);
  }
  if (!sizeKnown && (fileSize !== 0 || totalChunks !== 0)) {
    throw new WireError("a stream of unknown size announces a size");
  }
  const lap = i32[HeaderField.lap];
  if (lap < 1) throw new WireError(`bad lap ${lap}`);
  const digest = digestFromCode(i32[HeaderField.digestCode]);
  if (digest === undefined) {
    throw new WireError(`unknown digest code ${i32[HeaderField.digestCode]}`);
  }
  if (i32[HeaderField.digestLength] !== DIGEST_LENGTH[digest]) {
    throw new WireError("bad digest length");
  }
  const mode = i32[HeaderField.mode];
  if (mode < 0 || mode > 0o7777) throw new WireError(`bad file mode ${mode}`);
  const nameLength = i32[HeaderField.nameLength];
  if (nameLength < 0 || nameLength > NAME_AREA) {
    throw new WireError(`name length ${nameLength} exceeds ${NAME_AREA}`);
  }
  const state = Atomics.load(i32, HeaderField.state);
  if (state < TransferState.Waiting || state > TransferState.Aborted) {
    throw new WireError(`bad state ${state}`);
  }
  const peers = i32[HeaderField.peers];
  if (peers < 0 || peers > tableEntries) throw new WireError(`bad peer count ${peers}`);
  const name = decoder.decode(new Uint8Array(buffer, NAME_OFFSET, nameLength));
  return {
    chunkSize,
    slotCount,
    tableOffset,
    tableEntries,
    lengthsOffset,
    slotsOffset,
    segmentSize,
    fileSize,
    totalChunks,
    sizeKnown,
    tree: (flags & PayloadFlag.Tree) !== 0,
    laps: (flags & PayloadFlag.Laps) !== 0,
    lap,
    mode,
    name,
    digest,
    peers,
  };
}

/** Header fields the sender writes (everything but the live counters). */
export interface HeaderFields extends Geometry {
  /** File size (0 for a stream of unknown size). */
  fileSize: number;
  /** {@linkcode PayloadFlag} bits (default 0: a file of known size). */
  flags?: number;
  /** The lap this segment serves (default 1). */
  lap?: number;
  /** File mode bits. */
  mode: number;
  /** Base name of the file. */
  name: string;
  /** Digest algorithm code. */
  digestCode: number;
  /** Digest length in bytes. */
  digestLength: number;
  /** Receivers wanted. */
  peers: number;
  /** The sender's pid, for messages only. */
  pid: number;
}

const encoder = new TextEncoder();

/**
 * Writes a header into a zeroed segment; the magic goes last, so a
 * receiver never sees a half-written header as valid.
 */
export function writeHeader(buffer: ArrayBuffer, fields: HeaderFields): void {
  const i32 = new Int32Array(buffer, 0, HEADER_AREA / 4);
  const f64 = new Float64Array(buffer, 0, HEADER_AREA / 8);
  const name = encoder.encode(fields.name);
  if (name.length > NAME_AREA) throw new RangeError("name too long for the segment");
  new Uint8Array(buffer, NAME_OFFSET, NAME_AREA).set(name);
  i32[HeaderField.version] = SEGMENT_VERSION;
  i32[HeaderField.state] = TransferState.Waiting;
  i32[HeaderField.abortReason] = AbortReason.None;
  i32[HeaderField.chunkSize] = fields.chunkSize;
  i32[HeaderField.slotCount] = fields.slotCount;
  i32[HeaderField.tableEntries] = fields.tableEntries;
  i32[HeaderField.tableOffset] = fields.tableOffset;
  i32[HeaderField.slotsOffset] = fields.slotsOffset;
  i32[HeaderField.lengthsOffset] = fields.lengthsOffset;
  i32[HeaderField.flags] = fields.flags ?? 0;
  i32[HeaderField.lap] = fields.lap ?? 1;
  i32[HeaderField.senderSemOffset] = SENDER_SEM_OFFSET;
  i32[HeaderField.peers] = fields.peers;
  i32[HeaderField.digestCode] = fields.digestCode;
  i32[HeaderField.digestLength] = fields.digestLength;
  i32[HeaderField.mode] = fields.mode & 0o7777;
  i32[HeaderField.nameLength] = name.length;
  i32[HeaderField.senderPid] = fields.pid;
  i32[HeaderField.totalChunks] = chunksFor(fields.fileSize, fields.chunkSize);
  f64[SEGMENT_SIZE_OFFSET / 8] = fields.segmentSize;
  f64[FILE_SIZE_OFFSET / 8] = fields.fileSize;
  Atomics.store(i32, HeaderField.magic, SEGMENT_MAGIC | 0);
}

/** The sender pid a segment's header names (for messages only), if it has a header. */
export function readSenderPid(memory: SharedMemory): number | undefined {
  try {
    if (memory.stat().size < HEADER_AREA) return undefined;
    const i32 = new Int32Array(memory.map(HEADER_AREA));
    return i32[HeaderField.senderPid] > 0 ? i32[HeaderField.senderPid] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a segment without a live sender may be a p2m sender's leftover:
 * empty (killed before it was sized), magic still 0 (before the header) or
 * a p2m magic. Anything else is someone else's object and is never removed.
 * `header` maps at least the first 4 bytes, or is empty.
 */
export function mayBeP2mLeftover(header: ArrayBuffer | undefined): boolean {
  if (header === undefined || header.byteLength === 0) return true;
  if (header.byteLength < 4) return false;
  const magic = Atomics.load(new Int32Array(header, 0, 1), HeaderField.magic) >>> 0;
  return magic === 0 || magic === SEGMENT_MAGIC;
}
