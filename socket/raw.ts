/**
 * `--raw` on both sides: plain file bytes over the accepted connection, no
 * handshake, no framing, no digest, so tools like `socat` or `nc -U` can
 * take part.
 *
 * The server parent writes the bytes itself ({@linkcode sendRaw}): with no
 * handshake there is no way to pass the peer a second socket, and Deno
 * cannot hand an accepted connection to a child. The client
 * ({@linkcode receiveRaw}) reads until EOF; a cut-off stream cannot be told
 * from a complete one, which its message says.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { formatBytes } from "../core/format.ts";
import { OutputFile } from "../core/output.ts";
import { RateLimit } from "../core/rate_limit.ts";
import type { Reporter } from "../core/report.ts";
import { Source, type SourceInfo } from "../core/source.ts";
import { chunkSize, DATA_CHUNK, writeAll } from "./protocol.ts";

/** Name used for a raw download when `--out` names no file. */
export const RAW_NAME = "p2m-raw-download";

/**
 * Server side: streams the file the server described as `info` to `conn`
 * (re-opened and re-checked against `info`); returns the bytes sent.
 */
export async function sendRaw(
  conn: Deno.UnixConn,
  info: SourceInfo,
  limitRate: number,
): Promise<number> {
  using file = Source.open(info.path);
  const before = file.differsFrom(info);
  if (before) throw new P2mError(`source changed before it was sent (${before})`);
  const limit = new RateLimit(limitRate);
  const buf = new Uint8Array(chunkSize(limitRate));
  let sent = 0;
  try {
    while (sent < info.size) {
      const n = file.pread(buf.subarray(0, Math.min(buf.length, info.size - sent)), sent);
      if (n === 0) throw new P2mError("source shrank while it was sent");
      await writeAll(conn, buf.subarray(0, n));
      sent += n;
      await limit.pace(n);
    }
  } catch (error) {
    if (error instanceof P2mError) throw error;
    throw new P2mError(`peer connection failed after ${sent} bytes: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const changed = file.changed() ?? file.differsFrom(info);
  if (changed) throw new P2mError(`source changed while it was sent (${changed})`);
  return sent;
}

/** What {@linkcode receiveRaw} needs of the client's options. */
export interface RawReceiveOptions {
  /** `--out`: directory or file. */
  out?: string;
  /** Replace an existing output file. */
  force: boolean;
  /** Where messages go. */
  reporter: Reporter;
}

/** Client side: reads plain bytes until EOF into the output; returns the exit code. */
export async function receiveRaw(conn: Deno.UnixConn, options: RawReceiveOptions) {
  const reporter = options.reporter;
  using output = OutputFile.create({
    out: options.out,
    name: RAW_NAME,
    mode: 0o644,
    force: options.force,
  });
  reporter.event("start", { name: RAW_NAME, size: null, raw: true });
  const progress = reporter.progress("receiving (raw)", 0);
  const buf = new Uint8Array(DATA_CHUNK);
  let got = 0;
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    output.write(buf.subarray(0, n));
    got += n;
    progress.update(got);
  }
  output.commit();
  const seconds = progress.elapsed;
  reporter.event("done", { bytes: got, path: output.path, verified: false, raw: true, seconds });
  reporter.info(
    `saved ${output.path}: ${formatBytes(got)} in ${seconds.toFixed(3)} s ` +
      `(raw mode: NOT verified, and a cut-off stream cannot be told from a complete one)`,
  );
  return 0;
}
