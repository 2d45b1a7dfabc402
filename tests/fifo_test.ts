// The fifo: transport: creation and safety checks, several writer processes
// in each writers mode, readers and writers coming and going.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  bytes,
  type Channel,
  ChannelClosedError,
  Fifo,
  FrameError,
  MessageTooLargeError,
  NotFoundError,
  open,
  PermissionDeniedError,
  text,
} from "../mod.ts";
import { check, message } from "./fixtures/_message.ts";
import {
  bounded,
  DenoChild,
  euid,
  fixture,
  frame,
  leftovers,
  rawClose,
  rawOpenWrite,
  rawWrite,
  TempDir,
  until,
} from "./_helpers.ts";

const timeout = () => AbortSignal.timeout(20_000);
const uid = euid();
const isRoot = uid === 0;

function writerProcess(path: string, writers: string, id: number, count: number | "hold", size: number) {
  return new DenoChild(fixture("fifo_writer.ts"), [path, writers, String(id), String(count), String(size)]);
}

Deno.test("create, exclusive, missing: AlreadyExistsError / NotFoundError", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  await assert.rejects(open(`fifo:${path}`), NotFoundError);
  const missing = await open(`fifo:${path}`).catch((e) => e);
  assert.equal(missing.code, "ENOENT");
  assert.match(missing.message, /create/);
  using created = await open(`fifo:${path}`, { create: true, exclusive: true });
  assert.ok(Deno.lstatSync(path).isFifo);
  const taken = await open(`fifo:${path}`, { create: true, exclusive: true }).catch((e) => e);
  assert.ok(taken instanceof AlreadyExistsError, `got ${taken}`);
  assert.equal(taken.code, "EEXIST");
  assert.equal(taken.errno, 17);
  assert.equal(taken.syscall, "mkfifo");
  using again = await open(`fifo:${path}`, { create: true }); // not exclusive: fine
  using plain = await open(`fifo:${path}`);
  assert.equal(again.info.path, path);
  assert.equal(plain.info.address, `fifo:${path}`);
  await created.unlink();
  assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound, "unlink removes the FIFO");
  await assert.rejects(created.unlink(), NotFoundError);
});

Deno.test("mode is exactly 0o600 by default and honours `mode` (the umask is not applied)", async () => {
  await using dir = await TempDir.make();
  for (const [mode, expected] of [[undefined, 0o600], [0o640, 0o640], [0o666, 0o666], [0o400, 0o400]]) {
    const path = dir.file();
    using channel = await open(`fifo:${path}`, { create: true, ...(mode === undefined ? {} : { mode }) });
    assert.equal(Deno.lstatSync(path).mode! & 0o7777, expected, `mode ${mode?.toString(8)}`);
    assert.equal(channel.info.mode, expected);
    assert.equal(channel.info.owner, uid);
    await channel.unlink();
  }
  await assert.rejects(open(`fifo:${dir.file()}`, { create: true, mode: 0o1777 }), RangeError);
  await assert.rejects(open(`fifo:${dir.file()}`, { create: true, mode: -1 }), RangeError);
  await assert.rejects(open(`fifo:${dir.file()}`, { create: true, writers: "few" }), TypeError);
  await assert.rejects(open(`fifo:${dir.file()}`, { create: true, maxMessageSize: -1 }), RangeError);
  assert.deepEqual([...Deno.readDirSync(dir.path)], [], "refused options create nothing");
});

Deno.test("a regular file, a symlink to a FIFO, a directory: PermissionDeniedError", async () => {
  await using dir = await TempDir.make();
  const fifo = dir.file("real.fifo");
  (await open(`fifo:${fifo}`, { create: true })).close();
  const file = dir.file("regular");
  Deno.writeTextFileSync(file, "not a fifo");
  const link = dir.file("link.fifo");
  Deno.symlinkSync(fifo, link);
  const directory = dir.file("directory");
  Deno.mkdirSync(directory);
  for (const [path, what] of [[file, /file/], [link, /symbolic link/], [directory, /directory/]] as const) {
    for (const options of [{}, { create: true }]) {
      const error = await open(`fifo:${path}`, options).catch((e) => e);
      assert.ok(error instanceof PermissionDeniedError, `${path} ${JSON.stringify(options)}: got ${error}`);
      assert.match(error.message, what);
    }
    await assert.rejects(open(`fifo:${path}`, { create: true, exclusive: true }), AlreadyExistsError);
  }
  assert.equal(Deno.readTextFileSync(file), "not a fifo", "the file was left alone");
  assert.ok(Deno.lstatSync(link).isSymlink);
});

