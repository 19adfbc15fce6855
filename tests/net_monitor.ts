/**
 * Prints the body of one HTTP GET: how a test reads nats-server's
 * monitoring endpoint from inside a network namespace
 * (`ip netns exec NS deno run --allow-net=127.0.0.1 tests/net_monitor.ts URL`).
 *
 * @module
 */
if (import.meta.main) {
  const response = await fetch(Deno.args[0]);
  const body = new Uint8Array(await response.arrayBuffer());
  await Deno.stdout.write(body);
  Deno.exit(response.ok ? 0 : 1);
}
