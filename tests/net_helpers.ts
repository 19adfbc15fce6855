/**
 * Test helpers for `net`: the real `nats-server -js` of tools/nats_server.ts
 * (re-exported here), the `net.ts` program run with exactly the permissions
 * of its deno.json task, and the local receivers of a `--fanout` host.
 *
 * Without nats-server the NATS tests are skipped with one loud line, unless
 * `P2M_REQUIRE_NATS=1` (set by .ci/run), which turns the skip into a failure.
 *
 * @module
 */
import assert from "node:assert/strict";
import { NatsSession } from "../net/session.ts";
import { NATS_SERVER_PATH, NatsServer } from "../tools/nats_server.ts";
import { spawnPiped } from "../tools/runner.ts";
import {
  largestPart,
  makeFile,
  type P2mProcess,
  spawnReceiving,
  waitFor,
  whenDone,
  withTempDir,
} from "./helpers.ts";
import { TestNetwork } from "./net_netns.ts";

const root = new URL("../", import.meta.url).pathname;

export { freePort, NATS_SERVER_PATH, NatsServer } from "../tools/nats_server.ts";

let warned = false;

/** `ignore` for Deno.test: true (after one loud line) when nats-server is missing. */
export function natsMissing(): boolean {
  if (NATS_SERVER_PATH) return false;
  if (Deno.env.get("P2M_REQUIRE_NATS") === "1") {
    throw new Error(
      "P2M_REQUIRE_NATS=1 but nats-server is not installed (apt-get install nats-server)",
    );
  }
  if (!warned) {
    warned = true;
    console.error(
      "!!! SKIPPING the NATS tests: nats-server is not installed. Install it with " +
        "'sudo apt-get install nats-server' (Debian/Ubuntu) to run them. !!!",
    );
  }
  return true;
}

/** The permission flags of the deno.json `net` task (one source of truth). */
export function netPermissions(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  return (config.tasks.net as string).split(/\s+/).filter((word) => word.startsWith("--allow-"));
}

/** How a `net.ts` process ended. */
export interface NetResult {
  /** Exit code. */
  code: number;
  /** Standard output as text. */
  stdout: string;
  /** Standard output as bytes (for `--out -`). */
  stdoutBytes: Uint8Array;
  /** Standard error as text. */
  stderr: string;
}

/** A `net.ts` process started by a test. */
export interface NetProcess {
  /** The child. */
  child: Deno.ChildProcess;
  /** Waits for exit; code plus stdout/stderr text. */
  done(): Promise<NetResult>;
}

/** Starts `net.ts` with its task's permissions; `stdin: "piped"` for publish `-`. */
export function spawnNet(
  args: string[],
  options: {
    env?: Record<string, string>;
    stdin?: "piped" | "null";
    cwd?: string;
    netns?: string;
  } = {},
): NetProcess {
  const run = [Deno.execPath(), "run", ...netPermissions(), `${root}net.ts`, ...args];
  const argv = options.netns ? ["ip", "netns", "exec", options.netns, ...run] : run;
  const child = spawnPiped(argv, options);
  return { child, done: whenDone(child) };
}

/** Runs `net.ts` to its end. */
export async function runNet(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; netns?: string } = {},
): Promise<NetResult> {
  return await spawnNet(args, options).done();
}

/**
 * The local receivers of a `net fetch --fanout` host: shm receivers of
 * segment `local`, or socket clients of socket `local`, one per out dir.
 */
export function spawnLocalReceivers(
  fanout: "shm" | "socket",
  local: string,
  outs: string[],
): P2mProcess[] {
  return outs.map((out) =>
    fanout === "shm"
      ? spawnReceiving("sharedmem.ts", ["receiver", "--name", local], out, [])
      : spawnReceiving("socket.ts", ["client", "--socket", local], out, [])
  );
}

