/**
 * Where a bucket lives in JetStream: its stream and its subjects.
 *
 * One stream per bucket, `P2M_<bucket>`, holding two kinds of subject:
 *
 * - `p2m.<bucket>.data.<uuid>`: the chunks of one publish, in order;
 * - `p2m.<bucket>.key.<encoded key>`: the manifests of a key, the newest
 *   last. The key is base64url-encoded, so any text (dots included) makes
 *   one subject token.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";

const BUCKET = /^[A-Za-z0-9_-]{1,64}$/;
const UUID = /^[0-9a-f]{32}$/;
const MAX_KEY_BYTES = 512;

/** The stream and subjects of one bucket. */
export class BucketSubjects {
  /** The bucket name. */
  readonly bucket: string;
  /** The JetStream stream that holds the bucket. */
  readonly stream: string;
  /** Every subject of the bucket (the stream's subject filter). */
  readonly all: string;
  /** Filter for every manifest subject. */
  readonly keys: string;
  /** Filter for every data subject. */
  readonly data: string;

  /** Checks a bucket name (letters, digits, `_`, `-`), or throws UsageError. */
  constructor(bucket: string) {
    if (!BUCKET.test(bucket)) {
      throw new UsageError(
        `--bucket must be 1 to 64 letters, digits, '_' or '-', not '${bucket}'`,
      );
    }
    this.bucket = bucket;
    this.stream = `P2M_${bucket}`;
    this.all = `p2m.${bucket}.>`;
    this.keys = `p2m.${bucket}.key.*`;
    this.data = `p2m.${bucket}.data.*`;
  }

  /** The manifest subject of a key; throws UsageError for an empty or huge key. */
  keySubject(key: string): string {
    const bytes = new TextEncoder().encode(key);
    if (bytes.length === 0 || bytes.length > MAX_KEY_BYTES || hasControl(key)) {
      throw new UsageError(`a key is 1 to ${MAX_KEY_BYTES} bytes without control characters`);
    }
    return `p2m.${this.bucket}.key.${base64url(bytes)}`;
  }

  /** The data subject of one publish. */
  dataSubject(uuid: string): string {
    if (!UUID.test(uuid)) throw new Error(`not a publish id: ${uuid}`);
    return `p2m.${this.bucket}.data.${uuid}`;
  }

  /** The publish id in a data subject, or undefined if it is not one. */
  uuidOf(dataSubject: string): string | undefined {
    const prefix = `p2m.${this.bucket}.data.`;
    if (!dataSubject.startsWith(prefix)) return undefined;
    const uuid = dataSubject.slice(prefix.length);
    return UUID.test(uuid) ? uuid : undefined;
  }

  /** A fresh publish id (128 random bits, hex). */
  static newUuid(): string {
    return Array.from(
      crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("");
  }
}

function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) < 0x20) return true;
  return false;
}
