/**
 * Streaming digests carried by every transfer.
 *
 * xxh64 (hash-wasm, about 7 GiB/s here) is the default: it catches
 * corruption in transit at memory speed. sha256 (node:crypto, about
 * 1.5 GiB/s) is there for users who want a cryptographic hash, and `none`
 * turns verification off for benchmarks.
 *
 * @module
 */

/** The digest algorithms p2m understands, in wire-code order. */
export const DIGEST_ALGORITHMS = ["none", "xxh64", "sha256"] as const;
/** A digest algorithm name. */
export type DigestAlgorithm = typeof DIGEST_ALGORITHMS[number];
/** The default digest algorithm. */
export const DEFAULT_DIGEST: DigestAlgorithm = "xxh64";

/** Length in bytes of each algorithm's raw digest. */
export const DIGEST_LENGTH: Readonly<Record<DigestAlgorithm, number>> = {
  none: 0,
  xxh64: 8,
  sha256: 32,
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

/** Creates a fresh streaming digest. */
export async function createDigest(algorithm: DigestAlgorithm): Promise<Digest> {
  switch (algorithm) {
    case "none":
      return { algorithm, update() {}, digest: () => new Uint8Array(0) };
    case "xxh64": {
      const direct = await directXxh64();
      if (direct) return direct;
      // Loaded on first use: processes that only frame or relay digests
      // (e.g. the socket worker) start faster and smaller without them.
      const { createXXHash64 } = await import("hash-wasm");
      const hasher = await createXXHash64();
      hasher.init();
      return {
        algorithm,
        update: (bytes) => void hasher.update(bytes),
        digest: () => hasher.digest("binary"),
      };
    }
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

/** hash-wasm's version, as pinned in deno.json (only used to find its files). */
const HASH_WASM_VERSION = "4.13.0";
/** The xxh64 build inside hash-wasm's package. */
const XXH64_FILE = "hash-wasm/dist/xxhash64.umd.min.js";

/** Where hash-wasm's files may be: a local node_modules, or Deno's own npm cache. */
function xxh64Sources(): (string | URL)[] {
  const sources: (string | URL)[] = [new URL(`../node_modules/${XXH64_FILE}`, import.meta.url)];
  try {
    const home = Deno.env.get("HOME");
    const cache = Deno.env.get("DENO_DIR") ??
      (Deno.env.get("XDG_CACHE_HOME") ?? (home ? `${home}/.cache` : undefined))?.concat("/deno");
    if (cache) {
      sources.push(
        `${cache}/npm/registry.npmjs.org/hash-wasm/${HASH_WASM_VERSION}/dist/xxhash64.umd.min.js`,
      );
    }
  } catch { /* no env access: the local copy or the package import */ }
  return sources;
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

let xxh64Module: Promise<WebAssembly.Module | undefined> | undefined;

/**
 * hash-wasm's own xxh64 WebAssembly, instantiated without going through
 * the npm loader: the first `npm:` import starts Deno's Node compatibility
 * layer, about 70 ms of CPU per process, which every receiver paid before
 * it could join. Same module, same digests; undefined (and the caller uses
 * the package as usual) if the file is found neither in node_modules nor in
 * Deno's npm cache.
 */
async function directXxh64(): Promise<Digest | undefined> {
  xxh64Module ??= (async () => {
    for (const source of xxh64Sources()) {
      try {
        const text = await Deno.readTextFile(source);
        const match = /name:"xxhash64",data:"([A-Za-z0-9+/=]+)"/.exec(text);
        if (!match) continue;
        const binary = Uint8Array.from(atob(match[1]), (c) => c.charCodeAt(0));
        return await WebAssembly.compile(binary);
      } catch { /* not there: try the next place */ }
    }
    return undefined;
  })();
  const module = await xxh64Module;
  if (!module) return undefined;
  const instance = await WebAssembly.instantiate(module, {});
  const wasm = instance.exports as unknown as HashWasmExports;
  const buffer = new Uint8Array(wasm.memory.buffer, wasm.Hash_GetBuffer(), WASM_BUFFER);
  buffer.fill(0, 0, 8); // seed 0 (low, high)
  wasm.Hash_Init(0);
  return {
    algorithm: "xxh64",
    update(bytes) {
      for (let at = 0; at < bytes.length; at += WASM_BUFFER) {
        const part = bytes.subarray(at, at + WASM_BUFFER);
        buffer.set(part);
        wasm.Hash_Update(part.length);
      }
    },
    digest() {
      wasm.Hash_Final(0);
      return buffer.slice(0, 8);
    },
  };
}

/** Hex text of digest bytes, for messages and JSON. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
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

/** Bytes read per pread(2) while hashing a file: one reused buffer. */
const FILE_READ_BYTES = 1024 * 1024;
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

// Kept beside digestFile (imports are hoisted) so this addition stays out of
// concurrent edits of the top of the file; they may move up on merge.
import { delay } from "./delay.ts";
import { P2mError } from "./errors.ts";
