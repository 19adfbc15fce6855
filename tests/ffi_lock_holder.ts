/**
 * Test fixture: opens a shared-memory object, locks one byte, says "locked"
 * on stdout and then sleeps until killed. Used by ffi_test.ts to check that
 * OFD locks are seen across processes and dropped by kill -9.
 *
 * Usage: deno run --allow-ffi tests/ffi_lock_holder.ts NAME BYTE
 *
 * @module
 */
import { SharedMemory } from "../ffi/mod.ts";

const [name, byte] = Deno.args;
const memory = SharedMemory.open(name);
if (!memory) throw new Error(`no segment ${name}`);
if (!memory.tryLock(Number(byte))) {
  console.log("busy");
  Deno.exit(3);
}
console.log("locked");
setInterval(() => {}, 1000);
