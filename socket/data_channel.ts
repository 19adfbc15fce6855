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
 * blocking-pool thread is parked). {@linkcode DataChannel.wait} polls
 * synchronously until the socket is ready or the event loop is due its
 * turn, which it gets at least every {@linkcode YIELD_MS}, so signals, stdin
 * EOF (parent died) and the control channel are still noticed while bytes
 * flow. A side that waits on a slow other side therefore wakes about 20
 * times a second, not 100 (a wake-up costs this VM ~0.1 ms of CPU in cache
 * refills alone).
 *
 * @module
 */
import { delay } from "../core/delay.ts";
import { P2mError } from "../core/errors.ts";
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, type UnixSocket } from "../ffi/mod.ts";
import { StallClock } from "./stall_clock.ts";

/**
 * Send buffer asked for on the data socket. Unix stream sockets queue up to
 * the sender's SO_SNDBUF (the kernel doubles the value, capped by
 * net.core.wmem_max, 4 MiB here): a large one lets the worker run ahead of
 * the peer instead of waking it every ~200 KiB.
 */
export const SEND_BUFFER = 4 * 1024 * 1024;
/** Longest stretch without giving the event loop a turn, in ms. */
export const YIELD_MS = 50;

/** A gap between our own ticks this long means this process was not running. */
const GAP_MS = 3 * YIELD_MS + 10;

/** Waits on one libc socket in slices, with the stall rule of {@linkcode StallClock}. */
export class DataChannel {
  /** The socket. */
  readonly socket: UnixSocket;
  #clock: StallClock;
  #onStall: () => P2mError;
  #yielded = performance.now();
  #failure: Error | undefined;

  /**
   * Watches `socket`; `onStall` makes the error thrown when the other side
   * makes no progress for `stallMs` (time this process itself was not
   * running does not count).
   */
  constructor(socket: UnixSocket, stallMs: number, onStall: () => P2mError) {
    this.socket = socket;
    this.#clock = new StallClock(stallMs, GAP_MS);
    this.#onStall = onStall;
  }

  /**
   * Fails the channel from outside (e.g. the source changed): the next
   * wait, drain or turn throws `error`.
   */
  abort(error: Error): void {
    this.#failure ??= error;
  }

  /** Records progress by the other side. */
  progress(): void {
    this.#clock.progress();
  }

  /** Throws the stall error or the abort reason, if either applies now. */
  #check(): void {
    if (this.#failure) throw this.#failure;
    if (this.#clock.tick()) throw this.#onStall();
  }

  /** Ms a synchronous poll may sleep: until the event loop is due its turn, within the stall limit. */
  #untilTurn(): number {
    const due = YIELD_MS - (performance.now() - this.#yielded);
    return Math.max(1, Math.min(due, this.#clock.limitMs));
  }

  /** Gives the event loop a turn if it has not had one for {@linkcode YIELD_MS}. */
  async breathe(): Promise<void> {
    const now = performance.now();
    if (now - this.#yielded >= YIELD_MS) {
      this.#clock.tick(now);
      await delay(0);
      this.#yielded = performance.now();
      this.#clock.tick(this.#yielded); // a long turn: we were stopped
    }
    if (this.#failure) throw this.#failure;
  }

  /**
   * Waits until the socket is readable or writable (`events`), or has hung
   * up or failed (the next call then says how). Throws the stall error after
   * `stallMs` without progress, or a P2mError once the socket was closed.
   */
  async wait(events: typeof POLLIN | typeof POLLOUT): Promise<void> {
    while (true) {
      if (this.socket.closed) throw new P2mError("data connection was closed");
      this.#check();
      const revents = this.socket.poll(events, this.#untilTurn());
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
      this.#check();
      // A unix socket is writable again once at most a quarter of its send
      // buffer is queued: until then sleep in poll; then 1 ms sleeps (both
      // end early on hang-up or error).
      const writable = (this.socket.poll(POLLOUT, 0) & POLLOUT) !== 0;
      this.socket.poll(writable ? 0 : POLLOUT, writable ? 1 : this.#untilTurn());
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
