/**
 * `net fetch --fanout shm|socket --peers N`: the fetching process is also
 * the host's local sender, and streams each chunk to the local receivers
 * while the rest still arrives from NATS.
 *
 * - **shm**: the checked chunks go into a {@linkcode FanoutPayload} that the
 *   shm sender (shm/sender.ts) reads as a stream; receivers are
 *   `p2m shm receiver --name NAME`.
 * - **socket**: the chunks are spooled through
 *   {@linkcode ServedStream.fromProducer} and the socket server
 *   (socket/server.ts) serves the spool as it grows; receivers are
 *   `p2m socket client --socket PATH`.
 *
 * In both, the digest the local receivers check is the **publisher's**,
 * from the manifest, handed to the local sender as given: nothing here
 * hashes the bytes and then vouches for them, so a chunk corrupted in NATS
 * or on the way fails every local copy. A fetch that fails (no data for
 * `--timeout`, a misshapen chunk, the revision replaced) aborts the local
 * transfer, and no receiver keeps anything. With `--out`, the fetcher also
 * keeps its own copy ({@linkcode VerifiedCopy}), committed only when it
 * matches the manifest; that check decides nothing for the receivers.
 *
 * The shm and socket modules are loaded only here, when asked for.
 *
 * @module
 */
import { fromHex } from "../core/digest.ts";
import { formatBytes, formatRate } from "../core/format.ts";
import type { Reporter } from "../core/report.ts";
import { privateRuntimeDir } from "../core/runtime_dir.ts";
import { FanoutPayload } from "./fanout_payload.ts";
import type { FetchOptions } from "./fetch.ts";
import type { Manifest } from "./manifest.ts";
import type { Revision } from "./revision.ts";
import { VerifiedCopy } from "./verified_copy.ts";

/** The local transports a fetch can fan out over. */
export const FANOUT_KINDS = ["shm", "socket"] as const;

/** One of {@linkcode FANOUT_KINDS}. */
export type FanoutKind = typeof FANOUT_KINDS[number];

/** A fetch that also serves the host's local receivers. */
export interface FanoutOptions extends FetchOptions {
  /** The local transport. */
  fanout: FanoutKind;
  /** Local receivers to serve. */
  peers: number;
  /** shm: the segment name (default p2m-<uid>). */
  name?: string;
  /** socket: the socket path (default <runtime dir>/p2m.sock). */
  socket?: string;
  /** Seconds to wait for the local receivers to come (shm: attach; socket: connect). */
  waitSeconds: number;
}

/** What a fan-out delivered. */
export interface FanoutResult {
  /** The manifest of the revision delivered. */
  manifest: Manifest;
  /** The revision (stream sequence of its manifest). */
  revision: number;
  /** The fetcher's own copy, if `--out` was given. */
  path: string | undefined;
  /** Where the local receivers were served (segment name or socket path). */
  local: string;
  /** Seconds from the first chunk request to the last local verdict. */
  seconds: number;
  /** The local sender's exit code: 0 only when every receiver verified. */
  code: number;
}

/** The bytes of one revision on their way to a local sender; resolves to the publisher's digest. */
type Produce = (write: (bytes: Uint8Array) => void | Promise<void>) => Promise<Uint8Array>;

/** Fetches the revision `found` and serves it to `options.peers` local receivers while it arrives. */
export async function fanOut(
  found: Revision,
  options: FanoutOptions,
  reporter: Reporter,
): Promise<FanoutResult> {
  const { manifest, revision } = found;
  using own = options.out === undefined ? undefined : await VerifiedCopy.create(options, manifest);
  const local = options.fanout === "shm"
    ? options.name ?? `p2m-${Deno.uid() ?? 0}`
    : options.socket ?? `${privateRuntimeDir()}/p2m.sock`;
  reporter.event("start", {
    key: options.key,
    revision,
    size: manifest.size,
    uuid: manifest.uuid,
    fanout: options.fanout,
    local,
    peers: options.peers,
  });
  const start = performance.now();
  let fetchFailure: unknown;
  let ownFailure: unknown;
  const produce: Produce = async (write) => {
    try {
      await found.stream(async (bytes) => {
        await own?.write(bytes);
        await write(bytes);
      });
    } catch (error) {
      fetchFailure = error;
      throw error;
    }
    try {
      own?.finish();
    } catch (error) {
      ownFailure = error; // the receivers judge for themselves, by the same digest
    }
    return fromHex(manifest.digest.value);
  };
  const label = `${options.key} (revision ${revision} from NATS)`;
  let code: number;
  try {
    code = options.fanout === "shm"
      ? await serveShm(options, manifest, local, label, produce, reporter)
      : await serveSocket(options, manifest, local, label, produce, reporter);
  } catch (error) {
    throw fetchFailure ?? error;
  }
  if (ownFailure) throw ownFailure;
  return {
    manifest,
    revision,
    path: own?.path,
    local,
    seconds: (performance.now() - start) / 1000,
    code,
  };
}

/** Human line for a finished fan-out. */
export function describeFanout(result: FanoutResult, options: FanoutOptions): string {
  const { manifest, revision, path, local, seconds } = result;
  return `fetched ${manifest.key} revision ${revision}${path ? ` -> ${path}` : ""}` +
    ` and served it to ${options.peers} local receiver(s) over ${options.fanout} ${local}: ` +
    `${formatBytes(manifest.size)}, ${formatRate(manifest.size, seconds)}, ` +
    `${manifest.digest.algorithm} (the publisher's) verified`;
}

async function serveShm(
  options: FanoutOptions,
  manifest: Manifest,
  name: string,
  label: string,
  produce: Produce,
  reporter: Reporter,
): Promise<number> {
  const { runSender } = await import("../shm/sender.ts");
  const payload = new FanoutPayload(label, manifest.name, manifest.mode);
  // A slot per NATS chunk when it fits the ring's rules: then every slot is
  // full when published, and receivers are woken in batches, not per slot.
  const chunk = manifest.chunkSize % 4096 === 0 ? manifest.chunkSize : 1 << 20;
  void produce((bytes) => payload.push(bytes)).then(() => payload.end(), (e) => payload.fail(e));
  return await runSender({
    path: label,
    name,
    peers: options.peers,
    waitSeconds: options.waitSeconds,
    slots: Math.max(16, Math.round((16 << 20) / chunk)),
    chunk,
    stallSeconds: 10,
    digest: manifest.digest.algorithm,
    limitRate: 0,
    payload,
    givenDigest: fromHex(manifest.digest.value),
  }, reporter);
}

async function serveSocket(
  options: FanoutOptions,
  manifest: Manifest,
  socket: string,
  label: string,
  produce: Produce,
  reporter: Reporter,
): Promise<number> {
  const [{ runServer }, { ServedStream }, { defaultSpoolDir }] = await Promise.all([
    import("../socket/server.ts"),
    import("../socket/served_stream.ts"),
    import("../socket/spool.ts"),
  ]);
  const spoolDir = defaultSpoolDir();
  using served = ServedStream.fromProducer(
    { path: label, name: manifest.name, mode: manifest.mode },
    spoolDir,
    produce,
  );
  return await runServer({
    file: label,
    served,
    spoolDir,
    socket,
    peers: options.peers,
    waitSeconds: options.waitSeconds,
    maxActive: 32,
    raw: false,
    digest: manifest.digest.algorithm,
    stallSeconds: 10,
    limitRate: 0,
    graceSeconds: 5,
    reporter,
  });
}
