// The sysv-mq: transport: addresses, limits, type filters across processes,
// several receivers, full and removed queues, permissions, stat(), and a C
// peer using msgsnd/msgrcv directly.
//
// Every queue made here is recorded in `made` and removed in `finally`
// (IPC_RMID, also when a test fails); the last test checks that none is
// left in /proc/sysvipc/msg.
import { Presence } from "../sync/presence.ts";
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  bytes,
  Channel,
  ChannelClosedError,
  MessageTooLargeError,
  NotFoundError,
  open,
  text,
} from "../mod.ts";
import { SysvMessageQueue } from "../transports/sysv_mq.ts";
import {
  bounded,
  DenoChild,
  euid,
  fixture,
  hasCc,
  hasSetpriv,
  linesUntilDone,
  pattern,
  sameBytes,
  TempDir,
  until,
} from "./_helpers.ts";

const timeout = () => AbortSignal.timeout(20_000);

// ---------------------------------------------------------------------------
// Raw libc, to inspect and change queues behind the library's back.

const raw = Deno.dlopen("libc.so.6", {
  msgctl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  msgget: { parameters: ["i32", "i32"], result: "i32" },
  ftok: { parameters: ["buffer", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
}).symbols;
const IPC_RMID = 0, IPC_SET = 1, IPC_STAT = 2, MSG_QBYTES = 88;

/** Queue ids made by this module; all removed by `cleanup()` and checked at the end. */
const made = new Set<number>();

/** Records a queue for removal. */
function track<T extends { readonly info: object }>(handle: T): T {
  made.add((handle.info as { id: number }).id);
  return handle;
}

/** Removes every recorded queue that still exists. */
function cleanup(): void {
  for (const id of made) {
    raw.msgctl(id, IPC_RMID, null);
    Presence.forget(`sysv-mq:id/${id}`);
  }
}

function exists(id: number): boolean {
  return raw.msgctl(id, IPC_STAT, new Uint8Array(120)) === 0;
}

/** Sets a queue's msg_qbytes (the owner may lower it, and raise it up to kernel.msgmnb). */
function setQueueBytes(id: number, qbytes: number): void {
  const buffer = new Uint8Array(120);
  assert.equal(raw.msgctl(id, IPC_STAT, buffer), 0);
  new DataView(buffer.buffer).setBigUint64(MSG_QBYTES, BigInt(qbytes), true);
  assert.equal(raw.msgctl(id, IPC_SET, buffer), 0, "IPC_SET msg_qbytes");
}

/** A random key from 1 to 2^31-1. */
function randomKey(): number {
  const [n] = crypto.getRandomValues(new Uint32Array(1));
  return (n & 0x7fff_ffff) || 1;
}

function hexAddress(key: number): string {
  return `sysv-mq:0x${key.toString(16)}`;
}

// Deno's own file APIs want --allow-all for /proc; read it through libc.
const encoder = new TextEncoder();

/** A whole /proc file, or null when it does not exist (any more). */
function readProc(path: string): string | null {
  const fd = raw.open(encoder.encode(path + "\0"), 0, 0);
  if (fd < 0) return null;
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const chunk = new Uint8Array(65536);
      const n = Number(raw.read(fd, chunk, BigInt(chunk.length)));
      if (n <= 0) break;
      chunks.push(chunk.subarray(0, n));
    }
  } finally {
    raw.close(fd);
  }
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])));
}

/** The names in a /proc directory. */
function listProc(path: string): string[] {
  const dir = raw.opendir(encoder.encode(path + "\0"));
  if (dir === null) return [];
  const names: string[] = [];
  try {
    for (let entry = raw.readdir(dir); entry !== null; entry = raw.readdir(dir)) {
      const name = new Deno.UnsafePointerView(entry).getCString(19); // struct dirent64: d_name
      if (name !== "." && name !== "..") names.push(name);
    }
  } finally {
    raw.closedir(dir);
  }
  return names;
}

/** A kernel.* sysctl. */
function sysctl(name: string): number {
  return Number(readProc(`/proc/sys/kernel/${name}`)!.trim());
}

