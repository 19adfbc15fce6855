/**
 * Helpers for tests that drive tests/stdio_child.ts over real pipes: spawn
 * it with piped stdio, and follow its JSON lines on stderr in order.
 *
 * @module
 */
import { lines } from "../core/lines.ts";
import { SHM_PERMISSIONS } from "../core/permissions.ts";

/** The JSON lines a child printed, in order, with a way to wait for one. */
export class LineLog {
  readonly seen: Record<string, unknown>[] = [];
  readonly text: string[] = [];
  #waiters: { test: (line: Record<string, unknown>) => boolean; resolve: () => void }[] = [];
  readonly finished: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.finished = (async () => {
      for await (const line of lines(stream)) {
        this.text.push(line);
        let value: Record<string, unknown>;
        try {
          value = JSON.parse(line);
        } catch {
          continue;
        }
        this.seen.push(value);
        this.#waiters = this.#waiters.filter((waiter) => {
          if (!waiter.test(value)) return true;
          waiter.resolve();
          return false;
        });
      }
    })();
  }

  /** Resolves once a line passing `test` was seen (rejects if the stream ends first). */
  async waitFor(test: (line: Record<string, unknown>) => boolean): Promise<void> {
    if (this.seen.some(test)) return;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ test, resolve });
    await Promise.race([
      promise,
      this.finished.then(() => {
        if (!this.seen.some(test)) {
          throw new Error(`stream ended without the awaited line; saw ${this.text.join(" | ")}`);
        }
      }),
    ]);
  }
}

/** Starts tests/stdio_child.ts with stdin, stdout and stderr piped. */
export function spawnStdioChild(args: string[]): { child: Deno.ChildProcess; log: LineLog } {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...SHM_PERMISSIONS,
      new URL("./stdio_child.ts", import.meta.url).pathname,
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  return { child, log: new LineLog(child.stderr) };
}