/** The `--fanout` flags of one host: its transport, 2 or more peers, and its own segment or socket. */
export function fanoutArgs(fanout: "shm" | "socket", local: string, peers: number): string[] {
  return [
    "--fanout",
    fanout,
    "--peers",
    String(peers),
    fanout === "shm" ? "--name" : "--socket",
    local,
  ];
}

/** Runs `body` with a fresh nats-server and a temp dir; both are gone afterwards, whatever happens. */
export async function withServerAndDir(
  body: (server: NatsServer, dir: string) => Promise<void>,
): Promise<void> {
  await using server = await NatsServer.start();
  await withTempDir("p2m-test-", (dir) => body(server, dir));
}

/** What a NATS test gets from {@link withNats}. */
export interface NatsTest {
  /** The running server. */
  server: NatsServer;
  /** A temp dir for the test's files, removed afterwards. */
  dir: string;
  /** The bucket the test uses. */
  bucket: string;
  /** `--server URL --bucket BUCKET`, for every net.ts run of the test. */
  common: string[];
}

/**
 * Runs `body` against a fresh nats-server (started with `serverArgs`) and a
 * fresh temp dir; both are gone afterwards whatever `body` does.
 */
export async function withNats(
  bucket: string,
  body: (test: NatsTest) => Promise<void>,
  serverArgs: string[] = [],
): Promise<void> {
  await using server = await NatsServer.start(serverArgs);
  await withTempDir("p2m-test-", async (dir) => {
    await body({ server, dir, bucket, common: ["--server", server.url, "--bucket", bucket] });
  });
}

/** Asserts that a net.ts run printed its error in exactly one line. */
export function assertOneLine(result: NetResult, what = ""): void {
  assert.equal(result.stderr.trim().split("\n").length, 1, `${what}${result.stderr}`);
}

/** Asserts that a net.ts run exited `code` with an error matching `reason`. */
export function assertNetFailed(result: NetResult, reason: RegExp, code = 1): void {
  assert.equal(result.code, code, result.stderr);
  assert.match(result.stderr, reason);
}

/** Writes `path` (`size` bytes from `seed`) and publishes it with `args`; asserts success. */
export async function publishNewFile(
  path: string,
  size: number,
  seed: number,
  args: string[],
): Promise<void> {
  await makeFile(path, size, seed);
  const published = await runNet(["publish", path, ...args]);
  assert.equal(published.code, 0, published.stderr);
}

/**
 * Starts `fetch key args...` into the new directory `out` (`--out out/` unless
 * `args` names its own `--out`) and waits until a temp file there holds
 * `bytes`: the fetch is under way.
 */
export async function fetchUnderWay(
  key: string,
  args: string[],
  out: string,
  bytes: number,
): Promise<NetProcess> {
  await Deno.mkdir(out);
  const outArgs = args.includes("--out") ? [] : ["--out", `${out}/`];
  const fetcher = spawnNet(["fetch", key, ...outArgs, ...args]);
  await waitFor(() => largestPart(out) >= bytes, 60_000, "the fetch under way");
  return fetcher;
}

/**
 * Writes `path` (`size` bytes from `seed`), starts `publish path --server
 * URL --bucket B args...`, and returns once `chunks` of it are on the server.
 */
export async function publishUnderWay(
  test: NatsTest,
  path: string,
  size: number,
  seed: number,
  args: string[],
  chunks: number,
): Promise<NetProcess> {
  await makeFile(path, size, seed);
  const publisher = spawnNet(["publish", path, ...test.common, ...args]);
  await waitForChunks(test.server, test.bucket, chunks, 60_000, "the publish under way");
  return publisher;
}

/** A session on `bucket` of `server`, for looking at (or writing to) the bucket by hand. */
export async function session(server: NatsServer, bucket: string): Promise<NatsSession> {
  return await NatsSession.open({ servers: [server.url], bucket, timeoutSeconds: 10 });
}

