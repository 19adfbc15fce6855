/**
 * core/errors.ts: one family of expected failures, and the one mapping
 * from a thrown value to the user's line and exit code (describeFailure),
 * which the CLI's main wrapper applies at the process edge.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  debugTrace,
  decodeHeader,
  describeFailure,
  EXIT_FAILURE,
  EXIT_USAGE,
  P2mError,
  UsageError,
  VerifyError,
  WireError,
} from "../core/mod.ts";
import { LibcError } from "../ffi/errors.ts";
import { spawnP2m } from "./helpers.ts";

Deno.test("errors: WireError, VerifyError, UsageError and LibcError are P2mErrors", () => {
  const wire = (() => {
    try {
      decodeHeader(new Uint8Array(4));
    } catch (error) {
      return error;
    }
  })();
  assert.ok(wire instanceof WireError);
  assert.ok(wire instanceof P2mError, "WireError joins the family");
  assert.ok(new VerifyError("a", "b") instanceof P2mError);
  assert.ok(new LibcError("open", 2, "/nope") instanceof P2mError);
  assert.equal(new UsageError("x").exitCode, EXIT_USAGE);
});

Deno.test("errors: describeFailure maps each kind once", () => {
  assert.deepEqual(describeFailure(new WireError("truncated header")), {
    message: "truncated header",
    exitCode: EXIT_FAILURE,
    bug: false,
  });
  assert.equal(describeFailure(new UsageError("bad")).exitCode, EXIT_USAGE);
  const libc = describeFailure(new LibcError("mmap", 14, "segment"));
  assert.match(libc.message, /^mmap\(segment\): Bad address \(errno 14\)$/);
  assert.equal(libc.bug, false);
  // An OS error no layer gave context: its reason, not "Error: ... (os error 14)".
  const os = describeFailure(new Deno.errors.PermissionDenied("Permission denied (os error 13)"));
  assert.deepEqual(os, { message: "permission denied", exitCode: EXIT_FAILURE, bug: false });
  const bug = describeFailure(new TypeError("x is undefined"));
  assert.equal(bug.bug, true);
  assert.match(bug.message, /^internal error \(a bug in p2m\): TypeError: x is undefined/);
  assert.equal(describeFailure("thrown string").bug, true);
});

Deno.test("errors: --debug shows the whole chain of causes", () => {
  const root = new Deno.errors.NotFound("No such file or directory (os error 2)");
  const wrapped = new P2mError("cannot open x: no such file or directory", { cause: root });
  const trace = debugTrace(new P2mError("transfer failed", { cause: wrapped }));
  assert.match(trace, /^P2mError: transfer failed\n/);
  assert.match(trace, /caused by: P2mError: cannot open x/);
  assert.match(trace, /caused by: NotFound: No such file or directory/);
});

Deno.test("errors: a real run prints one escaped line, and with --debug its causes", async () => {
  const missing = `/nonexistent-${crypto.randomUUID()}/f\x1b[2J.bin`;
  const plain = await spawnP2m("sharedmem.ts", ["sender", missing, "--name", "p2m-errt"]).done();
  assert.equal(plain.code, 1);
  assert.equal(plain.stderr.trim().split("\n").length, 1, plain.stderr);
  assert.match(plain.stderr, /^p2m: cannot open .*f\\x1b\[2J\.bin: no such file or directory\n$/);
  const debug = await spawnP2m("sharedmem.ts", ["sender", missing, "--name", "p2m-errt", "--debug"])
    .done();
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /caused by: /, "the cause is kept and shown");
});
