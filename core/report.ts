/**
 * What a p2m process prints: progress, events, summaries and errors.
 *
 * Three modes, chosen by the common flags:
 * - human (default): messages and summaries on stdout; a live progress line
 *   on stderr when stderr is a terminal.
 * - `--json`: one JSON object per line on stdout (`start`, `progress` at
 *   most four times a second, `done`, `error`, plus transport events).
 * - `--quiet`: nothing but errors, on stderr.
 *
 * When stdout carries data (`--out -`), `eventsTo: "stderr"` sends what
 * would go to stdout (JSON events, human lines) to stderr instead.
 *
 * Every human line goes through {@linkcode escapeControls} here, so no
 * caller can print a raw ESC, BEL or newline from a file name; a
 * {@linkcode TextBlock} keeps its own line breaks. Every JSON line goes
 * through {@linkcode jsonLine}, which also escapes what JSON.stringify
 * leaves raw but line splitters break on (U+0085, U+2028, U+2029).
 *
 * @module
 */
import { escapeControls, formatBytes, formatDuration, formatRate, TextBlock } from "./format.ts";

/** How a process reports. */
export type ReportMode = "human" | "json" | "quiet";

const encoder = new TextEncoder();
const PROGRESS_INTERVAL_MS = { human: 100, json: 250, quiet: Infinity } as const;

/** Prints a process's messages, events and progress in the chosen mode. */
export class Reporter {
  /** The mode in use. */
  readonly mode: ReportMode;
  #tty: boolean;
  #lineShown = false;
  #out: { writeSync(p: Uint8Array): number } = Deno.stdout;

  /**
   * Creates a reporter from the `--json` and `--quiet` flags; with
   * `eventsTo: "stderr"`, events and human lines go to stderr (stdout
   * carries data).
   */
  constructor(
    options: { json?: boolean; quiet?: boolean; eventsTo?: "stdout" | "stderr" } = {},
  ) {
    this.mode = options.json ? "json" : options.quiet ? "quiet" : "human";
    this.#tty = this.mode === "human" && Deno.stderr.isTerminal();
    if (options.eventsTo === "stderr") this.#out = Deno.stderr;
  }

  /** Sends events and human lines to stderr from now on (stdout carries data). */
  eventsToStderr(): void {
    this.#out = Deno.stderr;
  }

  /**
   * Prints a line for people (human mode only). A string is one line: any
   * control character in it, line breaks too, is escaped. A TextBlock
   * prints its lines, each escaped.
   */
  info(text: string | TextBlock): void {
    if (this.mode !== "human") return;
    this.#clearLine();
    writeText(this.#out, humanText(text) + "\n");
  }

  /** Emits a JSON event (json mode only). */
  event(event: string, fields: Record<string, unknown> = {}): void {
    if (this.mode !== "json") return;
    writeText(this.#out, jsonLine({ event, time: Date.now(), ...fields }) + "\n");
  }

  /** Reports a failure: one line on stderr, plus an `error` event in json mode. */
  error(message: string, fields: Record<string, unknown> = {}): void {
    this.#clearLine();
    this.event("error", { message, ...fields });
    writeText(Deno.stderr, `p2m: ${escapeControls(message)}\n`);
  }

  /**
   * Reports something the user should know that does not fail the run: one
   * line on stderr, plus a `warning` event in json mode; nothing with --quiet.
   */
  warn(message: string, fields: Record<string, unknown> = {}): void {
    if (this.mode === "quiet") return;
    this.#clearLine();
    this.event("warning", { message, ...fields });
    writeText(Deno.stderr, `p2m: warning: ${escapeControls(message)}\n`);
  }

  /** Starts a progress display for `total` bytes. */
  progress(label: string, total: number): Progress {
    return new Progress(this, label, total);
  }

  /** @internal Draws the live progress line on a terminal. */
  drawLine(text: string): void {
    if (!this.#tty) return;
    writeText(Deno.stderr, `\r\x1b[2K${escapeControls(text)}`);
    this.#lineShown = true;
  }

  /** @internal Whether a live line is worth drawing. */
  get live(): boolean {
    return this.#tty || this.mode === "json";
  }

  #clearLine(): void {
    if (!this.#lineShown) return;
    writeText(Deno.stderr, "\r\x1b[2K");
    this.#lineShown = false;
  }
}

/** Throttled progress for one transfer: call {@linkcode update} per chunk. */
export class Progress {
  #reporter: Reporter;
  #label: string;
  #total: number;
  #start = performance.now();
  #next = 0;
  #interval: number;

  /** Creates a progress display; prefer {@linkcode Reporter.progress}. */
  constructor(reporter: Reporter, label: string, total: number) {
    this.#reporter = reporter;
    this.#label = label;
    this.#total = total;
    this.#interval = reporter.live ? PROGRESS_INTERVAL_MS[reporter.mode] : Infinity;
    this.#next = this.#start + this.#interval;
  }

  /** Records that `done` bytes are through; draws at most a few times a second. */
  update(done: number): void {
    if (this.#interval === Infinity) return;
    const now = performance.now();
    if (now < this.#next) return;
    this.#next = now + this.#interval;
    const seconds = (now - this.#start) / 1000;
    if (this.#reporter.mode === "json") {
      this.#reporter.event("progress", { label: this.#label, bytes: done, total: this.#total });
      return;
    }
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? (this.#total - done) / rate : Infinity;
    const pct = this.#total > 0 ? Math.floor((done / this.#total) * 100) : 100;
    const width = 24;
    const filled = Math.round((pct / 100) * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    this.#reporter.drawLine(
      `${this.#label} [${bar}] ${String(pct).padStart(3)}%  ${formatBytes(done)} / ${
        formatBytes(this.#total)
      }  ${formatRate(done, seconds)}  ETA ${formatDuration(eta)}`,
    );
  }

  /** Seconds since the display started. */
  get elapsed(): number {
    return (performance.now() - this.#start) / 1000;
  }
}

/** A human text as printed: each line escaped, only a block's own breaks kept. */
export function humanText(text: string | TextBlock): string {
  if (text instanceof TextBlock) return text.lines.map(escapeControls).join("\n");
  return escapeControls(text);
}

const JSON_LINE_BREAKERS = /[\u007f-\u009f\u2028\u2029]/g;

/**
 * `JSON.stringify` for a JSON-lines stream: also escapes DEL, the C1
 * controls (U+0080-U+009F, among them NEL, U+0085) and U+2028/U+2029 as
 * `\uXXXX`, which JSON.stringify leaves raw, so that no line splitter and
 * no terminal acts on them. The result parses to the same value.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    JSON_LINE_BREAKERS,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Writes all of `text`; a closed stdout (e.g. `| head`) is not a crash. */
export function writeText(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  let offset = 0;
  try {
    while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
  } catch {
    // A closed stdout (e.g. `| head`) must not turn into a crash.
  }
}
