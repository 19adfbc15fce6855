/**
 * Sweeping data that no manifest names: the chunks of a publisher that
 * died before its manifest, once they are old enough that no publish can
 * still be writing them.
 *
 * @module
 */
import { parseManifest } from "./manifest.ts";
import type { NatsSession } from "./session.ts";

/** Data older than this that no manifest names is swept by a publish. */
export const ORPHAN_GRACE_MS = 15 * 60 * 1000;

/** Purges data subjects that no manifest names, once their newest chunk is past the grace. */
export async function sweepOrphans(
  session: NatsSession,
  graceMs = ORPHAN_GRACE_MS,
): Promise<number> {
  const { subjects } = session;
  const named = new Set<string>();
  for (const subject of (await session.subjectCounts(subjects.keys)).keys()) {
    const message = await session.lastMessage(subject);
    const uuid = message ? safeUuid(message.data) : undefined;
    if (uuid) named.add(uuid);
  }
  let swept = 0;
  for (const subject of (await session.subjectCounts(subjects.data)).keys()) {
    const uuid = subjects.uuidOf(subject);
    if (!uuid || named.has(uuid)) continue;
    const newest = await session.lastMessage(subject);
    if (newest && Date.now() - newest.time.getTime() < graceMs) continue;
    await session.purge(subject);
    swept++;
  }
  return swept;
}

/** The publish id a manifest names, or undefined for a bad manifest. */
export function safeUuid(bytes: Uint8Array): string | undefined {
  try {
    return parseManifest(bytes, "manifest").uuid;
  } catch {
    return undefined;
  }
}
