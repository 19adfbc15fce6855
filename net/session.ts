/**
 * One connection to a NATS server with JetStream, opened from the shared
 * flags. The NATS clients are imported here, lazily, on first use: the
 * local transports never load them nor pay for Node compatibility.
 *
 * Errors from the client become one-line P2mErrors that say what to do
 * (wrong credentials, TLS required, nothing listening).
 *
 * @module
 */
import type { NatsConnection } from "@nats-io/nats-core";
import type { JetStreamClient, JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import { P2mError } from "../core/errors.ts";
import type { ConnectionFlags } from "./connection_flags.ts";
import { BucketSubjects } from "./subjects.ts";

/**
 * Set to `node` to use @nats-io/transport-node instead of the Deno
 * transport (for comparisons; a client certificate always uses it).
 */
export const TRANSPORT_ENV = "P2M_NATS_TRANSPORT";

/** The stream settings a bucket is created with. */
export interface BucketOptions {
  /** Drop messages older than this many seconds (0: keep). */
  maxAgeSeconds?: number;
}

/** An open connection plus its JetStream handles; close it when done. */
export class NatsSession implements AsyncDisposable {
  /** The core connection. */
  readonly connection: NatsConnection;
  /** The JetStream client (publish, consume). */
  readonly jetstream: JetStreamClient;
  /** The JetStream manager (streams, purge, direct get). */
  readonly manager: JetStreamManager;
  /** The bucket's names. */
  readonly subjects: BucketSubjects;
  /** What the session was opened with. */
  readonly flags: ConnectionFlags;
  #closed = false;

  private constructor(
    connection: NatsConnection,
    jetstream: JetStreamClient,
    manager: JetStreamManager,
    flags: ConnectionFlags,
  ) {
    this.connection = connection;
    this.jetstream = jetstream;
    this.manager = manager;
    this.flags = flags;
    this.subjects = new BucketSubjects(flags.bucket);
  }

  /** Connects and checks that JetStream answers; throws a one-line P2mError. */
  static async open(flags: ConnectionFlags): Promise<NatsSession> {
    new BucketSubjects(flags.bucket); // a bad name fails before any connection
    const core = await import("@nats-io/nats-core/internal");
    const js = await import("@nats-io/jetstream");
    const timeoutMs = Math.round(flags.timeoutSeconds * 1000);
    const options = {
      servers: flags.servers,
      name: `p2m net ${Deno.pid}`,
      timeout: timeoutMs,
      authenticator: flags.creds ? core.credsAuthenticator(flags.creds) : undefined,
      token: flags.token,
      user: flags.user?.name,
      pass: flags.user?.password,
      tls: flags.tls ?? undefined,
      // Ride out a server restart: the progress timeout decides when to give up.
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: Math.max(1000, timeoutMs),
      maxPingOut: 2,
      waitOnFirstConnect: false,
    };
    let connection: NatsConnection;
    try {
      if (flags.tls?.certFile || Deno.env.get(TRANSPORT_ENV) === "node") {
        // A client certificate on STARTTLS needs Node's tls module.
        const nats = await import("@nats-io/transport-node");
        connection = await nats.connect(options);
      } else {
        const { DenoTransport } = await import("./deno_transport.ts");
        core.setTransportFactory({ factory: () => new DenoTransport(core, "3.4.0") });
        connection = await core.NatsConnectionImpl.connect(options);
      }
    } catch (error) {
      throw new P2mError(describeConnectError(error, flags), { cause: error });
    }
    try {
      const manager = await js.jetstreamManager(connection, { timeout: timeoutMs });
      return new NatsSession(
        connection,
        js.jetstream(connection, { timeout: timeoutMs }),
        manager,
        flags,
      );
    } catch (error) {
      await connection.close().catch(() => {});
      throw new P2mError(
        `${flags.servers.join(",")} answers but JetStream does not (start the server with -js): ${
          messageOf(error)
        }`,
        { cause: error },
      );
    }
  }

  /** The JetStream module, for its enums and helpers (already loaded). */
  static async jetstreamModule(): Promise<typeof import("@nats-io/jetstream")> {
    return await import("@nats-io/jetstream");
  }

  /** Whether the bucket's stream exists. */
  async hasBucket(): Promise<boolean> {
    try {
      await this.manager.streams.info(this.subjects.stream);
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw new P2mError(`cannot read stream ${this.subjects.stream}: ${messageOf(error)}`);
    }
  }

  /** Creates the bucket's stream if missing; applies `maxAgeSeconds` when given. */
  async ensureBucket(options: BucketOptions = {}): Promise<void> {
    const { stream, all } = this.subjects;
    const maxAge = Math.round((options.maxAgeSeconds ?? 0) * 1e9);
    try {
      const info = await this.manager.streams.info(stream);
      if (options.maxAgeSeconds !== undefined && info.config.max_age !== maxAge) {
        await this.manager.streams.update(stream, { ...info.config, max_age: maxAge });
      }
      return;
    } catch (error) {
      if (!isNotFound(error)) {
        throw new P2mError(`cannot read stream ${stream}: ${messageOf(error)}`);
      }
    }
    try {
      await this.manager.streams.add({
        name: stream,
        subjects: [all],
        storage: "file" as never,
        max_age: maxAge,
        allow_direct: true,
        description: `p2m net bucket ${this.subjects.bucket}`,
      });
    } catch (error) {
      // Another publisher may have created it meanwhile: fine if it exists now.
      if (!(await this.hasBucket())) {
        throw new P2mError(`cannot create stream ${stream}: ${messageOf(error)}`);
      }
    }
  }

  /** The newest message on a subject of the bucket, or undefined. */
  async lastMessage(subject: string): Promise<StoredMsg | undefined> {
    try {
      const message = await this.manager.streams.getMessage(this.subjects.stream, {
        last_by_subj: subject,
      });
      return message ?? undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new P2mError(`cannot read ${subject}: ${messageOf(error)}`);
    }
  }

  /** Removes every message of one subject (keeping the newest `keep`). */
  async purge(subject: string, keep = 0): Promise<number> {
    const response = await this.manager.streams.purge(this.subjects.stream, {
      filter: subject,
      ...(keep > 0 ? { keep } : {}),
    });
    return response.purged;
  }

  /** Subjects of the bucket matching `filter`, with their message counts. */
  async subjectCounts(filter: string): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    let info;
    try {
      info = await this.manager.streams.info(this.subjects.stream, { subjects_filter: filter });
    } catch (error) {
      if (isNotFound(error)) return counts;
      throw new P2mError(`cannot read stream ${this.subjects.stream}: ${messageOf(error)}`);
    }
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      counts.set(subject, count);
    }
    return counts;
  }

  /** Flushes and closes the connection (idempotent). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.connection.close().catch(() => {});
  }

  /** Same as {@linkcode close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Whether a JetStream error means "no such stream or message". */