/** Ids of every System V queue on the system. */
function queueIds(): Set<number> {
  const lines = readProc("/proc/sysvipc/msg")!.trim().split("\n").slice(1);
  return new Set(lines.map((line) => Number(line.trim().split(/\s+/)[1])));
}

/** How many threads of `pid` sleep in msgrcv (parked receives). */
function parkedInMsgrcv(pid: number | "self"): number {
  let parked = 0;
  for (const task of listProc(`/proc/${pid}/task`)) {
    if (readProc(`/proc/${pid}/task/${task}/wchan`)?.includes("msgrcv")) parked++;
  }
  return parked;
}

/** Resolves once one more thread of this process is parked in msgrcv than now. */
function anotherParked(): Promise<void> {
  const before = parkedInMsgrcv("self");
  return until(() => parkedInMsgrcv("self") > before, "a receive to park in msgrcv");
}

function child(args: string[]): DenoChild {
  return new DenoChild(fixture("sysv_mq_child.ts"), args, ["--allow-ffi"]);
}

// ---------------------------------------------------------------------------

Deno.test("sysv-mq: bad addresses are TypeErrors, bad options RangeErrors", async () => {
  for (
    const address of [
      "sysv-mq:",
      "sysv-mq:0",
      "sysv-mq:0x0",
      "sysv-mq:0x",
      "sysv-mq:0x123456789",
      "sysv-mq:4294967296",
      "sysv-mq:-5",
      "sysv-mq:12ab",
      "sysv-mq:key",
      "sysv-mq:PRIVATE",
      "sysv-mq:id/",
      "sysv-mq:id/x",
      "sysv-mq:id/99999999999",
      "sysv-mq:relative/path",
      "sysv-mq:/tmp?proj=0",
      "sysv-mq:/tmp?proj=256",
      "sysv-mq:/tmp?proj=x",
      "sysv-mq:/tmp?project=1",
    ]
  ) {
    await assert.rejects(open(address, { create: true }), TypeError, address);
  }
  const zero = await open("sysv-mq:0", { create: true }).catch((error) => error);
  assert.match(zero.message, /IPC_PRIVATE.*sysv-mq:private/);
  assert.throws(() => SysvMessageQueue.open(0), TypeError);
  assert.throws(() => SysvMessageQueue.open(1.5), TypeError);
  assert.throws(() => SysvMessageQueue.open("id/1", { create: true }), TypeError);
  await assert.rejects(open("sysv-mq:private", { mode: 0o1000 }), RangeError);
  await assert.rejects(open("sysv-mq:private", { mode: -1 }), RangeError);
  await assert.rejects(open("sysv-mq:private", { maxMessageSize: -1 }), RangeError);
  await assert.rejects(open("sysv-mq:private", { maxMessageSize: 1.5 }), RangeError);
});

