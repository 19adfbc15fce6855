/**
 * The libc socket wrapper (ffi/unix_socket.ts) on real sockets and files.
 *
 * @module
 */
import assert from "node:assert/strict";
import { LibcError, POLLIN, ReadOnlyFile, UnixSocket } from "../ffi/mod.ts";

Deno.test("UnixSocket: 0600 listener, accept, sendfile, EOF and errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.sock`;
    using listener = UnixSocket.listen(path);
    assert.equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
    assert.equal(listener.accept(), null); // nobody yet: would block
    assert.throws(() => UnixSocket.listen(path), (e: unknown) => e instanceof LibcError);
    using client = UnixSocket.connect(path);
    assert.ok(listener.poll(POLLIN, 1000) & POLLIN);
    using server = listener.accept()!;
    assert.ok(server);
    const file = `${dir}/f`;
    const data = crypto.getRandomValues(new Uint8Array(50_000));
    Deno.writeFileSync(file, data);
    using source = ReadOnlyFile.open(file);
    assert.equal(source.stat().size, data.length);
    assert.equal(source.stat().ino, BigInt(Deno.statSync(file).ino!));
    let sent = 0;
    while (sent < data.length) sent += server.sendFile(source, sent, data.length - sent) ?? 0;
    assert.equal(server.sendFile(source, sent, 10), 0); // the file ends there
    server.shutdownWrite();
    const got = new Uint8Array(data.length + 10);
    let n = 0;
    while (true) {
      client.poll(POLLIN, 1000);
      const r = client.read(got.subarray(n));
      if (r === 0) break;
      if (r !== null) n += r;
    }
    assert.equal(n, data.length);
    assert.deepEqual(got.subarray(0, n), data);
    server.close();
    assert.throws(() => server.read(got), (e: unknown) => e instanceof LibcError);
    assert.throws(
      () => UnixSocket.connect(`${dir}/missing.sock`),
      (e: unknown) => e instanceof LibcError && e.errno === 2,
    );
    assert.throws(() => ReadOnlyFile.open(`${file}/x`), (e: unknown) => e instanceof LibcError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
