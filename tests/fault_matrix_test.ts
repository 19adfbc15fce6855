/**
 * The fault matrix: for both transports, every party (sender, one of four
 * receivers, the socket worker serving one peer) gets every fault (kill -9,
 * SIGINT, SIGTERM, SIGSTOP past the stall timeout then SIGCONT) at every
 * moment (before streaming, about 50 %, about 99 %, after the data), for
 * real. Each cell then checks what survives, what is reported and what is
 * left behind.
 *
 * A rate limit holds each transfer long enough (about 2 s) to aim at a
 * moment; cells run a few at a time, as they mostly sleep. Set
 * `P2M_LONG_MATRIX=1` for a slower variant with bigger files.
 *
 * @module
 */
import assert from "node:assert/strict";
import { delay } from "../core/delay.ts";
import { sweepStaleOutputs } from "../core/output.ts";
import { listDir, makeFile, shmEntries, tempDir, uniqueName, waitFor } from "./helpers.ts";
import { Party, type PartyExit } from "./party.ts";

const LONG = Deno.env.get("P2M_LONG_MATRIX") === "1";
const MiB = 2 ** 20;
/** File size and rate: the stream takes SIZE / RATE seconds. */
const SIZE = LONG ? 64 * MiB : 4 * MiB;
const RATE = LONG ? 16 * MiB : 2 * MiB;
const STREAM_MS = (SIZE / RATE) * 1000;
const PEERS = 4;
const STALL_S = 2;
/** A stop lasts this long: past the stall timeout, with room for detection. */
const STOP_MS = STALL_S * 1000 + 1500;
/** Promised bound for noticing a dead party, plus slack for a busy 2-core machine. */
const DETECT_MS = 2000 + 1000;
const CELL_LIMIT_MS = 30_000;
const CONCURRENCY = 2;

type Transport = "shm" | "socket";
type Role = "sender" | "receiver" | "worker";
type Fault = "SIGKILL" | "SIGINT" | "SIGTERM" | "SIGSTOP";
type Moment = "before" | "50%" | "99%" | "after data";

const FAULTS: Fault[] = ["SIGKILL", "SIGINT", "SIGTERM", "SIGSTOP"];
const MOMENTS: Moment[] = ["before", "50%", "99%", "after data"];

interface Cell {
  transport: Transport;
  role: Role;
  fault: Fault;
  moment: Moment;
}

/** What one cell observed, for the assertions and the printed matrix. */
interface Outcome {
  cell: Cell;
  /** Receivers that ended verified (exit 0, identical copy). */
  verified: number;
  /** Problems found; empty means the cell passed. */
  problems: string[];
  /** A short description of what happened, for the matrix table. */
  seen: string;
}

function cellName(c: Cell): string {
  return `${c.transport} ${c.role} ${c.fault} ${c.moment}`;
}

function cells(transport: Transport): Cell[] {
  const roles: Role[] = transport === "socket"
    ? ["sender", "receiver", "worker"]
    : ["sender", "receiver"];
  return roles.flatMap((role) =>
    FAULTS.flatMap((fault) => MOMENTS.map((moment) => ({ transport, role, fault, moment })))
  );
}

/** One cell's processes and directories. */
class Run {
  readonly cell: Cell;
  readonly dir: string;
  readonly file: string;
  readonly out: string;
  readonly shmName: string;
  readonly socketPath: string;
  readonly runtimeDir: string;
  sender!: Party;
  receivers: Party[] = [];
  faultAt = 0;
  /** What was faulted: a receiver index, "sender", or a worker pid. */
  target = "";
  victimReceiver: number | undefined;

  constructor(cell: Cell, dir: string) {
    this.cell = cell;
    this.dir = dir;
    this.file = `${dir}/payload.bin`;
    this.out = `${dir}/out`;
    this.shmName = uniqueName("p2m-mx");
    this.socketPath = `${dir}/p2m.sock`;
    this.runtimeDir = `${dir}/run`;
  }

  get env(): Record<string, string> {
    return { XDG_RUNTIME_DIR: this.runtimeDir };
  }

