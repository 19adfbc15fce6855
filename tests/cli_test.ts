/**
 * core/cli.ts: the one number grammar of every flag, the parser's handling
 * of values that start with '-', and the process edge (exit code, one
 * line, the range named) through real `socket.ts` / `sharedmem.ts` runs.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  intFlag,
  parseCommand,
  receivingFlags,
  secondsFlag,
  sendingFlags,
  sizeFlag,
  UsageError,
} from "../core/mod.ts";
import { spawnP2m } from "./helpers.ts";

const MALFORMED = ["0x10", "1e3", " 5", "5 ", "-1", "+1", "", "1_000", "Infinity", "NaN", "٣"];

Deno.test("cli: whole numbers are decimal digits within the range, and say the range", () => {
  assert.equal(intFlag("4", "peers", 1, { max: 128 }), 4);
  assert.equal(intFlag("128", "peers", 1, { max: 128 }), 128);
  assert.equal(intFlag(undefined, "peers", 7, { max: 128 }), 7);
  for (const bad of [...MALFORMED, "1.5", "0", "129"]) {
    assert.throws(
      () => intFlag(bad, "peers", 1, { max: 128 }),
      (e) =>
        e instanceof UsageError &&
        e.message === `--peers must be a whole number from 1 to 128, not '${bad}'`,
      bad,
    );
  }
  // 0 only where the flag gives it a meaning, and then the message says so.
  assert.equal(intFlag("0", "peers", 1, { max: 9, zero: "no limit" }), 0);
  assert.throws(() => intFlag("x", "peers", 1, { max: 9, zero: "no limit" }), /or 0 for no limit/);
});

Deno.test("cli: seconds are a decimal, at least 0.1 unless a flag says otherwise", () => {
  assert.equal(secondsFlag("5", "wait", 1), 5);
  assert.equal(secondsFlag("0.5", "wait", 1), 0.5);
  assert.equal(secondsFlag("0.1", "wait", 1), 0.1);
  for (const bad of [...MALFORMED, "0", "0.05", ".5", "5.", "86401"]) {
    assert.throws(
      () => secondsFlag(bad, "wait", 1),
      (e) =>
        e instanceof UsageError &&
        e.message.startsWith("--wait must be a number of seconds from 0.1 to 86400") &&
        e.message.endsWith(`not '${bad}'`),
      bad,
    );
  }
  assert.equal(secondsFlag("0", "grace", 5, { min: 1, zero: "stop at once" }), 0);
});

Deno.test("cli: sizes are whole bytes or a decimal with a unit", () => {
  assert.equal(sizeFlag("4096", "chunk", 0), 4096);
  assert.equal(sizeFlag("64M", "chunk", 0), 64 * 2 ** 20);
  assert.equal(sizeFlag("1.5GiB", "chunk", 0), 1.5 * 2 ** 30);
  assert.equal(sizeFlag("2kb", "chunk", 0), 2000);
  assert.equal(sizeFlag("1T", "chunk", 0), 2 ** 40);
  for (const bad of [...MALFORMED, "1.5", "64 M", "64MX", "M"]) {
    assert.throws(
      () => sizeFlag(bad, "chunk", 0, { min: 4096, max: 2 ** 26 }),
      (e) =>
        e instanceof UsageError &&
        e.message.startsWith("--chunk must be a size from 4096 to 67108864 bytes") &&
        e.message.endsWith(`not '${bad}'`),
      bad,
    );
  }
});

Deno.test("cli: --limit-rate below 1 byte/s is refused, never 'no limit'", () => {
  assert.equal(sendingFlags({}).limitRate, 0, "left out: no limit");
  assert.equal(sendingFlags({ "limit-rate": "1" }).limitRate, 1);
  assert.equal(sendingFlags({ "limit-rate": "1.5K" }).limitRate, 1536);
  for (const bad of ["0", "0.4", "0.0001K", "-5"]) {
    assert.throws(
      () => sendingFlags({ "limit-rate": bad }),
      /--limit-rate must be a size of at least 1 byte/,
      bad,
    );
  }
});

Deno.test("cli: a receiver's --timeout 0 is refused (it would always fail)", () => {
  assert.deepEqual(receivingFlags({}, 10), {
    out: undefined,
    timeoutSeconds: 10,
    force: false,
    expect: undefined,
  });
  assert.equal(receivingFlags({ timeout: "0.3", force: true }, 10).timeoutSeconds, 0.3);
  for (const bad of ["0", "0x10", "1e3", " 5"]) {
    assert.throws(() => receivingFlags({ timeout: bad }, 10), /--timeout must be .* from 0\.1/);
  }
});

Deno.test("cli: a value starting with '-' reaches the flag's own check", () => {
  const spec = {
    name: "t",
    usage: "Usage: t",
    options: { peers: { type: "string" }, json: { type: "boolean" } },
  } as const;
  const parsed = parseCommand(spec, ["--peers", "-1"]);
  assert.equal(parsed.values.peers, "-1");
  assert.throws(
    () => intFlag(parsed.values.peers, "peers", 1, { max: 128 }),
    /--peers must be a whole number from 1 to 128, not '-1'/,
  );
  assert.equal(parseCommand(spec, ["--peers=-2"]).values.peers, "-2");
  for (const args of [["--peers"], ["--peers", "--json"], ["--peers", "-h"]]) {
    assert.throws(() => parseCommand(spec, args), /^UsageError: --peers needs a value$/, args[1]);
  }
  // After "--" nothing is an option.
  assert.throws(() => parseCommand(spec, ["--", "--peers"]), /unexpected argument '--peers'/);
  assert.throws(() => parseCommand(spec, ["--bogus"]), /Unknown option '--bogus'$/);
});

Deno.test("cli: real programs exit 2 on a bad number and name the valid range", async () => {
  const cases: [program: "socket.ts" | "sharedmem.ts", args: string[], message: RegExp][] = [
    ["socket.ts", ["server", "f", "--peers", "-1"], /--peers must be a whole number from 1 to/],
    ["socket.ts", ["server", "f", "--limit-rate", "0.4"], /--limit-rate must be a size of at/],
    ["socket.ts", ["server", "f", "--stall-timeout", "0x10"], /--stall-timeout must be a number/],
    ["sharedmem.ts", ["sender", "f", "--wait", "1e3"], /--wait must be a number of seconds/],
    ["sharedmem.ts", ["sender", "f", "--slots", " 5"], /--slots must be a whole number from 1/],
    ["sharedmem.ts", ["receiver", "--timeout", "0"], /--timeout must be a number of seconds/],
  ];
  for (const [program, args, message] of cases) {
    const result = await spawnP2m(program, args).done();
    const what = `${program} ${args.join(" ")}: ${result.stderr}`;
    assert.equal(result.code, 2, what);
    assert.match(result.stderr, message, what);
    assert.doesNotMatch(result.stderr, /ambiguous/, what);
    assert.match(result.stderr, /Usage:/, what);
  }
});
