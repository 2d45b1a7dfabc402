// file: logs: appending and reading, types, where readers start, named
// readers that resume (auto and manual acknowledgement, one user at a time),
// retention and readers told what they lost, batches, durability levels,
// writers and readers in several processes (every reader sees every
// message), wake-ups across processes, close and unlink, bad options, and
// interoperability with the C program of bench/c/filelog.c.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  ChannelClosedError,
  IpcError,
  MessageTooLargeError,
  NotFoundError,
} from "../errors.ts";
import { bytes, type Channel, open } from "../mod.ts";
import { type LogLoss, type MappedFileLog, MessagesLostError } from "../transports/mapped_file_log.ts";
import {
  bounded,
  CommandChild,
  DenoChild,
  fixture,
  hasCc,
  leftovers,
  pattern,
  sameBytes,
  TempDir,
  until,
} from "./_helpers.ts";

const SMALL = 256 * 1024;

async function log<T>(path: string, options: Record<string, unknown> = {}): Promise<Channel<T>> {
  return await open<T>(`file:${path}`, { maxSize: SMALL, ...options });
}

function transport(channel: Channel<unknown>): MappedFileLog {
  return channel.unsafeTransport as MappedFileLog;
}

Deno.test("send and receive: every reader sees every message, with its type, in order", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("basic.bus");
  await using writer = await log<{ n: number }>(path, { create: true, exclusive: true });
  await using a = await log<{ n: number }>(path);
  await using b = await log<{ n: number }>(path);
  for (let n = 1; n <= 5; n++) await writer.send({ n }, { type: n });
  for (const reader of [a, b, writer]) {
    for (let n = 1; n <= 5; n++) {
      const message = await reader.receiveMessage({ signal: AbortSignal.timeout(5000) });
      assert.deepEqual(message, { value: { n }, type: n, priority: 0 });
    }
    assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
  }
  const info = writer.info;
  assert.equal(info.scheme, "file");
  assert.equal(info.address, `file:${path}`);
  assert.equal(info.capabilities.multiReader, true);
  assert.equal(info.capabilities.persistent, true);
  assert.equal(info.capabilities.typeFilter, false);
  assert.equal(info.delivery, "log");
  assert.equal(info.created, true);
  assert.equal(a.info.created, false);
  assert.throws(() => writer.tryReceive({ type: 2 }), TypeError);
  await assert.rejects(writer.send({ n: 0 }, { priority: 1 }), TypeError);
  // file:///absolute/path works too, and the log outlives every open.
  writer.close();
  a.close();
  b.close();
  await using again = await open<{ n: number }>(`file://${path}`);
  assert.deepEqual(await again.receive(), { n: 1 });
  await assert.rejects(open(`file://host${path}`), /names a host/);
  await again.unlink();
  await assert.rejects(log(path), NotFoundError);
});

Deno.test("from: start, end or a sequence number", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("from.bus");
  await using writer = await log<number>(path, { create: true });
  await writer.sendBatch([1, 2, 3, 4, 5]);
  await using start = await log<number>(path, { from: "start" });
  await using end = await log<number>(path, { from: "end" });
  await using third = await log<number>(path, { from: 3 });
  await using future = await log<number>(path, { from: 8 });
  assert.deepEqual((await start.receiveBatch(10)).map((m) => m.value), [1, 2, 3, 4, 5]);
  assert.deepEqual(end.tryReceive(), { ok: false, reason: "empty" });
  assert.deepEqual(third.tryReceiveBatch(10).map((m) => m.value), [3, 4, 5]);
  assert.deepEqual(future.tryReceive(), { ok: false, reason: "empty" });
  await writer.sendBatch([6, 7, 8, 9]);
  assert.deepEqual(end.tryReceiveBatch(10).map((m) => m.value), [6, 7, 8, 9]);
  assert.deepEqual(future.tryReceiveBatch(10).map((m) => m.value), [8, 9], "sequence 8 on");
  await assert.rejects(log(path, { from: 0 }), TypeError);
  await assert.rejects(log(path, { from: "middle" }), TypeError);
});