  /** A sender (shm) or server (socket) of this cell's file, printing JSON events. */
  newSender(label: string, peers: number, extra: string[] = []): Party {
    const [program, args] = this.cell.transport === "shm"
      ? ["sharedmem.ts", ["sender", this.file, "--name", this.shmName, "--wait", "20"]] as const
      : ["socket.ts", ["server", this.file, "--socket", this.socketPath]] as const;
    return new Party(label, program, [...args, "--peers", String(peers), "--json", ...extra], {
      env: this.env,
    });
  }

  /** A receiver (shm) or client (socket) for this cell, printing JSON events. */
  newReceiver(label: string, extra: string[] = [], cwd?: string): Party {
    const [program, args] = this.cell.transport === "shm"
      ? ["sharedmem.ts", ["receiver", "--name", this.shmName]] as const
      : ["socket.ts", ["client", "--socket", this.socketPath]] as const;
    return new Party(label, program, [...args, "--timeout", "20", "--json", ...extra], {
      cwd,
      env: this.env,
    });
  }

  startSender(peers = PEERS, options: { maxActive?: number } = {}): Party {
    const common = ["--stall-timeout", String(STALL_S), "--limit-rate", String(RATE)];
    this.sender = this.cell.transport === "shm"
      ? this.newSender("sender", peers, common)
      : this.newSender("server", peers, [
        "--max-active",
        String(options.maxActive ?? peers),
        ...common,
      ]);
    return this.sender;
  }

  startReceiver(): Party {
    const party = this.newReceiver(`receiver ${this.receivers.length}`, [], this.out);
    this.receivers.push(party);
    return party;
  }

  async killAll(): Promise<void> {
    await Promise.all(
      [this.sender, ...this.receivers].filter(Boolean).map((p) => p[Symbol.asyncDispose]()),
    );
  }
}

