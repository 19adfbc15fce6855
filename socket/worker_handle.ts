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
import { delay } from "../core/delay.ts";
import { lines } from "../core/lines.ts";
import { P2mError } from "../core/errors.ts";
import { SOCKET_PERMISSIONS } from "../core/permissions.ts";
import { socketPathProblem } from "./protocol.ts";
import { StallClock } from "./stall_clock.ts";
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

/**
 * The worker's entry point: it loads only what a worker needs (about half
 * the start-up CPU of `socket.ts worker`; numbers in socket/worker_main.ts).
 */
const WORKER_PROGRAM = new URL("./worker_main.ts", import.meta.url).pathname;

/** The command line that starts a worker: its own entry point, with its parent's flags less two. */
export function workerArgv(): string[] {
  return [Deno.execPath(), "run", ...WORKER_PERMISSIONS, WORKER_PROGRAM];
}

/** How often {@linkcode WorkerHandle.exitedWithin} looks (ms). */
const EXIT_POLL_MS = 50;
/** Most bytes of a worker's stderr kept for messages. */
const STDERR_KEPT = 4096;

/** How a worker's session ended. */
export interface SessionEnd {
  /** Its last report other than `ready`, if any. */
  report?: WorkerReport;
  /** Why it failed, in one line, when it did not report `done`. */
  failure?: string;
  /** Whether the worker is still alive and may be configured again (`missed`). */
  reusable: boolean;
}

/** The part of a {@linkcode WorkerConfig} the server chooses (the handle picks the socket). */
export type SessionConfig = Omit<WorkerConfig, "socketPath">;

let spawned = 0;

/** One worker subprocess, started before its peer is known. */
export class WorkerHandle {
  #runtimeDir: string;
  #socketPath: string;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #stderr = "";
  #onReport: (report: WorkerReport) => void = () => {};
  #session: PromiseWithResolvers<SessionEnd> | undefined;
  #last: WorkerReport | undefined;
  #sessions = 0;
  #alive = true;
  /** Resolves once the process has exited and its socket is gone. */
  readonly exited: Promise<SessionEnd>;

  private constructor(child: Deno.ChildProcess, runtimeDir: string) {
    this.#child = child;
    this.#runtimeDir = runtimeDir;
    this.#socketPath = WorkerHandle.#newPath(runtimeDir);
    this.#stdin = child.stdin.getWriter();
    this.exited = this.#watch();
    void this.exited.then((end) => {
      this.#alive = false;
      this.#endSession(end);
    });
  }

  /** Whether the process has not exited yet (as far as its pipes tell). */
  get alive(): boolean {
    return this.#alive;
  }

  static #newPath(runtimeDir: string): string {
    const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    const path = `${runtimeDir}/w-${Deno.pid}-${++spawned}-${suffix}.sock`;
    if (socketPathProblem(path)) {
      throw new P2mError(`runtime directory ${runtimeDir} is too long for socket paths`);
    }
    return path;
  }

  /** Starts a worker process; it waits for its configuration on stdin. */
  static start(runtimeDir: string): WorkerHandle {
    WorkerHandle.#newPath(runtimeDir); // a runtime dir too long fails before any spawn
    const [program, ...args] = workerArgv();
    const child = new Deno.Command(program, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new WorkerHandle(child, runtimeDir);
  }

  /** The current session's one-time socket path. */
  get socketPath(): string {
    return this.#socketPath;
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
   * Starts a session: sends the configuration (with a fresh one-time socket
   * path), and the digest later if `lateDigest` is still being computed.
   * Reports go to `onReport`. Resolves when the session ends: at `missed`
   * (the worker lives on, reusable) or when the process exits. stdin stays
   * open: its EOF tells the worker its parent died.
   */
  configure(
    config: SessionConfig,
    lateDigest: Promise<string> | undefined,
    onReport: (report: WorkerReport) => void,
  ): Promise<SessionEnd> {
    if (this.#sessions++ > 0) this.#socketPath = WorkerHandle.#newPath(this.#runtimeDir);
    this.#onReport = onReport;
    this.#last = undefined;
    this.#session = Promise.withResolvers<SessionEnd>();
    const session = this.#session.promise;
    this.#write(encodeConfig({ ...config, socketPath: this.#socketPath }));
    void lateDigest?.then((hex) => this.#write(encodeParentMessage({ type: "digest", hex })))
      .catch(() => {});
    return session;
  }

  /** Tells the worker its peer was sent `connect`: its connect deadline starts. */
  notified(): void {
    this.#write(encodeParentMessage({ type: "notified" }));
  }

  #write(bytes: Uint8Array): void {
    this.#stdin.write(bytes).catch(() => {}); // a dead worker is noticed at its exit
  }

  #endSession(end: SessionEnd): void {
    this.#session?.resolve(end);
    this.#session = undefined;
    this.#onReport = () => {};
  }

  async #watch(): Promise<SessionEnd> {
    const stderr = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of this.#child.stderr) {
        if (this.#stderr.length < STDERR_KEPT) this.#stderr += decoder.decode(chunk);
      }
    })();
    for await (const line of lines(this.#child.stdout)) {
      const report = parseReport(line);
      if (!report) continue; // not a report (a worker prints nothing else)
      if (report.type !== "ready") this.#last = report;
      this.#onReport(report);
      if (report.type === "missed") {
        removeSocket(this.#socketPath);
        this.#endSession({ report, failure: missedText(report.seconds), reusable: true });
      }
    }
    const status = await this.#child.status;
    await stderr;
    await this.#stdin.close().catch(() => {}); // the worker is gone: free the pipe
    // A worker killed before its peer connected cannot unlink its socket.
    removeSocket(this.#socketPath);
    const last = this.#last;
    if (last?.type === "done") return { report: last, reusable: false };
    const failure = last?.type === "error"
      ? last.message
      : last?.type === "missed"
      ? missedText(last.seconds)
      : status.signal
      ? `worker was killed by ${status.signal}`
      : `worker exited with code ${status.code}`;
    return { report: last, failure, reusable: false };
  }

  /**
   * Its exit, or undefined if it has not exited within `ms` of this
   * process's running time: after the server itself was stopped, the exit
   * that waited in its pipes is read before the worker is given up on.
   */
  async exitedWithin(ms: number): Promise<SessionEnd | undefined> {
    let end: SessionEnd | undefined;
    const exited = this.exited.then((value) => end = value);
    const clock = new StallClock(ms, EXIT_POLL_MS * 4);
    // Answered the moment the worker exits (a peer's commit waits on
    // this), not at the next look: the looks only keep the clock.
    while (end === undefined && !clock.tick()) {
      await Promise.race([exited, delay(EXIT_POLL_MS)]);
    }
    return end;
  }

  /** Sends a signal; a worker that already exited is left alone. */
  kill(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch { /* already exited */ }
  }

  /** Kills a worker that has no peer, and removes its socket. */
  discard(): void {
    this.kill("SIGKILL");
    this.#stdin.close().catch(() => {});
    removeSocket(this.#socketPath);
  }
}

function missedText(seconds: number): string {
  return `peer did not connect within ${seconds} s to its worker`;
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
    for (let spare; (spare = this.#spare.shift());) if (spare.alive) return spare;
    return WorkerHandle.start(this.#runtimeDir);
  }

  /** Keeps a live worker whose peer never came, for the next peer. */
  giveBack(worker: WorkerHandle): void {
    this.#spare.push(worker);
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