Deno.test("named readers resume after the last message handed over, one user at a time", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("named.bus");
  await using writer = await log<number>(path, { create: true });
  await writer.sendBatch([1, 2, 3, 4, 5, 6]);
  {
    await using billing = await log<number>(path, { reader: "billing" });
    assert.equal(await billing.receive(), 1);
    assert.equal(await billing.receive(), 2);
    // A second open of the same named reader is refused while this one is open.
    await assert.rejects(log(path, { reader: "billing" }), (error: Error) => {
      assert.ok(error instanceof IpcError);
      assert.equal(error.code, "EBUSY");
      return true;
    });
  }
  {
    await using billing = await log<number>(path, { reader: "billing", from: "end" });
    assert.equal(await billing.receive(), 3, "resumed; `from` applies only to a new reader");
  }
  // Manual acknowledgement: what was received but not acked comes again.
  {
    await using audit = await log<number>(path, { reader: "audit", ack: "manual" });
    assert.deepEqual(audit.tryReceiveBatch(3).map((m) => m.value), [1, 2, 3]);
    transport(audit).ack();
    assert.equal(await audit.receive(), 4);
  }
  {
    await using audit = await log<number>(path, { reader: "audit", ack: "manual" });
    assert.equal(await audit.receive(), 4, "not acknowledged: delivered again");
  }
  const readers = transport(writer).readers().map(({ name, nextSequence, inUse }) => ({
    name,
    nextSequence,
    inUse,
  }));
  assert.deepEqual(readers, [
    { name: "billing", nextSequence: 4, inUse: false },
    { name: "audit", nextSequence: 4, inUse: false },
  ]);
  assert.equal(await transport(writer).removeReader("audit"), true);
  assert.equal(await transport(writer).removeReader("audit"), false);
  await using fresh = await log<number>(path, { reader: "audit", from: "end" });
  assert.deepEqual(fresh.tryReceive(), { ok: false, reason: "empty" });
  assert.throws(() => transport(writer).ack(), TypeError);
  await assert.rejects(log(path, { reader: "" }), TypeError);
  await assert.rejects(log(path, { reader: "x".repeat(49) }), TypeError);
});

Deno.test("a named reader in another process resumes where the killed one stopped", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("resume.bus");
  await using writer = await log<{ w: number; i: number }>(path, { create: true });
  await writer.sendBatch(Array.from({ length: 10 }, (_, i) => ({ w: 0, i })));
  const options = JSON.stringify({ reader: "worker" });
  {
    await using child = new CommandChild(fixture("file_log_child.ts"), [path, options]);
    assert.match(await child.line(), /^ready /);
    assert.equal(await child.ask("receive 4 5000"), "received [[0,0],[0,1],[0,2],[0,3]]");
    child.process.kill("SIGKILL");
  }
  await using child = new CommandChild(fixture("file_log_child.ts"), [path, options]);
  assert.match(await child.line(), /^ready /);
  assert.equal(await child.ask("receive 2 5000"), "received [[0,4],[0,5]]");
});

Deno.test("retention: a reader that falls behind the ring is told how many messages it lost", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("ring.bus");
  await using writer = await open<Uint8Array>(`file:${path}`, {
    create: true,
    maxSize: 64 * 1024,
    codec: bytes,
  });
  await using slow = await open<Uint8Array>(`file:${path}`, { codec: bytes });
  const losses: LogLoss[] = [];
  await using tolerant = await open<Uint8Array>(`file:${path}`, {
    codec: bytes,
    onLoss: (loss: LogLoss) => losses.push(loss),
  });
  const capacity = transport(writer).info.capacity;
  const payload = new Uint8Array(1000);
  const count = Math.ceil((3 * capacity) / 1024);
  for (let i = 0; i < count; i++) {
    payload[0] = i & 0xff;
    assert.ok(writer.trySend(payload));
  }
  let error: MessagesLostError | undefined;
  try {
    slow.tryReceive();
  } catch (e) {
    error = e as MessagesLostError;
  }
  assert.ok(error instanceof MessagesLostError, "the first receive reports the loss");
  assert.equal(error.kind, "overrun");
  assert.equal(error.expected, 1);
  const first = error.next!;
  assert.equal(error.lost, first - 1);
  let received = 0;
  for (let result = slow.tryReceive(); result.ok; result = slow.tryReceive()) {
    assert.equal(result.value[0], (first - 1 + received) & 0xff);
    received++;
  }
  assert.equal(first - 1 + received, count, "then every retained message, in order");
  assert.equal(tolerant.tryReceiveBatch(count).length, received, "onLoss: no throw");
  assert.equal(losses.length, 1);
  assert.equal(losses[0].lost, first - 1);
  assert.equal(transport(slow).stats().lost, first - 1);
  // A message larger than the log allows is refused before anything is written.
  assert.throws(() => writer.trySend(new Uint8Array(capacity)), MessageTooLargeError);
});

