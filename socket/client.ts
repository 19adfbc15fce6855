/**
 * The socket client: asks the server for the file, receives it from its
 * worker, verifies it and writes it atomically (core/output.ts).
 *
 * The control connection is watched during the whole copy: if the server
 * reports an error or disappears, the copy is abandoned at once and the
 * temp file removed. The data stream is checked strictly: a bad header,
 * more or fewer bytes than announced, a bad trailer or a wrong digest all
 * fail the copy and leave nothing under the final name.
 *
 * @module
 */
import {
  checksumLine,
  createDigest,
  DEFAULT_DIGEST,
  type Digest,
  digestsEqual,
  type ExpectedDigest,
  toHex,
} from "../core/digest.ts";
import { onSignal, ownerProblem } from "../core/cli.ts";
import { type Alarm, alarm, delay } from "../core/delay.ts";
import { describeError, P2mError, VerifyError } from "../core/errors.ts";
import { formatBytes, formatRate } from "../core/format.ts";
import { NameWait } from "../core/name_wait.ts";
import { openSink, type Sink } from "../core/sink.ts";
import type { Reporter } from "../core/report.ts";
import { osReason } from "../core/source.ts";
import {
  CHUNK_LENGTH_BYTES,
  decodeChunkLength,
  decodeHeader,
  decodeTrailer,
  HEADER_FIXED_LENGTH,
  headerLength,
  KEEPALIVE_CHUNK,
  TRAILER_FIXED_LENGTH,
  trailerLength,
  TrailerStatus,
  WireError,
} from "../core/wire.ts";
import {
  type ConnectMessage,
  encodeMessage,
  LineReader,
  parseServerMessage,
  PROTOCOL_VERSION,
  ProtocolError,
  socketPathProblem,
  writeAll,
} from "./protocol.ts";
import { receiveRaw } from "./raw.ts";
import { EAGAIN, ECONNREFUSED, ENOENT, LibcError, type UnixGroup, UnixSocket } from "../ffi/mod.ts";
import { DataChannel, SEND_BUFFER } from "./data_channel.ts";

/**
 * Bytes per read(2) on the data socket: one reused buffer, small enough to
 * stay in the core's L2 cache (1 MiB here) while it is hashed and written
 * out. With 1 MiB reads (the worker's 8 MiB queue fills them) the buffer
 * fell out of L2 between the three passes. Measured here, medians of 4-5
 * interleaved runs: 1 GiB to 1 client, client CPU 1.75 s (1 MiB), 1.73 s
 * (512 KiB), 1.31 s (256 KiB), 1.30 s (128 KiB); 1 GiB to 4 clients, their
 * CPU 7.8 s -> 5.4 s and the wall time 4.9 s -> 3.7 s with 256 KiB.
 */
const RECEIVE_CHUNK = 256 * 1024;

/** How the client runs. */
export interface ClientOptions {
  /** The server's public socket. */
  socket: string;
  /** `--out`: directory or file. */
  out?: string;
  /** Seconds to wait for the server to appear and answer. */
  timeoutSeconds: number;
  /** Replace an existing output file. */
  force: boolean;
  /** A digest published elsewhere that the copy must match too (`--expect`). */
  expect?: ExpectedDigest;
  /** Read plain bytes until EOF; no verification. */
  raw: boolean;
  /** `--group`: the server's sockets must belong to this group (a server of another user). */
  group?: UnixGroup;
  /** Where messages go. */
  reporter: Reporter;
}

/** How often a socket that refuses connections is tried again (ms). */
const CONNECT_POLL_MS = 25;

/** Connects to `path`, retrying while nobody listens, until `deadline`. */
async function connectRetry(
  path: string,
  deadline: number,
  group: UnixGroup | undefined,
): Promise<Deno.UnixConn> {
  // A missing socket is waited for with inotify; one that is there but
  // refuses (a server between bind and listen, or a dead one's) is tried
  // again every CONNECT_POLL_MS.
  using wait = new NameWait(path, CONNECT_POLL_MS);
  while (true) {
    checkOwner(path, `socket ${path}`, group);
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (error) {
      const missing = error instanceof Deno.errors.NotFound;
      if (!missing && !(error instanceof Deno.errors.ConnectionRefused)) {
        throw new P2mError(`cannot connect to ${path}: ${osReason(error)}`);
      }
      if (performance.now() >= deadline) {
        throw new P2mError(`no server on ${path} (waited for it, see --timeout)`);
      }
      await wait.next(missing, deadline - performance.now());
    }
  }
}