export function isNotFound(error: unknown): boolean {
  const text = messageOf(error).toLowerCase();
  return text.includes("not found") || text.includes("no message found");
}

/** The message of any thrown value. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describeConnectError(error: unknown, flags: ConnectionFlags): string {
  const where = flags.servers.join(",");
  const text = messageOf(error);
  const lower = text.toLowerCase();
  if (lower.includes("authorization") || lower.includes("authentication")) {
    return `${where} refused our credentials (${text}); check --creds, --user or the token`;
  }
  if (lower.includes("tls") && (lower.includes("required") || lower.includes("not available"))) {
    return `${where} requires TLS (${text}); use a tls:// URL or --tls-ca`;
  }
  if (lower.includes("certificate") || lower.includes("self-signed") || lower.includes("ssl")) {
    return `TLS with ${where} failed (${text}); the server wants TLS: give the CA that signed ` +
      `its certificate with --tls-ca (and --tls-cert/--tls-key if it asks for a client certificate)`;
  }
  if (lower.includes("econnrefused") || lower.includes("connection refused")) {
    return `cannot reach a NATS server at ${where}: connection refused`;
  }
  if (lower.includes("timeout") || lower.includes("timed out")) {
    return `cannot reach a NATS server at ${where} within ${flags.timeoutSeconds} s (${text})`;
  }
  return `cannot connect to ${where}: ${text}`;
}
