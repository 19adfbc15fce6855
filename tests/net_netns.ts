/**
 * Test "hosts": network namespaces joined to a server namespace by veth
 * pairs, one /30 per host (server 10.213.N.1, host 10.213.N.2). Names carry
 * a random suffix, and everything is torn down on dispose, even after a
 * failure; deleting a namespace also deletes its ends of the veth pairs.
 *
 * Needs root and iproute2. Elsewhere the tests are skipped with one loud
 * line, unless `P2M_REQUIRE_NETNS=1` (set by .ci/run) makes that a failure.
 *
 * @module
 */

let checked: boolean | undefined;

async function ip(args: string[]): Promise<void> {
  const result = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  if (!result.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(result.stderr).trim()}`);
  }
}

/** `ignore` for Deno.test: true (after one loud line) when namespaces cannot be made here. */
export async function netnsMissing(): Promise<boolean> {
  if (checked !== undefined) return !checked;
  let reason: string | undefined;
  if (Deno.uid() !== 0) reason = "they need root";
  else {
    const probe = `p2m-probe-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
    try {
      await ip(["netns", "add", probe]);
      await ip(["netns", "del", probe]);
    } catch (error) {
      reason = `'ip netns add' failed (${(error as Error).message}); install iproute2`;
    }
  }
  checked = reason === undefined;
  if (reason) {
    if (Deno.env.get("P2M_REQUIRE_NETNS") === "1") {
      throw new Error(`P2M_REQUIRE_NETNS=1 but network namespaces are unavailable: ${reason}`);
    }
    console.error(`!!! SKIPPING the multi-host NATS tests: ${reason}. !!!`);
  }
  return !checked;
}

/** A server namespace and N host namespaces, each host on its own veth link. */
export class TestNetwork implements AsyncDisposable {
  /** The server's namespace. */
  readonly server: string;
  /** The hosts' namespaces, index 0 = host 1. */
  readonly hosts: string[];
  #suffix: string;

  private constructor(suffix: string, count: number) {
    this.#suffix = suffix;
    this.server = `p2m-srv-${suffix}`;
    this.hosts = Array.from({ length: count }, (_, i) => `p2m-h${i + 1}-${suffix}`);
  }

  /** Creates the namespaces and links; tears down what it made if a step fails. */
  static async create(count: number): Promise<TestNetwork> {
    const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 6);
    const network = new TestNetwork(suffix, count);
    try {
      await ip(["netns", "add", network.server]);
      await ip(["-n", network.server, "link", "set", "lo", "up"]);
      for (let i = 0; i < count; i++) {
        const host = network.hosts[i];
        await ip(["netns", "add", host]);
        await ip(["-n", host, "link", "set", "lo", "up"]);
        const serverEnd = network.serverInterface(i);
        const hostEnd = network.hostInterface(i);
        await ip([
          "link",
          "add",
          serverEnd,
          "netns",
          network.server,
          "type",
          "veth",
          "peer",
          "name",
          hostEnd,
          "netns",
          host,
        ]);
        await ip(["-n", network.server, "addr", "add", `10.213.${i + 1}.1/30`, "dev", serverEnd]);
        await ip(["-n", host, "addr", "add", `10.213.${i + 1}.2/30`, "dev", hostEnd]);
        await ip(["-n", network.server, "link", "set", serverEnd, "up"]);
        await ip(["-n", host, "link", "set", hostEnd, "up"]);
      }
    } catch (error) {
      await network[Symbol.asyncDispose]();
      throw error;
    }
    return network;
  }

  /** The server's address as host `index` sees it. */
  serverAddress(index: number): string {
    return `10.213.${index + 1}.1`;
  }

  /** The veth end in the server namespace for host `index`. */
  serverInterface(index: number): string {
    return `p2s${index + 1}-${this.#suffix}`;
  }

  /** The veth end in host `index`'s namespace. */
  hostInterface(index: number): string {
    return `p2h${index + 1}-${this.#suffix}`;
  }

  /** Bytes host `index` has received on its link (the kernel's counter). */
  async receivedBytes(index: number): Promise<number> {
    const result = await new Deno.Command("ip", {
      args: ["-n", this.hosts[index], "-s", "-j", "link", "show", this.hostInterface(index)],
      stdout: "piped",
    }).output();
    const [link] = JSON.parse(new TextDecoder().decode(result.stdout));
    return link.stats64.rx.bytes;
  }

  /** Cuts host `index`'s link (`ip link set down` in its namespace). */
  async cutLink(index: number): Promise<void> {
    await ip(["-n", this.hosts[index], "link", "set", this.hostInterface(index), "down"]);
  }

  /** Deletes every namespace (and so every veth pair). */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const name of [this.server, ...this.hosts]) {
      await ip(["netns", "del", name]).catch(() => {});
    }
  }
}
