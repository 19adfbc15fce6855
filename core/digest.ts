/**
 * Streaming digests carried by every transfer.
 *
 * - `xxh3-128`: XXH3 with 128-bit output through the reference library
 *   (`libxxhash.so.0`, {@link ../ffi/xxhash.ts}, measurements there),
 *   hashing mapped slots and receive buffers in place: as fast as memory
 *   delivers the bytes, about twice hash-wasm's xxh64. Without the library
 *   (or without `--allow-ffi`) the same algorithm runs in hash-wasm's
 *   WebAssembly (about 0.7× its xxh64, identical digests) after a one-line
 *   notice. Digests print in xxHash's canonical form, as `xxhsum -H2` does.
 *   It is {@linkcode DEFAULT_DIGEST}.
 * - `xxh64` (hash-wasm, about 7 GiB/s): the default of wire version 1
 *   builds before it; understood on the wire and selectable with `--digest`.
 * - `sha256` (node:crypto, about 1.5 GiB/s), for users who want a
 *   cryptographic hash.
 * - `none` turns verification off for benchmarks.
 *
 * WebAssembly is only compiled by a process that asks for a wasm digest,
 * and then from hash-wasm's files directly, without the npm loader.
 *
 * @module
 */
import { Xxh3Hasher, XxhashUnavailable } from "../ffi/xxhash.ts";
import { delay } from "./delay.ts";
import { P2mError } from "./errors.ts";

/**
 * The digest algorithms p2m understands, in wire-code order (new ones are
 * appended, so the codes of the others never change).
 */
export const DIGEST_ALGORITHMS = ["none", "xxh64", "sha256", "xxh3-128"] as const;
/** A digest algorithm name. */
export type DigestAlgorithm = typeof DIGEST_ALGORITHMS[number];
/** The default digest algorithm. */
export const DEFAULT_DIGEST: DigestAlgorithm = "xxh3-128";

/** Length in bytes of each algorithm's raw digest. */
export const DIGEST_LENGTH: Readonly<Record<DigestAlgorithm, number>> = {
  none: 0,
  xxh64: 8,
  sha256: 32,
  "xxh3-128": 16,
};

/** An incremental hash over a byte stream. */
export interface Digest {
  /** The algorithm in use. */
  readonly algorithm: DigestAlgorithm;
  /** Feeds bytes into the hash. The view is not kept. */
  update(bytes: Uint8Array): void;
  /** Finishes the hash and returns the raw digest bytes. */
  digest(): Uint8Array;
}

/** Returns whether a string names a known algorithm. */
export function isDigestAlgorithm(name: string): name is DigestAlgorithm {
  return (DIGEST_ALGORITHMS as readonly string[]).includes(name);
}

/** Wire code of an algorithm (its index in {@linkcode DIGEST_ALGORITHMS}). */
export function digestCode(algorithm: DigestAlgorithm): number {
  return DIGEST_ALGORITHMS.indexOf(algorithm);
}

/** Algorithm for a wire code, or undefined for an unknown code. */
export function digestFromCode(code: number): DigestAlgorithm | undefined {
  return DIGEST_ALGORITHMS[code];
}

/** How {@linkcode createDigest} may compute a digest. */
export interface DigestOptions {
  /**
   * Use the native library when it is there (default true). `false` forces
   * the WebAssembly build of the same algorithm, which gives the same digest
   * (the tests compare the two).
   */
  native?: boolean;
}

/** Creates a fresh streaming digest. */
export async function createDigest(
  algorithm: DigestAlgorithm,
  options: DigestOptions = {},
): Promise<Digest> {
  switch (algorithm) {
    case "none":
      return { algorithm, update() {}, digest: () => new Uint8Array(0) };
    case "xxh3-128":
      return (options.native !== false && nativeXxh3()) || await wasmDigest(algorithm);
    case "xxh64":
      return await wasmDigest(algorithm);
    case "sha256": {
      const { createHash } = await import("node:crypto");
      const hasher = createHash("sha256");
      return {
        algorithm,
        update: (bytes) => void hasher.update(bytes),
        digest: () => new Uint8Array(hasher.digest()),
      };
    }
  }
}

/** Whether this process already said that the native digest is missing. */
let fallbackNoticed = false;

/**
 * XXH3-128 through libxxhash, or undefined (after a one-line notice on
 * stderr, once per process) when the library cannot be used.
 */