Deno.test("batches: sendBatch and receiveBatch move many messages per lock and per wake-up", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("batch.bus");
  await using writer = await open<Uint8Array>(`file:${path}`, {
    create: true,
    maxSize: 64 * 1024,
    codec: bytes,
  });
  await using reader = await open<Uint8Array>(`file:${path}`, { codec: bytes });
  const payloads = Array.from({ length: 300 }, (_, i) => pattern(1 + (i % 200), i));
  // More than half the ring in one call: appended in several lock acquisitions, none lost.
  const pending = reader.receiveBatch(1000, { signal: AbortSignal.timeout(5000) });
  await writer.sendBatch(payloads.slice(0, 100));
  const first = await pending;
  assert.ok(first.length >= 1);
  const rest = reader.tryReceiveBatch(1000);
  const got = [...first, ...rest];
  assert.equal(got.length, 100);
  got.forEach((message, i) => assert.ok(sameBytes(message.value, payloads[i])));
  assert.equal(transport(writer).trySendBatch([], 1, 0), 0);
  const sent = transport(writer).trySendBatch(payloads, 1, 0);
  assert.ok(sent > 0 && sent < payloads.length, `a batch over half the ring is cut (${sent})`);
});

Deno.test("durability: sync resolves after the sync; batch syncs within its interval; flush works everywhere", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("durable.bus");
  await using sync = await log<number>(path, { create: true, durability: "sync" });
  await sync.send(1);
  const stats = transport(sync).stats();
  assert.equal(stats.syncedPosition, stats.writePosition, "synced before send resolved");
  await sync.sendBatch([2, 3, 4]);
  assert.equal(transport(sync).stats().syncedPosition, transport(sync).stats().writePosition);
  await using batch = await log<number>(path, { durability: "batch", syncInterval: 5 });
  await batch.send(5);
  assert.ok(transport(batch).stats().syncedPosition < transport(batch).stats().writePosition);
  await until(
    () => transport(batch).stats().syncedPosition >= transport(batch).stats().writePosition,
    "the batch sync",
    30_000,
  );
  await using none = await log<number>(path);
  none.trySend(6);
  await transport(none).flush();
  assert.equal(transport(none).stats().syncedPosition, transport(none).stats().writePosition);
  await assert.rejects(log(path, { durability: "fsync" }), TypeError);
  await assert.rejects(log(path, { durability: "batch", syncInterval: -1 }), RangeError);
});

Deno.test("three writer processes and a reader process: every message once, each writer's in order", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("many.bus");
  const WRITERS = 3;
  const EACH = 1500;
  await using mine = await log<{ w: number; i: number }>(path, { create: true, maxSize: 4 << 20 });
  const options = JSON.stringify({});
  const children = [
    new DenoChild(fixture("file_log_child.ts"), [path, options, "tail", `${WRITERS * EACH}`]),
    ...Array.from(
      { length: WRITERS },
      (_, w) => new DenoChild(fixture("file_log_child.ts"), [path, options, "write", `${w}`, `${EACH}`]),
    ),
  ];
  try {
    const last = new Map<number, number>();
    for (let n = 0; n < WRITERS * EACH; n++) {
      const { w, i } = await mine.receive({ signal: AbortSignal.timeout(30_000) });
      assert.equal(i, (last.get(w) ?? -1) + 1, `writer ${w} in order`);
      last.set(w, i);
    }
    assert.deepEqual([...last.values()], Array(WRITERS).fill(EACH - 1));
    for (const writer of children.slice(1)) assert.equal(await writer.line(), `done ${EACH}`);
    const tail = await children[0].line();
    assert.equal(tail, `tail ${WRITERS * EACH} {"0":${EACH - 1},"1":${EACH - 1},"2":${EACH - 1}}`);
    assert.equal(transport(mine).stats().nextSequence, WRITERS * EACH + 1);
  } finally {
    for (const child of children) await child[Symbol.asyncDispose]();
  }
});

Deno.test("a receive parked in another process wakes on our send; close settles a parked receive", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("wake.bus");
  await using writer = await log<{ w: number; i: number }>(path, { create: true });
  await using child = new CommandChild(fixture("file_log_child.ts"), [path, JSON.stringify({ from: "end" })]);
  assert.match(await child.line(), /^ready /);
  await child.send("receive 1 20000");
  // Wait until the child is parked (it counts itself in the header), then send.
  await until(() => transport(writer).stats().waiters !== 0, "the child to park", 30_000);
  await writer.send({ w: 7, i: 7 });
  assert.equal(await child.line(), "received [[7,7]]");
  // close() settles our own parked receive with ChannelClosedError, and the process is not kept alive.
  const reader = await log<number>(path, { from: "end" });
  const parked = reader.receive();
  setTimeout(() => reader.close(), 10);
  await assert.rejects(parked, ChannelClosedError);
  assert.equal(transport(writer).stats().waiters, 0, "no waiter left counted");
  await using idle = await log<number>(path, { from: "end" });
  const aborted = idle.receive({ signal: AbortSignal.timeout(20) });
  await assert.rejects(aborted, (error: Error) => error.name === "TimeoutError");
});

