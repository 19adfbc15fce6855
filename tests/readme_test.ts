/**
 * README.md and the programs cannot drift apart: every command line in the
 * README's `sh` blocks that runs a p2m program is run in its `--help` form,
 * from a shell whose PATH is set the way the README says, and every flag the
 * README line uses must appear in that help.
 *
 * @module
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Program words that take a sub-command before their flags. */
const SUBCOMMANDS: Record<string, string[]> = {
  shm: ["sender", "receiver"],
  socket: ["server", "client"],
  net: ["publish", "fetch", "ls", "rm"],
};

interface ReadmeCommand {
  /** The README line, as written. */
  line: string;
  /** The words that name the program, e.g. `p2m shm sender` or `deno task bench`. */
  program: string[];
  /** The long flags the line uses. */
  flags: string[];
}

/** The p2m command lines of README.md's sh blocks. */
export function readmeCommands(markdown: string): ReadmeCommand[] {
  const commands: ReadmeCommand[] = [];
  for (const [, block] of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const raw of block.split("\n")) {
      const line = raw.replace(/\s+#.*$/, "").trim();
      if (line === "" || line.startsWith("#")) continue;
      for (const part of line.split(/&&|\|\|?|;/)) {
        const words = part.trim().replace(/\s*&$/, "").split(/\s+/).filter((w) => w !== "");
        const start = words[0] === "p2m" ? 1 : words[0] === "deno" && words[1] === "task" ? 2 : -1;
        if (start < 0 || words.length <= start) continue;
        const name = words[start];
        const sub = SUBCOMMANDS[name]?.includes(words[start + 1]) ? 1 : 0;
        if (SUBCOMMANDS[name] && !sub) continue; // e.g. `p2m shm --help` itself
        commands.push({
          line,
          program: words.slice(0, start + 1 + sub),
          flags: words.slice(start + 1 + sub).filter((w) => w.startsWith("--"))
            .map((w) => w.replace(/=.*$/, "")),
        });
      }
    }
  }
  return commands;
}

Deno.test("README: every p2m command line runs in its --help form, with the flags it uses", async () => {
  const commands = readmeCommands(await Deno.readTextFile(`${root}/README.md`));
  assert.ok(commands.length >= 8, `found only ${commands.length} command lines in README.md`);
  const programs = new Set(commands.map((c) => c.program[0]));
  assert.ok(programs.has("p2m"), "README teaches the p2m launcher");
  const env = { PATH: `${root}/bin:${root}/node_modules/.bin:${Deno.env.get("PATH")}` };
  const helps = new Map<string, string>();
  for (const command of commands) {
    const key = command.program.join(" ");
    if (!helps.has(key)) {
      const [cmd, ...args] = command.program;
      const out = await new Deno.Command(cmd, { args: [...args, "--help"], cwd: root, env })
        .output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, `'${key} --help' exits 0 (README: ${command.line})`);
      assert.match(text, /Usage:/, `'${key} --help' prints a usage`);
      helps.set(key, text);
    }
    for (const flag of command.flags) {
      if (flag === "--help") continue;
      assert.ok(
        helps.get(key)!.includes(flag),
        `README uses ${flag} with '${key}', which its --help does not list: ${command.line}`,
      );
    }
  }
});

Deno.test("README: the command-line extractor finds programs, sub-commands and flags", () => {
  const found = readmeCommands(
    "```sh\np2m shm sender big.iso --peers 4 --name=x   # note\n" +
      "cmd | p2m socket server - --peers 2 &\ndeno task bench --quick\nls -l\n```\n",
  );
  assert.deepEqual(found.map((c) => [c.program.join(" "), c.flags]), [
    ["p2m shm sender", ["--peers", "--name"]],
    ["p2m socket server", ["--peers"]],
    ["deno task bench", ["--quick"]],
  ]);
});
