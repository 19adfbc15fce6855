/**
 * Human-readable sizes, rates, durations and tables, and the one escaping
 * of untrusted text for a terminal ({@linkcode escapeControls}), which the
 * Reporter applies to every line it prints.
 *
 * @module
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** Formats a byte count with binary units, e.g. `64.0 MiB`. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** GiB per second for `bytes` moved in `seconds`. */
export function gibPerSecond(bytes: number, seconds: number): number {
  return seconds > 0 ? bytes / 2 ** 30 / seconds : 0;
}

/** Formats a rate, e.g. `1.23 GiB/s`. */
export function formatRate(bytes: number, seconds: number): string {
  const rate = seconds > 0 ? bytes / seconds : 0;
  return `${formatBytes(rate)}/s`;
}

/** Formats seconds as `m:ss`, or `h:mm:ss` past an hour. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/**
 * Characters that a terminal or a line splitter acts on: C0 controls
 * (ESC, BEL, CR, LF ...), DEL, C1 controls (U+0080-U+009F, e.g. NEL and the
 * 8-bit CSI/OSC), and the Unicode line and paragraph separators.
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SHORT_ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * Makes untrusted text (a file name, a peer's message) inert on a terminal
 * and keeps it on one line: every control character becomes a visible
 * escape (`\n`, `\x1b`, `\u0085`, `\u2028`). Printable text, including
 * non-ASCII letters, is left alone.
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROL, (ch) => {
    const code = ch.charCodeAt(0);
    return SHORT_ESCAPES[ch] ??
      (code < 0x80 ? `\\x${hex(code, 2)}` : `\\u${hex(code, 4)}`);
  });
}

function hex(code: number, digits: number): string {
  return code.toString(16).padStart(digits, "0");
}

/**
 * Text of several lines whose line breaks are meant (a table). The Reporter
 * escapes each line on its own and keeps the breaks; a plain string it
 * prints as one line, escaping any break inside it.
 */
export class TextBlock {
  /** The lines, without their breaks. */
  readonly lines: readonly string[];

  /** Creates a block from its lines. */
  constructor(lines: readonly string[]) {
    this.lines = lines;
  }

  /** The lines joined by newlines (unescaped). */
  toString(): string {
    return this.lines.join("\n");
  }
}

/**
 * Renders rows as an aligned text table with a header line. Cells are
 * escaped first, so a name with a newline cannot split a row.
 */
export function formatTable(headers: string[], rows: string[][]): TextBlock {
  const cells = rows.map((row) => row.map(escapeControls));
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...cells.map((r) => (r[i] ?? "").length))
  );
  const line = (row: string[]) =>
    row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join("  ")
      .trimEnd();
  return new TextBlock([
    line(headers),
    line(widths.map((w) => "-".repeat(w))),
    ...cells.map(line),
  ]);
}
