import assert from "node:assert/strict";
import { addRatios, type CaseResult } from "../tools/bench_report.ts";
import { lineChart } from "../tools/svg_chart.ts";
import { listDir, runTask, tempDir } from "./helpers.ts";

/** Runs `deno task bench` as a user would. */
function bench(args: string[]) {
  return runTask("bench", args);
}

/** Asserts that every element of an SVG document is closed in order. */
function assertBalancedTags(svg: string): void {
  const stack: string[] = [];
  for (const [, slash, name, selfClose] of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    if (selfClose) continue;
    if (!slash) stack.push(name);
    else assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
  }
  assert.deepEqual(stack, [], "unclosed elements");
}

Deno.test("bench --quick writes well-formed JSON, Markdown and SVG", async () => {
  const dir = await tempDir("p2m-bench-test-");
  try {
    const results = `${dir}/results`;
    const { code, stdout, stderr } = await bench([
      "--quick",
      "--sizes",
      "1MiB",
      "--runs",
      "1",
      "--out-dir",
      dir,
      "--results",
      results,
    ]);
    assert.equal(code, 0, `bench failed:\n${stdout}\n${stderr}`);
    assert.deepEqual(listDir(dir), ["results"], "copies were left in --out-dir");
    assert.deepEqual(listDir(results), ["bench.json", "bench.md", "bench.svg"]);

    const report = JSON.parse(await Deno.readTextFile(`${results}/bench.json`));
    assert.equal(report.version, 1);
    assert.equal(report.outputs.how, "--out-dir");
    assert.equal(report.runs, 1);
    const methods = [...new Set(report.cases.map((c: CaseResult) => c.id))] as string[];
    for (const m of ["shm", "shm-no-verify", "socket", "socket-no-verify", "cp", "tee"]) {
      assert.ok(methods.includes(m), `no ${m} case`);
    }
    assert.equal(report.cases.length, methods.length * 2, "one case per method and peer count");
    for (const c of report.cases as CaseResult[]) {
      assert.equal(c.size, 2 ** 20);
      assert.ok(c.peers === 1 || c.peers === 4);
      assert.equal(c.verified, c.copies, `${c.id} x${c.peers}: ${c.errors.join("; ")}`);
      assert.equal(typeof c.median, "number");
      assert.ok(c.gibps! > 0 && c.ratio! > 0);
      assert.ok(c.min! <= c.median! && c.median! <= c.max!);
    }

    const svg = await Deno.readTextFile(`${results}/bench.svg`);
    assert.ok(svg.startsWith("<svg"), "bench.svg is not an SVG document");
    assert.ok(svg.trimEnd().endsWith("</svg>"));
    assertBalancedTags(svg);
    for (const m of methods) {
      assert.match(svg, new RegExp(`<path class="series" data-series="${m}" d="M[\\d., ]+"`));
    }

    const md = await Deno.readTextFile(`${results}/bench.md`);
    assert.match(md, /^# p2m benchmark/);
    assert.match(md, /\| size \| peers \| method \| median s \|/);
    assert.match(md, /\| 1\.0 MiB \| 4 \| shm \|/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The bench's tmpfs mount points now mounted (read through `cat`: Deno will not read /proc). */
async function benchMounts(): Promise<string[]> {
  const out = await new Deno.Command("cat", { args: ["/proc/mounts"], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .filter((point) => point.includes("/p2m-bench-out-"));
}

Deno.test({
  name: "bench mounts a private tmpfs when root and unmounts it afterwards",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await tempDir("p2m-bench-test-");
    const mountsBefore = await benchMounts();
    const dirsBefore = listDir("/tmp").filter((n) => n.startsWith("p2m-bench-out-"));
    try {
      const { code, stdout, stderr } = await bench([
        "--sizes",
        "64KiB",
        "--peers",
        "2",
        "--methods",
        "cp,shm",
        "--runs",
        "1",
        "--results",
        dir,
      ]);
      assert.equal(code, 0, `bench failed:\n${stdout}\n${stderr}`);
      assert.match(stdout, /copies on tmpfs \(private tmpfs mount/);
      const report = JSON.parse(await Deno.readTextFile(`${dir}/bench.json`));
      assert.deepEqual(report.outputs, { how: "private tmpfs mount", fileSystem: "tmpfs" });
      // Other benches may run meanwhile: only ours must be gone.
      assert.deepEqual((await benchMounts()).filter((m) => !mountsBefore.includes(m)), []);
      assert.deepEqual(
        listDir("/tmp").filter((n) => n.startsWith("p2m-bench-out-") && !dirsBefore.includes(n)),
        [],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("bench refuses a bad command line with exit code 2", async () => {
  const { code, stderr } = await bench(["--methods", "shm,ftp"]);
  assert.equal(code, 2);
  assert.match(stderr, /unknown method 'ftp'/);
});

Deno.test("each case is compared with the best baseline and with its C reference", () => {
  const base = { baseline: false, verify: null, seconds: [], median: 1, min: 1, max: 1 };
  const rest = {
    ratio: null,
    bestBaseline: null,
    cRatio: null,
    senderRssKiB: null,
    receiverRssKiB: null,
    verified: 1,
    copies: 1,
    errors: [],
  };
  const cases: CaseResult[] = [
    { ...base, ...rest, id: "shm", size: 1, peers: 4, gibps: 6 },
    { ...base, ...rest, id: "cp", baseline: true, size: 1, peers: 4, gibps: 4 },
    { ...base, ...rest, id: "tee", baseline: true, size: 1, peers: 4, gibps: 3 },
    { ...base, ...rest, id: "c-ring", baseline: true, size: 1, peers: 4, gibps: 5 },
    { ...base, ...rest, id: "shm", size: 1, peers: 1, gibps: 2 },
    { ...base, ...rest, id: "tee", baseline: true, size: 1, peers: 1, gibps: 1 },
  ];
  addRatios(cases);
  assert.deepEqual(cases.map((c) => [c.bestBaseline, c.ratio, c.cRatio]), [
    ["c-ring", 1.2, 1.2],
    ["c-ring", 0.8, null],
    ["c-ring", 0.6, null],
    ["c-ring", 1, null],
    ["tee", 2, null],
    ["tee", 1, null],
  ]);
});

Deno.test("the chart leaves a gap where a case is missing", () => {
  const svg = lineChart({
    title: "t",
    xLabels: ["1", "4", "16"],
    xCaption: "peers",
    yCaption: "GiB/s",
    series: [{ name: "a", color: "#000" }],
    panels: [{ title: "p", values: { a: [1, null, 3] } }],
  });
  const d = /data-series="a" d="([^"]+)"/.exec(svg)?.[1] ?? "";
  assert.equal(d.match(/M/g)?.length, 2, `one line segment per run of values: ${d}`);
  assert.equal((svg.match(/<circle /g) ?? []).length, 2);
  assertBalancedTags(svg);
});