/** Pids of the socket worker subprocesses of `server`, oldest first. */
async function workersOf(server: Party): Promise<number[]> {
  const out = await new Deno.Command("ps", {
    args: ["-o", "pid=,args=", "--ppid", String(server.pid), "--sort", "start_time"],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .filter((line) => /socket\/worker_main\.ts( |$)|socket\.ts worker( |$)/.test(line))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

function sleep(ms: number): Promise<void> {
  return delay(Math.max(0, ms));
}

/** Waits until `party` reported at least `fraction` of the file. */
async function reached(party: Party, fraction: number): Promise<void> {
  await party.waitEvent(
    (e) => typeof e.bytes === "number" && e.bytes >= fraction * SIZE,
    STREAM_MS * 3 + 10_000,
  );
}

/** Sleeps until the extrapolated moment when `party` holds `fraction` of the file. */
async function aimAt(party: Party, fraction: number): Promise<void> {
  await reached(party, 0.6);
  const missing = fraction * SIZE - party.bytes;
  await sleep((missing / RATE) * 1000);
}

/** Sends the fault to whatever `pid` names (a Party or a raw pid). */
async function applyFault(run: Run, target: Party | number, fault: Fault): Promise<void> {
  const signal = (s: Deno.Signal) =>
    typeof target === "number"
      ? (() => {
        try {
          Deno.kill(target, s);
        } catch { /* gone */ }
      })()
      : target.signal(s);
  run.faultAt = performance.now();
  if (fault !== "SIGSTOP") {
    signal(fault);
    return;
  }
  signal("SIGSTOP");
  await sleep(STOP_MS);
  signal("SIGCONT");
}

/** Starts the cell's processes and delivers its fault at its moment. */
async function stage(run: Run): Promise<void> {
  const { transport, role, fault, moment } = run.cell;
  await makeFile(run.file, SIZE, 7);
  await Deno.mkdir(run.out);
  await Deno.mkdir(run.runtimeDir, { mode: 0o700 });

  if (moment === "before") {
    if (transport === "shm") {
      // The sender waits for all four; fault while only three have attached.
      run.startSender();
      for (let i = 0; i < PEERS - 1; i++) run.startReceiver();
      await run.sender.waitEvent((e) => e.event === "attached" && e.count === PEERS - 1, 15_000)
        .catch(() => sleep(1500));
      await sleep(300);
      await strike(run, 0); // shm has no worker role
      if (role !== "sender" || fault === "SIGSTOP") run.startReceiver();
      return;
    }
    // Socket: three peers stream, the fourth waits in the queue.
    run.startSender(PEERS, { maxActive: PEERS - 1 });
    for (let i = 0; i < PEERS; i++) run.startReceiver();
    const isQueued = (r: Party) => r.events.some((e) => e.event === "queued");
    await waitFor(() => run.receivers.some(isQueued), 15_000, "a queued peer");
    // For a worker: the earliest moment one exists, just spawned, peer not yet served.
    await strike(run, run.receivers.findIndex(isQueued));
    return;
  }

  run.startSender();
  for (let i = 0; i < PEERS; i++) run.startReceiver();
  const observed = run.receivers[0];
  if (moment === "50%") await reached(observed, 0.5);
  else if (moment === "99%") await aimAt(observed, 0.99);
  else await aimAt(observed, 1.0).then(() => sleep(20));

  await strike(run, 0);
}

/** Applies the cell's fault to its role: receiver `victim`, the sender, or its first worker. */
async function strike(run: Run, victim: number): Promise<void> {
  const { role, fault } = run.cell;
  if (role === "receiver") {
    run.victimReceiver = victim;
    await applyFault(run, run.receivers[victim], fault);
  } else if (role === "sender") {
    run.target = "sender";
    await applyFault(run, run.sender, fault);
  } else {
    const [pid] = await workersOf(run.sender);
    run.target = `worker ${pid}`;
    if (pid) await applyFault(run, pid, fault);
  }
}

interface Summary {
  pid: number;
  verified: boolean;
}

/** The sender's per-peer verdicts from its `summary` event, if it printed one. */
function senderSummary(sender: Party): Summary[] | undefined {
  const summary = sender.events.findLast((e) => e.event === "summary");
  if (!summary || !Array.isArray(summary.peers)) return undefined;
  return summary.peers.map((p: Record<string, unknown>) => ({
    pid: Number(p.pid),
    verified: p.verified === true || p.verified === "yes",
  }));
}

function exitText(e: PartyExit): string {
  return e.signal ? e.signal : `exit ${e.code}`;
}

/** Runs one cell and judges it. */
async function runCell(cell: Cell): Promise<Outcome> {
  const dir = await tempDir("p2m-mx-");
  const run = new Run(cell, dir);
  const problems: string[] = [];
  const problem = (text: string) => problems.push(text);
  let seen = "";
  let verified = 0;
  const limit = setTimeout(() => {
    problem(`did not finish within ${CELL_LIMIT_MS / 1000} s; killed everything`);
    run.killAll();
  }, CELL_LIMIT_MS);
  try {
    await stage(run);
    const senderExit = await run.sender.exited;
    const exits = await Promise.all(run.receivers.map((r) => r.exited));
    clearTimeout(limit);
    const name = "payload.bin";
    const finals = `${run.out}/received-files`;
    const expected = await Deno.readFile(run.file);
    const summary = senderSummary(run.sender);
    const { role, fault, moment, transport } = cell;
    const killedSender = role === "sender" && fault === "SIGKILL";

    // Every receiver ends consistently: verified with an identical copy, or
    // failed with nothing under its final name.
    for (const [i, r] of run.receivers.entries()) {
      const exit = exits[i];
      const path = `${finals}/pid-${r.pid}_${name}`;
      const copy = await Deno.readFile(path).catch(() => undefined);
      if (exit.code === 0) {
        verified++;
        if (!copy) problem(`${r.label} exited 0 but left no copy`);
        else if (copy.length !== expected.length || !copy.every((b, k) => b === expected[k])) {
          problem(`${r.label} exited 0 with a wrong copy`);
        }
      } else if (copy) {
        problem(`${r.label} failed (${exitText(exit)}) but its final file exists`);
      }
      const entry = summary?.find((s) => s.pid === r.pid);
      if (entry && entry.verified !== (exit.code === 0)) {
        problem(`sender says ${r.label} verified=${entry.verified}, but it ${exitText(exit)}`);
      }
      if (exit.code !== 0 && exit.signal === null && !/p2m: /.test(r.stderr)) {
        problem(`${r.label} failed without a message: ${r.stderr.trim().slice(0, 200)}`);
      }
    }

    // Who must have failed, and who must have finished.
    const before = moment === "before";
    // Near the end, a fault may land after the party's work was done; there
    // only consistency is required.
    const early = moment === "before" || moment === "50%";
    const stop = fault === "SIGSTOP";
    const healthy = run.receivers.filter((_, i) => i !== run.victimReceiver);
    if (role === "receiver") {
      const victim = exits[run.victimReceiver!];
      // A receiver stopped before its stream starts may simply be served late.
      const mustFail = stop ? !before : early;
      if (mustFail && victim.code === 0) problem(`the faulted receiver still verified`);
      for (const r of healthy) {
        const e = exits[run.receivers.indexOf(r)];
        if (e.code !== 0) problem(`healthy ${r.label} failed: ${exitText(e)} ${r.stderr.trim()}`);
      }
      const victimFailed = victim.code !== 0;
      if (victimFailed && senderExit.code === 0) problem(`the sender exited 0 with a failed peer`);
      if (
        victimFailed && summary && summary.every((s) =>
          s.pid !== run.receivers[run.victimReceiver!].pid
        ) && transport === "shm" && !before
      ) {
        problem(`the sender's summary does not list the failed receiver`);
      }
    } else if (role === "sender") {
      if (stop) {
        // A stopped sender is slow, not dead: everyone still verifies.
        for (const [i, e] of exits.entries()) {
          if (e.code !== 0) problem(`receiver ${i} failed while the sender was only stopped`);
        }
        if (senderExit.code !== 0) problem(`the sender failed after SIGCONT: ${run.sender.stderr}`);
      } else {
        const want = fault === "SIGKILL" ? "SIGKILL" : fault;
        // After the data, the sender may have finished (every receiver
        // verified, exit 0: a signal would have shown) before the fault came.
        const doneFirst = !early && senderExit.code === 0 && exits.every((e) => e.code === 0);
        if (
          !doneFirst && senderExit.signal !== want &&
          senderExit.code !== (fault === "SIGINT" ? 130 : 143)
        ) {
          problem(`sender ended ${exitText(senderExit)}, expected ${want}`);
        }
        // shm aborts everyone; a socket server lets running transfers finish
        // (SIGINT/SIGTERM) but a killed one takes its workers with it.
        const mustFail = early && (transport === "shm" || fault === "SIGKILL");
        for (const [i, e] of exits.entries()) {
          const streaming = transport === "socket" && before &&
            !run.receivers[i].events.some((e) => e.event === "queued");
          if (mustFail && e.code === 0 && !streaming) {
            problem(`receiver ${i} verified although the sender died at ${moment}`);
          }
          if (e.code !== 0 && e.at - run.faultAt > DETECT_MS + (fault === "SIGKILL" ? 0 : 5000)) {
            problem(`receiver ${i} took ${Math.round(e.at - run.faultAt)} ms to notice`);
          }
        }
        if (transport === "socket" && fault !== "SIGKILL" && !before) {
          for (const [i, e] of exits.entries()) {
            if (e.code !== 0) problem(`receiver ${i} lost its running transfer on ${fault}`);
          }
        }
      }
    } else {
      // worker: only its own peer is affected. Near the end a worker may
      // already have handed everything to the socket and exited.
      const failed = exits.filter((e) => e.code !== 0).length;
      if (!stop && moment === "50%" && failed !== 1) {
        problem(`${failed} receivers failed after one worker got ${fault}`);
      }
      if (failed > 1) problem(`${failed} receivers failed; one worker should cost one peer`);
      if (failed > 0 && senderExit.code === 0) problem(`the server exited 0 with a failed peer`);
    }

    // Nothing left behind. A writer killed with -9 cannot remove its temp
    // file; the next writer in the directory sweeps it, so do that here.
    const killedReceiver = role === "receiver" && fault === "SIGKILL";
    if (killedReceiver) sweepStaleOutputs(finals);
    const temps = listDir(finals).filter((n) => n.endsWith(".part"));
    if (temps.length > 0) problem(`temp files left: ${temps.join(", ")}`);
    const strays = listDir(finals).filter((n) =>
      !n.endsWith(".part") &&
      !run.receivers.some((r, i) => exits[i].code === 0 && n === `pid-${r.pid}_${name}`)
    );
    if (strays.length > 0) problem(`unexpected files: ${strays.join(", ")}`);

    if (killedSender) await nextStartCleans(run, problem);
    await checkNoLeaks(run, problem);
    seen = `sender ${exitText(senderExit)}; receivers ${
      exits.map((e) => e.code === 0 ? "ok" : exitText(e)).join(",")
    }`;
    if (Deno.env.get("P2M_MATRIX_VERBOSE")) {
      seen += `\n--- ${run.target}\n${run.sender.stderr}\n` +
        run.receivers.map((r) => `${r.label}: ${r.stderr}`).join("\n");
    }
  } catch (error) {
    problem(`error: ${(error as Error).stack ?? error}`);
    await run.killAll();
  } finally {
    clearTimeout(limit);
    await run.killAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return { cell, verified, problems, seen };
}

/** After a kill -9 of the sender, the next one with the same name starts cleanly. */
async function nextStartCleans(run: Run, problem: (text: string) => void): Promise<void> {
  const shm = run.cell.transport === "shm";
  const sender = run.newSender(shm ? "next sender" : "next server", 1);
  const receiver = run.newReceiver(shm ? "next receiver" : "next client", [
    "--out",
    `${run.dir}/next/`,
  ]);
  const [s, r] = await Promise.all([sender.exited, receiver.exited]);
  if (s.code !== 0 || r.code !== 0) {
    problem(
      `the next start after kill -9 failed: ${sender.stderr.trim()} / ${receiver.stderr.trim()}`,
    );
  }
}

async function checkNoLeaks(run: Run, problem: (text: string) => void): Promise<void> {
  const shm = await shmEntries(run.shmName);
  if (shm.length > 0) problem(`/dev/shm entries left: ${shm.join(", ")}`);
  const sockets = listDir(run.dir).filter((n) => n.endsWith(".sock"));
  if (sockets.length > 0) problem(`socket files left: ${sockets.join(", ")}`);
  const runtime = listDir(`${run.runtimeDir}/p2m`);
  if (runtime.length > 0) problem(`runtime dir not empty: ${runtime.join(", ")}`);
}

/** Runs `tasks` with at most `limit` at a time. */
async function pool<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  }));
  return results;
}

