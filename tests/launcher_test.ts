/**
 * bin/p2m, the launcher that runs a program without `deno task`'s second
 * runtime: it asks for exactly the permissions of the program's task, and
 * behaves like a Unix tool on a bad command line.
 *
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const launcher = `${root}bin/p2m`;

/** The permission flags of one `exec … run …` line of the launcher. */
function launcherFlags(program: string): string[] {
  const text = Deno.readTextFileSync(launcher).replace(/\\\n\s*/g, " ");
  const line = text.split("\n").find((l) => l.includes(`"$root/${program}"`));
  assert.ok(line, `bin/p2m runs ${program}`);
  return line.split(/\s+/).filter((word) => word.startsWith("--allow-")).sort();
}

/** The permission flags of a deno.json task. */
function taskFlags(task: string): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  return (config.tasks[task] as string).split(/\s+/).filter((w) => w.startsWith("--allow-"))
    .sort();
}

Deno.test("bin/p2m asks for exactly its task's permissions", () => {
  assert.deepEqual(launcherFlags("sharedmem.ts"), taskFlags("shm"));
  assert.deepEqual(launcherFlags("socket.ts"), taskFlags("socket"));
  assert.deepEqual(launcherFlags("net.ts"), taskFlags("net"));
});

Deno.test("bin/p2m: --help works from any directory; a bad program exits 2", async () => {
  const help = await new Deno.Command(launcher, { args: ["shm", "--help"], cwd: "/" }).output();
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /sender/);
  const bad = await new Deno.Command(launcher, { args: ["nope"], stderr: "piped" }).output();
  assert.equal(bad.code, 2);
  assert.match(new TextDecoder().decode(bad.stderr), /unknown program 'nope'/);
  const none = await new Deno.Command(launcher, { stderr: "piped" }).output();
  assert.equal(none.code, 2);
});