/** Runs the client; returns the exit code. */
export async function runClient(options: ClientOptions): Promise<number> {
  const problem = socketPathProblem(options.socket);
  if (problem) throw new P2mError(problem, { exitCode: 2 });
  const deadline = performance.now() + options.timeoutSeconds * 1000;
  const conn = await connectRetry(options.socket, deadline, options.group);
  using _conn = conn;
  return options.raw
    ? await receiveRaw(conn, options)
    : await receiveFramed(conn, options, deadline);
}

async function receiveFramed(conn: Deno.UnixConn, options: ClientOptions, deadline: number) {
  const reporter = options.reporter;
  try {
    await writeAll(
      conn,
      encodeMessage({ type: "hello", version: PROTOCOL_VERSION, pid: Deno.pid }),
    );
  } catch {
    // The server hung up at once (a --raw server does after sending the file);
    // what it sent, if anything, says more than EPIPE.
  }
  // Compile the usual digest while waiting for our turn, not after the header.
  const usual = createDigest(DEFAULT_DIGEST);
  usual.catch(() => {}); // awaited (or dropped) once the header names one
  const control = new LineReader(conn);
  // A worker that gave up waiting for us (we were stopped, say) is gone: the
  // server then puts us back in line and sends a new `connect`, or an error.
  let connect: ConnectMessage;
  let data: UnixSocket | undefined;
  do {
    connect = await waitForTurn(control, conn, options, deadline);
    data = await connectWorker(connect.path, options.group);
  } while (data === undefined);

  // From here on the control channel carries `commit` or bad news: watch it.
  let lost: string | undefined;
  let commit = false;
  const { promise: settled, resolve: settle } = Promise.withResolvers<void>();
  const watcher = (async () => {
    try {
      while (true) {
        const line = await control.readLine();
        if (line === null) {
          lost = "server closed the control connection";
          break;
        }
        const msg = parseServerMessage(line);
        if (msg.type === "error") {
          lost = `server: ${msg.message}`;
          break;
        }
        if (msg.type === "commit") {
          commit = true;
          break;
        }
      }
    } catch (error) {
      lost = `control connection failed: ${describeError(error)}`;
    }
    if (!commit) {
      try {
        data?.close(); // abandon the copy at once
      } catch { /* closed */ }
    }
    settle();
  })();

  let output: Sink | undefined;
  let received = 0;
  let verdictSent = false;
  try {
    data.setBufferSize("receive", SEND_BUFFER);
    // A server that stops sending (stopped, wedged) fails the copy after --timeout.
    const stallMs = Math.max(1000, options.timeoutSeconds * 1000);
    const channel = new DataChannel(
      data,
      stallMs,
      () => new P2mError(`server sent nothing for ${stallMs / 1000} s; copy discarded`),
    );
    await channel.writeAll(new TextEncoder().encode(connect.token + "\n"));
    const result = await receiveStream(
      channel,
      options,
      usual,
      (out) => output = out,
      (n) => received = n,
    );
    data.close(); // tells the worker that every byte arrived
    data = undefined;
    // Verified; the server confirms the whole transfer before the copy is kept.
    verdictSent = true;
    try {
      await writeAll(conn, encodeMessage({ type: "verdict", ok: true, bytes: received }));
    } catch (error) {
      // Every byte arrived, but the server died before it could confirm.
      throw new P2mError(`server went away before confirming the transfer: ${osReason(error)}`);
    }
    await waitSettled(settled, Math.max(1, options.timeoutSeconds) * 1000);
    if (!commit) throw new P2mError(lost ?? "server did not confirm the transfer in time");
    // From here the copy is kept: a late SIGINT/SIGTERM must not undo it.
    onSignal(() => {});
    output!.commit();
    for (const warning of output!.warnings) reporter.warn(warning);
    try {
      await writeAll(conn, encodeMessage({ type: "committed", ok: true }));
    } catch { /* kept and verified; the server may have gone */ }
    const verified = result.digest !== "none";
    reporter.event("done", {
      bytes: received,
      path: output!.path,
      verified,
      digest: result.digest,
      value: result.value,
      seconds: result.seconds,
    });
    reporter.info(
      `saved ${output!.path}: ${formatBytes(received)} in ${result.seconds.toFixed(3)} s (${
        formatRate(received, result.seconds)
      }), ${verified ? `${result.digest} verified` : "NOT verified (the server sent no digest)"}`,
    );
    // A tree's digest is its tar stream's: no checksum line a tool could check.
    if (verified && output!.kind === "file") {
      reporter.info(checksumLine(result.value, output!.path));
    }
    return 0;
  } catch (error) {
    output?.abort();
    onSignal(undefined);
    // A data connection that broke off says little: the server says why on
    // the control channel, so give its word a moment to arrive.
    const local = error instanceof VerifyError || error instanceof WireError;
    if (!lost && !local) await waitSettled(settled, CONTROL_WORD_MS);
    let failure = error;
    if (lost && !(error instanceof VerifyError)) failure = new P2mError(lost);
    else if (error instanceof LibcError) {
      // e.g. ECONNRESET: the worker died with bytes in flight.
      failure = new P2mError(`data connection to the server failed: ${error.message}`);
    } else if (!(error instanceof P2mError)) {
      failure = new P2mError(`transfer failed: ${describeError(error)}`);
    }
    const message = describeError(failure);
    const report = verdictSent
      ? encodeMessage({ type: "committed", ok: false, message })
      : encodeMessage({ type: "verdict", ok: false, bytes: received, message });
    try {
      await writeAll(conn, report);
    } catch { /* server gone */ }
    throw failure;
  } finally {
    try {
      data?.close();
    } catch { /* closed */ }
    try {
      conn.close();
    } catch { /* closed */ }
    await watcher;
  }
}