function report(outcomes: Outcome[]): string {
  return outcomes.map((o) =>
    `${o.problems.length === 0 ? "PASS" : "FAIL"}  ${cellName(o.cell).padEnd(34)} ${o.seen}` +
    (o.problems.length > 0 ? `\n      ${o.problems.join("\n      ")}` : "")
  ).join("\n");
}

for (const transport of ["shm", "socket"] as const) {
  Deno.test({
    name: `fault matrix, ${transport}: every party, fault and moment`,
    // Cells kill processes mid-stream on purpose; their pipes close late.
    sanitizeResources: false,
    sanitizeOps: false,
  }, async () => {
    // P2M_MATRIX_CELLS=regex runs only the matching cells, e.g. "worker SIGTERM".
    const only = new RegExp(Deno.env.get("P2M_MATRIX_CELLS") ?? "");
    const chosen = cells(transport).filter((cell) => only.test(cellName(cell)));
    const outcomes = await pool(chosen.map((cell) => () => runCell(cell)), CONCURRENCY);
    const text = report(outcomes);
    if (Deno.env.get("P2M_MATRIX_REPORT")) {
      await Deno.writeTextFile(`${Deno.env.get("P2M_MATRIX_REPORT")}.${transport}.txt`, text);
    }
    const failed = outcomes.filter((o) => o.problems.length > 0);
    assert.equal(failed.length, 0, `${failed.length} of ${outcomes.length} cells failed:\n${text}`);
  });
}
