/**
 * `--version`: which p2m this is, which formats it speaks, and which digest
 * it computes, so that two hosts can tell at a glance whether they agree.
 *
 * @module
 */
import { DEFAULT_DIGEST } from "./digest.ts";
import { WIRE_VERSION } from "./wire.ts";
import { loadXxhash } from "../ffi/xxhash.ts";

/** p2m's own version (package.json says the same; a test keeps them in step). */
export const P2M_VERSION = "0.4.0";

/** The formats a program speaks besides the wire format, e.g. `{ "shm segment": 1 }`. */
export type FormatVersions = Readonly<Record<string, number>>;

/** The lines `PROGRAM --version` prints. */
export function versionText(program: string, formats: FormatVersions = {}): string {
  const speaks = [`wire ${WIRE_VERSION}`, ...Object.entries(formats).map(([k, v]) => `${k} ${v}`)];
  let backend: string;
  try {
    const native = loadXxhash().XXH_versionNumber();
    const v = `${Math.floor(native / 10000)}.${Math.floor(native / 100) % 100}.${native % 100}`;
    backend = `native, libxxhash ${v}`;
  } catch {
    backend = "WebAssembly fallback: libxxhash.so.0 unavailable";
  }
  return [
    `${program} ${P2M_VERSION}`,
    `formats: ${speaks.join(", ")}`,
    `digest: ${DEFAULT_DIGEST} (${backend}); also xxh64, sha256`,
    `runtime: deno ${Deno.version.deno}`,
  ].join("\n");
}
