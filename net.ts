/**
 * p2m over NATS JetStream: publish a file once, fetch it on many hosts.
 *
 * ```sh
 * deno task net publish FILE|- --server URL [--bucket B] [--key K] [--max-age S]
 * deno task net fetch KEY --server URL [--out DIR|FILE|-] [--watch]
 *   [--fanout shm|socket --peers N [--name NAME | --socket PATH]]
 * deno task net ls --server URL
 * deno task net rm KEY --server URL
 * ```
 *
 * The NATS clients load lazily, in net/session.ts, so nothing else in p2m
 * pays for them; the shm and socket senders of `--fanout` load lazily in
 * net/fanout.ts. Design and measurements: docs/nats.md.
 *
 * @module
 */
import type { FlagOptions } from "./core/args.ts";
import {
  type CommandSpec,
  commandSpec,
  intFlag,
  maybeHelp,
  parseCommand,
  reporterFor,
  runMain,
  secondsFlag,
  sizeFlag,
  UsageError,
} from "./core/mod.ts";
import { DEFAULT_DIGEST, DIGEST_ALGORITHMS, isDigestAlgorithm } from "./core/digest.ts";
import { formatBytes } from "./core/format.ts";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, connectionFlags } from "./net/connection_flags.ts";
import { describeFanout, fanOut, FANOUT_KINDS, type FanoutKind } from "./net/fanout.ts";
import { describeFetch, fetchKey } from "./net/fetch.ts";
import { listKeys } from "./net/list.ts";
import { removeKey } from "./net/remove.ts";
import { DEFAULT_CHUNK, DEFAULT_WINDOW, describePublish, publish } from "./net/publish.ts";
import { Revision } from "./net/revision.ts";
import { NatsSession } from "./net/session.ts";
import { MAX_RECEIVERS } from "./shm/layout.ts";

/** The digests a publish may carry (all but `none`: a fetch always verifies). */
const DIGEST_CHOICES = DIGEST_ALGORITHMS.filter((name) => name !== "none");

const TOP_USAGE = `
Usage: p2m net <command> [options]

Stores a file in NATS JetStream once and fetches verified copies anywhere.

Commands:
  publish <file|->  store a file (or stdin) under a key; prints key and revision
  fetch <key>       fetch the current revision, verify, commit atomically
  ls                list the keys of a bucket
  rm <key>          remove a key and its data

Run 'p2m net <command> --help' for the options of a command.
`;

const PUBLISH_USAGE = `
Usage: p2m net publish <file|-> --server URL [options]

Stores <file> (or stdin, '-') in the bucket's stream: the chunks first,
then a manifest (name, size, mode, digest) whose stream sequence is the
revision. Fetchers see the new revision only once every chunk is stored.

Options:
  --key K             key to store under (default: the file's name; 'stdin' for -)
  --digest ALG        ${DIGEST_CHOICES.join(", ")} (default ${DEFAULT_DIGEST}),
                      carried to every fetcher
  --chunk BYTES       bytes per message (default 512KiB, capped at the server's
                      max_payload)
  --window N          chunks in flight before waiting for acks (default ${DEFAULT_WINDOW})
  --max-age S         drop anything in the bucket older than S seconds
                      (0: keep; default: leave the bucket's setting)
${CONNECTION_USAGE}`;

const FETCH_USAGE = `
Usage: p2m net fetch <key> --server URL [options]

Fetches the current revision of <key>, verifies it against the publisher's
digest and commits it atomically. Exit 0 only when it verified.

With --fanout, this process is also the host's local sender: it streams the
bytes to N local receivers while they still arrive, and the receivers verify
the publisher's digest (this process hashes nothing for them). Exit 0 only
when the fetch and every local receiver verified.

Options:
  --out DIR|FILE|-    where the copy goes (default: received-files/pid-<pid>_<name>);
                      '-' writes to stdout as bytes arrive: then the exit code
                      is the verdict. With --fanout: keep an own copy too
                      (none without --out; '-' is not allowed)
  --force             replace an existing file
  --watch             wait for a key that is not published yet (no time limit;
                      SIGINT/SIGTERM end the wait)
  --fanout shm|socket serve the host's receivers: 'p2m shm receiver --name NAME'
                      or 'p2m socket client --socket PATH'
  --peers N           local receivers to serve (with --fanout; default 1, shm at
                      most ${MAX_RECEIVERS})
  --name NAME         shm segment name (default p2m-<uid>)
  --socket PATH       socket path (default <runtime dir>/p2m.sock)
  --wait S            seconds to wait for the N local receivers to come (default
                      30); then shm serves none of them, socket serves those
                      that came; either way the exit code is 1
${CONNECTION_USAGE}`;

