/**
 * The data connection (worker → peer) through libc instead of Deno.
 *
 * Why: Deno's `UnixConn` has no public fd and no way to enlarge the socket
 * buffer, so worker and peer each sat idle about 65 % of a transfer,
 * ping-ponging through the default ~208 KiB buffer; and a file could not be
 * `sendfile(2)`d into it. Through FFI (ffi/unix_socket.ts) the worker
 * asks for a {@linkcode SEND_BUFFER}-byte send buffer and sendfiles the
 * source straight from the page cache; the peer reads into one reused
 * buffer. This is why socket.ts needs `--allow-ffi`. The main server and the
 * control channel stay on `Deno.listen`/`Deno.connect`.
 *
 * Every libc call is synchronous and nonblocking (errno is read at once, no
 * blocking-pool thread is parked). {@linkcode DataChannel.wait} polls in
 * short synchronous slices and gives the event loop a turn at least every
 * {@linkcode YIELD_MS}, so signals, stdin EOF (parent died) and the control
 * channel are still noticed while bytes flow.
 *
 * @module
 */
import { P2mError } from "../core/errors.ts";
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, type UnixSocket } from "../ffi/mod.ts";

/**
 * Send buffer asked for on the data socket. Unix stream sockets queue up to
 * the sender's SO_SNDBUF (the kernel doubles the value, capped by
 * net.core.wmem_max, 4 MiB here): a large one lets the worker run ahead of
 * the peer instead of waking it every ~200 KiB.
 */
export const SEND_BUFFER = 4 * 1024 * 1024;
/** Longest stretch without giving the event loop a turn, in ms. */
export const YIELD_MS = 50;
/** Longest single synchronous poll, in ms. */
const SLICE_MS = 10;

const turn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Waits on one libc socket in slices, with a stall rule like {@linkcode StallWatch}. */
export class DataChannel {
  /** The socket. */
  readonly socket: UnixSocket;
  #stallMs: number;
  #onStall: () => P2mError;
  #last = performance.now();
  #tick = this.#last;
  #yielded = this.#last;

  /**
   * Watches `socket`; `onStall` makes the error thrown when the other side
   * makes no progress for `stallMs` (time this process itself was not
   * running does not count).
   */
  constructor(socket: UnixSocket, stallMs: number, onStall: () => P2mError) {
    this.socket = socket;
    this.#stallMs = stallMs;
    this.#onStall = onStall;
  }

  /** Records progress by the other side. */
  progress(): void {
    this.#last = performance.now();
  }

  /** Gives the event loop a turn if it has not had one for {@linkcode YIELD_MS}. */
  async breathe(): Promise<void> {
    const now = performance.now();
    if (now - this.#yielded < YIELD_MS) return;
    await turn();
    this.#yielded = performance.now();
    if (this.#yielded - now > 3 * YIELD_MS + SLICE_MS) this.#last = this.#yielded; // we were stopped
    this.#tick = this.#yielded;
  }

  /**
   * Waits until the socket is readable or writable (`events`), or has hung
   * up or failed (the next call then says how). Throws the stall error after
   * `stallMs` without progress, or a P2mError once the socket was closed.
   */
  async wait(events: typeof POLLIN | typeof POLLOUT): Promise<void> {
    while (true) {
      if (this.socket.closed) throw new P2mError("data connection was closed");
      const now = performance.now();
      // A long gap between our own ticks: this process was stopped or starved.
      if (now - this.#tick > 3 * YIELD_MS + SLICE_MS) this.#last = now;
      this.#tick = now;
      if (now - this.#last > this.#stallMs) throw this.#onStall();
      const revents = this.socket.poll(events, Math.min(SLICE_MS, this.#stallMs));
      if (revents & (events | POLLHUP | POLLERR | POLLNVAL)) return;
      await this.breathe();
    }
  }

  /**
   * Waits until the peer has read everything written so far (SIOCOUTQ is
   * 0). Each drop counts as progress; the stall rule applies.
   */
  async drain(): Promise<void> {
    let unsent = this.socket.unsentBytes();
    while (unsent > 0) {
      const now = performance.now();
      if (now - this.#tick > 3 * YIELD_MS + SLICE_MS) this.#last = now;
      this.#tick = now;
      if (now - this.#last > this.#stallMs) throw this.#onStall();
      this.socket.poll(0, 1); // a 1 ms sleep that ends early on hang-up or error
      const left = this.socket.unsentBytes();
      if (left < unsent) this.progress();
      unsent = left;
      await this.breathe();
    }
  }

  /** Writes all of `bytes`, counting each partial write as progress. */
  async writeAll(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) {
      const n = this.socket.write(bytes.subarray(at));
      if (n === null) {
        await this.wait(POLLOUT);
        continue;
      }
      at += n;
      this.progress();
      await this.breathe();
    }
  }

  /** Reads into `buf`: a positive count, or 0 at EOF; waits while nothing is there. */
  async read(buf: Uint8Array): Promise<number> {
    while (true) {
      const n = this.socket.read(buf);
      if (n !== null) {
        if (n > 0) this.progress();
        return n;
      }
      await this.wait(POLLIN);
    }
  }

  /** Fills `buf`; throws a P2mError naming `what` on early EOF. */
  async readFull(buf: Uint8Array, what: string): Promise<void> {
    for (let at = 0; at < buf.length;) {
      const n = await this.read(buf.subarray(at));
      if (n === 0) throw new P2mError(`connection closed in the middle of the ${what}`);
      at += n;
    }
  }
}
