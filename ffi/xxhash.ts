/**
 * xxHash through FFI: the reference library's streaming XXH3, hashing any
 * byte view (a mapped ring slot, a receive buffer) in place.
 *
 * The library is Debian's `libxxhash.so.0` (package `libxxhash0`, xxHash
 * 0.8.1). apt itself depends on it, so every Debian and Ubuntu system has
 * it; other systems may only have the development name `libxxhash.so`.
 * When neither opens (or `--allow-ffi` is not granted),
 * {@linkcode loadXxhash} throws {@linkcode XxhashUnavailable} and the caller
 * (core/digest.ts) falls back to the same algorithm in WebAssembly.
 *
 * Why XXH3-128 is p2m's native digest. Measured in one Deno process on
 * this 2-vCPU VM (AMD EPYC, 1 MiB L2, 32 MiB L3), 1 GiB of warmed random
 * bytes hashed in 1 MiB updates, algorithms interleaved, medians of 5
 * rounds, GiB/s of wall time; the machine was shared with other test runs
 * (load 1.1-1.2 in the best runs; the 16.6 GiB/s was measured idle
 * over a cache-resident 1 MiB buffer):
 *
 * | algorithm | through                  | 1 GiB, run 1 | run 2 | 1 MiB hot, max |
 * |-----------|--------------------------|--------------|-------|----------------|
 * | XXH3-128  | libxxhash.so.0 (FFI)     | 6.35         | 6.42  | 13.5           |
 * | XXH3-64   | libxxhash.so.0 (FFI)     | 6.34         | 6.10  | 8.7            |
 * | XXH3-128  | hash-wasm (WebAssembly)  | 2.34         | 2.22  | 3.0            |
 * | XXH3-64   | hash-wasm (WebAssembly)  | 2.28         | 2.19  | 2.9            |
 * | XXH64     | hash-wasm (the old path) | 3.31         | 3.38  | 5.3            |
 *
 * Over 1 GiB both native variants run at the speed memory delivers bytes;
 * cache-resident, XXH3-128 was never slower than XXH3-64 (both stream the
 * same stripes; the 128-bit finish costs nothing at 1 MiB per call). So
 * XXH3-128 costs nothing over XXH3-64, hashes about twice as fast as the
 * hash-wasm xxh64 it replaces (with no copy into wasm memory), and its 128
 * bits make an accidental match between a good and a corrupted copy
 * negligible for any number of transfers. The price is paid only by the
 * fallback: hash-wasm's xxhash128 is about 0.7× its xxh64. Its canonical
 * form (high 64 bits then low 64 bits, each big-endian) is what
 * `xxhsum -H2` prints.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { lazySymbols } from "./lazy_symbols.ts";

const SYMBOLS = {
  /** XXH3_state_t* XXH3_createState(void); returns NULL when malloc fails */
  XXH3_createState: { parameters: [], result: "pointer" },
  /** XXH_errorcode XXH3_freeState(XXH3_state_t* statePtr); */
  XXH3_freeState: { parameters: ["pointer"], result: "i32" },
  /** XXH_errorcode XXH3_128bits_reset(XXH3_state_t* statePtr); */
  XXH3_128bits_reset: { parameters: ["pointer"], result: "i32" },
  /** XXH_errorcode XXH3_128bits_update(XXH3_state_t* statePtr, const void* input, size_t length); */
  XXH3_128bits_update: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  /** XXH128_hash_t XXH3_128bits_digest(const XXH3_state_t* statePtr); struct { u64 low64; u64 high64; } */
  XXH3_128bits_digest: { parameters: ["pointer"], result: { struct: ["u64", "u64"] } },
  /**
   * XXH_errorcode XXH3_128bits_update_dispatch(XXH3_state_t* statePtr, const void* input, size_t length);
   * the same update through xxh_x86dispatch.c (AVX2/AVX-512 when the CPU has
   * them); only in x86 builds that include the dispatcher, as Debian's does
   */
  XXH3_128bits_update_dispatch: {
    parameters: ["pointer", "buffer", "usize"],
    result: "i32",
    optional: true,
  },
  /** XXH_errorcode XXH3_64bits_reset(XXH3_state_t* statePtr); */
  XXH3_64bits_reset: { parameters: ["pointer"], result: "i32" },
  /** XXH_errorcode XXH3_64bits_update(XXH3_state_t* statePtr, const void* input, size_t length); */
  XXH3_64bits_update: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  /** XXH_errorcode XXH3_64bits_update_dispatch(XXH3_state_t* statePtr, const void* input, size_t length); as above */
  XXH3_64bits_update_dispatch: {
    parameters: ["pointer", "buffer", "usize"],
    result: "i32",
    optional: true,
  },
  /** XXH64_hash_t XXH3_64bits_digest(const XXH3_state_t* statePtr); */
  XXH3_64bits_digest: { parameters: ["pointer"], result: "u64" },
  /** unsigned XXH_versionNumber(void); major * 10000 + minor * 100 + release */
  XXH_versionNumber: { parameters: [], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The names the library is looked for under, in order. */
export const XXHASH_LIBRARY_NAMES = ["libxxhash.so.0", "libxxhash.so"] as const;

/** XXH_errorcode value for success. */
const XXH_OK = 0;

/** The native library cannot be used: not installed, or no `--allow-ffi`. */
export class XxhashUnavailable extends P2mError {
  /** Creates the error with the reason the library did not open. */
  constructor(reason: string, options?: ErrorOptions) {
    super(`native xxHash unavailable: ${reason}`, options);
    this.name = "XxhashUnavailable";
  }
}

type XxhashSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let symbols: XxhashSymbols | undefined;
let failure: XxhashUnavailable | undefined;

/**
 * The libxxhash symbols, opened on first use; throws
 * {@linkcode XxhashUnavailable} (the same one every time) when the library
 * is missing or FFI is not granted. FFI permission is queried first, so a
 * process without it falls back quietly instead of prompting.
 */
export function loadXxhash(): XxhashSymbols {
  if (symbols) return symbols;
  if (failure) throw failure;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw failure = new XxhashUnavailable("--allow-ffi is not granted");
  }
  const errors: string[] = [];
  for (const name of XXHASH_LIBRARY_NAMES) {
    try {
      // One symbol proves the library is there; the others bind on first
      // use (ffi/lazy_symbols.ts), as a hasher needs four of them.
      Deno.dlopen(name, { XXH_versionNumber: SYMBOLS.XXH_versionNumber });
      return symbols = lazySymbols(name, SYMBOLS);
    } catch (error) {
      errors.push(error instanceof Error ? error.message : String(error));
    }
  }
  throw failure = new XxhashUnavailable(
    `${XXHASH_LIBRARY_NAMES.join(" or ")} not found (Debian's libxxhash0 provides it)`,
    { cause: new Error(errors.join("; ")) },
  );
}

