/**
 * What each copy method runs: the per-method command lines of a demo or
 * bench run (p2m's two transports, and the baselines cp, tee, socat and the
 * C programs in `tools/baselines/`). The harness runs them
 * (tools/harness.ts) through the process runner (tools/runner.ts).
 *
 * @module
 */
import { p2mArgv } from "../core/permissions.ts";
import { isExecutable } from "./runner.ts";

/** The two p2m transports. */
export const TRANSPORTS = ["shm", "socket"] as const;
/** A p2m transport. */
export type Transport = typeof TRANSPORTS[number];
/**
 * The baselines: tools a user would otherwise reach for (cp, tee, socat),
 * and the C programs in `tools/baselines/` that set the bar for each
 * transport: a tuned shared-memory ring and a fork-per-client sendfile server.
 */
export const BASELINES = ["cp", "tee", "socat", "c-ring", "c-sendfile"] as const;
/** A baseline tool. */
export type Baseline = typeof BASELINES[number];

/**
 * The bench's net section (NATS JetStream on loopback): one `net fetch`
 * alone (one copy), one `net fetch --fanout shm` to N local receivers, and
 * hub-and-spoke, N separate `net fetch` processes.
 */
export const NET_METHODS = ["net-fetch", "net-fanout-shm", "net-hub"] as const;
/** A net method. */
export type NetMethod = typeof NET_METHODS[number];

/** Paths of the compiled C baseline programs. */
export interface CBaselines {
  /** `shm_ring send|receive …` */
  ring: string;
  /** `sendfile_server serve|fetch …` */
  sendfile: string;
}

/**
 * Compiles the C baselines into `dir` with the system C compiler, or
 * returns undefined (and the bench skips them) when there is none.
 */
export async function buildCBaselines(dir: string): Promise<CBaselines | undefined> {
  const source = (name: string) => new URL(`./baselines/${name}.c`, import.meta.url).pathname;
  const built: CBaselines = { ring: `${dir}/shm_ring`, sendfile: `${dir}/sendfile_server` };
  for (const [name, out] of [["shm_ring", built.ring], ["sendfile_server", built.sendfile]]) {
    const cc = await new Deno.Command("cc", {
      args: ["-O2", "-pthread", "-o", out, source(name)],
      stdout: "null",
      stderr: "null",
    }).output().catch(() => undefined);
    if (!cc?.success) return undefined;
  }
  return built;
}

/** What a plan needs to know about its run. */
export interface PlanOptions {
  /** The transport or baseline tool. */
  method: Transport | Baseline | NetMethod;
  /** For transports: verify the digest (false passes `--no-verify`). */
  verify?: boolean;
  /**
   * For transports: `direct` runs each program with `deno run` and its
   * task's flags (what bin/p2m does); `task` goes through `deno task`, which
   * starts a second runtime per process.
   */
  form?: "direct" | "task";
  /** The file to copy. */
  file: string;
  /** How many receivers. */
  peers: number;
  /** A private directory for socket files. */
  workDir: string;
  /** Unique per run: names the socket file and the shared-memory segment. */
  tag: string;
  /** The run's bound, in seconds: p2m's own waits are given as much. */
  timeoutSeconds: number;
  /** Receivers print `--json` events (for progress) instead of nothing. */
  events: boolean;
  /** The C baselines, compiled by {@linkcode buildCBaselines} (c-ring, c-sendfile only). */
  cBaselines?: CBaselines;
  /** The server and the key, for the net methods. */
  nats?: { url: string; key: string };
}

/** Whether `socat` is installed (the socat baseline is skipped otherwise). */
export function hasSocat(): boolean {
  return ["/usr/bin/socat", "/usr/local/bin/socat", "/bin/socat"].some(isExecutable);
}

/** Commands for one run: an optional sender and one command per receiver. */
export interface Plan {
  sender?: string[];
  receivers: string[][];
  /** The sender serves forever (socat): stop it once every receiver is done. */
  serves?: boolean;
  /** Names a killed run can leave behind (a shared-memory object), removed after every run. */
  leaves?: string[];
}

