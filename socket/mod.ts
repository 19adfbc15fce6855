/**
 * The AF_UNIX socket transport: server, client, worker and protocol.
 *
 * @module
 */
export * from "./client.ts";
export * from "./data_channel.ts";
export * from "./listen.ts";
export * from "./protocol.ts";
export * from "./server.ts";
export * from "./worker.ts";