Deno.test({
  name: "a FIFO owned by another user is refused with PermissionDeniedError",
  ignore: !isRoot,
  async fn() {
    await using dir = await TempDir.make();
    const path = dir.file();
    (await open(`fifo:${path}`, { create: true })).close();
    Deno.chownSync(path, 65534, 65534);
    const error = await open(`fifo:${path}`).catch((e) => e);
    assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
    assert.match(error.message, /65534/);
    await assert.rejects(open(`fifo:${path}`, { create: true }), PermissionDeniedError);
  },
});

Deno.test("the path was replaced after opening: unlink refuses to remove the new file", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using channel = await open(`fifo:${path}`, { create: true });
  Deno.removeSync(path);
  Deno.writeTextFileSync(path, "someone else's");
  await assert.rejects(channel.unlink(), PermissionDeniedError);
  assert.equal(Deno.readTextFileSync(path), "someone else's");
});

Deno.test("relative paths are a TypeError; URL objects are percent-decoded, strings literal", async () => {
  for (const address of ["fifo:relative.fifo", "fifo:./x.fifo", "fifo:", "fifo:~/x"]) {
    await assert.rejects(open(address, { create: true }), TypeError, address);
  }
  assert.throws(() => Fifo.open("x.fifo"), TypeError);
  await using dir = await TempDir.make();
  using spaced = await open(new URL(`fifo:${dir.path}/a%20b.fifo`), { create: true });
  assert.ok(Deno.lstatSync(`${dir.path}/a b.fifo`).isFifo);
  assert.equal(spaced.info.path, `${dir.path}/a b.fifo`);
  using literal = await open(`fifo:${dir.path}/c%20d.fifo`, { create: true });
  assert.ok(Deno.lstatSync(`${dir.path}/c%20d.fifo`).isFifo);
  literal.close();
});

Deno.test("info: scheme, capabilities and limits per writers mode", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  const expected = {
    many: { multiWriter: true, max: 4084 },
    locked: { multiWriter: true, max: 16 * 1024 * 1024 },
    single: { multiWriter: false, max: 16 * 1024 * 1024 },
  } as const;
  for (const writers of ["many", "locked", "single"] as const) {
    using channel = await open(`fifo:${path}`, { create: true, writers });
    const info = channel.info;
    assert.equal(info.scheme, "fifo");
    assert.equal(info.address, `fifo:${path}`);
    assert.equal(info.writers, writers);
    assert.deepEqual(info.capabilities, {
      types: true,
      typeFilter: false,
      priority: false,
      multiWriter: expected[writers].multiWriter,
      multiReader: false,
      persistent: true,
    });
    assert.equal(info.maxMessageSize, expected[writers].max);
    assert.equal(info.maxType, 0xffff_ffff);
    assert.equal(info.maxPriority, 0);
  }
  using small = await open(`fifo:${path}`, { writers: "single", maxMessageSize: 10 });
  assert.equal(small.info.maxMessageSize, 10);
  using capped = await open(`fifo:${path}`, { maxMessageSize: 1 << 20 });
  assert.equal(capped.info.maxMessageSize, 4084, '"many" caps maxMessageSize at PIPE_BUF - 12');
  await Deno.remove(path);
});

