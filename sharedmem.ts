/**
 * `p2m shm`: copy one file to many local processes through a POSIX
 * shared-memory ring.
 *
 * ```sh
 * deno task shm sender big.iso --peers 4 --name build-42
 * deno task shm receiver --name build-42 --out /srv/cache/
 * ```
 *
 * Data path: shm/sender.ts `SenderRun.transfer` reads each chunk into a ring
 * slot and publishes it; shm/receiver.ts `receive` writes each published
 * slot to the output and publishes its cursor. Every shared word (cursors,
 * states, flags, the one wait `park()`) lives in shm/segment.ts; the layout
 * and its validator in shm/layout.ts; who may unlink the segment (owner,
 * stale cleaner, the reaper that outlives a killed sender) in shm/stale.ts.
 * The sender needs `--allow-run=sh` for that reaper.
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
  sizeFlag,
  UsageError,
} from "./core/mod.ts";
import {
  MAX_CHUNK,
  MAX_RECEIVERS,
  MAX_RING,
  MAX_SLOTS,
  MIN_CHUNK,
  SEGMENT_VERSION,
} from "./shm/layout.ts";
import { isStreamPath } from "./core/stream_source.ts";

const TOP_USAGE = `
Usage: p2m shm <command> [options]

Commands:
  sender <file>   publish a file, a directory tree or a stream (-) through a shared-memory ring
  receiver        receive it

Run 'p2m shm <command> --help' for a command's options.
`;

const SENDER_USAGE = `
Usage: p2m shm sender <file|DIR|-> [options]

Publishes <file> through the POSIX shared-memory segment /dev/shm/NAME and
streams it to every attached receiver at once.

  <file>   a regular file
  DIR      a directory: every regular file, directory and inside symlink
           under it, as one pax tar stream (symlinks out of the tree,
           devices, FIFOs and sockets are skipped with a warning)
  -        stdin (or a FIFO path): a stream of unknown size; bytes flow as
           they arrive once the receivers are attached, and a receiver that
           comes later is refused (a stream cannot be replayed)

Options:
  --name NAME          segment name (default p2m-<uid>)
  --peers N            receivers to wait for before streaming (default 1, max ${MAX_RECEIVERS})
  --wait S             seconds to wait for them (default 30)
  --slots K            slots in the ring (default 16)
  --chunk BYTES        bytes per slot, a multiple of 4096 (default 1M)
  --stall-timeout S    evict a live receiver that stops consuming for S s (default 10)
  --digest ALG         xxh3-128 (default; native libxxhash), xxh64 or sha256
  --no-verify          send no digest (receivers cannot verify)
  --limit-rate BYTES   cap the rate, bytes per second, at least 1 (e.g. 50M);
                       leave it out for no limit
  --group GROUP        share the segment with GROUP (a name or gid): mode 0660 and
                       that group, so receivers of other users in it can attach
                       (default: mode 0600, this user only)
  --linger S           after the awaited receivers finish, keep serving later ones in
                       laps, each from the file's start and verified, until S seconds
                       pass with nobody (restarted after every lap; 0: until SIGINT or
                       SIGTERM, which then exit 0 if every receiver verified); a lap
                       starts 0.3 s after its first joiner. Files only, not - or DIR
  --json               JSON events on stdout
  --quiet              errors only
  --debug              stack traces on errors
  --version            p2m version, formats spoken, digest in use
  -h, --help           this help
${NUMBER_HELP}`;

const RECEIVER_USAGE = `
Usage: p2m shm receiver [options]

Attaches to the segment /dev/shm/NAME, copies the file and verifies it.

Options:
  --name NAME      segment name (default p2m-<uid>)
  --out DIR|FILE   where to write: a directory (existing, or a path ending in /) or a file
                   (default: received-files/pid-<pid>_<name>); a tree goes to DIR/<name>/
                   or to FILE as a directory
  --out -          write the bytes (a tree's tar stream) to stdout as they arrive;
                   they cannot be taken back, so the exit status is the verdict
                   (0 only when the digest matched); events go to stderr
  --timeout S      seconds to wait for a sender (default 30)
  --force          replace an existing file
  --expect DIGEST  also refuse the copy unless its digest is DIGEST (hex, as
                   xxhsum -H2 or sha256sum print it), published elsewhere
  --group GROUP    receive from a sender of another user that shares the segment
                   with GROUP (its --group); the segment must belong to GROUP.
                   Without it, only this user's own 0600 segments are read
  --json           JSON events on stdout
  --quiet          errors only
  --debug          stack traces on errors
  --version        p2m version, formats spoken, digest in use
  -h, --help       this help

A verified copy ends with the line '<digest>  <path>', which xxhsum -c
(or sha256sum -c, for --digest sha256) checks.
${NUMBER_HELP}`;

const SENDER_SPEC = commandSpec("p2m shm sender", SENDER_USAGE, {
  positionals: ["file"],
  strings: ["name", "peers", "wait", "slots", "chunk", "linger", "group"],
  shared: SENDING_OPTIONS,
});

const RECEIVER_SPEC = commandSpec("p2m shm receiver", RECEIVER_USAGE, {
  strings: ["name", "group"],
  shared: RECEIVING_OPTIONS,
});

/** Checks a segment name: one plain component, as shm_open needs. */
function segmentName(value: string | undefined): string {
  if (value === undefined) return `p2m-${Deno.uid() ?? 0}`;
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(value) || value === "." || value === "..") {
    throw new UsageError(
      `--name must be 1 to 200 letters, digits, '.', '_' or '-', not '${value}'`,
    );
  }
  return value;
}