Deno.test("sysv-mq: missing → NotFoundError, exclusive on an existing → AlreadyExistsError, mode exact", async () => {
  const key = randomKey();
  try {
    const missing = await open(hexAddress(key)).catch((error) => error);
    assert.ok(missing instanceof NotFoundError, `got ${missing}`);
    assert.equal(missing.code, "ENOENT");
    assert.equal(missing.syscall, "msgget");
    assert.match(missing.message, new RegExp(`0x${key.toString(16).padStart(8, "0")}.*create: true`));
    await assert.rejects(open("sysv-mq:id/2147483647"), NotFoundError);

    using created = track(await open(hexAddress(key), { create: true, exclusive: true, mode: 0o640 }));
    assert.equal(created.info.created, true);
    assert.equal(created.info.mode, 0o640, "the umask does not apply");
    const taken = await open(hexAddress(key), { create: true, exclusive: true }).catch((error) => error);
    assert.ok(taken instanceof AlreadyExistsError, `got ${taken}`);
    assert.equal(taken.code, "EEXIST");
    assert.equal(taken.syscall, "msgget");

    using again = await open(`sysv-mq:${key}`, { create: true }); // decimal, not exclusive: the same queue
    using plain = await open(`sysv-mq:0X${key.toString(16).toUpperCase()}`);
    using byId = await open(`sysv-mq:id/${created.info.id}`);
    for (const other of [again, plain, byId]) {
      assert.equal(other.info.id, created.info.id);
      assert.equal(other.info.key, key);
      assert.equal(other.info.created, false);
    }
    assert.equal(again.info.address, `sysv-mq:${key}`);
    assert.equal(byId.info.address, `sysv-mq:id/${created.info.id}`);
    await plain.send("through another handle", { type: 4 });
    assert.deepEqual(await created.receiveMessage({ signal: timeout() }), {
      value: "through another handle",
      type: 4,
      priority: 0,
    });
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: info reports the real limits and why; an oversized message fails before the syscall", async () => {
  try {
    const msgmax = sysctl("msgmax");
    using channel = track(await open<Uint8Array>("sysv-mq:private", { codec: bytes }));
    const queue = channel.unsafeTransport as SysvMessageQueue;
    const { info } = channel;
    assert.equal(info.scheme, "sysv-mq");
    assert.match(info.address, /^sysv-mq:id\/\d+$/);
    assert.equal(info.key, 0);
    assert.equal(info.owner, euid());
    assert.equal(info.mode, 0o600);
    assert.deepEqual(info.capabilities, {
      types: true,
      typeFilter: true,
      priority: false,
      multiWriter: true,
      multiReader: true,
      persistent: true,
    });
    assert.equal(info.maxType, Number.MAX_SAFE_INTEGER);
    assert.equal(info.maxPriority, 0);
    const qbytes = queue.stat().maxBytes;
    assert.equal(info.maxMessageSize, Math.min(msgmax, qbytes));
    assert.match(
      String(info.maxMessageSizeReason),
      msgmax <= qbytes ? /kernel\.msgmax.*sysctl/ : /msg_qbytes/,
    );

    const error = await channel.send(new Uint8Array(info.maxMessageSize + 1)).catch((e) => e);
    assert.ok(error instanceof MessageTooLargeError && error instanceof RangeError, `got ${error}`);
    assert.equal(error.limit, info.maxMessageSize);
    assert.equal(error.size, info.maxMessageSize + 1);
    assert.match(error.message, /kernel\.msgmax|msg_qbytes/);
    assert.throws(() => channel.trySend(new Uint8Array(info.maxMessageSize + 1)), MessageTooLargeError);
    assert.throws(() => queue.trySend(new Uint8Array(info.maxMessageSize + 1), 1, 0), MessageTooLargeError);
    assert.equal(queue.stat().messages, 0, "nothing reached the queue");
    await channel.send(new Uint8Array(info.maxMessageSize)); // exactly the limit is fine
    assert.equal((await channel.receive({ signal: timeout() })).length, info.maxMessageSize);

    // A smaller limit asked for; the reason names the option.
    using small = await open<Uint8Array>(info.address, { codec: bytes, maxMessageSize: 100 });
    assert.equal(small.info.maxMessageSize, 100);
    assert.match(String(small.info.maxMessageSizeReason), /maxMessageSize option/);
    await assert.rejects(small.send(new Uint8Array(101)), MessageTooLargeError);
    // A larger one is lowered to the kernel's.
    using large = await open(info.address, { maxMessageSize: 1 << 30 });
    assert.equal(large.info.maxMessageSize, info.maxMessageSize);

    // Types: positive safe integers; the type filter is msgrcv's.
    await assert.rejects(channel.send(new Uint8Array(1), { type: 0 }), RangeError);
    await assert.rejects(channel.send(new Uint8Array(1), { type: -1 }), RangeError);
    await assert.rejects(channel.send(new Uint8Array(1), { type: 2 ** 53 }), RangeError);
    await assert.rejects(channel.send(new Uint8Array(1), { priority: 1 }), TypeError);
    await assert.rejects(channel.receive({ type: -3, except: true }), RangeError);
    await channel.send(new Uint8Array([9]), { type: Number.MAX_SAFE_INTEGER });
    const biggest = await channel.receiveMessage({ signal: timeout() });
    assert.equal(biggest.type, Number.MAX_SAFE_INTEGER);
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: every type filter, across processes, both ways", async () => {
  try {
    using channel = track(await open<string>("sysv-mq:private", { codec: text }));
    // Queue order: types 3 1 4 1 5 9 2 6 (values m0..m7).
    const types = [3, 1, 4, 1, 5, 9, 2, 6];
    for (const [i, type] of types.entries()) await channel.send(`m${i}`, { type });
    await using receiver = child(["receive", channel.info.address, "1,-3,-3,3x,9,0,-100,0"]);
    await bounded(receiver.expect("ready"), "the receiver");
    assert.deepEqual(await linesUntilDone(receiver), [
      "1 m1", // 1: the first of type 1
      "1 m3", // -3: the lowest type ≤ 3 (1), the first of it
      "2 m6", // -3: now the lowest type ≤ 3 is 2
      "4 m2", // 3 except: the first whose type is not 3
      "9 m5", // 9: exactly 9
      "3 m0", // 0: the first left
      "5 m4", // -100: the lowest type ≤ 100
      "6 m7", // 0
    ]);
    assert.equal((channel.unsafeTransport as SysvMessageQueue).stat().messages, 0);

    // And from a child to this process.
    await using sender = child(["send", channel.info.address, "7:a", "2:b", "7:c", "1:d", "3:e"]);
    assert.match(await bounded(sender.line(), "the sender"), /^sent \d+$/);
    const got = [];
    for (const [type, except] of [[-2, false], [7, true], [7, false], [0, false], [-100, false]] as const) {
      const message = await channel.receiveMessage({ type, except, signal: timeout() });
      got.push(`${message.type} ${message.value}`);
    }
    assert.deepEqual(got, ["1 d", "2 b", "7 a", "7 c", "3 e"]);
    assert.deepEqual(channel.tryReceive(), { ok: false, reason: "empty" });
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: several receivers share one queue by type; one type, several receivers: each message once", async () => {
  try {
    using channel = track(await open<string>("sysv-mq:private", { codec: text }));
    const address = channel.info.address;
    const perType = 40;
    await using one = child(["take", address, "1", String(perType)]);
    await using two = child(["take", address, "2", String(perType)]);
    // Two receivers of type 3, each taking half.
    await using threeA = child(["take", address, "3", String(perType / 2)]);
    await using threeB = child(["take", address, "3", String(perType / 2)]);
    for (const receiver of [one, two, threeA, threeB]) await bounded(receiver.expect("ready"), "a receiver");
    for (let i = 0; i < perType; i++) {
      for (const type of [3, 1, 2]) await channel.send(`${type}.${i}`, { type, signal: timeout() });
    }
    const expected = (type: number) => Array.from({ length: perType }, (_, i) => `${type} ${type}.${i}`);
    assert.deepEqual(await linesUntilDone(one), expected(1));
    assert.deepEqual(await linesUntilDone(two), expected(2));
    const a = await linesUntilDone(threeA);
    const b = await linesUntilDone(threeB);
    assert.equal(a.length + b.length, perType);
    assert.deepEqual([...a, ...b].sort(), expected(3).sort(), "every type-3 message exactly once");
    for (const lines of [a, b]) {
      const order = lines.map((line) => Number(line.split(".")[1]));
      assert.deepEqual(order, [...order].sort((x, y) => x - y), "each receiver sees them in queue order");
    }
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: a queue removed under a waiting receiver, in this process and another, settles with ChannelClosedError", async () => {
  try {
    // This process.
    using channel = track(await open<string>("sysv-mq:private", { codec: text }));
    const parking = anotherParked();
    const waiting = channel.receive({ type: 5 }).catch((error) => error);
    await parking;
    const removedAt = performance.now();
    await channel.unlink();
    const error = await bounded(waiting, "the waiting receive");
    assert.ok(error instanceof ChannelClosedError, `got ${error}`);
    assert.ok(performance.now() - removedAt < 2000, "promptly");
    assert.match(error.message, /removed/);
    assert.match(error.message, new RegExp(channel.info.address));
    await assert.rejects(channel.receive(), ChannelClosedError);
    await assert.rejects(channel.send("x"), ChannelClosedError);
    assert.throws(() => channel.trySend("x"), ChannelClosedError);
    await assert.rejects(channel.unlink(), NotFoundError, "removed already");
    const iterated: string[] = [];
    for await (const value of channel) iterated.push(value); // ends quietly
    assert.deepEqual(iterated, []);

    // Another process.
    using other = track(await open<string>("sysv-mq:private", { codec: text }));
    await using receiver = child(["wait", other.info.address, "5"]);
    await bounded(receiver.expect("ready"), "the child");
    await until(() => parkedInMsgrcv(receiver.process.pid) > 0, "the child to park in msgrcv");
    await other.unlink();
    assert.match(await bounded(receiver.line(), "the child's outcome"), /^ChannelClosedError .*removed/);
    const { status } = await receiver.finish();
    assert.equal(status.code, 0, "the child exits by itself");
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: a full queue: trySend false, send waits without blocking the event loop, honours abort and removal", async () => {
  try {
    using channel = track(await open<Uint8Array>("sysv-mq:private", { codec: bytes }));
    const queue = channel.unsafeTransport as SysvMessageQueue;
    const size = 1000;
    let sent = 0;
    while (channel.trySend(pattern(size, sent))) sent++;
    assert.equal(sent, Math.floor(queue.stat().maxBytes / size));
    assert.equal(channel.trySend(pattern(size, 99)), false);

    // A waiting send, released by a receive; the event loop keeps turning meanwhile.
    let done = false;
    const waiting = channel.send(pattern(size, sent), { signal: timeout() }).then(() => done = true);
    let turns = 0;
    for (; turns < 20; turns++) await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(done, false, "still waiting for room");
    assert.equal(channel.trySend(pattern(size, 99)), false, "trySend refuses while a send waits");
    assert.ok(sameBytes(await channel.receive({ signal: timeout() }), pattern(size, 0)));
    await bounded(waiting, "the waiting send");
    assert.equal(queue.stat().messages, sent);

    // An aborted send sends nothing; a timeout rejects with its reason.
    const controller = new AbortController();
    const aborted = channel.send(pattern(size, 500), { signal: controller.signal }).catch((e) => e);
    controller.abort(new Error("changed my mind"));
    assert.equal((await aborted).message, "changed my mind");
    const timedOut = await channel.send(pattern(size, 501), { signal: AbortSignal.timeout(30) }).catch((e) =>
      e
    );
    assert.equal(timedOut.name, "TimeoutError");
    for (let i = 1; i <= sent; i++) {
      assert.ok(sameBytes(await channel.receive({ signal: timeout() }), pattern(size, i)), `message ${i}`);
    }
    assert.deepEqual(channel.tryReceive(), { ok: false, reason: "empty" }, "the aborted sends sent nothing");

    // A send waiting on a queue that is removed.
    while (channel.trySend(pattern(size, 7)));
    const orphan = channel.send(pattern(size, 8)).catch((e) => e);
    await channel.unlink();
    assert.ok((await bounded(orphan, "the orphaned send")) instanceof ChannelClosedError);
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: receive honours abort and timeout; nothing is lost, zero-length messages included", async () => {
  try {
    using channel = track(await open<string>("sysv-mq:private", { codec: text }));
    const timedOut = await channel.receive({ type: 8, signal: AbortSignal.timeout(30) }).catch((e) => e);
    assert.equal(timedOut.name, "TimeoutError");
    await channel.send("after the timeout", { type: 8 });
    assert.equal(await channel.receive({ type: 8, signal: timeout() }), "after the timeout");

    // A zero-length message arriving after an aborted wait is taken by the
    // wait's helper, which is still parked in msgrcv: it must not be lost.
    const controller = new AbortController();
    let parking = anotherParked();
    const aborted = channel.receive({ type: 7, signal: controller.signal }).catch((e) => e);
    await parking;
    controller.abort(new Error("stop"));
    assert.equal((await aborted).message, "stop");
    await channel.send("", { type: 7 });
    // The parked probe took it, then put it back.
    const queue = channel.unsafeTransport as SysvMessageQueue;
    await until(() => queue.stat().messages === 1, "the message to be put back");
    assert.deepEqual(await channel.receiveMessage({ type: 7, signal: timeout() }), {
      value: "",
      type: 7,
      priority: 0,
    });
    assert.equal(queue.stat().messages, 0);

    // Zero-length messages on the fast path and the parked path.
    await channel.send("", { type: 3 });
    assert.deepEqual(channel.tryReceive(), { ok: true, value: "", type: 3, priority: 0 });
    parking = anotherParked();
    const parked = channel.receiveMessage({ type: -5, signal: timeout() });
    await parking;
    await channel.send("", { type: 4 });
    assert.deepEqual(await parked, { value: "", type: 4, priority: 0 });

    // close() settles a waiting receive; the queue stays for others.
    const pending = channel.receive().catch((e) => e);
    channel.close();
    assert.ok((await pending) instanceof ChannelClosedError);
    using again = await open<string>(channel.info.address, { codec: text });
    await again.send("still here");
    assert.equal(await again.receive({ signal: timeout() }), "still here");
    await channel.unlink(); // works after close()
    assert.equal(exists(channel.info.id as number), false);
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: stat() reports counts, limits, pids, times, owner and mode", async () => {
  try {
    const start = Math.floor(Date.now() / 1000) * 1000;
    const queue = track(SysvMessageQueue.open("private", { mode: 0o620 }));
    using channel = new Channel<string>(queue, { codec: text });
    const fresh = queue.stat();
    assert.equal(fresh.id, queue.info.id);
    assert.equal(fresh.key, 0);
    assert.equal(fresh.messages, 0);
    assert.equal(fresh.bytes, 0);
    assert.equal(fresh.maxBytes, sysctl("msgmnb"));
    assert.equal(fresh.lastSendPid, 0);
    assert.equal(fresh.lastReceivePid, 0);
    assert.equal(fresh.lastSendTime, null);
    assert.equal(fresh.lastReceiveTime, null);
    assert.ok(fresh.changeTime.getTime() >= start);
    assert.deepEqual(fresh.owner, { uid: euid(), gid: fresh.owner.gid });
    assert.deepEqual(fresh.creator, fresh.owner);
    assert.equal(fresh.mode, 0o620);

    await using sender = child(["send", queue.info.address, "1:hello", "2:abc"]);
    const senderPid = Number((await bounded(sender.line(), "the sender")).split(" ")[1]);
    const after = queue.stat();
    assert.equal(after.messages, 2);
    assert.equal(after.bytes, 8);
    assert.equal(after.lastSendPid, senderPid);
    assert.ok(after.lastSendTime !== null && after.lastSendTime.getTime() >= start);
    assert.equal(await channel.receive({ signal: timeout() }), "hello");
    const received = queue.stat();
    assert.equal(received.lastReceivePid, Deno.pid);
    assert.ok(received.lastReceiveTime !== null && received.lastReceiveTime.getTime() >= start);
    assert.equal(received.messages, 1);
    assert.equal(received.bytes, 3);
    channel.close();
    assert.throws(() => queue.stat(), ChannelClosedError);
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: ftok addresses", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("ftok-anchor");
  try {
    await assert.rejects(open(`sysv-mq:${path}?proj=7`, { create: true }), NotFoundError);
    const missing = await open(`sysv-mq:${path}`).catch((e) => e);
    assert.match(missing.message, /ftok needs an existing file/);
    Deno.writeTextFileSync(path, "");
    const cPath = new TextEncoder().encode(path + "\0");
    const expected7 = raw.ftok(cPath, 7) >>> 0;
    const expected1 = raw.ftok(cPath, 1) >>> 0;
    // Another process may (rarely) have a queue with these keys: then skip.
    if (raw.msgget(expected7 | 0, 0) >= 0 || raw.msgget(expected1 | 0, 0) >= 0) {
      console.warn("ftok keys are taken by another queue; skipped");
      return;
    }
    using seven = track(await open<string>(`sysv-mq:${path}?proj=7`, { create: true, codec: text }));
    assert.equal(seven.info.key, expected7);
    using sevenHex = await open<string>(`sysv-mq:${path}?proj=0x07`, { codec: text });
    assert.equal(sevenHex.info.id, seven.info.id);
    using one = track(await open<string>(`sysv-mq:${path}`, { create: true, exclusive: true, codec: text }));
    assert.equal(one.info.key, expected1, "proj defaults to 1");
    assert.notEqual(one.info.id, seven.info.id);
    // A child opens it by the same address.
    await using sender = child(["send", `sysv-mq:${path}?proj=7`, "5:via ftok"]);
    assert.match(await bounded(sender.line(), "the sender"), /^sent/);
    assert.deepEqual(await seven.receiveMessage({ signal: timeout() }), {
      value: "via ftok",
      type: 5,
      priority: 0,
    });
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: a private queue handed to a child by id", async () => {
  try {
    using channel = track(await open<string>("sysv-mq:private", { codec: text }));
    using second = track(await open<string>("sysv-mq:private", { codec: text }));
    assert.notEqual(channel.info.id, second.info.id, "private always creates");
    assert.equal(channel.info.address, `sysv-mq:id/${channel.info.id}`);
    await using worker = child(["wait", channel.info.address, "2"]);
    await bounded(worker.expect("ready"), "the child");
    await channel.send("for the child", { type: 2 });
    assert.equal(await bounded(worker.line(), "the child"), "got 2 for the child");
  } finally {
    cleanup();
  }
});

Deno.test("sysv-mq: a larger message than the receive buffer is received whole; a shrunk queue refuses a large send", async () => {
  try {
    const big = track(SysvMessageQueue.open("private"));
    using sender = new Channel<Uint8Array>(big, { codec: bytes });
    const id = big.info.id as number;
    const full = big.stat().maxBytes;
    setQueueBytes(id, 2000);
    using small = new Channel<Uint8Array>(SysvMessageQueue.open(`id/${id}`), { codec: bytes });
    assert.equal(small.info.maxMessageSize, 2000);
    assert.match(String(small.info.maxMessageSizeReason), /msg_qbytes is 2000/);
    setQueueBytes(id, full); // raised again after `small` sized its buffer
    const payload = pattern(6000, 1);
    await sender.send(payload, { type: 3 });
    const message = await small.receiveMessage({ signal: timeout() });
    assert.equal(message.type, 3);
    assert.ok(sameBytes(message.value, payload), "not truncated");

    // Lowered below a message's size after `sender` opened: refused, naming the limit.
    setQueueBytes(id, 2000);
    const error = (() => {
      try {
        sender.trySend(pattern(3000, 2));
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    assert.ok(error instanceof MessageTooLargeError, `got ${error}`);
    assert.equal(error.limit, 2000);
    assert.match(error.message, /msg_qbytes.*lowered/);
    await assert.rejects(sender.send(pattern(3000, 2)), MessageTooLargeError);
    assert.equal(big.stat().messages, 0);
  } finally {
    cleanup();
  }
});

Deno.test({
  name: `sysv-mq: a queue whose mode denies the caller → PermissionDeniedError naming owner and mode${
    hasSetpriv && euid() === 0 ? "" : " (skipped: needs root and setpriv(1) to run a child as uid 65534)"
  }`,
  ignore: !hasSetpriv || euid() !== 0,
  async fn() {
    await using home = await TempDir.make();
    await Deno.chmod(home.path, 0o777);
    const key = randomKey();
    try {
      using channel = track(await open(hexAddress(key), { create: true, exclusive: true, mode: 0o600 }));
      for (const address of [hexAddress(key), channel.info.address]) {
        const output = await new Deno.Command("setpriv", {
          args: [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            Deno.execPath(),
            "run",
            "--quiet",
            "--no-prompt",
            "--allow-ffi",
            fixture("sysv_mq_child.ts"),
            "open",
            address,
          ],
          env: { DENO_DIR: home.path, HOME: home.path },
          stdin: "null",
          signal: AbortSignal.timeout(30_000),
        }).output();
        const said = new TextDecoder().decode(output.stdout).trim();
        assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
        assert.match(said, /^PermissionDeniedError /, address);
        assert.match(said, /belongs to uid 0 .*mode 0o600/, address);
        assert.match(said, /runs as uid 65534/, address);
      }
      // Root is not refused (CAP_IPC_OWNER), even with mode 0.
      using locked = track(await open("sysv-mq:private", { mode: 0 }));
      await locked.send("root may");
      assert.equal(await locked.receive({ signal: timeout() }), "root may");
    } finally {
      cleanup();
    }
  },
});

Deno.test({
  name: `sysv-mq: interoperates with a C peer using msgsnd/msgrcv${
    hasCc ? "" : " (skipped: no C compiler `cc` found)"
  }`,
  ignore: !hasCc,
  async fn() {
    await using dir = await TempDir.make();
    const peer = `${dir.path}/sysv_mq_peer`;
    const build = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-Werror", "-o", peer, fixture("sysv_mq_peer.c")],
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const hex = (data: Uint8Array) =>
      data.length === 0 ? "-" : [...data].map((b) => b.toString(16).padStart(2, "0")).join("");
    const run = async (args: string[]) => {
      const output = await new Deno.Command(peer, { args, signal: AbortSignal.timeout(30_000) }).output();
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return new TextDecoder().decode(output.stdout).trim().split("\n");
    };
    try {
      using channel = track(await open<Uint8Array>("sysv-mq:private", { codec: bytes }));
      const qid = String(channel.info.id);
      const payloads = [pattern(64, 1), new Uint8Array(0), pattern(8192, 2), new Uint8Array([0, 0, 255])];
      const types = [1, 42, 2 ** 31 + 5, Number.MAX_SAFE_INTEGER];

      // C → ipcbus: the payload is exactly the mtext, the type exactly the mtype.
      assert.deepEqual(await run(["send", qid, ...payloads.map((p, i) => `${types[i]}:${hex(p)}`)]), [
        "sent",
      ]);
      for (const [i, payload] of payloads.entries()) {
        const message = await channel.receiveMessage({ signal: timeout() });
        assert.equal(message.type, types[i]);
        assert.ok(sameBytes(message.value, payload), `message ${i}: ${message.value.length} bytes`);
      }

      // A type beyond 2^53 cannot be reported exactly: FrameError naming it (the message is gone).
      assert.deepEqual(await run(["send", qid, `${2n ** 60n}:01`, "5:02"]), ["sent"]);
      await assert.rejects(channel.receive(), (error: Error) => {
        assert.equal(error.name, "FrameError");
        assert.match(error.message, new RegExp(`type ${2n ** 60n}`));
        return true;
      });
      assert.deepEqual(await channel.receiveMessage({ signal: timeout() }), {
        value: new Uint8Array([2]),
        type: 5,
        priority: 0,
      });

      // ipcbus → C, with C's type filter.
      for (const [i, payload] of payloads.entries()) await channel.send(payload, { type: types[i] });
      assert.deepEqual(await run(["recv", qid, "-100", "2"]), [`1 ${hex(payloads[0])}`, `42 -`]);
      assert.deepEqual(await run(["recv", qid, "0", "2"]), [
        `${types[2]} ${hex(payloads[2])}`,
        `${types[3]} ${hex(payloads[3])}`,
      ]);

      // A C receiver blocked in msgrcv gets what ipcbus sends.
      const blocked = new Deno.Command(peer, { args: ["recv", qid, "9", "1"], stdout: "piped" }).spawn();
      try {
        await until(() => parkedInMsgrcv(blocked.pid) > 0, "the C receiver to block");
        await channel.send(new TextEncoder().encode("to C"), { type: 9 });
        const output = await bounded(blocked.output(), "the C receiver");
        assert.equal(
          new TextDecoder().decode(output.stdout).trim(),
          `9 ${hex(new TextEncoder().encode("to C"))}`,
        );
      } finally {
        try {
          blocked.kill("SIGKILL");
        } catch {
          // exited
        }
      }
    } finally {
      cleanup();
    }
  },
});

Deno.test("sysv-mq: no queue made by these tests is left", () => {
  cleanup();
  const ids = queueIds();
  const left = [...made].filter((id) => ids.has(id));
  assert.deepEqual(left, [], "queues left behind");
});
