/**
 * Opening the file to send, with clear errors, and noticing if it changes.
 *
 * @module
 */
import { P2mError } from "./errors.ts";

/** What the sender knows about its file when it starts. */
export interface SourceInfo {
  /** Path as the user gave it. */
  path: string;
  /** Base name offered to receivers (they sanitise it again). */
  name: string;
  /** Size in bytes at open time. */
  size: number;
  /** Permission bits. */
  mode: number;
  /** Modification time in ms, to notice concurrent changes. */
  mtimeMs: number;
}

/** Opens a regular file for reading and describes it, or throws a P2mError. */
export function openSource(path: string): { file: Deno.FsFile; info: SourceInfo } {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (error) {
    throw new P2mError(`cannot open ${path}: ${osReason(error)}`, { cause: error });
  }
  try {
    const stat = file.statSync();
    if (stat.isDirectory) throw new P2mError(`cannot send ${path}: it is a directory`);
    if (!stat.isFile) throw new P2mError(`cannot send ${path}: not a regular file`);
    const info: SourceInfo = {
      path,
      name: path.split("/").filter((p) => p !== "").pop() ?? "file",
      size: stat.size,
      mode: (stat.mode ?? 0o644) & 0o7777,
      mtimeMs: stat.mtime?.getTime() ?? 0,
    };
    return { file, info };
  } catch (error) {
    file.close();
    throw error;
  }
}

/** Returns a reason if the open file no longer matches `info`, else undefined. */
export function sourceChange(file: Deno.FsFile, info: SourceInfo): string | undefined {
  const stat = file.statSync();
  if (stat.size !== info.size) return `size changed from ${info.size} to ${stat.size} bytes`;
  if ((stat.mtime?.getTime() ?? 0) !== info.mtimeMs) return "it was modified";
  return undefined;
}

/** Short reason text for an OS error, without Deno's decoration. */
export function osReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  if (error instanceof Deno.errors.AlreadyExists) return "it already exists";
  if (error instanceof Error) return error.message.replace(/\s*\(os error \d+\).*$/, "");
  return String(error);
}