/** How long a full backlog on the worker's socket is retried (ms). */
const WORKER_BACKLOG_MS = 1000;

/**
 * Connects to the worker's one-time socket; undefined if it is gone (its
 * worker gave up on us). A full backlog (a flood of other callers) is
 * retried briefly: the worker hears them all at once and drops the silent.
 */
async function connectWorker(
  path: string,
  group: UnixGroup | undefined,
): Promise<UnixSocket | undefined> {
  checkOwner(path, `the server's worker socket ${path}`, group);
  const until = performance.now() + WORKER_BACKLOG_MS;
  while (true) {
    try {
      return UnixSocket.connect(path);
    } catch (error) {
      const errno = error instanceof LibcError ? error.errno : 0;
      if (errno === ENOENT || errno === ECONNREFUSED) return undefined;
      if (errno !== EAGAIN || performance.now() > until) {
        throw new P2mError(`cannot connect to the server's worker: ${describeError(error)}`, {
          cause: error,
        });
      }
      await delay(10);
    }
  }
}

/**
 * Refuses a socket file that is not this user's, or with `--group` not
 * that group's (core/cli.ts `ownerProblem`). A missing or unreachable
 * file passes: connecting says what is wrong with it.
 */
function checkOwner(path: string, what: string, group: UnixGroup | undefined): void {
  let stat: Deno.FileInfo;
  try {
    stat = Deno.lstatSync(path);
  } catch {
    return;
  }
  const owner = { uid: stat.uid ?? -1, gid: stat.gid ?? -1, mode: stat.mode ?? 0 };
  const problem = ownerProblem(what, owner, group, false);
  if (problem) throw new P2mError(problem);
}

/** How long a failed copy waits for the server to say why (ms). */
const CONTROL_WORD_MS = 500;

/** Waits for the control watcher to settle, at most `ms`. */
async function waitSettled(settled: Promise<void>, ms: number): Promise<void> {
  let timeout: Alarm | undefined;
  await Promise.race([settled, new Promise<void>((resolve) => timeout = alarm(ms, resolve))]);
  timeout?.cancel();
}

/** Waits for `connect`, reporting queue positions; throws on `error` or timeout. */
async function waitForTurn(
  control: LineReader,
  conn: Deno.UnixConn,
  options: ClientOptions,
  deadline: number,
): Promise<ConnectMessage> {
  const reporter = options.reporter;
  let answered = false;
  while (true) {
    // Until the server answers at all, --timeout bounds the wait; once admitted, no bound.
    const timer = answered
      ? undefined
      : alarm(Math.max(0, deadline - performance.now()), () => conn.close());
    let line: string | null;
    try {
      line = await control.readLine();
    } catch (error) {
      if (!answered && performance.now() >= deadline) {
        throw new P2mError(`server on ${options.socket} did not answer within --timeout`, {
          cause: error,
        });
      }
      if (!(error instanceof ProtocolError)) {
        // A reset or a broken pipe: the server died (or was killed) mid-handshake.
        throw new P2mError(
          `server went away during the handshake (${osReason(error)}); was it stopped or killed?`,
          { cause: error },
        );
      }
      throw notProtocol(error);
    } finally {
      timer?.cancel();
    }
    if (line === null) {
      throw new P2mError(
        "server closed the connection during the handshake, before sending the file; " +
          "was it stopped or killed?",
      );
    }
    let msg;
    try {
      msg = parseServerMessage(line);
    } catch (error) {
      throw notProtocol(error);
    }
    if (msg.type === "connect") return msg;
    if (msg.type === "error") {
      throw new P2mError(answered ? `server: ${msg.message}` : `server refused: ${msg.message}`);
    }
    answered = true;
    if (msg.type === "accepted") continue;
    if (msg.type === "commit") throw new P2mError("server sent commit before any data");
    reporter.event("queued", { position: msg.position });
    reporter.info(`queued: position ${msg.position}`);
  }
}

