/**
 * The command-line parser every p2m program uses: `parseArgs` of
 * `node:util` in strict mode, minus what p2m does not use, minus its cost.
 * Loading `node:util` costs about 12 ms of CPU in every process (34 → 46 ms
 * for an empty `deno run`, `perf stat -r 15`), and p2m starts up to 17
 * processes per transfer.
 *
 * The grammar:
 * - `--name=value` and `--name value` for a string flag; the value may
 *   start with '-' (`--peers -1` reaches the flag's own range check), but a
 *   known flag or nothing after `--name` is "--name needs a value";
 * - `--name` for a boolean flag (`--name=x` is refused), and its `short`
 *   form (`-h`);
 * - `--` ends the flags: everything after it is positional, as is `-`;
 * - an unknown flag is "Unknown option '--x'"; a flag given twice keeps
 *   its last value.
 *
 * @module
 */

/** One flag: a string that takes a value, or a boolean; optionally a one-letter short form. */
export interface FlagOption {
  /** Whether the flag takes a value. */
  type: "string" | "boolean";
  /** One-letter short form (`h` for `-h`). */
  short?: string;
}

/** Flags by long name. */
export type FlagOptions = Record<string, FlagOption>;

/** The values given for `O`'s flags (absent when not given). */
export type FlagValues<O extends FlagOptions> = {
  -readonly [K in keyof O]?: O[K]["type"] extends "string" ? string : boolean;
};

/** What {@linkcode parseFlags} found. */
export interface ParsedFlags<O extends FlagOptions> {
  /** The flags given. */
  values: FlagValues<O>;
  /** The other arguments, in order. */
  positionals: string[];
}

/** A command line that does not fit the grammar; the message says why in one line. */
export class FlagError extends Error {
  /** Creates the error with its message. */
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** Parses `args` against `options`; throws {@linkcode FlagError} on anything it cannot place. */
export function parseFlags<O extends FlagOptions>(args: string[], options: O): ParsedFlags<O> {
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  const byShort = new Map(
    Object.entries(options).flatMap(([name, o]) => o.short ? [[o.short, name]] : []),
  );
  const isFlag = (arg: string) => {
    const long = /^--([^=]+)/.exec(arg)?.[1];
    return long !== undefined ? long in options : byShort.has(/^-([^-])$/.exec(arg)?.[1] ?? "");
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const long = /^--([^=]+)(?:=(.*))?$/s.exec(arg);
    const name = long ? long[1] : byShort.get(/^-([^-])$/.exec(arg)?.[1] ?? "");
    const option = name === undefined ? undefined : options[name];
    if (name === undefined || option === undefined) throw new FlagError(`Unknown option '${arg}'`);
    const inline = long?.[2];
    if (option.type === "boolean") {
      if (inline !== undefined) throw new FlagError(`Option '--${name}' does not take a value`);
      values[name] = true;
    } else if (inline !== undefined) {
      values[name] = inline;
    } else {
      const next = args[i + 1];
      if (next === undefined || isFlag(next)) throw new FlagError(`--${name} needs a value`);
      values[name] = next;
      i++;
    }
  }
  return { values: values as FlagValues<O>, positionals };
}
