/**
 * core/args.ts: the strict flag grammar every program parses with (long
 * flags with `=` or a separate value, booleans, one short form, `--`, `-`
 * as a positional), and its one-line refusals.
 */
import assert from "node:assert/strict";
import { FlagError, parseFlags } from "../core/args.ts";

const OPTIONS = {
  peers: { type: "string" },
  out: { type: "string" },
  quiet: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

Deno.test("args: values, booleans, the short form and positionals, in any order", () => {
  assert.deepEqual(parseFlags(["a", "--peers", "4", "--out=x/", "-h", "b", "--quiet"], OPTIONS), {
    values: { peers: "4", out: "x/", help: true, quiet: true },
    positionals: ["a", "b"],
  });
  assert.deepEqual(parseFlags(["--peers", "1", "--peers=2"], OPTIONS).values, { peers: "2" });
  assert.deepEqual(parseFlags([], OPTIONS), { values: {}, positionals: [] });
});

Deno.test("args: a value may start with '-'; '-' and everything after '--' are positional", () => {
  assert.deepEqual(parseFlags(["--peers", "-1", "--out", "-"], OPTIONS).values, {
    peers: "-1",
    out: "-",
  });
  assert.deepEqual(parseFlags(["-", "--", "--peers", "-h"], OPTIONS), {
    values: {},
    positionals: ["-", "--peers", "-h"],
  });
  assert.deepEqual(parseFlags(["--out=", "--peers=--x"], OPTIONS).values, {
    out: "",
    peers: "--x",
  });
});

Deno.test("args: unknown flags, missing values and valued booleans are refused in one line", () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^Unknown option '--bogus'$/],
    [["-x"], /^Unknown option '-x'$/],
    [["-hq"], /^Unknown option '-hq'$/],
    [["--peers"], /^--peers needs a value$/],
    [["--peers", "--quiet"], /^--peers needs a value$/],
    [["--peers", "-h"], /^--peers needs a value$/],
    [["--quiet=yes"], /^Option '--quiet' does not take a value$/],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseFlags(args, OPTIONS),
      (e) => e instanceof FlagError && message.test(e.message),
      args.join(" "),
    );
  }
});
