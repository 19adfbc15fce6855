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
import { NATS_SERVER_PATH, NatsServer } from "../tools/nats_server.ts";
import { type P2mProcess, spawnReceiving, withTempDir } from "./helpers.ts";

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
  const child = new Deno.Command(options.netns ? "ip" : run[0], {
    args: options.netns ? ["netns", "exec", options.netns, ...run] : run.slice(1),
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
    clearEnv: false,
    stdin: options.stdin ?? "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  return {
    child,
    async done() {
      const result = await output;
      const text = new TextDecoder();
      return {
        code: result.code,
        stdout: text.decode(result.stdout),
        stdoutBytes: result.stdout,
        stderr: text.decode(result.stderr),
      };
    },
  };
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
