/**
 * Path facts both output writers (core/output.ts, core/tree_output.ts) ask
 * before they create anything: a path's directory, whether something is
 * there, and a directory's fsync.
 *
 * @module
 */

/** The directory part of a path ("." for a bare name; trailing slashes ignored). */
export function parentOf(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const slash = trimmed.lastIndexOf("/");
  if (slash < 0) return ".";
  return trimmed.slice(0, slash) || "/";
}

/** Whether anything (a dangling symlink too) is at `path`. */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `path` is a directory, or a symlink to one. */
export function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/**
 * fsyncs a directory, so that the names just linked, renamed or removed in
 * it reach the disk (Deno opens a directory read-only and fsyncs its fd).
 */
export function syncDirectory(dir: string): void {
  using handle = Deno.openSync(dir, { read: true });
  handle.syncSync();
}