function nativeXxh3(): Digest | undefined {
  let hasher: Xxh3Hasher;
  try {
    hasher = new Xxh3Hasher(128);
  } catch (error) {
    if (!(error instanceof XxhashUnavailable)) throw error;
    if (!fallbackNoticed) {
      fallbackNoticed = true;
      console.error(`p2m: notice: ${error.message}; xxh3-128 runs in WebAssembly (same digests)`);
    }
    return undefined;
  }
  return {
    algorithm: "xxh3-128",
    update: (bytes) => hasher.update(bytes),
    digest() {
      const raw = hasher.digest();
      hasher.close();
      return raw;
    },
  };
}

/** The algorithms computed by hash-wasm. */
type WasmAlgorithm = "xxh64" | "xxh3-128";
/** Each one's build inside hash-wasm's package: file stem and module name. */
const WASM_BUILDS: Readonly<Record<WasmAlgorithm, string>> = {
  xxh64: "xxhash64",
  "xxh3-128": "xxhash128",
};

/** hash-wasm's streaming digest: the direct load if its file is found, else the package. */
async function wasmDigest(algorithm: WasmAlgorithm): Promise<Digest> {
  const direct = await directHashWasm(algorithm);
  if (direct) return direct;
  // Loaded on first use: processes that only frame or relay digests
  // (e.g. the socket worker) start faster and smaller without them.
  const { createXXHash64, createXXHash128 } = await import("hash-wasm");
  const hasher = await (algorithm === "xxh64" ? createXXHash64() : createXXHash128());
  hasher.init();
  return {
    algorithm,
    update: (bytes) => void hasher.update(bytes),
    digest: () => hasher.digest("binary"),
  };
}

/**
 * Where a hash-wasm build is: the project's node_modules, which `npm ci`
 * fills and Deno uses as is ("nodeModulesDir": "manual").
 */
function hashWasmFile(build: string): URL {
  return new URL(`../node_modules/hash-wasm/dist/${build}.umd.min.js`, import.meta.url);
}

/** Bytes hash-wasm's modules take per Hash_Update call (its buffer size). */
const WASM_BUFFER = 16 * 1024;

interface HashWasmExports {
  memory: WebAssembly.Memory;
  Hash_GetBuffer(): number;
  Hash_Init(bits: number): void;
  Hash_Update(length: number): void;
  Hash_Final(padding: number): void;
}

/** Compiled hash-wasm modules, one per build, compiled on first use. */
const wasmModules = new Map<string, Promise<WebAssembly.Module | undefined>>();

/**
 * hash-wasm's own WebAssembly for `algorithm`, instantiated without going
 * through the npm loader: the first `npm:` import starts Deno's Node
 * compatibility layer, about 70 ms of CPU per process, which every receiver
 * paid before it could join. Same module, same digests; undefined (and the
 * caller uses the package as usual) if node_modules does not have it.
 */
async function directHashWasm(algorithm: WasmAlgorithm): Promise<Digest | undefined> {
  const build = WASM_BUILDS[algorithm];
  let compiled = wasmModules.get(build);
  if (!compiled) {
    compiled = (async () => {
      try {
        const text = await Deno.readTextFile(hashWasmFile(build));
        const match = new RegExp(`name:"${build}",data:"([A-Za-z0-9+/=]+)"`).exec(text);
        if (!match) return undefined;
        const binary = Uint8Array.from(atob(match[1]), (c) => c.charCodeAt(0));
        return await WebAssembly.compile(binary);
      } catch {
        return undefined; // not there: the caller uses the package as usual
      }
    })();
    wasmModules.set(build, compiled);
  }
  const module = await compiled;
  if (!module) return undefined;
  const instance = await WebAssembly.instantiate(module, {});
  const wasm = instance.exports as unknown as HashWasmExports;
  const buffer = new Uint8Array(wasm.memory.buffer, wasm.Hash_GetBuffer(), WASM_BUFFER);
  buffer.fill(0, 0, 8); // seed 0 (low, high)
  wasm.Hash_Init(0);
  const length = DIGEST_LENGTH[algorithm];
  return {
    algorithm,
    update(bytes) {
      for (let at = 0; at < bytes.length; at += WASM_BUFFER) {
        const part = bytes.subarray(at, at + WASM_BUFFER);
        buffer.set(part);
        wasm.Hash_Update(part.length);
      }
    },
    digest() {
      wasm.Hash_Final(0);
      return buffer.slice(0, length);
    },
  };
}