/** Total data messages in a bucket, by subject. */
export async function dataCounts(
  server: NatsServer,
  bucket: string,
): Promise<Map<string, number>> {
  await using nats = await session(server, bucket);
  return await nats.subjectCounts(nats.subjects.data);
}

/** Waits until a bucket holds at least `chunks` data messages on the server. */
export async function waitForChunks(
  server: NatsServer,
  bucket: string,
  chunks: number,
  ms: number,
  what: string,
): Promise<void> {
  await waitFor(
    async () => {
      const counts = await dataCounts(server, bucket);
      return [...counts.values()].reduce((a, b) => a + b, 0) >= chunks;
    },
    ms,
    what,
  );
}

/** Runs openssl in `dir`; throws with its stderr when it fails. */
export async function openssl(args: string[], dir: string): Promise<void> {
  const result = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(result.stderr)}`);
  }
}

/**
 * Writes `NAME.key` and `NAME.pem` in `dir`: a new key and a certificate for
 * `subject`, signed by `ca.pem`/`ca.key` there; `extfile` adds extensions.
 */
export async function issueCertificate(
  dir: string,
  name: string,
  subject: string,
  extfile?: string,
): Promise<void> {
  const key = ["-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`];
  await openssl(["req", ...key, "-out", `${name}.csr`, "-subj", subject], dir);
  const ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
  const extensions = extfile ? ["-extfile", extfile] : [];
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      ...ca,
      "-out",
      `${name}.pem`,
      "-days",
      "1",
      ...extensions,
    ],
    dir,
  );
}

/** A test (skipped without nats-server) that runs `body` {@link withNats} on `bucket`. */
export function natsTest(
  name: string,
  bucket: string,
  body: (test: NatsTest) => Promise<void>,
  serverArgs: string[] = [],
): void {
  Deno.test({ name, ignore: natsMissing() }, () => withNats(bucket, body, serverArgs));
}

/** What a test across hosts gets from {@link withHosts}. */
export interface HostsTest {
  /** The server namespace and the hosts' namespaces. */
  network: TestNetwork;
  /** The nats-server, in the server namespace. */
  server: NatsServer;
  /** A temp dir for the test's files (each host writes into `DIR/hostN/`). */
  dir: string;
}

/**
 * Runs `body` with `hosts` test hosts, a nats-server in their server
 * namespace and a temp dir; all are gone afterwards whatever `body` does.
 */
export async function withHosts(
  hosts: number,
  body: (test: HostsTest) => Promise<void>,
): Promise<void> {
  await using network = await TestNetwork.create(hosts);
  await using server = await NatsServer.start([], { netns: network.server });
  await withTempDir("p2m-test-", (dir) => body({ network, server, dir }));
}

/** Writes `DIR/name` (`size` bytes from `seed`) and publishes it from the server's namespace. */
export async function publishFromServer(
  { network, server, dir }: HostsTest,
  name: string,
  size: number,
  seed: number,
): Promise<void> {
  await makeFile(`${dir}/${name}`, size, seed);
  const published = await runNet(
    ["publish", `${dir}/${name}`, "--server", `nats://127.0.0.1:${server.port}`],
    { netns: network.server },
  );
  assert.equal(published.code, 0, published.stderr);
}

/**
 * Starts `fetch key` on every host into `DIR/hostN/`, with `--timeout
 * timeout(i)` and then `more(i)` (say, its `--fanout` flags) on host i.
 */
export function fetchOnEveryHost(
  { network, server, dir }: HostsTest,
  key: string,
  timeout: (host: number) => string,
  more: (host: number) => string[] = () => [],
): NetProcess[] {
  return network.hosts.map((host, i) =>
    spawnNet([
      "fetch",
      key,
      "--server",
      `nats://${network.serverAddress(i)}:${server.port}`,
      "--out",
      `${dir}/host${i + 1}/`,
      "--timeout",
      timeout(i),
      ...more(i),
    ], { netns: host })
  );
}