const LS_USAGE = `
Usage: p2m net ls --server URL [options]

Lists every key of a bucket: revision, size, digest, publish time.
${CONNECTION_USAGE}`;

const RM_USAGE = `
Usage: p2m net rm <key> --server URL [options]

Removes <key>, its data, and data left by publishers that died (older than
--orphans-older-than S, default 900).

Options:
  --orphans-older-than S   age from which unnamed data is swept
${CONNECTION_USAGE}`;

const PUBLISH_SPEC = commandSpec("p2m net publish", PUBLISH_USAGE, {
  positionals: ["file"],
  strings: ["key", "digest", "chunk", "window", "max-age"],
  shared: CONNECTION_OPTIONS,
});

const FETCH_SPEC = commandSpec("p2m net fetch", FETCH_USAGE, {
  positionals: ["key"],
  strings: ["out", "fanout", "peers", "name", "socket", "wait"],
  booleans: ["force", "watch"],
  shared: CONNECTION_OPTIONS,
});

const LS_SPEC = commandSpec("p2m net ls", LS_USAGE, { shared: CONNECTION_OPTIONS });

const RM_SPEC = commandSpec("p2m net rm", RM_USAGE, {
  positionals: ["key"],
  strings: ["orphans-older-than"],
  shared: CONNECTION_OPTIONS,
});

async function publishCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(PUBLISH_SPEC, args);
  if (maybeHelp(values, PUBLISH_USAGE)) return 0;
  const path = positionals[0];
  if (path === undefined) throw new UsageError("missing <file> (or '-' for stdin)");
  const digest = values.digest ?? DEFAULT_DIGEST;
  if (!isDigestAlgorithm(digest) || digest === "none") {
    throw new UsageError(`--digest must be one of ${DIGEST_CHOICES.join(", ")}, not '${digest}'`);
  }
  const chunkSize = sizeFlag(values.chunk, "chunk", DEFAULT_CHUNK, { min: 1024, max: 64 << 20 });
  const window = Number(values.window ?? DEFAULT_WINDOW);
  if (!Number.isSafeInteger(window) || window < 1 || window > 1024) {
    throw new UsageError(`--window must be a whole number from 1 to 1024, not '${values.window}'`);
  }
  const maxAgeSeconds = values["max-age"] === undefined
    ? undefined
    : secondsFlag(values["max-age"], "max-age", 0, { min: 0, max: 10 * 365 * 86_400 });
  const reporter = reporterFor(values);
  const flags = connectionFlags(values);
  await using session = await NatsSession.open(flags);
  const result = await publish(session, {
    path,
    key: values.key,
    digest,
    chunkSize,
    window,
    maxAgeSeconds,
  }, reporter);
  reporter.info(describePublish(result));
  reporter.event("done", {
    key: result.manifest.key,
    revision: result.revision,
    size: result.manifest.size,
    chunks: result.manifest.chunks,
    digest: result.manifest.digest,
    seconds: result.seconds,
  });
  return 0;
}

/** Parses a command that names a `<key>` (fetch, rm): its flags and the key; undefined after --help. */
function parseKeyCommand<O extends FlagOptions>(
  spec: CommandSpec<O>,
  args: string[],
) {
  const { values, positionals } = parseCommand(spec, args);
  if (maybeHelp(values, spec.usage)) return undefined;
  const key = positionals[0];
  if (key === undefined) throw new UsageError("missing <key>");
  return { values, key };
}

async function fetchCommand(args: string[]): Promise<number> {
  const parsed = parseKeyCommand(FETCH_SPEC, args);
  if (!parsed) return 0;
  const { values, key } = parsed;
  if (values.out === "-" && values.json) {
    throw new UsageError("--json writes events to stdout; it cannot be used with --out -");
  }
  const fanout = fanoutFlags(values);
  if (fanout) {
    const reporter = reporterFor(values);
    await using session = await NatsSession.open(connectionFlags(values));
    const options = { key, out: values.out, force: values.force, ...fanout };
    const found = await Revision.find(session, key, { watch: values.watch });
    const result = await fanOut(found, options, reporter);
    if (result.code === 0) reporter.info(describeFanout(result, options));
    reporter.event("done", {
      key,
      revision: result.revision,
      path: result.path ?? null,
      fanout: fanout.fanout,
      local: result.local,
      peers: fanout.peers,
      size: result.manifest.size,
      seconds: result.seconds,
      verified: result.code === 0,
    });
    return result.code;
  }
  const reporter = reporterFor(values.out === "-" ? { ...values, quiet: true } : values);
  await using session = await NatsSession.open(connectionFlags(values));
  const result = await fetchKey(session, {
    key,
    out: values.out,
    force: values.force,
    watch: values.watch,
  }, reporter);
  reporter.info(describeFetch(result));
  reporter.event("done", {
    key,
    revision: result.revision,
    path: result.path,
    size: result.manifest.size,
    seconds: result.seconds,
    verified: true,
  });
  return 0;
}

