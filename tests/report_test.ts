/**
 * core/report.ts and core/format.ts: what p2m prints can never drive a
 * terminal or split a line, whatever the file is called. Checked on the
 * escaping functions and on real senders and receivers of both transports
 * serving a file whose name holds ESC, BEL, an OSC title sequence, a CSI
 * clear-screen, a newline, NEL (U+0085) and U+2028.
 *
 * @module
 */
import assert from "node:assert/strict";
import { escapeControls, formatTable, jsonLine, TextBlock } from "../core/mod.ts";
import { makeFile, type P2mProcess, tempDir, uniqueName } from "./helpers.ts";
import { assertNoSegment, receiver, sender } from "./shm_helpers.ts";
import { socketPlace, startClient, startServer } from "./socket_helpers.ts";

const EVIL = "evil\x1b]0;pwned\x07\x1b[2J\nline2\u0085\u2028\x7f.bin";
const EVIL_ESCAPED = "evil\\x1b]0;pwned\\x07\\x1b[2J\\nline2\\u0085\\u2028\\x7f.bin";
/** Anything a terminal or a line splitter acts on, except the newline that ends a line. */
// deno-lint-ignore no-control-regex -- control characters are what is looked for
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/;

Deno.test("escapeControls makes C0, DEL, C1 and line separators visible", () => {
  assert.equal(escapeControls(EVIL), EVIL_ESCAPED);
  assert.equal(escapeControls("a\tb\rc\u009bd"), "a\\tb\\rc\\u009bd");
  assert.equal(escapeControls("plain é 名前 ok"), "plain é 名前 ok");
  assert.equal(escapeControls(EVIL_ESCAPED), EVIL_ESCAPED, "escaping twice changes nothing");
  const table = formatTable(["name", "n"], [[EVIL, "1"]]);
  assert.ok(table instanceof TextBlock);
  assert.equal(table.lines.length, 3, "a newline in a cell does not add a row");
  assert.ok(table.lines[2].startsWith(EVIL_ESCAPED));
});

Deno.test("jsonLine escapes what JSON.stringify leaves raw, and parses back", () => {
  const value = { name: EVIL, nested: ["\u0085\u2029"] };
  const line = jsonLine(value);
  assert.doesNotMatch(line, RAW_CONTROL);
  assert.ok(line.includes("\\u0085") && line.includes("\\u2028") && line.includes("\\u007f"));
  assert.deepEqual(JSON.parse(line), value);
  assert.match(JSON.stringify(value), /\u0085/, "JSON.stringify alone leaves NEL raw");
});

interface Party {
  start(file: string, dir: string, json: boolean): { send: P2mProcess; receive: P2mProcess };
  cleanup(): Promise<void>;
}

function shmParty(): Promise<Party> {
  const name = uniqueName("p2m-esc");
  return Promise.resolve({
    start: (file, dir, json) => {
      const mode = json ? ["--json"] : [];
      return {
        send: sender(file, name, mode),
        receive: receiver(name, `${dir}/out-${json}`, mode),
      };
    },
    cleanup: () => assertNoSegment(name),
  });
}

async function socketParty(): Promise<Party> {
  const place = await socketPlace();
  return {
    start: (file, _dir, json) => {
      const mode = json ? ["--json"] : [];
      return {
        send: startServer(file, place.socket, ["--peers", "1", ...mode]),
        receive: startClient(place.socket, `${place.dir}/out-${json}`, mode),
      };
    },
    cleanup: () => place[Symbol.asyncDispose](),
  };
}

for (const [transport, makeParty] of [["shm", shmParty], ["socket", socketParty]] as const) {
  Deno.test(`${transport}: a hostile file name is printed escaped, on one line, in human and JSON output`, async () => {
    const dir = await tempDir("p2m-esc-");
    const party = await makeParty();
    try {
      const file = `${dir}/${EVIL}`;
      await makeFile(file, 100_000);

      const human = party.start(file, dir, false);
      const [sent, received] = await Promise.all([human.send.done(), human.receive.done()]);
      assert.equal(sent.code, 0, sent.stderr);
      assert.equal(received.code, 0, received.stderr);
      for (const [what, text] of Object.entries({ sent, received })) {
        for (const stream of ["stdout", "stderr"] as const) {
          assert.doesNotMatch(text[stream], RAW_CONTROL, `${what} ${stream}: ${text[stream]}`);
        }
      }
      const named = sent.stdout.split("\n").filter((line) => line.includes("evil"));
      assert.ok(named.length > 0, sent.stdout);
      assert.ok(named[0].includes(EVIL_ESCAPED), `one line holds the whole name: ${named[0]}`);
      assert.ok(!sent.stdout.split("\n").some((line) => line.startsWith("line2")));

      const json = party.start(file, dir, true);
      const [jsonSent, jsonReceived] = await Promise.all([json.send.done(), json.receive.done()]);
      assert.equal(jsonSent.code, 0, jsonSent.stderr);
      assert.equal(jsonReceived.code, 0, jsonReceived.stderr);
      for (const output of [jsonSent.stdout, jsonReceived.stdout]) {
        assert.doesNotMatch(output, /[\u0085\u2028\u2029]/, "no raw NEL or separator");
        const lines = output.trimEnd().split("\n");
        const events = lines.map((line) => JSON.parse(line));
        assert.ok(events.every((e) => typeof e.event === "string"), output);
      }
      const start = jsonSent.stdout.trimEnd().split("\n").map((line) => JSON.parse(line))
        .find((e) => e.file !== undefined);
      assert.equal(start?.file, file, "the name survives the escaping exactly");
    } finally {
      await party.cleanup();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