Deno.test('writers "many": payloads over 4084 bytes are MessageTooLargeError mentioning PIPE_BUF', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes });
  using writer = await open<Uint8Array>(`fifo:${path}`, { codec: bytes });
  reader.tryReceive(); // open the read end
  const error = await writer.send(new Uint8Array(4085)).catch((e) => e);
  assert.ok(error instanceof MessageTooLargeError, `got ${error}`);
  assert.equal(error.limit, 4084);
  assert.equal(error.size, 4085);
  assert.match(error.message, /PIPE_BUF/);
  assert.throws(() => writer.trySend(new Uint8Array(5000)), MessageTooLargeError);
  await writer.send(new Uint8Array(4084).fill(3), { type: 8 });
  const message = await reader.receiveMessage({ signal: timeout() });
  assert.equal(message.type, 8);
  assert.equal(message.value.length, 4084);
  assert.ok(message.value.every((byte) => byte === 3));
});

/** Reads `total` messages of `size` from `reader` and checks each against _message.ts. */
async function receiveAll(reader: Channel<Uint8Array>, writers: number, count: number, size: number) {
  const next = new Array(writers).fill(0);
  for (let i = 0; i < writers * count; i++) {
    const data = await reader.receive({ signal: timeout() });
    const ok = check(data, size);
    assert.ok(ok, `message ${i} is intact (${data.length} bytes)`);
    assert.ok(ok.id < writers, `writer id ${ok.id}`);
    assert.equal(ok.seq, next[ok.id], `writer ${ok.id}'s messages arrive in order`);
    next[ok.id]++;
  }
  assert.deepEqual(next, new Array(writers).fill(count));
}

Deno.test('writers "many": three processes writing 3000-byte messages at once, none interleaved', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes });
  reader.tryReceive(); // the read end exists before any writer starts
  const count = 300, size = 3000;
  await using w0 = writerProcess(path, "many", 0, count, size);
  await using w1 = writerProcess(path, "many", 1, count, size);
  await using w2 = writerProcess(path, "many", 2, count, size);
  await receiveAll(reader, 3, count, size);
  for (const w of [w0, w1, w2]) {
    const { status, rest, stderr } = await bounded(w.finish(), "the writer process");
    assert.equal(status.code, 0, stderr);
    assert.deepEqual(rest, ["done"]);
  }
  assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
});

Deno.test('writers "locked": two processes writing 100 KiB messages at once, all intact', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "locked" });
  reader.tryReceive();
  const count = 20, size = 100 * 1024;
  await using w0 = writerProcess(path, "locked", 0, count, size);
  await using w1 = writerProcess(path, "locked", 1, count, size);
  await receiveAll(reader, 2, count, size);
  for (const w of [w0, w1]) {
    const { status, rest, stderr } = await bounded(w.finish(), "the writer process");
    assert.equal(status.code, 0, stderr);
    assert.deepEqual(rest, ["done"]);
  }
});

Deno.test('writers "locked": trySend is false while another writer holds the lock mid-frame', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "locked" });
  using a = await open<Uint8Array>(`fifo:${path}`, { codec: bytes, writers: "locked" });
  using b = await open<Uint8Array>(`fifo:${path}`, { codec: bytes, writers: "locked" });
  reader.tryReceive();
  assert.equal(a.trySend(message(0, 0, 300_000)), true, "taken in part; the lock stays with a");
  assert.equal(b.trySend(message(1, 0, 10)), false, "b cannot lock the FIFO now");
  const sentByB = b.send(message(1, 1, 10), { signal: timeout() }); // waits for the lock
  assert.deepEqual(check(await reader.receive({ signal: timeout() }), 300_000), { id: 0, seq: 0 });
  await sentByB;
  assert.deepEqual(check(await reader.receive({ signal: timeout() }), 10), { id: 1, seq: 1 });
});