/** The commands that copy `options.file` into each of `peerDirs`. */
export function planRun(options: PlanOptions, peerDirs: string[]): Plan {
  const { file, peers } = options;
  const name = file.slice(file.lastIndexOf("/") + 1);
  const socket = `${options.workDir}/${options.tag}.sock`;
  const json = options.events ? "--json" : "--quiet";
  const noVerify = options.verify === false ? ["--no-verify"] : [];
  const deno = options.form === "task" ? taskArgv : p2mArgv;
  // Generous, as the machine may be busy; the run's own timeout is the bound.
  const wait = String(Math.ceil(options.timeoutSeconds));
  switch (options.method) {
    case "shm": {
      const shmName = `p2m-${options.tag}`;
      return {
        leaves: [`/dev/shm/${shmName}`],
        sender: deno("sharedmem.ts", [
          "sender",
          file,
          "--name",
          shmName,
          "--peers",
          String(peers),
          "--wait",
          wait,
          ...noVerify,
          "--quiet",
        ]),
        receivers: shmReceivers(deno, shmName, peerDirs, wait, json),
      };
    }
    case "net-fetch":
    case "net-hub": {
      const { url, key } = requireNats(options);
      return {
        receivers: peerDirs.map((dir) =>
          netArgv(["fetch", key, "--server", url, "--out", `${dir}/`, "--timeout", wait, "--quiet"])
        ),
      };
    }
    case "net-fanout-shm": {
      const { url, key } = requireNats(options);
      const shmName = `p2m-${options.tag}`;
      return {
        leaves: [`/dev/shm/${shmName}`],
        sender: netArgv([
          "fetch",
          key,
          "--server",
          url,
          "--fanout",
          "shm",
          "--peers",
          String(peers),
          "--name",
          shmName,
          "--wait",
          wait,
          "--timeout",
          wait,
          "--quiet",
        ]),
        receivers: shmReceivers(deno, shmName, peerDirs, wait, json),
      };
    }
    case "socket":
      return {
        sender: deno("socket.ts", [
          "server",
          file,
          "--socket",
          socket,
          "--peers",
          String(peers),
          ...noVerify,
          "--quiet",
        ]),
        receivers: peerDirs.map((dir) =>
          deno("socket.ts", [
            "client",
            "--socket",
            socket,
            "--out",
            `${dir}/`,
            "--timeout",
            wait,
            json,
          ])
        ),
      };
    case "cp":
      return { receivers: peerDirs.map((dir) => ["cp", "--", file, `${dir}/${name}`]) };
    case "tee":
      // One tee writes every copy; sh only sets up the redirections, then execs it.
      return {
        sender: [
          "sh",
          "-c",
          'exec tee -- "$@" <"$0" >/dev/null',
          file,
          ...peerDirs.map((dir) => `${dir}/${name}`),
        ],
        receivers: [],
      };
    case "c-ring": {
      const ring = requireC(options).ring;
      const shmName = `/p2m-c-${options.tag}`;
      return {
        leaves: [`/dev/shm${shmName}`],
        sender: [ring, "send", file, shmName, String(peers)],
        receivers: peerDirs.map((dir) => [ring, "receive", shmName, `${dir}/${name}`]),
      };
    }
    case "c-sendfile": {
      const server = requireC(options).sendfile;
      return {
        sender: [server, "serve", file, socket, String(peers)],
        receivers: peerDirs.map((dir) => [server, "fetch", socket, `${dir}/${name}`]),
      };
    }
    case "socat":
      // socat's fork mode: each connection gets a child that opens the file.
      return {
        sender: ["socat", "-U", `UNIX-LISTEN:${socket},fork,mode=600`, `OPEN:${file},rdonly`],
        receivers: peerDirs.map((dir) => [
          "socat",
          "-u",
          `UNIX-CONNECT:${socket},retry=1000,interval=0.01`,
          `CREATE:${dir}/${name}`,
        ]),
        serves: true,
      };
  }
}

/** `deno task shm|socket ARGS`, as a user types it (the config named, so any cwd works). */
export function taskArgv(program: "socket.ts" | "sharedmem.ts", args: string[]): string[] {
  const config = new URL("../deno.json", import.meta.url).pathname;
  const task = program === "socket.ts" ? "socket" : "shm";
  return [Deno.execPath(), "task", "--quiet", "--config", config, task, ...args];
}

function requireC(options: PlanOptions): CBaselines {
  if (!options.cBaselines) throw new Error(`${options.method} needs the compiled C baselines`);
  return options.cBaselines;
}

function requireNats(options: PlanOptions): { url: string; key: string } {
  if (!options.nats) throw new Error(`${options.method} needs a NATS server and a key`);
  return options.nats;
}

/** One shm receiver per directory, of segment `shmName`. */
function shmReceivers(
  deno: typeof p2mArgv,
  shmName: string,
  peerDirs: string[],
  wait: string,
  json: string,
): string[][] {
  return peerDirs.map((dir) =>
    deno("sharedmem.ts", [
      "receiver",
      "--name",
      shmName,
      "--out",
      `${dir}/`,
      "--timeout",
      wait,
      json,
    ])
  );
}

/** `net.ts ARGS` with exactly the flags of its deno.json task. */
export function netArgv(args: string[]): string[] {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  const flags = (config.tasks.net as string).split(/\s+/).filter((w) => w.startsWith("--allow-"));
  return [
    Deno.execPath(),
    "run",
    ...flags,
    new URL("../net.ts", import.meta.url).pathname,
    ...args,
  ];
}
