/**
 * Test helpers for tar streams: entries written as data (`file`,
 * `directory`, `symlink`) and one `archive()` that frames them with p2m's
 * own encoder, for the tree tests of both transports and of the output side.
 *
 * @module
 */
import { TarEncoder, type TarEntry } from "../core/tar.ts";
import { concatBytes } from "./helpers.ts";

/** An entry and, for a file, its bytes. */
export type Item = TarEntry & { data?: Uint8Array };

/** A regular file holding `text`. */
export function file(path: string, text: string, mode = 0o644): Item {
  const data = new TextEncoder().encode(text);
  return { path, kind: "file", mode, size: data.length, data };
}

/** A directory. */
export function directory(path: string, mode = 0o755): Item {
  return { path, kind: "directory", mode, size: 0 };
}

/** A symlink to `target`. */
export function symlink(path: string, target: string): Item {
  return { path, kind: "symlink", mode: 0o777, size: 0, linkTarget: target };
}

/** A whole tar stream for `items`, framed by our encoder; without `end`, no end-of-archive. */
export function archive(items: Item[], end = true): Uint8Array {
  const encoder = new TarEncoder();
  const chunks: Uint8Array[] = [];
  const drain = () => {
    const out = new Uint8Array(encoder.pending);
    encoder.drain(out);
    chunks.push(out);
  };
  for (const { data, ...entry } of items) {
    encoder.begin(entry);
    drain();
    if (data !== undefined) {
      const out = new Uint8Array(data.length);
      encoder.data(out, data);
      chunks.push(out);
      drain();
    }
  }
  if (end) {
    encoder.end();
    drain();
  }
  return concatBytes(chunks);
}
