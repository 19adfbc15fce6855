/**
 * `net rm`: remove a key, its current data, and data no manifest names.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { parseManifest } from "./manifest.ts";
import { sweepOrphans } from "./sweep.ts";
import type { NatsSession } from "./session.ts";

/** What `net rm` removed. */
export interface RemoveResult {
  /** The revision that was current. */
  revision: number;
  /** Messages purged. */
  purged: number;
}

/**
 * Purges a key's manifests and the data of its current revision, then
 * sweeps data that no manifest names (`orphanGraceMs` old or more).
 * Throws a P2mError if the key does not exist.
 */
export async function removeKey(
  session: NatsSession,
  key: string,
  orphanGraceMs?: number,
): Promise<RemoveResult> {
  const { subjects } = session;
  const keySubject = subjects.keySubject(key);
  const current = (await session.hasBucket()) ? await session.lastMessage(keySubject) : undefined;
  if (!current) throw new P2mError(`no key ${key} in bucket ${subjects.bucket}`);
  let purged = await session.purge(keySubject);
  try {
    purged += await session.purge(subjects.dataSubject(parseManifest(current.data, key).uuid));
  } catch { /* a bad manifest names no data; the sweep below takes orphans */ }
  await sweepOrphans(session, orphanGraceMs);
  return { revision: current.seq, purged };
}
