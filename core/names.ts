/**
 * Reduces a name that came from another process to a safe base name.
 *
 * The sender's name is untrusted input: it may hold `/`, `..`, NUL,
 * control characters or megabytes of text. What comes out is always one
 * plain path component of at most {@linkcode MAX_NAME_BYTES} UTF-8 bytes.
 *
 * @module
 */

/** Longest file name p2m writes, in UTF-8 bytes (ext4 allows 255). */
export const MAX_NAME_BYTES = 200;
/** Name used when nothing usable is left. */
export const FALLBACK_NAME = "file";

const encoder = new TextEncoder();

/** Returns a safe, bounded base name for an untrusted file name. */
export function sanitizeName(untrusted: string): string {
  // Keep only the last path component; both separators count, since a
  // name may have been made on another system.
  const base = untrusted.split(/[/\\]/).filter((part) => part !== "").pop() ?? "";
  let name = "";
  for (const ch of base) {
    const code = ch.codePointAt(0)!;
    // C0 and C1 controls, DEL, NUL and lone surrogates become "_".
    const unsafe = code < 0x20 || (code >= 0x7f && code < 0xa0) ||
      (code >= 0xd800 && code <= 0xdfff);
    name += unsafe ? "_" : ch;
  }
  name = name.replace(/^[.\s]+/, "").trimEnd();
  if (name === "") return FALLBACK_NAME;
  return truncateUtf8(name, MAX_NAME_BYTES);
}

/** Cuts a string to at most `maxBytes` UTF-8 bytes at a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (encoder.encode(text).length <= maxBytes) return text;
  let out = "";
  let used = 0;
  for (const ch of text) {
    const size = encoder.encode(ch).length;
    if (used + size > maxBytes) break;
    out += ch;
    used += size;
  }
  return out;
}
