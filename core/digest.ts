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