async function sender(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(SENDER_SPEC, args);
  if (maybeHelp(values, SENDER_USAGE)) return 0;
  const path = positionals[0];
  if (path === undefined) throw new UsageError("missing <file|DIR|->");
  const chunk = sizeFlag(values.chunk, "chunk", 1024 * 1024, { min: MIN_CHUNK, max: MAX_CHUNK });
  if (chunk % MIN_CHUNK !== 0) throw new UsageError(`--chunk must be a multiple of ${MIN_CHUNK}`);
  const slots = intFlag(values.slots, "slots", 16, { min: 1, max: MAX_SLOTS });
  if (slots * chunk > MAX_RING) {
    throw new UsageError(`the ring (--slots × --chunk) may be at most ${MAX_RING} bytes`);
  }
  const linger = values.linger === undefined
    ? undefined
    : secondsFlag(values.linger, "linger", 0, { min: 0 });
  if (linger !== undefined && isStreamPath(path)) {
    throw new UsageError(
      `--linger replays a file for late receivers; ${path} is a stream, which cannot be replayed`,
    );
  }
  const reporter = reporterFor(values);
  // Each role loads only its own side (a receiver never parses the sender).
  const { runSender } = await import("./shm/sender.ts");
  return await runSender({
    lingerSeconds: linger,
    path,
    name: segmentName(values.name),
    peers: intFlag(values.peers, "peers", 1, { min: 1, max: MAX_RECEIVERS }),
    waitSeconds: secondsFlag(values.wait, "wait", 30),
    slots,
    chunk,
    group: groupFlag(values.group),
    ...sendingFlags(values),
  }, reporter);
}

async function receiver(args: string[]): Promise<number> {
  const { values } = parseCommand(RECEIVER_SPEC, args);
  if (maybeHelp(values, RECEIVER_USAGE)) return 0;
  const reporter = reporterFor(values);
  if (values.out === "-") reporter.eventsToStderr(); // stdout carries the data
  const { runReceiver } = await import("./shm/receiver.ts");
  return await runReceiver({
    name: segmentName(values.name),
    group: groupFlag(values.group),
    ...receivingFlags(values, 30),
  }, reporter);
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  const spec = command === "sender"
    ? SENDER_SPEC
    : command === "receiver"
    ? RECEIVER_SPEC
    : { name: "p2m shm", usage: TOP_USAGE };
  await runMain({ ...spec, formats: { "shm segment": SEGMENT_VERSION } }, Deno.args, async () => {
    if (command === "sender") return await sender(rest);
    if (command === "receiver") return await receiver(rest);
    if (command === "--help" || command === "-h") {
      console.log(TOP_USAGE.trim());
      return 0;
    }
    throw new UsageError(command ? `unknown command '${command}'` : "missing command");
  });
}
