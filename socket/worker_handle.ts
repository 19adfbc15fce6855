/**
 * The server's side of one worker subprocess: {@linkcode WorkerHandle}
 * spawns it (ahead of its peer, through {@linkcode WorkerPool}), configures
 * it, relays its reports, keeps the start of its stderr and waits for its
 * exit, after which its one-time socket is removed if it is still there.
 * The messages themselves are in socket/worker_protocol.ts; what a worker
 * does is in socket/worker.ts.
 *
 * @module
 */
import { lines } from "../core/lines.ts";
import { P2mError } from "../core/errors.ts";
import { programPath, SOCKET_PERMISSIONS } from "../core/permissions.ts";
import { socketPathProblem } from "./protocol.ts";
import {
  encodeConfig,
  encodeParentMessage,
  parseReport,
  type WorkerConfig,
  type WorkerReport,
} from "./worker_protocol.ts";

/**
 * The worker's flags: its parent's, less subprocesses and network (its one
 * socket is made through libc, see socket/data_channel.ts).
 */
const WORKER_PERMISSIONS = SOCKET_PERMISSIONS.filter((flag) =>
  flag !== "--allow-net" && flag !== "--allow-run"
);

/** Most bytes of a worker's stderr kept for messages. */
const STDERR_KEPT = 4096;

/** How a worker ended. */
export interface WorkerExit {
  /** Its last report other than `ready`, if any. */
  report?: WorkerReport;
  /** Its exit status. */
  status: Deno.CommandStatus;
  /** Why it failed, in one line, when it did not report `done`. */
  failure?: string;
}

let spawned = 0;

/** One worker subprocess, started before its peer is known. */
export class WorkerHandle {
  /** Its one-time socket path. */
  readonly socketPath: string;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr = "";
  #exit: Promise<WorkerExit> | undefined;

  private constructor(child: Deno.ChildProcess, socketPath: string) {
    this.#child = child;
    this.socketPath = socketPath;
    this.#stdin = child.stdin.getWriter();
  }

  /** Starts a worker process; it waits for its configuration on stdin. */
  static start(runtimeDir: string): WorkerHandle {
    const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    const socketPath = `${runtimeDir}/w-${Deno.pid}-${++spawned}-${suffix}.sock`;
    if (socketPathProblem(socketPath)) {
      throw new P2mError(`runtime directory ${runtimeDir} is too long for socket paths`);
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...WORKER_PERMISSIONS, programPath("socket.ts"), "worker"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new WorkerHandle(child, socketPath);
  }

  /** The worker's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** The start of what it wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Sends the configuration, and the digest later if `digest` is still
   * being computed. stdin stays open: its EOF tells the worker its parent died.
   */
  configure(config: Omit<WorkerConfig, "socketPath">, lateDigest?: Promise<string>): void {
    this.#write(encodeConfig({ ...config, socketPath: this.socketPath }));
    void lateDigest?.then((hex) => this.#write(encodeParentMessage({ type: "digest", hex })))
      .catch(() => {});
  }

  /** Tells the worker its peer was sent `connect`: its connect deadline starts. */
  notified(): void {
    this.#write(encodeParentMessage({ type: "notified" }));
  }

  #write(bytes: Uint8Array): void {
    this.#stdin.write(bytes).catch(() => {}); // a dead worker is noticed at its exit
  }

  /**
   * Relays each report to `onReport` and resolves once the worker has
   * exited and its socket is gone. Call once; later calls get the same exit.
   */
  run(onReport: (report: WorkerReport) => void): Promise<WorkerExit> {
    this.#exit ??= this.#run(onReport);
    return this.#exit;
  }

  /** The exit of a worker whose {@linkcode run} was called. */
  get exited(): Promise<WorkerExit> | undefined {
    return this.#exit;
  }

  async #run(onReport: (report: WorkerReport) => void): Promise<WorkerExit> {
    const stderr = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of this.#child.stderr) {
        if (this.#stderr.length < STDERR_KEPT) this.#stderr += decoder.decode(chunk);
      }
    })();
    let last: WorkerReport | undefined;
    for await (const line of lines(this.#child.stdout)) {
      const report = parseReport(line);
      if (!report) continue; // not a report (a worker prints nothing else)
      if (report.type !== "ready") last = report;
      onReport(report);
    }
    const status = await this.#child.status;
    await stderr;
    await this.#stdin.close().catch(() => {}); // the worker is gone: free the pipe
    // A worker killed before its peer connected cannot unlink its socket.
    removeSocket(this.socketPath);
    if (last?.type === "done") return { report: last, status };
    const failure = last?.type === "error"
      ? last.message
      : last?.type === "missed"
      ? `peer did not connect within ${last.seconds} s to its worker`
      : status.signal
      ? `worker was killed by ${status.signal}`
      : `worker exited with code ${status.code}`;
    return { report: last, status, failure };
  }

  /** Sends a signal; a worker that already exited is left alone. */
  kill(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch { /* already exited */ }
  }

  /** Kills a worker that never got a peer, and removes its socket. */
  discard(): void {
    this.kill("SIGKILL");
    this.#stdin.close().catch(() => {});
    removeSocket(this.socketPath);
  }
}

/** Workers started ahead of their peers (Deno takes a while to start). */
export class WorkerPool {
  #runtimeDir: string;
  #spare: WorkerHandle[] = [];

  /** A pool that starts its workers in `runtimeDir`. */
  constructor(runtimeDir: string) {
    this.#runtimeDir = runtimeDir;
  }

  /** Starts `count` spare workers now. */
  prestart(count: number): void {
    for (let i = 0; i < count; i++) this.#spare.push(WorkerHandle.start(this.#runtimeDir));
  }

  /** Spares not yet taken. */
  get spares(): number {
    return this.#spare.length;
  }

  /** A spare worker, or a new one. */
  take(): WorkerHandle {
    return this.#spare.shift() ?? WorkerHandle.start(this.#runtimeDir);
  }

  /** Kills the spares that never got a peer. */
  discardSpares(): void {
    for (const worker of this.#spare.splice(0)) worker.discard();
  }
}

/** Removes a socket file if one is there. */
export function removeSocket(path: string): void {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch { /* gone, as it should be */ }
}
