// The posix-mq: transport: names, sizes and limits, priority order across
// processes, full and empty queues with waiting senders and receivers,
// aborts and timeouts on both sides, close(), unlink() while open,
// permissions, and a C peer using mq_send/mq_receive directly.
//
// Every queue made here has a name starting with /ipcbus-test-<RUN>-, is
// recorded in `made` and removed in `finally` (mq_unlink, also when a test
// fails); the last test checks that none is left. Queues are small (4 × 256
// bytes unless a test needs more): every POSIX queue of a user counts against
// the user's RLIMIT_MSGQUEUE, which with the default sizes fits only nine.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  bytes,
  Channel,
  ChannelClosedError,
  IpcError,
  MessageTooLargeError,
  NotFoundError,
  open,
  type OpenOptions,
  text,
} from "../mod.ts";
import { listIpcDirectory, readProcFile } from "../inspect.ts";
import { Presence } from "../sync/presence.ts";
import { PosixMessageQueue } from "../transports/posix_mq.ts";
import {
  bounded,
  DenoChild,
  euid,
  fixture,
  hasCc,
  hasSetpriv,
  linesUntilDone,
  pattern,
  RUN,
  sameBytes,
  TempDir,
  until,
} from "./_helpers.ts";

const timeout = () => AbortSignal.timeout(20_000);
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Raw libc, to inspect and remove queues behind the library's back.

