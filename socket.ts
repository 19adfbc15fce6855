/**
 * p2m over AF_UNIX sockets: one server, many clients, a subprocess per peer.
 *
 * ```sh
 * deno task socket server FILE [--socket PATH] [--peers N] [--max-active K] ...
 * deno task socket client [--socket PATH] [--out DIR|FILE] [--timeout S] ...
 * ```
 *
 * The server keeps each peer's accepted connection as a control channel and
 * starts a worker subprocess (socket/worker_main.ts, which loads neither the
 * flag parser nor the server) that streams the file to that peer over a
 * one-time socket. See socket/server.ts.
 *
 * `--raw` is the one exception to "no file bytes through the parent": with no
 * handshake there is no way to hand the peer a second socket, and Deno cannot
 * pass an accepted connection to a child, so the parent writes the bytes.
 *
 * Data path: socket/data_channel.ts (libc sockets, sendfile) and socket/worker.ts.
 *
 * @module
 */
import {
  commandSpec,
  groupFlag,
  intFlag,
  maybeHelp,
  NUMBER_HELP,
  parseCommand,
  RECEIVING_OPTIONS,
  receivingFlags,
  reporterFor,
  runMain,
  secondsFlag,
  SENDING_OPTIONS,
  sendingFlags,
  socketDir,
  UsageError,
} from "./core/mod.ts";
import { PROTOCOL_VERSION } from "./socket/protocol.ts";
import type { UnixGroup } from "./ffi/mod.ts";

const MAIN_USAGE = `
Usage: p2m socket <command> [options]

Copies one file from one server to many clients over Unix sockets.

Commands:
  server <file>   serve a file, stdin (-), a FIFO or a directory tree to
                  peers (one worker subprocess per peer)
  client          receive the file from a server

Run 'p2m socket <command> --help' for the options of a command.
`;

const SERVER_USAGE = `
Usage: p2m socket server <file|-|FIFO|DIR> [options]

Serves <file> on a Unix socket. Each peer gets its own worker subprocess,
which streams the file to it directly; the peer verifies the digest.

'-' (stdin), a FIFO or another non-seekable input is read once, as it
arrives, into a spool file (see --spool) that every worker sends from
while it grows: peers get the first bytes while the producer still writes,
and a slow peer holds up nobody. The size is not known in advance; the
trailer carries the final size and the digest. End of input is the end of
the stream (a killed producer looks the same: check its exit status).
A directory is sent as a whole tree (pax tar, under the directory's name):
regular files with their modes, empty directories, symlinks that stay
inside; what is skipped (devices, FIFOs, sockets, links out) is warned
about. A file that changes while it is sent fails every peer.

Options:
  --socket PATH     socket path (default: $XDG_RUNTIME_DIR/p2m/p2m.sock,
                    else /tmp/p2m-<uid>/p2m.sock); at most 107 bytes
  --peers N         exit after N peers finished: 0 if all ok, else 1
                    (default: serve until SIGINT/SIGTERM)
  --wait S          with --peers: if fewer than N peers have connected after
                    S seconds, take no more, let those finish, and exit 1
                    (default: wait as long as it takes)
  --max-active K    at most K transfers (worker processes) at once; later
                    peers queue (default 32)
  --digest ALG      xxh3-128 (default; native libxxhash), xxh64 or sha256
  --no-verify       send no digest (benchmarks); peers keep unverified copies
  --raw             plain bytes, no framing, no handshake, NOT verified
                    (for 'socat -u UNIX-CONNECT:PATH -' or 'nc -U PATH')
  --stall-timeout S seconds a peer may take to say hello or to take the next
                    chunk; then it fails alone (default 10). Told where to
                    connect, a peer has 2 s (S if less) to reach its worker,
                    else it goes back in line once, then fails
  --limit-rate B    cap each peer's rate at B bytes per second, at least 1
                    (e.g. 50M); leave it out for no limit
  --grace S         after SIGINT/SIGTERM, seconds running transfers get to
                    finish (default 5; 0 stops them at once)
  --group GROUP     share the sockets with GROUP (a name or gid): the socket
                    is mode 0660 of that group, and the default directory is
                    /tmp/p2m-<uid>-g<gid> (mode 2750), so clients of other
                    users in GROUP can connect with --socket PATH --group
                    GROUP (default: 0600 sockets in a 0700 directory)
  --spool DIR       where a stream or a tree is spooled, on disk (default
                    $TMPDIR, else /tmp; not the runtime dir). The spool
                    file is private and has no name (O_TMPFILE): nothing is
                    left however the server ends. It is kept while the
                    server runs, so later peers get the whole stream too
  --json            one JSON event per line on stdout
  --quiet           print only errors
  --debug           stack traces on errors
  --version         p2m version, formats spoken, digest in use
  -h, --help        show this help
${NUMBER_HELP}`;

