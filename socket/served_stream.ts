/**
 * A stream or a directory tree that a socket server serves
 * ({@linkcode ServedStream}): read once, by the parent, into a spool file
 * (socket/spool.ts) and hashed as it is spooled, while the workers already
 * `sendfile(2)` the spooled bytes to their peers. It offers the server what
 * socket/served_file.ts offers for a regular file (`info`, `digest`,
 * `watch`), plus the spool a worker is configured with.
 *
 * - **stream** (`-` for stdin, a FIFO, a character device): the size is not
 *   known in advance; the digest, and with it the final size (the spool's
 *   size when the digest resolves), come when the input ends.
 * - **tree** (a directory): its pax tar stream (core/tree.ts `TreeStream`,
 *   every path under the directory's name), whose size is known once the
 *   tree is walked. Skipped entries are warned about. Each file is opened
 *   through core/source.ts (a read lease and the exact identity) and
 *   checked again when its bytes are read, so a file that changes while the
 *   tree is sent fails the whole transfer.
 *
 * - **produced** ({@linkcode ServedStream.fromProducer}): bytes handed over
 *   by the caller, with the digest it was given (net fetch --fanout).
 *
 * An input that cannot be read, or a tree file that changes, fails the
 * transfer through {@linkcode ServedStream.watch}: the server then fails
 * every peer and kills its workers, and nobody keeps anything. A stream's
 * end of file is its normal end: a producer that is killed closes its pipe
 * exactly as one that finished, and p2m cannot tell them apart.
 *
 * @module
 */
import { createDigest, type DigestAlgorithm, toHex } from "../core/digest.ts";
import { delay } from "../core/delay.ts";
import { P2mError } from "../core/errors.ts";
import type { Reporter } from "../core/report.ts";
import { Source, type SourceInfo } from "../core/source.ts";
import { StreamSource } from "../core/stream_source.ts";
import { type TreeFile, type TreeFileReader, TreeStream, walkTree } from "../core/tree.ts";
import { Spool } from "./spool.ts";
import type { WorkerSpool } from "./worker_protocol.ts";

/** How long the parent sleeps when its input has nothing (ms). */
const INPUT_IDLE_MS = 5;

/** Bytes read from the input per turn of the event loop. */
const SPOOL_CHUNK = 1024 * 1024;

/** The spooled stream or tree, its digest and its failure. */
export class ServedStream implements Disposable {
  /** What the peers are told (size 0 for a stream: unknown). */
  readonly info: SourceInfo;
  /** What each worker is configured with. */
  readonly spool: WorkerSpool;
  /** The hex digest of the whole, once the input has ended. */
  readonly digest: Promise<string>;
  #spool: Spool;
  #digestHex: string | null = null;
  #failed: ((error: unknown) => void) | undefined;
  /** A failure that came before {@linkcode watch} was called. */
  #failure: { error: unknown } | undefined;
  #closed = false;

