/**
 * The AF_UNIX socket transport: server, client, worker and protocol.
 *
 * @module
 */
export * from "./admission.ts";
export { type ClientOptions, runClient } from "./client.ts";
export * from "./data_channel.ts";
export * from "./listen.ts";
export * from "./peer_session.ts";
export * from "./protocol.ts";
export * from "./raw.ts";
export * from "./served_file.ts";
export * from "./served_stream.ts";
export * from "./server.ts";
export * from "./spool.ts";
export * from "./stall_clock.ts";
export * from "./worker.ts";
export * from "./worker_handle.ts";
export * from "./worker_protocol.ts";
