/**
 * The reference `xxhsum` program (Debian's xxhash package) for tests that
 * compare p2m's digests with it, random test data of any length, and data
 * fed to a hasher in pieces.
 *
 * @module
 */
import assert from "node:assert/strict";
import { withTempDir } from "./helpers.ts";

function canRun(program: string): boolean {
  try {
    return new Deno.Command(program, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Whether `xxhsum` can be run here; a test file that needs it says so loudly once. */
export const XXHSUM = canRun("xxhsum");

/** Prints the one loud line for a check that is skipped because xxhsum is missing. */
export function warnNoXxhsum(what: string): void {
  if (XXHSUM) return;
  console.warn(`WARNING: xxhsum not found (apt-get install xxhash): ${what} IGNORED`);
}

/** `xxhsum -H<variant>` of each input (written to a temp file first), as hex, in order. */
export async function xxhsum(variant: 1 | 2 | 3, inputs: Uint8Array[]): Promise<string[]> {
  return await withTempDir("p2m-xxhsum-", async (dir) => {
    const files = inputs.map((_, index) => `${dir}/${index}.bin`);
    await Promise.all(inputs.map((bytes, index) => Deno.writeFile(files[index], bytes)));
    const output = await new Deno.Command("xxhsum", { args: [`-H${variant}`, ...files] }).output();
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
    // -H1/-H2 print "HEX  FILE"; -H3 prints "XXH3 (FILE) = HEX".
    return lines.map((line) => /(?:^|= )([0-9a-f]{16,32})(?:\s|$)/.exec(line)![1]);
  });
}

/** Random bytes of any length (getRandomValues gives at most 64 KiB per call). */
export function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
  return bytes;
}

/** Feeds `data` to `update` in pieces of the given sizes, then the rest in one last call. */
export function feedInPieces(
  data: Uint8Array,
  pieces: number[],
  update: (bytes: Uint8Array) => void,
): void {
  let at = 0;
  for (const size of pieces) {
    update(data.subarray(at, at + size));
    at += size;
  }
  update(data.subarray(at));
}