/** What is said of bytes on the control channel that are not p2m's protocol. */
function notProtocol(error: unknown): P2mError {
  return new P2mError(
    `server did not speak the p2m protocol (is it running with --raw?): ${describeError(error)}`,
    { cause: error },
  );
}

/** Reads header, bytes and trailer; checks everything; returns digest info. */
async function receiveStream(
  data: DataChannel,
  options: ClientOptions,
  usual: Promise<Digest>,
  setOutput: (out: Sink) => void,
  setReceived: (n: number) => void,
): Promise<{ digest: string; value: string; seconds: number }> {
  const reporter = options.reporter;
  const fixed = new Uint8Array(HEADER_FIXED_LENGTH);
  try {
    await data.readFull(fixed, "header");
  } catch (error) {
    throw new P2mError(
      `the server's worker closed the data connection before the header: ${describeError(error)}`,
      { cause: error },
    );
  }
  const headerBytes = new Uint8Array(headerLength(fixed));
  headerBytes.set(fixed);
  await data.readFull(headerBytes.subarray(HEADER_FIXED_LENGTH), "header");
  const header = decodeHeader(headerBytes);
  // A sender whose digest cannot be compared with --expect is refused first.
  options.expect?.checkAlgorithm(header.digest);
  // A file, a tree (`--out DIR/` gives DIR/<name>/) or stdout (`--out -`).
  const output = openSink({
    out: options.out,
    name: header.name,
    mode: header.mode,
    force: options.force,
    kind: header.tree ? "tree" : "file",
    limits: header.tree ? { maxTotalBytes: header.size } : undefined,
    onWait: () => data.breathe(),
  });
  setOutput(output);
  reporter.event("start", {
    name: header.name,
    path: output.path,
    size: header.sizeUnknown ? null : header.size,
    tree: header.tree ?? false,
    digest: header.digest,
  });
  const digest = header.digest === DEFAULT_DIGEST ? await usual : await createDigest(header.digest);
  const progress = reporter.progress(
    output.path.split("/").pop() ?? "receiving",
    header.sizeUnknown ? 0 : header.size,
  );
  const buf = new Uint8Array(RECEIVE_CHUNK);
  let got = 0;
  /** Receives `count` payload bytes into the digest and the output. */
  const receive = async (count: number) => {
    for (const until = got + count; got < until;) {
      const n = await data.read(buf.subarray(0, Math.min(buf.length, until - got)));
      if (n === 0) {
        const of = header.sizeUnknown ? "a stream of unknown size" : `${header.size}`;
        throw new P2mError(
          `server stopped after ${got} of ${of} bytes (connection closed); copy discarded`,
        );
      }
      const view = buf.subarray(0, n);
      digest.update(view);
      await output.write(view);
      got += n;
      setReceived(got);
      progress.update(got);
      await data.breathe();
    }
  };
  if (header.sizeUnknown) {
    // Chunks of announced length, ended by a zero length (core/wire.ts).
    const length = new Uint8Array(CHUNK_LENGTH_BYTES);
    while (true) {
      await data.readFull(length, "chunk length");
      const count = decodeChunkLength(length);
      if (count === 0) break;
      if (count === KEEPALIVE_CHUNK) continue; // the producer pauses; the worker lives
      await receive(count);
    }
  } else await receive(header.size);
  const trailerFixed = new Uint8Array(TRAILER_FIXED_LENGTH);
  await data.readFull(trailerFixed, "trailer");
  const trailerBytes = new Uint8Array(trailerLength(trailerFixed, header.digest));
  trailerBytes.set(trailerFixed);
  await data.readFull(trailerBytes.subarray(TRAILER_FIXED_LENGTH), "trailer");
  const trailer = decodeTrailer(trailerBytes, header.digest);
  if (trailer.size !== got) {
    throw new WireError(`the trailer says ${trailer.size} bytes, ${got} arrived; copy discarded`);
  }
  if (await data.read(buf.subarray(0, 1)) !== 0) {
    throw new WireError("server sent more bytes than announced; copy discarded");
  }
  if (trailer.status === TrailerStatus.SourceChanged) {
    throw new P2mError("the source file changed while it was sent; copy discarded");
  }
  const actual = digest.digest();
  if (!digestsEqual(actual, trailer.digest)) {
    throw new VerifyError(toHex(trailer.digest), toHex(actual));
  }
  options.expect?.check(actual);
  return { digest: header.digest, value: toHex(actual), seconds: progress.elapsed };
}
