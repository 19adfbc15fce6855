/**
 * The number grammar of every p2m flag: whole numbers, seconds and byte
 * sizes each have one form, one default range and one message that names
 * the range. core/cli.ts re-exports them for the commands.
 *
 * @module
 */
import { UsageError } from "./errors.ts";

/**
 * The number grammar of every p2m flag, one form per kind (printed by
 * `--help` through {@linkcode NUMBER_HELP}):
 *
 * - a whole number (`N`): decimal digits only (`4`, `128`);
 * - seconds (`S`): decimal digits with an optional fraction (`5`, `0.5`);
 * - a size in bytes (`B`): a whole number of bytes (`4096`), or a decimal
 *   with a unit (`64K`, `1.5MiB`, `2G`): K, M, G, T and KiB ... TiB are
 *   powers of 1024, KB ... TB powers of 1000; the result is rounded to a
 *   whole byte.
 *
 * No sign, no spaces, no hex (`0x10`), no exponent (`1e3`). A value out of
 * the flag's range is refused with a message naming the range. 0 is in
 * range only where the flag allows it explicitly (`zero`), and --help says
 * what it means there.
 */
export interface FlagRange {
  /** Smallest value allowed (besides 0 with `zero`). */
  min?: number;
  /** Largest value allowed. */
  max?: number;
  /** If set, 0 is also allowed and means this (e.g. "no limit"). */
  zero?: string;
}

/** The `--help` paragraph that explains the number grammar. */
export const NUMBER_HELP = `
Numbers: N is a whole number (4); S is seconds, a decimal (5, 0.5); B is
bytes, plain (4096) or with a unit (64K, 1.5M, 2GiB; K M G T = KiB MiB GiB
TiB, KB MB GB TB = powers of 1000). No signs, spaces, hex or exponents.
0 is accepted only where an option says what it means.
`;

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** One kind of number: its form, its default range and how its message reads. */
interface NumberKind {
  /** "a whole number", "a number of seconds", "a size". */
  noun: string;
  /** After the range: the unit, e.g. " bytes". */
  unit: string;
  /** After the range and unit: examples of the form. */
  examples: string;
  /** The range when a flag gives none. */
  min: number;
  max: number;
  /** The value, NaN if `text` is not of this form; may be fractional (rounded later). */
  parse(text: string): number;
  /** Whole values only (the parsed value is rounded). */
  whole: boolean;
}

const WHOLE: NumberKind = {
  noun: "a whole number",
  unit: "",
  examples: "",
  min: 1,
  max: Number.MAX_SAFE_INTEGER,
  parse: (text) => /^[0-9]+$/.test(text) ? Number(text) : NaN,
  whole: true,
};

const SECONDS: NumberKind = {
  noun: "a number of seconds",
  unit: "",
  examples: " (e.g. 5 or 0.5)",
  min: 0.1,
  max: 86_400,
  parse: (text) => /^[0-9]+(?:\.[0-9]+)?$/.test(text) ? Number(text) : NaN,
  whole: false,
};

const SIZE: NumberKind = {
  noun: "a size",
  unit: " bytes",
  examples: " (e.g. 4096, 64K, 1.5M)",
  min: 0,
  max: Number.MAX_SAFE_INTEGER,
  parse(text) {
    const match = /^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$/.exec(text);
    const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
    // A fraction needs a unit: bytes are whole.
    if (!match || !unit || (unit === 1 && match[1].includes("."))) return NaN;
    return Number(match[1]) * unit;
  },
  whole: true,
};

/** Checks one flag's value against its kind and range, or throws UsageError. */
function numberFlag(
  kind: NumberKind,
  value: string | undefined,
  flag: string,
  fallback: number,
  range: FlagRange,
): number {
  if (value === undefined) return fallback;
  const { min = kind.min, max = kind.max } = range;
  const exact = kind.parse(value);
  const n = kind.whole ? Math.round(exact) : exact;
  if (n === 0 && range.zero) return 0;
  if (!Number.isFinite(n) || n > Number.MAX_SAFE_INTEGER || exact < min || n > max) {
    const zero = range.zero ? `, or 0 for ${range.zero}` : "";
    const unit = min === 1 ? kind.unit.replace(/s$/, "") : kind.unit;
    const span = max >= Number.MAX_SAFE_INTEGER
      ? `of at least ${min}${unit}`
      : `from ${min} to ${max}${kind.unit}`;
    throw new UsageError(
      `--${flag} must be ${kind.noun} ${span}${zero}${kind.examples}, not '${value}'`,
    );
  }
  return n;
}

/** Parses one flag's value (undefined: `fallback`) within `range`, or throws UsageError. */
export type FlagParser = (
  value: string | undefined,
  flag: string,
  fallback: number,
  range?: FlagRange,
) => number;

function parserFor(kind: NumberKind): FlagParser {
  return (value, flag, fallback, range = {}) => numberFlag(kind, value, flag, fallback, range);
}

/** A whole-number flag (default range 1 up). */
export const intFlag: FlagParser = parserFor(WHOLE);
/** A seconds flag: a decimal (default range 0.1 to 86400). */
export const secondsFlag: FlagParser = parserFor(SECONDS);
/** A byte-size flag such as `4096`, `256K` or `1.5MiB` (default range 0 up). */
export const sizeFlag: FlagParser = parserFor(SIZE);
