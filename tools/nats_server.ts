/**
 * A real `nats-server -js` on a free loopback port (or in a network
 * namespace) with a temp store dir, stopped and removed on dispose: what the
 * NATS tests (tests/net_helpers.ts) and the bench's net section run against.
 *
 * @module
 */
import { delay } from "../core/delay.ts";

const root = new URL("../", import.meta.url).pathname;

/** Where nats-server is, or undefined. */
export const NATS_SERVER_PATH = [
  "/usr/sbin/nats-server",
  "/usr/bin/nats-server",
  "/usr/local/bin/nats-server",
]
  .find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A running nats-server for one test file or test. */
export class NatsServer implements AsyncDisposable {
  /** Client port on 127.0.0.1. */
  readonly port: number;
  /** Monitoring port on 127.0.0.1. */
  readonly monitorPort: number;
  /** The JetStream store directory (kept across restarts). */
  readonly storeDir: string;
  /** The network namespace it runs in (undefined: this one, on loopback). */
  readonly netns: string | undefined;
  #args: string[];
  #child: Deno.ChildProcess | undefined;
  #log: string;

  private constructor(storeDir: string, args: string[], netns: string | undefined) {
    this.port = freePort();
    this.monitorPort = freePort();
    this.storeDir = storeDir;
    this.netns = netns;
    this.#args = args;
    this.#log = `${storeDir}/server.log`;
  }

  /**
   * Starts a server with JetStream; `args` adds e.g. `--user`/`--pass` or TLS
   * flags. With `netns`, it runs in that namespace on all of its addresses.
   */
  static async start(args: string[] = [], options: { netns?: string } = {}): Promise<NatsServer> {
    const dir = await Deno.makeTempDir({ prefix: "p2m-nats-" });
    let server: NatsServer;
    try {
      server = new NatsServer(dir, args, options.netns); // finding free ports may fail
    } catch (error) {
      await Deno.remove(dir, { recursive: true });
      throw error;
    }
    try {
      await server.restart();
    } catch (error) {
      await server[Symbol.asyncDispose]();
      throw error;
    }
    return server;
  }

  /** The URL clients use (nats://127.0.0.1:PORT). */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** The server's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** (Re)starts the server on the same ports and store; waits until it is ready. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error("nats-server is already running");
    try {
      Deno.removeSync(this.#log);
    } catch { /* first start */ }
    const prefix = this.netns ? ["netns", "exec", this.netns, NATS_SERVER_PATH!] : [];
    this.#child = new Deno.Command(this.netns ? "ip" : NATS_SERVER_PATH!, {
      args: [
        ...prefix,
        "-js",
        "-a",
        this.netns ? "0.0.0.0" : "127.0.0.1",
        "-p",
        String(this.port),
        "-m",
        String(this.monitorPort),
        "-sd",
        `${this.storeDir}/js`,
        "-l",
        this.#log,
        ...this.#args,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = performance.now() + 15_000;
    for (;;) {
      let log = "";
      try {
        log = Deno.readTextFileSync(this.#log);
      } catch { /* not yet written */ }
      if (log.includes("Server is ready")) return;
      if (performance.now() > deadline) {
        await this.kill();
        throw new Error(`nats-server did not start:\n${log}`);
      }
      await delay(20);
    }
  }

  /** Kills the server (SIGKILL by default) and waits for it. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch { /* already gone */ }
    await child.status;
  }

  /** JSON from the monitoring endpoint, e.g. `jsz?streams=true&consumers=true`. */
  async monitor(path: string): Promise<Record<string, unknown>> {
    const url = `http://127.0.0.1:${this.monitorPort}/${path}`;
    if (!this.netns) return await (await fetch(url)).json();
    // The endpoint is on the namespace's loopback: ask from inside it.
    const result = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        this.netns,
        Deno.execPath(),
        "run",
        "--allow-net=127.0.0.1",
        `${root}tests/net_monitor.ts`,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      throw new Error(`monitor ${path}: ${new TextDecoder().decode(result.stderr)}`);
    }
    return JSON.parse(new TextDecoder().decode(result.stdout));
  }

  /** Stops the server and removes its store. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill("SIGTERM");
    await Deno.remove(this.storeDir, { recursive: true }).catch(() => {});
  }
}
