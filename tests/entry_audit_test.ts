/**
 * shm/entry_audit.ts: the sender's check of the receiver table. Legal
 * histories pass; a forged verdict, a state only the sender writes, a
 * cursor that goes back or runs ahead, and a changed pid are named.
 */
import assert from "node:assert/strict";
import { EntryAudit, type SenderView } from "../shm/entry_audit.ts";
import { ReceiverState } from "../shm/layout.ts";

const MiB = 1024 * 1024;
const streaming: SenderView = {
  published: 107,
  total: 256,
  digestPublished: false,
  chunkSize: MiB,
  fileSize: 256 * MiB,
};
const final: SenderView = { ...streaming, published: 256, digestPublished: true };
const attached = (cursor: number, pid = 42) => ({ state: ReceiverState.Attached, cursor, pid });

Deno.test("entry audit: free, attached, verified at the end after the digest: consistent", () => {
  const audit = new EntryAudit();
  assert.equal(
    audit.observe(0, { state: ReceiverState.Free, cursor: 0, pid: 0 }, streaming),
    undefined,
  );
  assert.equal(audit.observe(0, attached(10), streaming), undefined);
  assert.equal(audit.observe(0, attached(107), streaming), undefined);
  assert.equal(
    audit.observe(0, { state: ReceiverState.Verified, cursor: 256, pid: 42 }, final),
    undefined,
  );
  assert.equal(audit.pid(0), 42);
  // A verdict whose attach the sender never saw is fine too, if it agrees.
  assert.equal(
    audit.observe(1, { state: ReceiverState.Verified, cursor: 256, pid: 7 }, final),
    undefined,
  );
  assert.equal(
    audit.observe(2, { state: ReceiverState.Left, cursor: 0, pid: 8 }, streaming),
    undefined,
  );
});

Deno.test("entry audit: a verdict the receiver could not have reached is named with the real cause", () => {
  const audit = new EntryAudit();
  audit.observe(0, attached(100), streaming);
  assert.equal(
    audit.observe(0, { state: ReceiverState.Verified, cursor: 107, pid: 42 }, streaming),
    "receiver #0's entry says verified at 107.0 MiB of 256.0 MiB, before the digest was published",
  );
  const late = new EntryAudit();
  late.observe(0, attached(100), final);
  assert.match(
    late.observe(0, { state: ReceiverState.Verified, cursor: 200, pid: 42 }, final)!,
    /^receiver #0's entry says verified at 200\.0 MiB of 256\.0 MiB$/,
  );
});

Deno.test("entry audit: states only the sender writes, going back, cursor and pid changes", () => {
  const cases: [string, (audit: EntryAudit) => string | undefined, RegExp][] = [
    ["died, not written by the sender", (a) => {
      a.observe(0, attached(5), streaming);
      return a.observe(0, { state: ReceiverState.Dead, cursor: 5, pid: 42 }, streaming);
    }, /says died, which only the sender writes/],
    ["verified back to attached", (a) => {
      a.observe(0, { state: ReceiverState.Verified, cursor: 256, pid: 42 }, final);
      return a.observe(0, attached(256), final);
    }, /went from verified to attached/],
    ["cursor back", (a) => {
      a.observe(0, attached(50), streaming);
      return a.observe(0, attached(20), streaming);
    }, /cursor went back from 50 to 20/],
    [
      "cursor past published",
      (a) => a.observe(0, attached(108), streaming),
      /108 chunks of the 107/,
    ],
    ["pid changed", (a) => {
      a.observe(0, attached(5, 42), streaming);
      return a.observe(0, attached(6, 43), streaming);
    }, /pid changed from 42 to 43/],
    ["unknown state", (a) => a.observe(0, { state: 99, cursor: 0, pid: 1 }, streaming), /state 99/],
  ];
  for (const [label, run, expected] of cases) {
    const cause = run(new EntryAudit());
    assert.ok(cause, `${label}: not noticed`);
    assert.match(cause, expected, label);
  }
  // The sender's own eviction is consistent, and stays so.
  const audit = new EntryAudit();
  audit.observe(0, attached(5), streaming);
  audit.senderMoved(0, ReceiverState.Stalled);
  assert.equal(
    audit.observe(0, { state: ReceiverState.Stalled, cursor: 5, pid: 42 }, streaming),
    undefined,
  );
});