/** Frees the states of hashers dropped without close() (an aborted transfer). */
const abandoned = new FinalizationRegistry<Deno.PointerObject>((state) => {
  loadXxhash().XXH3_freeState(state);
});

/**
 * The fastest update the library has for `bits`: the dispatching one
 * (AVX2 here) when it is exported, else the portable one. Both update the
 * same state with the same stripes, so the digests are identical; measured
 * here in C over libxxhash 0.8.1, XXH3-128 hashes 25.2 GiB/s through the
 * dispatcher against 7.7 GiB/s through the portable (SSE2) build over a
 * cache-resident 128 KiB buffer, and 9.3 against 6.2 GiB/s over 1 GiB.
 */
function updateFunction(
  symbols: XxhashSymbols,
  bits: Xxh3Bits,
): XxhashSymbols["XXH3_128bits_update"] {
  const dispatch = bits === 128
    ? symbols.XXH3_128bits_update_dispatch
    : symbols.XXH3_64bits_update_dispatch;
  return dispatch ?? (bits === 128 ? symbols.XXH3_128bits_update : symbols.XXH3_64bits_update);
}

/** Output width of an XXH3 hasher. */
export type Xxh3Bits = 64 | 128;

/**
 * One streaming XXH3 state in the native library (64- or 128-bit output).
 * `update` passes the caller's view straight to C, so mapped memory is
 * hashed where it lies. Close it (or `using` it) to free the C state.
 */
export class Xxh3Hasher {
  /** Output width in bits. */
  readonly bits: Xxh3Bits;
  /** Raw digest length in bytes (8 or 16). */
  readonly length: number;
  #symbols: XxhashSymbols;
  #state: Deno.PointerObject | null;
  #update: XxhashSymbols["XXH3_128bits_update"];

  /** Creates a fresh state; throws XxhashUnavailable without the library. */
  constructor(bits: Xxh3Bits) {
    this.#symbols = loadXxhash();
    const state = this.#symbols.XXH3_createState();
    if (state === null) throw new P2mError("XXH3_createState: out of memory");
    this.bits = bits;
    this.length = bits / 8;
    this.#state = state;
    this.#update = updateFunction(this.#symbols, bits);
    abandoned.register(this, state, this);
    this.reset();
  }

  /** Starts over with no bytes hashed (seed 0, default secret). */
  reset(): void {
    const state = this.#open();
    const reset = this.bits === 128
      ? this.#symbols.XXH3_128bits_reset
      : this.#symbols.XXH3_64bits_reset;
    if (reset(state) !== XXH_OK) throw new P2mError(`XXH3_${this.bits}bits_reset failed`);
  }

  /** Feeds the bytes of a view (not copied, not kept). */
  update(bytes: Uint8Array): void {
    const state = this.#open();
    if (bytes.length === 0) return;
    if (this.#update(state, bytes, BigInt(bytes.length)) !== XXH_OK) {
      throw new P2mError(`XXH3_${this.bits}bits_update failed`);
    }
  }

  /**
   * The digest of the bytes so far, in xxHash's canonical (big-endian) form:
   * for 128 bits, high64 then low64, as `xxhsum -H2` prints. The state is
   * left as it was, so more bytes may follow.
   */
  digest(): Uint8Array {
    const state = this.#open();
    if (this.bits === 128) {
      // struct { u64 low64; u64 high64; } in little-endian memory: reversed
      // whole, it is high64 big-endian followed by low64 big-endian.
      return this.#symbols.XXH3_128bits_digest(state).reverse();
    }
    const canonical = new Uint8Array(8);
    new DataView(canonical.buffer).setBigUint64(0, this.#symbols.XXH3_64bits_digest(state));
    return canonical;
  }

  /** Frees the C state; later calls throw. Idempotent. */
  close(): void {
    if (this.#state === null) return;
    abandoned.unregister(this);
    this.#symbols.XXH3_freeState(this.#state);
    this.#state = null;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): Deno.PointerObject {
    if (this.#state === null) throw new P2mError("xxh3 hasher used after close()");
    return this.#state;
  }
}