const CLIENT_USAGE = `
Usage: p2m socket client [options]

Receives the file from a socket server, verifies its digest and only then
gives it its final name. Exits 0 only for a complete, verified copy.

Options:
  --socket PATH     server socket (default: as for the server)
  --out DIR|FILE    where to write (default: received-files/pid-<pid>_<name>);
                    a path ending in / or an existing directory is a directory.
                    A tree goes to DIR/<name>/, or to FILE as a directory;
                    it is built hidden beside its target and renamed into
                    place only once verified
  --out -           write the bytes (a tree's tar stream) to stdout as they
                    arrive, e.g. '| tar x' or '| sha256sum'. They cannot be
                    taken back, so the exit status is the verdict: 0 only
                    when the digest matched. Messages and --json events go
                    to stderr; a consumer that closes the pipe fails this
                    client alone
  --timeout S       seconds to wait for the server to appear and answer, and
                    for the next bytes of the file (default 10, at least 0.1)
  --force           replace an existing output file
  --expect DIGEST   also refuse the copy unless its digest is DIGEST (hex, as
                    xxhsum -H2 or sha256sum print it), published elsewhere
  --group GROUP     receive from a server of another user that shares its
                    sockets with GROUP (its --group); they must belong to
                    GROUP. Without it, only this user's sockets are used
  --raw             read plain bytes until EOF (server in --raw mode);
                    the copy is NOT verified
  --json            one JSON event per line on stdout
  --quiet           print only errors
  --debug           stack traces on errors
  --version         p2m version, formats spoken, digest in use
  -h, --help        show this help

A verified copy ends with the line '<digest>  <path>', which xxhsum -c
(or sha256sum -c, for --digest sha256) checks.
${NUMBER_HELP}`;

const SERVER_SPEC = commandSpec("p2m socket server", SERVER_USAGE, {
  positionals: ["file"],
  strings: ["socket", "peers", "wait", "max-active", "grace", "spool", "group"],
  booleans: ["raw"],
  shared: SENDING_OPTIONS,
});

const CLIENT_SPEC = commandSpec("p2m socket client", CLIENT_USAGE, {
  strings: ["socket", "group"],
  booleans: ["raw"],
  shared: RECEIVING_OPTIONS,
});

function defaultSocket(group?: UnixGroup): string {
  return `${socketDir(group)}/p2m.sock`;
}

async function server(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(SERVER_SPEC, args);
  if (maybeHelp(values, SERVER_USAGE)) return 0;
  const file = positionals[0];
  if (file === undefined) throw new UsageError("missing <file> to serve");
  const reporter = reporterFor(values);
  const sending = sendingFlags(values);
  if (values.raw && (values.digest || values["no-verify"])) {
    throw new UsageError("--raw sends no digest; drop --digest/--no-verify");
  }
  const group = groupFlag(values.group);
  const peers = values.peers === undefined
    ? undefined
    : intFlag(values.peers, "peers", 1, { min: 1, max: 100_000 });
  if (values.wait !== undefined && peers === undefined) {
    throw new UsageError("--wait needs --peers: it bounds the wait for those peers");
  }
  const waitSeconds = values.wait === undefined ? undefined : secondsFlag(values.wait, "wait", 0);
  // Each role loads only its own side (a client never parses the server).
  const [{ runServer }, { defaultSpoolDir }] = await Promise.all([
    import("./socket/server.ts"),
    import("./socket/spool.ts"),
  ]);
  return await runServer({
    file,
    spoolDir: values.spool ?? defaultSpoolDir(),
    socket: values.socket ?? defaultSocket(group),
    group,
    peers,
    waitSeconds,
    maxActive: intFlag(values["max-active"], "max-active", 32, { min: 1, max: 10_000 }),
    raw: values.raw ?? false,
    ...sending,
    graceSeconds: secondsFlag(values.grace, "grace", 5, {
      zero: "stopping running transfers at once",
    }),
    reporter,
  });
}

async function client(args: string[]): Promise<number> {
  const { values } = parseCommand(CLIENT_SPEC, args);
  if (maybeHelp(values, CLIENT_USAGE)) return 0;
  const reporter = reporterFor(values);
  if (values.out === "-") reporter.eventsToStderr(); // stdout carries the data
  const receiving = receivingFlags(values, 10);
  if (values.raw && receiving.expect) {
    throw new UsageError("--raw carries no digest, so --expect cannot be checked");
  }
  const { runClient } = await import("./socket/client.ts");
  return await runClient({
    socket: values.socket ?? defaultSocket(),
    ...receiving,
    group: groupFlag(values.group),
    raw: values.raw ?? false,
    reporter,
  });
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  const spec = command === "server" ? SERVER_SPEC : command === "client" ? CLIENT_SPEC : {
    name: "p2m socket",
    usage: MAIN_USAGE,
  };
  await runMain(
    { ...spec, formats: { "socket protocol": PROTOCOL_VERSION } },
    Deno.args,
    async () => {
      switch (command) {
        case "server":
          return await server(rest);
        case "client":
          return await client(rest);
        case "worker": // internal: started by the server, configured on stdin
          return await (await import("./socket/worker.ts")).workerMain();
        case "-h":
        case "--help":
          console.log(MAIN_USAGE.trim());
          return 0;
        case undefined:
          throw new UsageError("missing command");
        default:
          throw new UsageError(`unknown command '${command}'`);
      }
    },
  );
}