const raw = Deno.dlopen("libc.so.6", {
  mq_open: { parameters: ["buffer", "i32", "u32", "buffer"], result: "i32" },
  mq_close: { parameters: ["i32"], result: "i32" },
  mq_unlink: { parameters: ["buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const O_RDONLY = 0, O_NONBLOCK = 0o4000, ENOENT = 2;

function cName(name: string): Uint8Array {
  return encoder.encode(name + "\0");
}

/** Whether a queue has this name now. */
function exists(name: string): boolean {
  const fd = raw.mq_open(cName(name), O_RDONLY | O_NONBLOCK, 0, null);
  if (fd >= 0) {
    raw.mq_close(fd);
    return true;
  }
  const code = new Deno.UnsafePointerView(raw.__errno_location()!).getInt32();
  if (code !== ENOENT) throw new Error(`mq_open ${name}: errno ${code}`);
  return false;
}

/** Names made by this module; all removed by `cleanup()` and checked at the end. */
const made = new Set<string>();

/** A fresh, recorded queue name. */
function fresh(): string {
  const name = `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
  made.add(name);
  return name;
}

/** Removes every recorded queue that still exists, and its presence record. */
function cleanup(): void {
  for (const name of made) {
    raw.mq_unlink(cName(name));
    Presence.forget(`posix-mq:${name}`);
  }
}

const SMALL = { maxMessages: 4, messageSize: 256 } as const;

/** Creates a small queue with a fresh name. */
function create<T>(options: OpenOptions<T> = {}): Promise<Channel<T>> {
  return open<T>(`posix-mq:${fresh()}`, { create: true, exclusive: true, ...SMALL, ...options });
}

function readProc(path: string): string | null {
  return readProcFile(path);
}

function setting(name: string): number {
  return Number(readProc(`/proc/sys/fs/mqueue/${name}`)!.trim());
}

/** The entries of /dev/mqueue, or null when it is not mounted (the library does not need it). */
function mqueueEntries(): { name: string; mode: number }[] | null {
  return listIpcDirectory("/dev/mqueue");
}

function mqueueMounted(): boolean {
  return mqueueEntries() !== null;
}

function child(args: string[]): DenoChild {
  return new DenoChild(fixture("posix_mq_child.ts"), args, ["--allow-ffi"]);
}

/** Runs the fixture as uid/gid 65534 (needs root and setpriv); returns its stdout. */
async function asNobody(home: string, args: string[]): Promise<string> {
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
      fixture("posix_mq_child.ts"),
      ...args,
    ],
    env: { DENO_DIR: home, HOME: home },
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout).trim();
}

const canSwitchUser = hasSetpriv && euid() === 0;

// ---------------------------------------------------------------------------

Deno.test("posix-mq: bad names are TypeErrors naming the rule, bad options RangeErrors", async () => {
  const cases: [string, RegExp][] = [
    ["posix-mq:", /starts with one slash/],
    ["posix-mq:orders", /starts with one slash/],
    ["posix-mq:/", /empty/],
    ["posix-mq://orders", /no slash but the first/],
    ["posix-mq:/a/b", /no slash but the first/],
    ["posix-mq:/.", /not queue names/],
    ["posix-mq:/..", /not queue names/],
    [`posix-mq:/${"x".repeat(256)}`, /at most 255 bytes.*NAME_MAX/],
    [`posix-mq:/${"é".repeat(128)}`, /at most 255 bytes.*got 256/],
    ["posix-mq:/a?maxMessages=3", /options of open\(\)/],
    ["posix-mq:/a#b", /options of open\(\)/],
    ["posix-mq:/a\0b", /NUL/],
  ];
  for (const [address, why] of cases) {
    await assert.rejects(open(address, { create: true }), (error: Error) => {
      assert.ok(error instanceof TypeError, `${address}: got ${error}`);
      assert.match(error.message, why, address);
      assert.match(error.message, /posix-mq:\/orders/, "shows the expected form");
      return true;
    });
  }
  assert.throws(() => PosixMessageQueue.open("orders"), TypeError);
  for (
    const options of [
      { mode: 0o1000 },
      { mode: -1 },
      { maxMessages: 0 },
      { maxMessages: 1.5 },
      { maxMessages: 65537 },
      { messageSize: 0 },
      { messageSize: 16 * 1024 * 1024 + 1 },
      { maxMessageSize: -1 },
      { spin: -1 },
    ]
  ) {
    await assert.rejects(open(`posix-mq:${fresh()}`, { create: true, ...options }), RangeError);
  }
  // 255 bytes is fine; so is a URL object (percent-encoded), and a name without the scheme.
  try {
    const long = `/${RUN}${"y".repeat(255 - RUN.length)}`;
    made.add(long);
    using longest = await open(`posix-mq:${long}`, { create: true, ...SMALL });
    assert.equal(longest.info.name, long);
    const spaced = `${fresh()} with spaces`;
    made.add(spaced);
    using viaUrl = await open(new URL(`posix-mq:${spaced}`), { create: true, ...SMALL });
    assert.equal(viaUrl.info.name, spaced);
    const direct = PosixMessageQueue.open(spaced);
    assert.equal(direct.info.address, `posix-mq:${spaced}`);
    direct.close();
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: missing → NotFoundError, exclusive → AlreadyExistsError, other sizes → AlreadyExistsError, exact mode", async () => {
  try {
    const name = fresh();
    const missing = await open(`posix-mq:${name}`).catch((error) => error);
    assert.ok(missing instanceof NotFoundError, `got ${missing}`);
    assert.equal(missing.code, "ENOENT");
    assert.equal(missing.syscall, "mq_open");
    assert.match(missing.message, new RegExp(`${name}.*create: true`));

    using created = await open(`posix-mq:${name}`, { create: true, exclusive: true, mode: 0o666, ...SMALL });
    assert.equal(created.info.created, true);
    assert.equal(created.info.mode, 0o666, "the umask does not apply");
    assert.equal(created.info.owner, euid());
    const entry = mqueueEntries()?.find((entry) => `/${entry.name}` === name);
    if (mqueueMounted()) assert.equal(entry?.mode, 0o666);

    const taken = await open(`posix-mq:${name}`, { create: true, exclusive: true }).catch((error) => error);
    assert.ok(taken instanceof AlreadyExistsError, `got ${taken}`);
    assert.equal(taken.code, "EEXIST");
    assert.equal(taken.syscall, "mq_open");

    // Not exclusive: the same queue; with matching sizes too.
    using again = await open(`posix-mq:${name}`, { create: true });
    using same = await open(`posix-mq:${name}`, { ...SMALL });
    for (const other of [again, same]) {
      assert.equal(other.info.created, false);
      assert.equal(other.info.maxMessages, SMALL.maxMessages);
      assert.equal(other.info.messageSize, SMALL.messageSize);
    }
    await again.send("through another handle", { priority: 3 });
    assert.deepEqual(await created.receiveMessage({ signal: timeout() }), {
      value: "through another handle",
      type: 1,
      priority: 3,
    });

    // Sizes that do not match the existing queue: refused, naming the real ones.
    const other = await open(`posix-mq:${name}`, { create: true, maxMessages: 2 }).catch((error) => error);
    assert.ok(other instanceof AlreadyExistsError, `got ${other}`);
    assert.match(other.message, /maxMessages 4 and messageSize 256, not the maxMessages 2 asked for/);
    await assert.rejects(open(`posix-mq:${name}`, { messageSize: 100 }), /messageSize 100 asked for/);

    // Without sizes a created queue gets the system's defaults.
    using defaults = await open(`posix-mq:${fresh()}`, { create: true });
    assert.equal(defaults.info.maxMessages, Math.min(setting("msg_default"), setting("msg_max")));
    assert.equal(defaults.info.messageSize, Math.min(setting("msgsize_default"), setting("msgsize_max")));
    // One size given: the other is the default.
    using half = await open(`posix-mq:${fresh()}`, { create: true, maxMessages: 3 });
    assert.equal(half.info.maxMessages, 3);
    assert.equal(half.info.messageSize, defaults.info.messageSize);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: info and stat(); oversized messages fail before the syscall; types are refused, priorities checked", async () => {
  try {
    using channel = await create<Uint8Array>({ codec: bytes, maxMessages: 3, messageSize: 100 });
    const queue = channel.unsafeTransport as PosixMessageQueue;
    const { info } = channel;
    assert.equal(info.scheme, "posix-mq");
    assert.equal(info.address, `posix-mq:${info.name}`);
    assert.deepEqual(info.capabilities, {
      types: false,
      typeFilter: false,
      priority: true,
      multiWriter: true,
      multiReader: true,
      persistent: true,
    });
    assert.equal(info.maxMessageSize, 100);
    assert.equal(info.maxType, 1);
    assert.equal(info.maxPriority, 32767);
    assert.match(String(info.maxMessageSizeReason), /mq_msgsize .* 100 bytes/);
    assert.deepEqual(queue.stat(), { maxMessages: 3, messageSize: 100, messages: 0, flags: 0o4000 });

    const error = await channel.send(new Uint8Array(101)).catch((e) => e);
    assert.ok(error instanceof MessageTooLargeError && error instanceof RangeError, `got ${error}`);
    assert.equal(error.limit, 100);
    assert.equal(error.size, 101);
    assert.match(error.message, /mq_msgsize/);
    assert.throws(() => channel.trySend(new Uint8Array(101)), MessageTooLargeError);
    assert.throws(() => queue.trySend(new Uint8Array(101), 1, 0), MessageTooLargeError);
    assert.equal(queue.stat().messages, 0, "nothing reached the queue");

    // Exactly the limit, and empty messages, round-trip whole; views are reused.
    await channel.send(pattern(100, 1), { priority: 1 });
    await channel.send(new Uint8Array(0), { priority: 0 });
    assert.equal(queue.stat().messages, 2);
    assert.ok(sameBytes(await channel.receive({ signal: timeout() }), pattern(100, 1)));
    assert.deepEqual(await channel.receiveMessage({ signal: timeout() }), {
      value: new Uint8Array(0),
      type: 1,
      priority: 0,
    });

    // A smaller limit asked for with maxMessageSize; a larger one is lowered.
    using small = await open<Uint8Array>(info.address, { codec: bytes, maxMessageSize: 10 });
    assert.equal(small.info.maxMessageSize, 10);
    assert.match(String(small.info.maxMessageSizeReason), /maxMessageSize option/);
    await assert.rejects(small.send(new Uint8Array(11)), MessageTooLargeError);
    using large = await open(info.address, { maxMessageSize: 1 << 20 });
    assert.equal(large.info.maxMessageSize, 100);

    // No types, no type filters: TypeErrors naming the transport and the capability.
    await assert.rejects(channel.send(new Uint8Array(1), { type: 2 }), /posix-mq.*capabilities\.types/);
    await assert.rejects(channel.receive({ type: 2 }), /posix-mq.*capabilities\.typeFilter/);
    assert.throws(() => channel.tryReceive({ type: 5, except: true }), TypeError);
    assert.throws(() => queue.trySend(new Uint8Array(1), 2, 0), /posix-mq.*capabilities\.types/);
    assert.throws(() => queue.tryReceive({ type: 3, except: false }), /posix-mq.*capabilities\.typeFilter/);
    // Priorities: 0 … 32767.
    await assert.rejects(channel.send(new Uint8Array(1), { priority: 32768 }), RangeError);
    await assert.rejects(channel.send(new Uint8Array(1), { priority: -1 }), RangeError);
    await assert.rejects(channel.send(new Uint8Array(1), { priority: 1.5 }), RangeError);
    assert.throws(() => queue.trySend(new Uint8Array(1), 1, 32768), /0 to 32767.*MQ_PRIO_MAX/);
    assert.throws(() => queue.trySend(new Uint8Array(1), 1, NaN), RangeError);
    assert.equal(queue.stat().messages, 0, "nothing was sent");
    await channel.send(new Uint8Array([7]), { priority: 32767 });
    assert.equal((await channel.receiveMessage({ signal: timeout() })).priority, 32767);

    channel.close();
    assert.throws(() => queue.stat(), ChannelClosedError);
    assert.throws(() => queue.trySend(new Uint8Array(1), 1, 0), ChannelClosedError);
    assert.throws(() => queue.tryReceive({ type: 0, except: false }), ChannelClosedError);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: highest priority first, FIFO within a priority, across processes both ways", async () => {
  try {
    using channel = await create<string>({ codec: text, maxMessages: 10 });
    const address = channel.info.address;
    // A child sends mixed priorities; this process receives them in order.
    await using sender = child(["send", address, "1:a", "5:b", "0:c", "5:d", "32767:e", "1:f", "0:g"]);
    assert.equal(await bounded(sender.line(), "the sender"), "sent");
    const got: string[] = [];
    for (let i = 0; i < 7; i++) {
      const message = await channel.receiveMessage({ signal: timeout() });
      assert.equal(message.type, 1);
      got.push(`${message.priority} ${message.value}`);
    }
    assert.deepEqual(got, ["32767 e", "5 b", "5 d", "1 a", "1 f", "0 c", "0 g"]);

    // This process sends; a child receives in order.
    for (const [priority, value] of [[2, "x1"], [9, "y1"], [2, "x2"], [0, "z"], [9, "y2"]] as const) {
      await channel.send(value, { priority });
    }
    await using receiver = child(["receive", address, "5"]);
    await bounded(receiver.expect("ready"), "the receiver");
    assert.deepEqual(await linesUntilDone(receiver), ["9 y1", "9 y2", "2 x1", "2 x2", "0 z"]);
    assert.deepEqual(channel.tryReceive(), { ok: false, reason: "empty" });
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: several receivers share one queue; each message goes to exactly one", async () => {
  try {
    using channel = await create<string>({ codec: text });
    const address = channel.info.address;
    await using a = child(["receive", address, "15"]);
    await using b = child(["receive", address, "15"]);
    for (const receiver of [a, b]) await bounded(receiver.expect("ready"), "a receiver");
    for (let i = 0; i < 30; i++) await channel.send(`m${i}`, { signal: timeout() }); // waits when full
    const left = await linesUntilDone(a);
    const right = await linesUntilDone(b);
    assert.deepEqual(
      [...left, ...right].map((line) => Number(line.split(" m")[1])).sort((x, y) => x - y),
      Array.from({ length: 30 }, (_, i) => i),
      "every message exactly once",
    );
    for (const lines of [left, right]) {
      const order = lines.map((line) => Number(line.split(" m")[1]));
      assert.deepEqual(order, [...order].sort((x, y) => x - y), "each receiver sees them in queue order");
    }
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: a full queue: trySend false, a waiting sender released by a receiver in another process", async () => {
  try {
    // This process waits to send; a child's receive makes room.
    using channel = await create<string>({ codec: text });
    const queue = channel.unsafeTransport as PosixMessageQueue;
    let sent = 0;
    while (channel.trySend(`m${sent}`)) sent++;
    assert.equal(sent, SMALL.maxMessages);
    assert.equal(queue.stat().messages, SMALL.maxMessages);
    let done = false;
    const waiting = channel.send("last", { signal: timeout() }).then(() => done = true);
    for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(done, false, "still waiting for room; the event loop keeps turning");
    assert.equal(channel.trySend("other"), false, "trySend refuses while a send waits");
    await using receiver = child(["receive", channel.info.address, "1"]);
    await bounded(receiver.expect("ready"), "the receiver");
    assert.deepEqual(await linesUntilDone(receiver), ["0 m0"]);
    await bounded(waiting, "the waiting send");
    const rest = [];
    for (let i = 0; i < SMALL.maxMessages; i++) rest.push(await channel.receive({ signal: timeout() }));
    assert.deepEqual(rest, ["m1", "m2", "m3", "last"]);

    // A child waits to send into the full queue; this process's receive releases it.
    await using filler = child(["fill", channel.info.address, "0"]);
    assert.equal(await bounded(filler.line(), "the filler"), `full ${SMALL.maxMessages}`);
    assert.equal(await channel.receive({ signal: timeout() }), "f0");
    assert.equal(await bounded(filler.line(), "the filler's waiting send"), "sent");
    const { status } = await filler.finish();
    assert.equal(status.code, 0, "the child exits by itself, its channel still open");
    const drained = [];
    for (let i = 0; i < SMALL.maxMessages; i++) drained.push(await channel.receive({ signal: timeout() }));
    assert.deepEqual(drained, ["f1", "f2", "f3", "last"]);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: receive: timeout and abort (here and in a child), nothing lost, close() settles it", async () => {
  try {
    using channel = await create<string>({ codec: text });
    const timedOut = await channel.receive({ signal: AbortSignal.timeout(30) }).catch((e) => e);
    assert.equal(timedOut.name, "TimeoutError");
    const controller = new AbortController();
    const aborted = channel.receive({ signal: controller.signal }).catch((e) => e);
    controller.abort(new Error("stop"));
    assert.equal((await aborted).message, "stop");
    await channel.send("after the aborts");
    assert.equal(await channel.receive({ signal: timeout() }), "after the aborts", "nothing lost");

    // A receive waiting in another process: a timeout there, then the process exits by itself.
    await using waiter = child(["wait", channel.info.address, "50"]);
    await bounded(waiter.expect("ready"), "the waiter");
    assert.match(await bounded(waiter.line(), "the waiter's outcome"), /^TimeoutError /);
    assert.equal((await waiter.finish()).status.code, 0, "the child exits with its channel open");
    // And one that gets a message.
    await using getter = child(["wait", channel.info.address, "0"]);
    await bounded(getter.expect("ready"), "the getter");
    await channel.send("for the child", { priority: 4 });
    assert.equal(await bounded(getter.line(), "the getter's outcome"), "got 4 for the child");

    // close() settles a waiting receive; the transport's own close() too.
    const pending = channel.receive().catch((e) => e);
    channel.close();
    assert.ok((await pending) instanceof ChannelClosedError);
    await assert.rejects(channel.receive(), ChannelClosedError);
    assert.deepEqual(channel.tryReceive(), { ok: false, reason: "closed" });

    const direct = PosixMessageQueue.open(channel.info.address);
    const parked = Promise.resolve(direct.receive({ type: 0, except: false }, new AbortController().signal))
      .catch((e) => e);
    direct.close();
    const error = await bounded(parked, "the direct receive");
    assert.ok(error instanceof ChannelClosedError, `got ${error}`);
    direct.close(); // idempotent
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: send on a full queue: timeout and abort (here and in a child) send nothing; close() settles it", async () => {
  try {
    using channel = await create<string>({ codec: text });
    const queue = channel.unsafeTransport as PosixMessageQueue;
    while (channel.trySend("full"));
    const timedOut = await channel.send("late", { signal: AbortSignal.timeout(30) }).catch((e) => e);
    assert.equal(timedOut.name, "TimeoutError");
    const controller = new AbortController();
    const aborted = channel.send("never", { signal: controller.signal }).catch((e) => e);
    controller.abort(new Error("changed my mind"));
    assert.equal((await aborted).message, "changed my mind");
    assert.equal(queue.stat().messages, SMALL.maxMessages);

    // A child's send into the full queue times out; the child exits by itself.
    await using filler = child(["fill", channel.info.address, "50"]);
    assert.equal(await bounded(filler.line(), "the filler"), "full 0");
    assert.match(await bounded(filler.line(), "the filler's outcome"), /^TimeoutError /);
    assert.equal((await filler.finish()).status.code, 0);

    const values = [];
    for (let i = 0; i < SMALL.maxMessages; i++) values.push(await channel.receive({ signal: timeout() }));
    assert.deepEqual(values, ["full", "full", "full", "full"]);
    assert.deepEqual(channel.tryReceive(), { ok: false, reason: "empty" }, "the aborted sends sent nothing");

    // close() settles a waiting send.
    while (channel.trySend("full again"));
    const pending = channel.send("orphan").catch((e) => e);
    channel.close();
    assert.ok((await pending) instanceof ChannelClosedError);
    assert.throws(() => channel.trySend("x"), ChannelClosedError);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: batches: sendBatch waits for room between messages; receiveBatch takes by priority", async () => {
  try {
    using channel = await create<string>({ codec: text });
    using peer = await open<string>(channel.info.address, { codec: text });
    assert.equal(channel.trySendBatch(["a", "b", "c", "d", "e", "f"], { priority: 2 }), SMALL.maxMessages);
    assert.equal(channel.trySendBatch(["x"]), 0, "full");
    const taken = peer.tryReceiveBatch(10);
    assert.deepEqual(taken.map((m) => [m.value, m.priority]), [["a", 2], ["b", 2], ["c", 2], ["d", 2]]);
    // Ten messages through a queue of four: sendBatch waits for the receiver.
    const values = Array.from({ length: 10 }, (_, i) => `m${i}`);
    const sending = channel.sendBatch(values, { priority: 1, signal: timeout() });
    const got: string[] = [];
    while (got.length < values.length) {
      for (const message of await peer.receiveBatch(3, { signal: timeout() })) got.push(message.value);
    }
    await bounded(sending, "the batch");
    assert.deepEqual(got, values);
    // Mixed priorities in one receiveBatch.
    await channel.send("low", { priority: 0 });
    await channel.send("high", { priority: 9 });
    await channel.send("mid", { priority: 4 });
    const mixed = await peer.receiveBatch(10, { signal: timeout() });
    assert.deepEqual(mixed.map((m) => m.value), ["high", "mid", "low"]);
    await assert.rejects(peer.receiveBatch(2, { type: 3 }), /capabilities\.typeFilter/);
    assert.throws(() => channel.trySendBatch(["x"], { type: 2 }), /capabilities\.types/);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: presence: live while open, stale after the last close, gone after unlink", async () => {
  try {
    const channel = await create();
    const address = channel.info.address;
    assert.equal(Presence.probe(address), "live");
    await using holder = child(["wait", address, "0"]);
    await bounded(holder.expect("ready"), "the child");
    channel.close();
    assert.equal(Presence.probe(address), "live", "the child still holds it");
    holder.process.kill("SIGKILL");
    await holder.process.status;
    assert.equal(Presence.probe(address), "stale", "a killed holder drops its lock");
    await channel.unlink();
    assert.equal(Presence.probe(address), "unknown");
    // A queue removed behind the library's back: the last close drops the record.
    const other = await create();
    raw.mq_unlink(cName(other.info.name as string));
    other.close();
    assert.equal(Presence.probe(other.info.address), "unknown");
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: a peer killed while waiting to receive or to send loses nothing and sends nothing", async () => {
  try {
    using channel = await create<string>({ codec: text });
    const queue = channel.unsafeTransport as PosixMessageQueue;
    await using waiter = child(["wait", channel.info.address, "0"]);
    await bounded(waiter.expect("ready"), "the waiter");
    waiter.process.kill("SIGKILL");
    await waiter.process.status;
    await channel.send("after the waiter died");
    assert.equal(
      await channel.receive({ signal: timeout() }),
      "after the waiter died",
      "not taken by the dead",
    );

    await using filler = child(["fill", channel.info.address, "0"]);
    assert.equal(await bounded(filler.line(), "the filler"), `full ${SMALL.maxMessages}`);
    filler.process.kill("SIGKILL");
    await filler.process.status;
    const values = [];
    for (let result = channel.tryReceive(); result.ok; result = channel.tryReceive()) {
      values.push(result.value);
    }
    assert.deepEqual(values, ["f0", "f1", "f2", "f3"], "the killed sender's waiting message never arrives");
    assert.equal(queue.stat().messages, 0);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: unlink() while open: the name goes now, the queue when the last descriptor closes", async () => {
  try {
    using first = await create<string>({ codec: text });
    const address = first.info.address;
    using second = await open<string>(address, { codec: text });
    await using waiter = child(["wait", address, "0"]);
    await bounded(waiter.expect("ready"), "the waiter");

    await first.unlink();
    assert.equal(exists(first.info.name as string), false, "the name is gone");
    await assert.rejects(open(address), NotFoundError);
    // Everyone who has it open goes on using it.
    await first.send("still here", { priority: 1 });
    assert.equal(await bounded(waiter.line(), "the waiter"), "got 1 still here");
    await first.send("for the second handle");
    assert.equal(await second.receive({ signal: timeout() }), "for the second handle");

    // The name can be made again: a different queue.
    using remade = await open<string>(address, { codec: text, create: true, ...SMALL });
    assert.equal(remade.info.created, true);
    await first.send("old queue");
    assert.deepEqual(remade.tryReceive(), { ok: false, reason: "empty" });
    assert.equal(await second.receive({ signal: timeout() }), "old queue");

    // unlink() through the old handles leaves the new queue alone.
    const stale = await first.unlink().catch((e) => e);
    assert.ok(stale instanceof NotFoundError, `got ${stale}`);
    assert.match(stale.message, /names another queue now.*left alone/);
    await assert.rejects(second.unlink(), NotFoundError);
    assert.equal(exists(first.info.name as string), true);
    await remade.unlink();
    const gone = await remade.unlink().catch((e) => e);
    assert.ok(gone instanceof NotFoundError, `got ${gone}`);
    assert.match(gone.message, /removed already/);
    // unlink() after close() works too.
    const closed = await create();
    closed.close();
    await closed.unlink();
    assert.equal(exists(closed.info.name as string), false);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: limits exceeded are explained: msg_max / msgsize_max, RLIMIT_MSGQUEUE", async () => {
  try {
    const msgMax = setting("msg_max");
    const over = await open(`posix-mq:${fresh()}`, { create: true, maxMessages: msgMax + 1, messageSize: 64 })
      .catch((error) => error);
    if (over instanceof Channel) {
      // This process has CAP_SYS_RESOURCE: msg_max does not bind it (the uid 65534 test below covers it).
      over.close();
      console.log("  this process may exceed fs.mqueue.msg_max (CAP_SYS_RESOURCE)");
    } else {
      assert.ok(over instanceof IpcError, `got ${over}`);
      assert.equal(over.code, "EINVAL");
      assert.equal(over.syscall, "mq_open");
      assert.match(
        over.message,
        new RegExp(`maxMessages ${msgMax + 1} against fs\\.mqueue\\.msg_max \\(${msgMax} here\\)`),
      );
      assert.match(over.message, /sysctl fs\.mqueue\.msg_max=/);
      assert.doesNotMatch(over.message, /messageSize 64 against/, "only the limit that bites");
    }

    // RLIMIT_MSGQUEUE, lowered in a child: a queue of 10 × 8192 bytes needs about 82 KB.
    await using limited = child(["limit", "20000", `posix-mq:${fresh()}`, "10", "8192"]);
    const said = await bounded(limited.line(), "the limited child");
    assert.match(said, /^IpcError /);
    assert.match(said, /EMFILE/);
    assert.match(said, /RLIMIT_MSGQUEUE is 20000 bytes/);
    assert.match(said, /this queue alone \(10 × 8192 bytes, about 82880 bytes\) needs more than that/);
    const defaults = `${Math.min(setting("msg_default"), setting("msg_max"))} × ` +
      `${Math.min(setting("msgsize_default"), setting("msgsize_max"))} bytes`;
    assert.match(said, new RegExp(`default sizes \\(${defaults}\\)`));
    assert.match(said, /ulimit -q/);
  } finally {
    cleanup();
  }
});

Deno.test({
  name:
    `posix-mq: as another user: mode denies → PermissionDeniedError naming owner and mode; msg_max binds; only the owner unlinks${
      canSwitchUser ? "" : " (skipped: needs root and setpriv(1) to run a child as uid 65534)"
    }`,
  ignore: !canSwitchUser,
  async fn() {
    await using home = await TempDir.make();
    await Deno.chmod(home.path, 0o777);
    try {
      using locked = await create({ mode: 0o600 });
      const said = await asNobody(home.path, ["open", locked.info.address]);
      assert.match(said, /^PermissionDeniedError /);
      assert.match(said, /EACCES/);
      if (mqueueMounted()) assert.match(said, /belongs to uid 0 gid \d+ with mode 0o600/);
      assert.match(said, /runs as uid 65534/);

      using shared = await create<string>({ codec: text, mode: 0o666 });
      assert.equal(await asNobody(home.path, ["open", shared.info.address]), "opened");
      assert.equal(await shared.receive({ signal: timeout() }), "hello from the child");
      const refused = await asNobody(home.path, ["unlink", shared.info.address]);
      assert.match(refused, /^PermissionDeniedError .*only the owner of .* \(uid 0\) or root may remove it/);
      assert.equal(exists(shared.info.name as string), true);
      const refusedByName = await asNobody(home.path, ["unlink-name", shared.info.address]);
      assert.match(refusedByName, /^PermissionDeniedError .*only the owner of .* or root may remove it/);
      if (mqueueMounted()) assert.match(refusedByName, /belongs to uid 0 gid \d+ with mode 0o666/);
      assert.equal(exists(shared.info.name as string), true);

      // Without CAP_SYS_RESOURCE, fs.mqueue.msg_max binds.
      const msgMax = setting("msg_max");
      const over = await asNobody(home.path, ["create", `posix-mq:${fresh()}`, String(msgMax + 1), "64"]);
      assert.match(over, /^IpcError .*EINVAL.*fs\.mqueue\.msg_max \(\d+ here\)/);
      const msgsizeMax = setting("msgsize_max");
      const big = await asNobody(home.path, ["create", `posix-mq:${fresh()}`, "1", String(msgsizeMax + 1)]);
      assert.match(big, /^IpcError .*EINVAL.*messageSize \d+ against fs\.mqueue\.msgsize_max/);
    } finally {
      cleanup();
    }
  },
});

Deno.test({
  name: `posix-mq: interoperates with a C peer using mq_send/mq_receive${
    hasCc ? "" : " (skipped: no C compiler `cc` found)"
  }`,
  ignore: !hasCc,
  async fn() {
    await using dir = await TempDir.make();
    const peer = `${dir.path}/posix_mq_peer`;
    const build = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-Werror", "-o", peer, fixture("posix_mq_peer.c"), "-lrt"],
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const hex = (data: Uint8Array) =>
      data.length === 0 ? "-" : [...data].map((b) => b.toString(16).padStart(2, "0")).join("");
    const run = async (args: string[]) => {
      const output = await new Deno.Command(peer, { args, signal: AbortSignal.timeout(30_000) }).output();
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return new TextDecoder().decode(output.stdout).trim().split("\n");
    };
    const wchan = (pid: number) => readProc(`/proc/${pid}/wchan`) ?? "";
    try {
      // The transport's struct mq_attr layout (four longs, 64 bytes with the reserved ones) is the C one.
      assert.deepEqual(await run(["layout", "-"]), ["64 0 8 16 24"]);
      using channel = await create<Uint8Array>({ codec: bytes, maxMessages: 8, messageSize: 1024 });
      const name = channel.info.name as string;
      const payloads = [pattern(64, 1), new Uint8Array(0), pattern(1024, 2), new Uint8Array([0, 0, 255])];
      const priorities = [0, 5, 32767, 5];

      // C → ipcbus: the payload is exactly the message, the priority exactly msg_prio.
      assert.deepEqual(await run(["send", name, ...payloads.map((p, i) => `${priorities[i]}:${hex(p)}`)]), [
        "sent",
      ]);
      for (const i of [2, 1, 3, 0]) {
        const message = await channel.receiveMessage({ signal: timeout() });
        assert.equal(message.priority, priorities[i]);
        assert.equal(message.type, 1);
        assert.ok(sameBytes(message.value, payloads[i]), `message ${i}: ${message.value.length} bytes`);
      }

      // ipcbus → C.
      for (const [i, payload] of payloads.entries()) await channel.send(payload, { priority: priorities[i] });
      assert.deepEqual(await run(["attr", name]), ["8 1024 4"]);
      assert.deepEqual(await run(["recv", name, "4"]), [
        `32767 ${hex(payloads[2])}`,
        `5 -`,
        `5 ${hex(payloads[3])}`,
        `0 ${hex(payloads[0])}`,
      ]);

      // A C receiver blocked in mq_receive gets what ipcbus sends.
      const blocked = new Deno.Command(peer, { args: ["recv", name, "1"], stdout: "piped" }).spawn();
      try {
        await until(() => wchan(blocked.pid).includes("wq_sleep"), "the C receiver to block");
        await channel.send(encoder.encode("to C"), { priority: 9 });
        const output = await bounded(blocked.output(), "the C receiver");
        assert.equal(new TextDecoder().decode(output.stdout).trim(), `9 ${hex(encoder.encode("to C"))}`);
      } finally {
        try {
          blocked.kill("SIGKILL");
        } catch {
          // exited
        }
      }

      // A C sender blocked on the full queue is released by ipcbus receives.
      for (let i = 0; i < 8; i++) channel.trySend(pattern(16, i), { priority: 1 });
      const sender = new Deno.Command(peer, { args: ["send", name, "1:0102", "1:0304"], stdout: "piped" })
        .spawn();
      try {
        await until(() => wchan(sender.pid).includes("wq_sleep"), "the C sender to block");
        const first = await channel.receiveMessage({ signal: timeout() });
        assert.deepEqual([first.priority, [...first.value]], [1, [...pattern(16, 0)]]);
        for (let i = 1; i < 8; i++) await channel.receive({ signal: timeout() });
        const output = await bounded(sender.output(), "the C sender");
        assert.equal(new TextDecoder().decode(output.stdout).trim(), "sent");
        assert.deepEqual([...await channel.receive({ signal: timeout() })], [1, 2]);
        assert.deepEqual([...await channel.receive({ signal: timeout() })], [3, 4]);
      } finally {
        try {
          sender.kill("SIGKILL");
        } catch {
          // exited
        }
      }

      // A queue C created with its own sizes: ipcbus reads them.
      const cName = fresh();
      assert.deepEqual(await run(["create", cName, "3", "100"]), ["created"]);
      using cQueue = await open<Uint8Array>(`posix-mq:${cName}`, { codec: bytes });
      assert.equal(cQueue.info.created, false);
      assert.equal(cQueue.info.maxMessages, 3);
      assert.equal(cQueue.info.messageSize, 100);
      await assert.rejects(cQueue.send(new Uint8Array(101)), MessageTooLargeError);
      await assert.rejects(open(`posix-mq:${cName}`, { messageSize: 200 }), AlreadyExistsError);
      await cQueue.send(pattern(100, 9), { priority: 2 });
      assert.deepEqual(await run(["recv", cName, "1"]), [`2 ${hex(pattern(100, 9))}`]);
    } finally {
      cleanup();
    }
  },
});

Deno.test("posix-mq: the transport used directly: a timed-out receive settles; close and unlink", async () => {
  try {
    const queue = PosixMessageQueue.open(fresh(), { create: true, ...SMALL });
    const error = await Promise.resolve(queue.receive({ type: 0, except: false }, AbortSignal.timeout(20)))
      .catch((e) => e);
    assert.equal(error.name, "TimeoutError");
    // spin: 0 parks at once (no spinning, no naps); waits still settle.
    const parked = PosixMessageQueue.open(queue.info.name, { spin: 0 });
    const pending = parked.receive({ type: 0, except: false }, new AbortController().signal);
    assert.equal(queue.trySend(encoder.encode("woken"), 1, 3), true);
    const woken = await bounded(pending, "the parked receive");
    assert.deepEqual([new TextDecoder().decode(woken.data), woken.priority], ["woken", 3]);
    while (queue.trySend(encoder.encode("fill"), 1, 0));
    const full = parked.send(encoder.encode("late"), 1, 0, AbortSignal.timeout(20));
    assert.equal((await full?.catch((e) => e))?.name, "TimeoutError");
    parked.close();
    while (queue.tryReceive({ type: 0, except: false }) !== null);
    assert.equal(queue.trySend(encoder.encode("x"), 1, 7), true);
    const frame = queue.tryReceive({ type: 0, except: false });
    assert.deepEqual(frame && [new TextDecoder().decode(frame.data), frame.type, frame.priority], [
      "x",
      1,
      7,
    ]);
    queue.close();
    await queue.unlink();
    assert.equal(exists(queue.info.name), false);
  } finally {
    cleanup();
  }
});

Deno.test("posix-mq: no queue (and no presence record) made by these tests is left", () => {
  cleanup();
  const left = [...made].filter(exists);
  assert.deepEqual(left, [], "queues left behind");
  const records = [...made].filter((name) => Presence.probe(`posix-mq:${name}`) !== "unknown");
  assert.deepEqual(records, [], "presence records left behind");
  if (mqueueMounted()) {
    const stray = mqueueEntries()!.map((entry) => entry.name).filter((name) => name.includes(RUN));
    assert.deepEqual(stray, [], "queues with this run's id in /dev/mqueue");
  }
});

Deno.test("PosixMessageQueue.unlink removes a name without opening the queue; open handles keep working", async () => {
  try {
    using channel = await create<string>({ codec: text });
    const name = channel.info.name as string;
    assert.ok(Presence.list().some((record) => record.address === `posix-mq:${name}`));
    PosixMessageQueue.unlink(`posix-mq:${name}`);
    assert.equal(exists(name), false);
    assert.ok(!Presence.list().some((record) => record.address === `posix-mq:${name}`), "no presence record");
    // The queue lives on for whoever has it open.
    await channel.send("still here");
    assert.equal(await channel.receive({ signal: timeout() }), "still here");
    assert.throws(() => PosixMessageQueue.unlink(name), NotFoundError);
    assert.throws(() => PosixMessageQueue.unlink("orders"), TypeError);
    assert.throws(() => PosixMessageQueue.unlink("/a/b"), TypeError);
  } finally {
    cleanup();
  }
});