/** The --fanout flags, checked, or undefined without --fanout. */
function fanoutFlags(values: {
  fanout?: string;
  peers?: string;
  name?: string;
  socket?: string;
  wait?: string;
  out?: string;
}) {
  const { fanout } = values;
  if (fanout === undefined) {
    const stray = (["peers", "name", "socket", "wait"] as const).find((f) =>
      values[f] !== undefined
    );
    if (stray) throw new UsageError(`--${stray} goes with --fanout shm|socket`);
    return undefined;
  }
  if (!(FANOUT_KINDS as readonly string[]).includes(fanout)) {
    throw new UsageError(`--fanout must be shm or socket, not '${fanout}'`);
  }
  if (values.out === "-") throw new UsageError("--out - cannot be used with --fanout");
  if (fanout === "shm" && values.socket !== undefined) {
    throw new UsageError("--socket goes with --fanout socket");
  }
  if (fanout === "socket" && values.name !== undefined) {
    throw new UsageError("--name goes with --fanout shm");
  }
  if (values.name !== undefined && !/^[A-Za-z0-9._-]{1,200}$/.test(values.name)) {
    throw new UsageError(`--name must be 1 to 200 letters, digits, '.', '_' or '-'`);
  }
  return {
    fanout: fanout as FanoutKind,
    peers: intFlag(values.peers, "peers", 1, {
      min: 1,
      max: fanout === "shm" ? MAX_RECEIVERS : 10_000,
    }),
    name: values.name,
    socket: values.socket,
    waitSeconds: secondsFlag(values.wait, "wait", 30),
  };
}

async function lsCommand(args: string[]): Promise<number> {
  const { values } = parseCommand(LS_SPEC, args);
  if (maybeHelp(values, LS_USAGE)) return 0;
  const reporter = reporterFor(values);
  await using session = await NatsSession.open(connectionFlags(values));
  for (const { manifest, revision } of await listKeys(session)) {
    reporter.info(
      `${manifest.key}\trevision ${revision}\t${formatBytes(manifest.size)}\t` +
        `${manifest.digest.algorithm}:${manifest.digest.value}\t${manifest.published}`,
    );
    reporter.event("key", { revision, ...manifest });
  }
  return 0;
}

async function rmCommand(args: string[]): Promise<number> {
  const parsed = parseKeyCommand(RM_SPEC, args);
  if (!parsed) return 0;
  const { values, key } = parsed;
  const grace = secondsFlag(values["orphans-older-than"], "orphans-older-than", 900, {
    min: 0,
    max: 1e9,
  });
  const reporter = reporterFor(values);
  await using session = await NatsSession.open(connectionFlags(values));
  const result = await removeKey(session, key, grace * 1000);
  reporter.info(`removed ${key} (revision ${result.revision}, ${result.purged} messages)`);
  reporter.event("done", { key, revision: result.revision, purged: result.purged });
  return 0;
}

const COMMANDS: Record<
  string,
  [{ name: string; usage: string }, (args: string[]) => Promise<number>]
> = {
  publish: [PUBLISH_SPEC, publishCommand],
  fetch: [FETCH_SPEC, fetchCommand],
  ls: [LS_SPEC, lsCommand],
  rm: [RM_SPEC, rmCommand],
};

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  const entry = command === undefined ? undefined : COMMANDS[command];
  await runMain(entry?.[0] ?? { name: "p2m net", usage: TOP_USAGE }, Deno.args, async () => {
    if (entry) return await entry[1](rest);
    if (command === "--help" || command === "-h") {
      console.log(TOP_USAGE.trim());
      return 0;
    }
    throw new UsageError(command ? `unknown command '${command}'` : "missing command");
  });
}
