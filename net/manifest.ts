/**
 * The manifest of one publish: a small JSON message on the key's subject,
 * published only after every chunk was stored. A fetcher trusts nothing
 * else, and checks every field before it uses it.
 *
 * @module
 */
import { DIGEST_LENGTH, type DigestAlgorithm, isDigestAlgorithm } from "../core/digest.ts";
import { P2mError } from "../core/errors.ts";

/** Format version written into every manifest. */
export const MANIFEST_VERSION = 1;

/** What a fetcher needs to find, check and commit one revision of a key. */
export interface Manifest {
  /** Always {@linkcode MANIFEST_VERSION}. */
  p2m: number;
  /** The key, as the publisher gave it. */
  key: string;
  /** The publish id: the chunks are on `p2m.<bucket>.data.<uuid>`. */
  uuid: string;
  /** The file name offered to fetchers (they sanitise it again). */
  name: string;
  /** Size in bytes. */
  size: number;
  /** Permission bits. */
  mode: number;
  /** The publisher's digest of every byte. */
  digest: { algorithm: DigestAlgorithm; value: string };
  /** Number of chunk messages. */
  chunks: number;
  /** Bytes in every chunk but the last (which has 1 to chunkSize). */
  chunkSize: number;
  /** Stream sequence of the first chunk (0 when there are none). */
  firstSeq: number;
  /** Stream sequence of the last chunk (0 when there are none). */
  lastSeq: number;
  /** When the manifest was written (ISO 8601). */
  published: string;
}

const MAX_CHUNK = 64 << 20;

/** Decodes and checks a manifest message, or throws a P2mError saying what is wrong. */
export function parseManifest(bytes: Uint8Array, where: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new P2mError(`${where}: the manifest is not valid JSON`);
  }
  const m = value as Partial<Manifest>;
  const wrong = (field: string) => new P2mError(`${where}: the manifest has a bad ${field}`);
  if (typeof m !== "object" || m === null) throw wrong("shape");
  if (m.p2m !== MANIFEST_VERSION) throw wrong("version (a newer p2m wrote it?)");
  if (typeof m.key !== "string") throw wrong("key");
  if (typeof m.uuid !== "string" || !/^[0-9a-f]{32}$/.test(m.uuid)) throw wrong("uuid");
  if (typeof m.name !== "string" || m.name.length > 4096) throw wrong("name");
  if (!isCount(m.size)) throw wrong("size");
  if (!isCount(m.mode) || m.mode > 0o7777) throw wrong("mode");
  const digest = m.digest;
  if (
    typeof digest !== "object" || digest === null || typeof digest.algorithm !== "string" ||
    !isDigestAlgorithm(digest.algorithm) || digest.algorithm === "none" ||
    typeof digest.value !== "string" ||
    !new RegExp(`^[0-9a-f]{${2 * DIGEST_LENGTH[digest.algorithm]}}$`).test(digest.value)
  ) throw wrong("digest");
  if (!isCount(m.chunkSize) || m.chunkSize < 1 || m.chunkSize > MAX_CHUNK) throw wrong("chunkSize");
  if (!isCount(m.chunks) || m.chunks !== Math.ceil(m.size / m.chunkSize)) throw wrong("chunks");
  if (!isCount(m.firstSeq) || !isCount(m.lastSeq)) throw wrong("sequence");
  if (m.chunks > 0 && (m.firstSeq < 1 || m.lastSeq < m.firstSeq + m.chunks - 1)) {
    throw wrong("sequence");
  }
  if (typeof m.published !== "string") throw wrong("time");
  return m as Manifest;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
