/**
 * One-off measurement behind docs/nats.md: NATS object store put/get
 * against a plain JetStream stream carrying p2m's own chunk messages.
 *
 * ```sh
 * node_modules/.bin/deno run --allow-read --allow-env --allow-net --allow-sys \
 *   net/measure.ts --server 127.0.0.1:4222 --size 256MiB --runs 3
 * ```
 *
 * Not part of the product: it only prints one line per variant and run, and
 * then the medians. Each run uses its own stream or bucket, deleted after.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { flagsOf, sizeFlag } from "../core/cli.ts";

/** Measured variants, each returning [put seconds, get seconds]. */
export async function measure(
  server: string,
  size: number,
  runs: number,
  chunks = [256 << 10, 512 << 10, 1 << 20],
  windows = [16, 64],
): Promise<void> {
  const nc = await connect({ servers: server, maxPingOut: 10 });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const data = new Uint8Array(size);
  crypto.getRandomValues(data.subarray(0, Math.min(size, 65536)));
  for (let i = 65536; i < size; i += 65536) data.copyWithin(i, 0, Math.min(65536, size - i));
  const results = new Map<string, number[][]>();
  const record = (name: string, put: number, get: number) => {
    const list = results.get(name) ?? [];
    list.push([put, get]);
    results.set(name, list);
    const mib = size / 2 ** 20;
    console.log(
      `${name}: put ${(mib / put).toFixed(0)} MiB/s, get ${(mib / get).toFixed(0)} MiB/s`,
    );
  };
  const only = Deno.env.get("ONLY");
  for (let run = 0; run < runs; run++) {
    if ((!only || only.includes("obj")) && size <= 256 << 20) {
      const objm = new Objm(nc);
      const bucket = await objm.create(`m${run}`, { storage: "file" } as never);
      let t = performance.now();
      await bucket.putBlob({ name: "f" }, data);
      const put = (performance.now() - t) / 1000;
      t = performance.now();
      const result = await bucket.get("f");
      let got = 0;
      for await (const piece of result!.data) got += piece.length;
      if (got !== size || !(await result!.error) === false) throw new Error("obj get short");
      record("object store (128 KiB chunks)", put, (performance.now() - t) / 1000);
      await bucket.destroy();
    }
    for (const chunk of chunks) {
      for (const window of windows) {
        const stream = `M${run}_${chunk}_${window}`;
        await jsm.streams.add(
          { name: stream, subjects: [`m.${stream}.>`], storage: "file" } as never,
        );
        let t = performance.now();
        const pending: Promise<unknown>[] = [];
        for (let offset = 0; offset < size; offset += chunk) {
          pending.push(js.publish(`m.${stream}.d`, data.subarray(offset, offset + chunk)));
          if (pending.length >= window) await pending.shift();
        }
        await Promise.all(pending);
        const put = (performance.now() - t) / 1000;
        const ordered = (options: Record<string, number>) => async () => {
          const consumer = await js.consumers.get(stream, { filter_subjects: `m.${stream}.d` });
          const messages = await consumer.consume(options as never);
          let got = 0;
          for await (const m of messages) {
            got += m.data.length;
            if (got >= size) break;
          }
          await messages.close();
          return got;
        };
        const variants: [string, () => Promise<number>][] = [
          ["ordered consume max_bytes 8 MiB", ordered({ max_bytes: 8 << 20 })],
          ["ordered consume max_bytes 32 MiB", ordered({ max_bytes: 32 << 20 })],
        ];
        for (const [label, fetch] of variants) {
          if (only && !label.includes(only)) continue;
          t = performance.now();
          const got = await fetch();
          if (got !== size) throw new Error(`${label}: got ${got} of ${size}`);
          record(
            `stream ${chunk >> 10} KiB window ${window} ${label}`,
            put,
            (performance.now() - t) / 1000,
          );
        }
        await jsm.streams.delete(stream);
      }
    }
  }
  console.log("medians (MiB/s put / get):");
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [name, list] of results) {
    const mib = size / 2 ** 20;
    const put = mib / median(list.map((x) => x[0]));
    const get = mib / median(list.map((x) => x[1]));
    console.log(`| ${name} | ${put.toFixed(0)} | ${get.toFixed(0)} |`);
  }
  await nc.close();
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: flagsOf("string", ["server", "size", "runs", "chunks", "windows"]),
  });
  await measure(
    values.server ?? "127.0.0.1:4222",
    sizeFlag(values.size, "size", 256 << 20),
    Number(values.runs ?? 3),
    values.chunks?.split(",").map((kib) => Number(kib) << 10),
    values.windows?.split(",").map(Number),
  );
}
