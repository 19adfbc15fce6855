/**
 * A p2m process under test whose `--json` events can be awaited as they
 * arrive, and which can be signalled, stopped and resumed: what the fault
 * tests need to hit a transfer at a chosen moment.
 *
 * @module
 */
import { p2mArgv } from "../core/permissions.ts";
import { eachLine, type P2mEvent, parseEvent, spawnPiped } from "../tools/runner.ts";

export type { P2mEvent };

/** How a party ended. */
export interface PartyExit {
  /** Exit code (128 + n when killed by signal n). */
  code: number;
  /** The signal that killed it, if any. */
  signal: Deno.Signal | null;
  /** `performance.now()` when the exit was seen. */
  at: number;
}

/** A running `socket.ts` or `sharedmem.ts` with its events and stderr collected. */
export class Party {
  /** A label for messages, e.g. `receiver 2`. */
  readonly label: string;
  /** Every JSON event printed so far, in order. */
  readonly events: P2mEvent[] = [];
  /** Resolves when the process has exited and its output is read. */
  readonly exited: Promise<PartyExit>;
  /** The process id. */
  readonly pid: number;
  #child: Deno.ChildProcess;
  #stderr = "";
  #plain = "";
  #waiters = new Set<() => void>();

  /** Starts `program` with its real permissions; `args` should include `--json`. */
  constructor(
    label: string,
    program: "socket.ts" | "sharedmem.ts",
    args: string[],
    options: { cwd?: string; env?: Record<string, string> } = {},
  ) {
    this.label = label;
    this.#child = spawnPiped(p2mArgv(program, args), options);
    this.pid = this.#child.pid;
    const stdout = eachLine(this.#child.stdout, (line) => this.#onStdout(line));
    const stderr = eachLine(this.#child.stderr, (line) => this.#stderr += line + "\n");
    this.exited = Promise.all([this.#child.status, stdout, stderr]).then(([status]) => {
      this.#notify();
      return { code: status.code, signal: status.signal, at: performance.now() };
    });
  }

  /** Everything the process printed on stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Everything on stdout that was not a JSON event. */
  get text(): string {
    return this.#plain;
  }

  /** Sends a signal; a process that is already gone is not an error. */
  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch { /* already exited */ }
  }

  /**
   * Waits until an event satisfies `predicate` (true) or the process exits
   * without one (false), or fails after `ms`.
   */
  async waitEvent(predicate: (event: P2mEvent) => boolean, ms: number): Promise<boolean> {
    const deadline = performance.now() + ms;
    let exited = false;
    this.exited.then(() => exited = true);
    for (;;) {
      if (this.events.some(predicate)) return true;
      if (exited) return false;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.label}: no such event within ${ms} ms`);
      // Woken by the next event or exit, or after 50 ms at the latest.
      const wake = Promise.withResolvers<void>();
      const timer = setTimeout(wake.resolve, Math.min(left, 50));
      this.#waiters.add(wake.resolve);
      await wake.promise;
      clearTimeout(timer);
      this.#waiters.delete(wake.resolve);
    }
  }

  /** The latest `bytes` this party reported (progress or done), or 0. */
  get bytes(): number {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const bytes = this.events[i].bytes;
      if (typeof bytes === "number") return bytes;
    }
    return 0;
  }

  /** Kills the process if it still runs and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await this.exited;
  }

  #onStdout(line: string): void {
    const event = parseEvent(line);
    if (event) this.events.push(event);
    else this.#plain += line + "\n";
    this.#notify();
  }

  #notify(): void {
    for (const waiter of this.#waiters) waiter();
    this.#waiters.clear();
  }
}