Deno.test('writers "single": a 1 MiB message round-trips; a "many" reader refuses it', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  {
    using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "single" });
    using writer = await open<Uint8Array>(`fifo:${path}`, { codec: bytes, writers: "single" });
    const sent = message(7, 1, 1 << 20);
    const received = reader.receiveMessage({ signal: timeout() });
    await writer.send(sent, { type: 12, signal: timeout() });
    const got = await received;
    assert.equal(got.type, 12);
    assert.deepEqual(check(got.value, 1 << 20), { id: 7, seq: 1 });
  }
  {
    using reader = await open<Uint8Array>(`fifo:${path}`, { codec: bytes }); // "many": 4084 at most
    using writer = await open<Uint8Array>(`fifo:${path}`, { codec: bytes, writers: "single" });
    reader.tryReceive();
    const sending = writer.send(new Uint8Array(10_000)).catch(() => undefined);
    const error = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(error instanceof FrameError, `got ${error}`);
    assert.match(error.message, /maxMessageSize 4084/);
    reader.close(); // the writer's pending frame then fails with EPIPE
    writer.close();
    await sending;
  }
});

Deno.test("a writer with no reader: trySend is false, send waits for a reader and honours AbortSignal", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  (await open(`fifo:${path}`, { create: true })).close();
  using writer = await open<string>(`fifo:${path}`, { codec: text });
  assert.equal(writer.trySend("nobody"), false, "no reader: trySend reports it, nothing thrown");

  const timedOut = await writer.send("x", { signal: AbortSignal.timeout(30) }).catch((e) => e);
  assert.ok(timedOut instanceof DOMException && timedOut.name === "TimeoutError", `got ${timedOut}`);
  const controller = new AbortController();
  const reason = new Error("give up");
  const aborted = writer.send("y", { signal: controller.signal });
  controller.abort(reason);
  assert.equal(await aborted.catch((e) => e), reason);

  const closing = writer.send("z");
  writer.close();
  await assert.rejects(closing, ChannelClosedError);

  using writer2 = await open<string>(`fifo:${path}`, { codec: text });
  const waiting = writer2.send("hello", { type: 4, signal: timeout() });
  using reader = await open<string>(`fifo:${path}`, { codec: text });
  const message = await reader.receiveMessage({ signal: timeout() }); // opening the reader releases the send
  await waiting;
  assert.deepEqual(message, { value: "hello", type: 4, priority: 0 });
  assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" }, "aborted sends left nothing behind");
});

Deno.test("the reader survives writers coming and going", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  const encode = (value: string) => new TextEncoder().encode(value);
  const decode = (value: Uint8Array) => new TextDecoder().decode(value);
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes });
  reader.tryReceive();
  {
    using writer1 = await open<Uint8Array>(`fifo:${path}`, { codec: bytes });
    await writer1.send(encode("one"));
  }
  assert.equal(decode(await reader.receive({ signal: timeout() })), "one");
  const parked = reader.receive({ signal: timeout() }); // parked while no writer exists
  {
    using writer2 = await open<Uint8Array>(`fifo:${path}`, { codec: bytes });
    await writer2.send(encode("two"));
  }
  assert.equal(decode(await parked), "two");
  {
    await using child = writerProcess(path, "many", 5, 3, 100); // a writer process comes and goes
    for (let seq = 0; seq < 3; seq++) {
      assert.deepEqual(check(await reader.receive({ signal: timeout() }), 100), { id: 5, seq });
    }
    assert.equal((await bounded(child.finish(), "the writer process")).status.code, 0);
  }
  {
    using writer3 = await open<Uint8Array>(`fifo:${path}`, { codec: bytes });
    await writer3.send(encode("three"));
  }
  assert.equal(decode(await reader.receive({ signal: timeout() })), "three");
});

Deno.test("a reader that went away: the writer reports full, then reaches the next reader", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using writer = await open<string>(`fifo:${path}`, { create: true, codec: text });
  {
    using reader1 = await open<string>(`fifo:${path}`, { codec: text });
    reader1.tryReceive();
    await writer.send("a");
    assert.equal(await reader1.receive({ signal: timeout() }), "a");
  }
  // No reader any more: full, not an exception. A child that another test module spawns at this
  // moment holds a copy of every descriptor until its exec closes them (posix_spawn, fork), read end
  // included; a write then still finds a reader. Try again until that copy is gone too.
  let strays = 0;
  await until(() => !writer.trySend(`stray ${strays}`) || (strays++, false), "the last reader's end to go");
  const pending = writer.send("b", { signal: timeout() });
  using reader2 = await open<string>(`fifo:${path}`, { codec: text });
  // What was written while a stray copy of the read end lived is still in the pipe: it comes first.
  for (let i = 0; i < strays; i++) assert.equal(await reader2.receive({ signal: timeout() }), `stray ${i}`);
  assert.equal(await reader2.receive({ signal: timeout() }), "b");
  await pending;
});

