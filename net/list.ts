/**
 * `net ls`: the current revision of every key in a bucket.
 *
 * @module
 */
import { type Manifest, parseManifest } from "./manifest.ts";
import type { NatsSession } from "./session.ts";

/** One key as `net ls` shows it. */
export interface ListedKey {
  /** The current manifest. */
  manifest: Manifest;
  /** Its revision. */
  revision: number;
}

/** Lists the keys of the session's bucket, sorted by key; unreadable manifests are skipped. */
export async function listKeys(session: NatsSession): Promise<ListedKey[]> {
  const keys: ListedKey[] = [];
  for (const subject of (await session.subjectCounts(session.subjects.keys)).keys()) {
    const message = await session.lastMessage(subject);
    if (!message) continue;
    try {
      keys.push({ manifest: parseManifest(message.data, subject), revision: message.seq });
    } catch { /* not ours to show */ }
  }
  return keys.sort((a, b) =>
    a.manifest.key < b.manifest.key ? -1 : a.manifest.key > b.manifest.key ? 1 : 0
  );
}