Deno.test("a writer waits for the append lock another process holds, without blocking the event loop", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("locked.bus");
  await using writer = await log<number>(path, { create: true });
  await using holder = new CommandChild(fixture("file_lock_child.ts"), [path, "ofd"]);
  assert.match(await holder.line(), /^ready /);
  assert.equal(await holder.ask("lock 0 1 0"), "locked"); // byte 0: the append lock
  assert.equal(writer.trySend(1), false, "trySend reports the busy lock");
  // Opening waits for the append lock too (to place its reader), and gives up on its signal.
  await assert.rejects(
    log(path, { signal: AbortSignal.timeout(30) }),
    (error: Error) => error.name === "TimeoutError",
  );
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  try {
    const controller = new AbortController();
    const abandoned = writer.send(2, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("gave up")), 20);
    await assert.rejects(abandoned, /gave up/);
    const waiting = writer.send(3, { signal: AbortSignal.timeout(10_000) });
    assert.equal(await holder.ask("unlock 0 1"), "unlocked");
    await bounded(waiting, "the send after the lock was released");
    assert.ok(ticks > 3, "the event loop ran while the send waited");
  } finally {
    clearInterval(timer);
  }
  assert.deepEqual(writer.tryReceiveBatch(10).map((m) => m.value), [3], "only the send that was not aborted");
});

Deno.test("close, unlink, exclusive create, bad options", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("life.bus");
  const channel = await log<number>(path, { create: true, exclusive: true });
  await assert.rejects(log(path, { create: true, exclusive: true }), AlreadyExistsError);
  await assert.rejects(log(path, { exclusive: true }), TypeError);
  await assert.rejects(log(dir.file("no/such/dir.bus"), { create: true }), /directory .* does not exist/);
  await assert.rejects(open("file:relative.bus"), TypeError);
  await assert.rejects(log(dir.file("x.bus"), { create: true, maxSize: 1000 }), RangeError);
  await assert.rejects(log(dir.file("y.bus"), { create: true, maxMessageSize: SMALL }), RangeError);
  await assert.rejects(log(path, { ack: "later" }), TypeError);
  await assert.rejects(log(path, { verify: "some" }), TypeError);
  const t = transport(channel);
  channel.close();
  channel.close();
  assert.throws(() => t.trySend(new Uint8Array(1), 1, 0), ChannelClosedError);
  assert.throws(() => t.stats(), ChannelClosedError);
  await channel.unlink();
  await assert.rejects(channel.unlink(), NotFoundError);
  const names = [...Deno.readDirSync(dir.path)].map((entry) => entry.name);
  assert.deepEqual(names, [], "no temporary file is left by creating");
});

Deno.test({
  name: `C interop: bench/c/filelog.c appends what ipcbus reads, and replays what ipcbus wrote${
    hasCc ? "" : " (skipped: no C compiler)"
  }`,
  ignore: !hasCc,
  async fn() {
    await using dir = await TempDir.make();
    const binary = `${dir.path}/filelog`;
    const source = new URL("../bench/c/filelog.c", import.meta.url).pathname;
    const build = await new Deno.Command("cc", { args: ["-O2", "-o", binary, source], stderr: "piped" })
      .output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const path = dir.file("c.bus");
    await using reader = await open<Uint8Array>(`file:${path}`, {
      create: true,
      codec: bytes,
      maxSize: SMALL,
    });
    const COUNT = 5000;
    // C writes while we wait for its messages (it rings the doorbell when we are parked).
    const writing = new Deno.Command(binary, {
      args: ["write", path, `${COUNT}`, "40", "9"],
      stdout: "piped",
    })
      .output();
    let lost = 0;
    let received = 0;
    while (received + lost < COUNT) {
      try {
        const message = await reader.receiveMessage({ signal: AbortSignal.timeout(20_000) });
        const seq = transport(reader).stats().readSequence - 1;
        const expected = Uint8Array.from({ length: 40 }, (_, b) => (seq + b) & 0xff);
        assert.ok(sameBytes(message.value, expected), `message ${seq} as C wrote it`);
        assert.equal(message.type, 9);
        received++;
      } catch (error) {
        if (!(error instanceof MessagesLostError)) throw error;
        lost += error.lost ?? 0; // C may lap a slow reader in a small ring
      }
    }
    const output = await writing;
    assert.ok(output.success);
    assert.equal(new TextDecoder().decode(output.stdout).trim(), `{"count":${COUNT}}`);
    // ipcbus writes, C replays and checks every frame.
    for (let i = 0; i < 100; i++) reader.trySend(pattern(100, i));
    const replay = await new Deno.Command(binary, { args: ["replay", path, "1"], stdout: "piped" }).output();
    assert.ok(replay.success);
    const { count } = JSON.parse(new TextDecoder().decode(replay.stdout));
    assert.ok(count >= 100, `C replayed ${count} intact frames`);
  },
});

Deno.test("no temporary files are left behind", () => {
  assert.deepEqual(leftovers(), []);
});