/** Hex text of digest bytes, for messages and JSON. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bytes of hex text that {@linkcode toHex} wrote (its form checked by the caller). */
export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/** Returns whether two digests are equal. */
export function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What {@linkcode digestFile} reads: a source file opened and described (core/source.ts). */
export interface DigestibleFile {
  /** Path and size at open time. */
  readonly info: { readonly path: string; readonly size: number };
  /** pread(2) into `view` from `offset`: bytes read, 0 at end of file. */
  pread(view: Uint8Array, offset: number): number;
  /** Why the file is no longer what `info` describes, or undefined. */
  changed(): string | undefined;
}

/** Bytes read per pread(2) while hashing a file: one reused buffer, well inside L2. */
const FILE_READ_BYTES = 256 * 1024;
/** Bytes hashed between turns of the event loop. */
const FILE_HASH_SLICE = 32 * 1024 * 1024;

/**
 * Hashes a whole file in one pass; returns its digest in hex ("" for
 * `none`). It gives the event loop a turn every {@linkcode FILE_HASH_SLICE}
 * bytes, so a server can hash while it already serves (its workers need the
 * digest only for the trailer). Throws a P2mError if the file shrank or
 * changed while it was read: such a digest describes no version of it.
 */
export async function digestFile(file: DigestibleFile, algorithm: DigestAlgorithm) {
  const { path, size } = file.info;
  const digest = await createDigest(algorithm);
  if (algorithm === "none") return "";
  // One reused buffer, small enough to be hashed while it is still in L2.
  // Not a mapping of the file: a truncate under it would be a SIGBUS, and
  // pread measured no slower (the page faults of a mapping cost more than
  // the copy).
  const buf = new Uint8Array(FILE_READ_BYTES);
  let done = 0;
  let slice = 0;
  while (done < size) {
    const n = file.pread(buf.subarray(0, Math.min(buf.length, size - done)), done);
    if (n === 0) throw new P2mError(`${path} shrank while it was hashed`);
    digest.update(buf.subarray(0, n));
    done += n;
    slice += n;
    if (slice >= FILE_HASH_SLICE) {
      slice = 0;
      await delay(0);
    }
  }
  const changed = file.changed();
  if (changed) throw new P2mError(`${path} changed while it was hashed: ${changed}`);
  return toHex(digest.digest());
}

/** The digests a user may pick with `--digest`, in the order help lists them. */
export const SELECTABLE_DIGESTS = ["xxh3-128", "xxh64", "sha256"] as const;

/**
 * A digest published elsewhere that a copy must match (`--expect`): hex as
 * `xxhsum` or `sha256sum` print it. Its length names the algorithm's size.
 */
export class ExpectedDigest {
  /** Lower-case hex. */
  readonly hex: string;

  private constructor(hex: string) {
    this.hex = hex;
  }

  /** Parses `--expect`; throws P2mError (exit 2) naming what is wrong. */
  static parse(text: string): ExpectedDigest {
    const hex = text.trim().toLowerCase();
    const lengths = [...new Set(Object.values(DIGEST_LENGTH).filter((n) => n > 0))].sort(
      (a, b) => a - b,
    );
    if (!/^[0-9a-f]+$/.test(hex) || !lengths.includes(hex.length / 2)) {
      throw new P2mError(
        `--expect must be a digest in hex, ${lengths.map((n) => n * 2).join(", ")} digits ` +
          `(as xxhsum or sha256sum print it), not '${text}'`,
        { exitCode: 2 },
      );
    }
    return new ExpectedDigest(hex);
  }

  /**
   * Refuses, before any byte is received, a sender whose digest cannot be
   * compared with this one: none at all, or one of another length.
   */
  checkAlgorithm(algorithm: DigestAlgorithm): void {
    if (algorithm === "none") {
      throw new P2mError(
        "--expect was given but the sender sends no digest (--no-verify); nothing received",
      );
    }
    if (DIGEST_LENGTH[algorithm] * 2 !== this.hex.length) {
      throw new P2mError(
        `--expect has ${this.hex.length} hex digits but the sender's digest is ${algorithm} ` +
          `(${DIGEST_LENGTH[algorithm] * 2}); nothing received`,
      );
    }
  }

  /** Throws if the verified copy's digest is not this one. */
  check(actual: Uint8Array): void {
    const hex = toHex(actual);
    if (hex !== this.hex) {
      throw new P2mError(
        `the copy matches the sender's digest but not --expect: expected ${this.hex}, ` +
          `got ${hex}; copy discarded`,
      );
    }
  }
}

/**
 * The line `sha256sum` and `xxhsum` print and check (`-c`): digest, two
 * spaces, path. xxhsum tells XXH64 from XXH128 by the length.
 */
export function checksumLine(hex: string, path: string): string {
  return `${hex}  ${path}`;
}