Deno.test('a writer killed mid-frame ("single"): FrameError, then the reader goes on with a new writer', async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "single" });
  reader.tryReceive();
  {
    await using child = writerProcess(path, "single", 1, "hold", 1 << 20);
    await child.expect("ready"); // the kernel holds the first part of a 1 MiB frame
    child.process.kill("SIGKILL");
    assert.equal((await bounded(child.process.status, "the killed writer")).signal, "SIGKILL");
  }
  const error = await reader.receive({ signal: timeout() }).catch((e) => e);
  assert.ok(error instanceof FrameError, `got ${error}`);
  assert.match(error.message, /stream ended inside a frame/);
  using writer = await open<Uint8Array>(`fifo:${path}`, { codec: bytes, writers: "single" });
  const received = reader.receive({ signal: timeout() });
  await writer.send(message(2, 0, 200_000), { signal: timeout() });
  assert.deepEqual(check(await received, 200_000), { id: 2, seq: 0 });
});

Deno.test("malformed bytes from one writer: FrameError; once it has gone the reader reads cleanly again", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<string>(`fifo:${path}`, { create: true, codec: text });
  reader.tryReceive();
  const fd = rawOpenWrite(path);
  try {
    rawWrite(fd, frame(1, new Uint8Array(4), { magic: [0x00, 0x00] }));
    const error = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(error instanceof FrameError, `got ${error}`);
    assert.match(error.message, /bad magic/);
  } finally {
    rawClose(fd);
  }
  // The reader sees the bad writer's end of stream here, before anyone else connects.
  assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
  using writer = await open<string>(`fifo:${path}`, { codec: text });
  await writer.send("clean again");
  assert.equal(await reader.receive({ signal: timeout() }), "clean again");
});

Deno.test("after malformed bytes, a good writer's message is not silently dropped", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<string>(`fifo:${path}`, { create: true, codec: text });
  reader.tryReceive();
  const fd = rawOpenWrite(path);
  try {
    rawWrite(fd, frame(1, new Uint8Array(4), { magic: [0x00, 0x00] }));
    await assert.rejects(reader.receive({ signal: timeout() }), FrameError);
  } finally {
    rawClose(fd); // the bad writer has gone
  }
  // A well-behaved writer connects (and stays) before the reader looks again.
  using writer = await open<string>(`fifo:${path}`, { codec: text });
  await writer.send("valid message");
  const outcome = await reader.receive({ signal: AbortSignal.timeout(3000) }).catch((e) => e);
  assert.ok(
    outcome === "valid message",
    `the reader silently discarded a valid frame from a writer that connected after the bad one ` +
      `had left, and waits for ever while that writer stays (receive: ${outcome})`,
  );
});

Deno.test("a reader whose FIFO was unlinked ends when the last writer leaves", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  using reader = await open<string>(`fifo:${path}`, { create: true, codec: text });
  reader.tryReceive();
  const writer = await open<string>(`fifo:${path}`, { codec: text });
  await writer.send("last");
  await reader.unlink();
  writer.close();
  const seen: string[] = [];
  for await (const value of reader) seen.push(value);
  assert.deepEqual(seen, ["last"]);
  assert.deepEqual(reader.tryReceive(), { ok: false, reason: "closed" });
});

Deno.test("close() wakes a reader parked on a FIFO that has no writer", async () => {
  await using dir = await TempDir.make();
  const path = dir.file();
  const reader = await open<string>(`fifo:${path}`, { create: true, codec: text });
  const parked = reader.receive();
  reader.close();
  await assert.rejects(parked, ChannelClosedError);
});

Deno.test("fifo_test leaves nothing under /tmp", () => {
  assert.deepEqual(leftovers(), []);
});