  private constructor(
    info: SourceInfo,
    spool: Spool,
    tree: boolean,
    produce: (spool: Spool) => Promise<Uint8Array>,
  ) {
    this.info = info;
    this.#spool = spool;
    this.spool = { path: spool.path, size: tree ? info.size : null, tree };
    this.digest = produce(spool).then((raw) => this.#digestHex = toHex(raw));
    this.digest.catch((error) => {
      this.#failure = { error };
      this.#failed?.(error);
    });
  }

  /** Spools `path` (`-` is stdin) into a new spool in `spoolDir`. */
  static fromStream(
    path: string,
    algorithm: DigestAlgorithm,
    spoolDir: string,
  ): ServedStream {
    const input = StreamSource.open(path);
    const { name, mode } = input;
    const info = { path, name, size: 0, mode, identity: NO_IDENTITY };
    let spool: Spool;
    try {
      spool = Spool.create(spoolDir);
    } catch (error) {
      input.close();
      throw error;
    }
    return new ServedStream(info, spool, false, async (into) => {
      using _input = input;
      const digest = await createDigest(algorithm);
      const buffer = new Uint8Array(SPOOL_CHUNK);
      // Only look (a wait of 0), then sleep on a timer: a poll that waits
      // would hold the whole event loop (peers, workers, signals) meanwhile.
      for (let n; (n = await input.readSome(buffer, 0)) !== 0;) {
        if (n === null) {
          await delay(INPUT_IDLE_MS);
          continue;
        }
        const bytes = buffer.subarray(0, n);
        digest.update(bytes);
        into.write(bytes);
      }
      return digest.digest();
    });
  }

  /**
   * Spools what `produce` writes, a stream of unknown size, and serves the
   * digest it resolves to as is: nothing is hashed here (net fetch
   * --fanout: the bytes come from NATS and the digest is the publisher's).
   */
  static fromProducer(
    source: { path: string; name: string; mode: number },
    spoolDir: string,
    produce: (write: (bytes: Uint8Array) => void) => Promise<Uint8Array>,
  ): ServedStream {
    const info = { ...source, size: 0, identity: NO_IDENTITY };
    return new ServedStream(info, Spool.create(spoolDir), false, (into) => {
      return produce((bytes) => into.write(bytes));
    });
  }

  /** Walks `root` (warning about what is skipped) and spools its tar stream. */
  static fromTree(
    root: string,
    algorithm: DigestAlgorithm,
    spoolDir: string,
    reporter: Reporter,
  ): ServedStream {
    const tree = walkTree(root);
    for (const skip of tree.skipped) reporter.warn(`skipped ${skip.path}: ${skip.reason}`);
    const name = Deno.realPathSync(root).split("/").filter(Boolean).pop() ?? "tree";
    const stream = new TreeStream(tree, { prefix: name, open: openGuarded });
    const info = {
      path: root,
      name,
      size: stream.size,
      mode: tree.rootMode,
      identity: NO_IDENTITY,
    };
    const spool = Spool.create(spoolDir);
    return new ServedStream(info, spool, true, async (into) => {
      using _stream = stream;
      const digest = await createDigest(algorithm);
      const buffer = new Uint8Array(SPOOL_CHUNK);
      for (let n; (n = stream.read(buffer)) !== 0;) {
        const bytes = buffer.subarray(0, n);
        digest.update(bytes);
        into.write(bytes);
        await delay(0); // signals, the control channels and the workers' reports
      }
      if (into.size !== stream.size) {
        throw new P2mError(
          `${root}: the tree stream ended at ${into.size} of ${stream.size} bytes`,
        );
      }
      return digest.digest();
    });
  }

  /** The digest if the input has ended, else null (it then follows `digest`). */
  get digestHex(): string | null {
    return this.#digestHex;
  }

  /** Calls `onFailure` once if the input cannot be read or a tree file changed. */
  watch(onFailure: (error: unknown) => void): void {
    let failed = false;
    this.#failed = (error) => {
      if (failed || this.#closed) return;
      failed = true;
      onFailure(error);
    };
    if (this.#failure) this.#failed(this.#failure.error);
  }

  /** Stops reporting failures. */
  unwatch(): void {
    this.#failed = undefined;
  }

  /** Closes the spool (its disk space is freed once no worker holds it). */
  close(): void {
    this.#closed = true;
    this.#spool.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** A stream has no file identity: its workers read the spool, never the input. */
const NO_IDENTITY = { dev: "0", ino: "0", mtimeNs: "0", ctimeNs: "0" };

/**
 * Opens a file of a tree through core/source.ts: it must still be what the
 * walk saw, and it must not change while its bytes are read.
 */
function openGuarded(file: TreeFile, path: string): TreeFileReader {
  const source = Source.open(path);
  const changed = (why: string) => {
    source.close();
    return new P2mError(`${path} changed while the tree was sent (${why}); transfer aborted`);
  };
  if (source.info.size !== file.size) throw changed(`size ${file.size} → ${source.info.size}`);
  return {
    read(buffer) {
      const why = source.changed();
      if (why) throw changed(why);
      return source.file.read(buffer);
    },
    close() {
      const why = source.changed();
      if (why) throw changed(why);
      source.close();
    },
  };
}
