/**
 * A child process for tests/stream_source_test.ts and tests/sink_test.ts:
 * drives StreamSource, StdoutSink and Reporter against its real stdio.
 *
 * - `read PATH`: reads PATH (`-` for stdin) with StreamSource.readSome and
 *   prints one JSON line per event on stderr: `{"got":n}` for each read,
 *   `{"idle":true}` the first time nothing arrived in time, and at the end
 *   `{"eof":total,"sha256":hex,"nonblock":bool}` (nonblock: whether fd 0's
 *   shared description ended up O_NONBLOCK).
 * - `write BYTES`: writes BYTES seeded bytes to stdout through StdoutSink,
 *   then prints `{"wrote":n}` on stderr; a failure prints `{"error":msg}`.
 * - `report`: a --json Reporter with eventsTo stderr prints one event and
 *   one human line.
 *
 * SIGTERM prints `{"signal":"SIGTERM"}` on stderr and exits 143, so a test
 * can tell a responsive process from one blocked in a read or write.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { StdoutSink } from "../core/sink.ts";
import { StreamSource } from "../core/stream_source.ts";
import { Reporter } from "../core/report.ts";
import { F_GETFL, libc, O_NONBLOCK } from "../ffi/libc.ts";

const encoder = new TextEncoder();
function say(value: unknown): void {
  Deno.stderr.writeSync(encoder.encode(JSON.stringify(value) + "\n"));
}

Deno.addSignalListener("SIGTERM", () => {
  say({ signal: "SIGTERM" });
  Deno.exit(143);
});

const [mode, arg] = Deno.args;
if (mode === "read") {
  using source = StreamSource.open(arg);
  const hash = createHash("sha256");
  const buffer = new Uint8Array(64 * 1024);
  let idle = false;
  for (;;) {
    const count = await source.readSome(buffer, 50);
    if (count === null) {
      if (!idle) say({ idle: true });
      idle = true;
      continue;
    }
    if (count === 0) break;
    hash.update(buffer.subarray(0, count));
    say({ got: count });
  }
  const flags = libc().fcntl_int(0, F_GETFL, 0n);
  say({ eof: source.bytesRead, sha256: hash.digest("hex"), nonblock: (flags & O_NONBLOCK) !== 0 });
} else if (mode === "write") {
  const total = Number(arg);
  const piece = new Uint8Array(256 * 1024);
  for (let i = 0; i < piece.length; i++) piece[i] = (i * 7 + 3) & 0xff;
  let sink: StdoutSink | undefined;
  try {
    sink = StdoutSink.open();
    for (let at = 0; at < total; at += piece.length) {
      await sink.write(piece.subarray(0, Math.min(piece.length, total - at)));
    }
    sink.commit();
    say({ wrote: sink.bytesWritten });
  } catch (error) {
    say({ error: (error as Error).message, wrote: sink?.bytesWritten ?? 0 });
    Deno.exit(1);
  }
} else if (mode === "report") {
  const reporter = new Reporter({ json: true, eventsTo: "stderr" });
  reporter.event("start", { what: "test" });
  new Reporter({ eventsTo: "stderr" }).info("a human line");
} else {
  throw new Error(`unknown mode ${mode}`);
}
