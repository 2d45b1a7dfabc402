// Channel<T> over Pipe.pair(): the public API contract of DESIGN.md §2, in
// one process (no children).
import assert from "node:assert/strict";
import {
  bytes,
  Channel,
  ChannelClosedError,
  type Codec,
  FrameError,
  json,
  lstatIpcPath,
  MessageTooLargeError,
  open,
  Pipe,
  type ReceivedFrame,
  registeredSchemes,
  registerTransport,
  type StandardSchemaV1,
  text,
  type Transport,
  type TransportInfo,
  ValidationError,
} from "../mod.ts";
import { leftovers, testTransportInfo } from "./_helpers.ts";

/** Two connected channels; both closed on dispose. */
function pair<T>(options: ConstructorParameters<typeof Channel<T>>[1] = {}, pipe = {}) {
  const [a, b] = Pipe.pair(pipe);
  const left = new Channel<T>(a, options);
  const right = new Channel<T>(b, options);
  return {
    left,
    right,
    [Symbol.dispose]() {
      left.close();
      right.close();
    },
  };
}

/** Lets every pending promise job and I/O callback run once (not a timed wait). */
function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Fills the left→right pipe with 1000-byte messages; returns how many went in. */
function fill(channel: Channel<Uint8Array>): number {
  let count = 0;
  while (channel.trySend(new Uint8Array(1000).fill(count & 0xff))) count++;
  return count;
}

const timeout = () => AbortSignal.timeout(10_000);

Deno.test("send/receive/receiveMessage round-trip values and types", async () => {
  using p = pair<{ id: number; name?: string }>();
  await p.left.send({ id: 1, name: "één" });
  assert.deepEqual(await p.right.receive({ signal: timeout() }), { id: 1, name: "één" });
  await p.left.send({ id: 2 }, { type: 42 });
  assert.deepEqual(await p.right.receiveMessage({ signal: timeout() }), {
    value: { id: 2 },
    type: 42,
    priority: 0,
  });
  // The other direction too.
  await p.right.send({ id: 3 });
  assert.deepEqual(await p.left.receiveMessage({ signal: timeout() }), {
    value: { id: 3 },
    type: 1,
    priority: 0,
  });
});

Deno.test("trySend/tryReceive: ok, empty, full, closed", () => {
  using p = pair<Uint8Array>({ codec: bytes });
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "empty" });
  assert.equal(p.left.trySend(new Uint8Array([1, 2, 3]), { type: 9 }), true);
  const got = p.right.tryReceive();
  assert.equal(got.ok, true);
  if (got.ok) {
    assert.deepEqual(got.value, new Uint8Array([1, 2, 3]));
    assert.equal(got.type, 9);
    assert.equal(got.priority, 0);
  }
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "empty" });
  const count = fill(p.left);
  assert.ok(count > 0);
  assert.equal(p.left.trySend(new Uint8Array(1000)), false, "full is a result, not an exception");
  for (let i = 0; i < count; i++) {
    const message = p.right.tryReceive();
    assert.ok(message.ok && message.value.length === 1000 && message.value[0] === (i & 0xff));
  }
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "empty" });
  p.left.close();
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "closed" }, "peer closed");
  assert.deepEqual(p.left.tryReceive(), { ok: false, reason: "closed" }, "closed here");
});

Deno.test("async iteration ends when the channel is closed locally", async () => {
  using p = pair<number>();
  const seen: number[] = [];
  let third!: () => void;
  const gotThree = new Promise<void>((resolve) => third = resolve);
  const loop = (async () => {
    for await (const value of p.right) {
      seen.push(value);
      if (seen.length === 3) third();
    }
  })();
  for (const value of [1, 2, 3]) await p.left.send(value);
  await gotThree;
  p.right.close(); // the loop is now parked in a receive
  await loop;
  assert.deepEqual(seen, [1, 2, 3]);
});

Deno.test("async iteration drains and ends when the peer closes", async () => {
  using p = pair<number>();
  for (const value of [1, 2, 3]) await p.left.send(value);
  p.left.close();
  const seen: number[] = [];
  for await (const value of p.right) seen.push(value);
  assert.deepEqual(seen, [1, 2, 3]);
  await assert.rejects(p.right.receive(), ChannelClosedError);
});

Deno.test("readable stream yields messages and ends on peer close; writable sends", async () => {
  using p = pair<string>({ codec: text });
  const writer = p.left.writable.getWriter();
  for (const value of ["a", "b", "c"]) await writer.write(value);
  await writer.close();
  assert.equal(p.left.info.closed, false, "closing the writable leaves the channel open");
  await p.left.send("d");
  p.left.close();
  const seen: string[] = [];
  for await (const value of p.right.readable) seen.push(value);
  assert.deepEqual(seen, ["a", "b", "c", "d"]);
  assert.equal(p.left.writable, p.left.writable, "one writable per channel");
});

Deno.test("cancelling the readable stops reading without closing the channel", async () => {
  using p = pair<number>();
  const reader = p.right.readable.getReader();
  const pending = reader.read(); // parks a receive
  await reader.cancel("done");
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.equal(p.right.info.closed, false);
  await p.left.send(5);
  assert.equal(await p.right.receive({ signal: timeout() }), 5, "no message was eaten by the cancelled read");
});

Deno.test("readable ends when the channel is closed locally", async () => {
  using p = pair<number>();
  const reader = p.right.readable.getReader();
  const pending = reader.read();
  p.right.close();
  assert.deepEqual(await pending, { done: true, value: undefined });
});

Deno.test("close() is idempotent and settles a pending receive with ChannelClosedError", async () => {
  using p = pair<number>();
  const pending = p.right.receive();
  const second = p.right.receive(); // queued behind the first
  p.right.close();
  p.right.close();
  p.right[Symbol.dispose]();
  await assert.rejects(pending, ChannelClosedError);
  await assert.rejects(second, ChannelClosedError);
  assert.equal(p.right.info.closed, true);
  await assert.rejects(p.right.receive(), ChannelClosedError);
  await assert.rejects(p.right.send(1), ChannelClosedError);
  assert.throws(() => p.right.trySend(1), ChannelClosedError);
  await p.right.unlink(); // nothing to destroy for a pipe; allowed after close
});

Deno.test("close() settles a send waiting for room with ChannelClosedError", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  fill(p.left);
  const pending = p.left.send(new Uint8Array(1000));
  p.left.close();
  await assert.rejects(pending, ChannelClosedError);
});

Deno.test("receive honours AbortSignal.timeout and AbortController, rejecting with signal.reason", async () => {
  using p = pair<number>();
  const error = await p.right.receive({ signal: AbortSignal.timeout(20) }).catch((e) => e);
  assert.ok(error instanceof DOMException && error.name === "TimeoutError", `got ${error}`);

  const controller = new AbortController();
  const reason = new Error("stop waiting");
  const pending = p.right.receive({ signal: controller.signal });
  controller.abort(reason);
  assert.equal(await pending.catch((e) => e), reason);

  const already = AbortSignal.abort("gone");
  assert.equal(await p.right.receive({ signal: already }).catch((e) => e), "gone");

  // Nothing was lost: the channel still works.
  await p.left.send(7);
  assert.equal(await p.right.receive({ signal: timeout() }), 7);
});

Deno.test("aborting a queued receive leaves the earlier one waiting and in order", async () => {
  using p = pair<number>();
  const first = p.right.receive();
  const controller = new AbortController();
  const second = p.right.receive({ signal: controller.signal });
  const third = p.right.receive();
  controller.abort(new Error("no"));
  await assert.rejects(second, /no/);
  await p.left.send(1);
  await p.left.send(2);
  assert.equal(await first, 1);
  assert.equal(await third, 2);
});

Deno.test("send honours AbortSignal while waiting on a full pipe; nothing half-sent", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  const count = fill(p.left);
  const controller = new AbortController();
  const reason = new Error("send aborted");
  const pending = p.left.send(new Uint8Array(1000).fill(0xee), { signal: controller.signal });
  controller.abort(reason);
  assert.equal(await pending.catch((e) => e), reason);
  const timedOut = await p.left.send(new Uint8Array(1000), { signal: AbortSignal.timeout(20) }).catch((e) =>
    e
  );
  assert.ok(timedOut instanceof DOMException && timedOut.name === "TimeoutError", `got ${timedOut}`);
  for (let i = 0; i < count; i++) {
    const got = await p.right.receive({ signal: timeout() });
    assert.equal(got[0], i & 0xff);
  }
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "empty" }, "aborted sends wrote nothing");
  await p.left.send(new Uint8Array([1]));
  assert.deepEqual(await p.right.receive({ signal: timeout() }), new Uint8Array([1]));
});

Deno.test("a send waiting on a full pipe is released by the receiver", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  const count = fill(p.left);
  let done = false;
  const pending = p.left.send(new Uint8Array(1000).fill(0xab)).then(() => done = true);
  assert.equal(p.left.trySend(new Uint8Array(1)), false, "trySend refuses while a send waits");
  for (let i = 0; i < count; i++) await p.right.receive({ signal: timeout() });
  await pending;
  assert.equal(done, true);
  const last = await p.right.receive({ signal: timeout() });
  assert.ok(last.length === 1000 && last.every((byte) => byte === 0xab));
});

Deno.test("concurrent sends and receives keep call order (sends overflow the pipe)", async () => {
  using p = pair<{ i: number; pad: string }>();
  const n = 200;
  const pad = "x".repeat(3000); // 200 × 3 KB ≫ 64 KiB: most sends queue
  const receives = Array.from({ length: n }, () => p.right.receive({ signal: timeout() }));
  const sends = Array.from({ length: n }, (_, i) => p.left.send({ i, pad }));
  const got = await Promise.all(receives);
  await Promise.all(sends);
  assert.deepEqual(got.map((m) => m.i), Array.from({ length: n }, (_, i) => i));
  assert.ok(got.every((m) => m.pad === pad));
});

/**
 * A transport whose receives and sends the test settles by hand, counting
 * how many of each are in flight. DESIGN/transport.ts: "a transport sees at
 * most one send and one receive in flight at a time".
 */
class Manual implements Transport {
  readonly info: TransportInfo = testTransportInfo("manual", { maxMessageSize: 1024, maxType: 10 });
  receivesInFlight = 0;
  maxReceivesInFlight = 0;
  sendsInFlight = 0;
  maxSendsInFlight = 0;
  readonly deliveries: ((frame: ReceivedFrame) => void)[] = [];
  readonly completions: (() => void)[] = [];
  readonly sent: number[] = [];

  trySend(): boolean {
    return false;
  }
  send(data: Uint8Array, _type: number, _priority: number, signal: AbortSignal): Promise<void> {
    this.sendsInFlight++;
    this.maxSendsInFlight = Math.max(this.maxSendsInFlight, this.sendsInFlight);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.sendsInFlight--;
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.completions.push(() => {
        signal.removeEventListener("abort", onAbort);
        this.sendsInFlight--;
        this.sent.push(data[0]);
        resolve();
      });
    });
  }
  tryReceive(): ReceivedFrame | null {
    return null;
  }
  receive(_filter: unknown, signal: AbortSignal): Promise<ReceivedFrame> {
    this.receivesInFlight++;
    this.maxReceivesInFlight = Math.max(this.maxReceivesInFlight, this.receivesInFlight);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.receivesInFlight--;
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.deliveries.push((frame) => {
        signal.removeEventListener("abort", onAbort);
        this.receivesInFlight--;
        resolve(frame);
      });
    });
  }
  close(): void {}
  unlink(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("aborting a queued receive does not let the next one overtake the running one", async () => {
  const transport = new Manual();
  using channel = new Channel<Uint8Array>(transport, { codec: bytes });
  const first = channel.receive();
  const controller = new AbortController();
  const second = channel.receive({ signal: controller.signal });
  const third = channel.receive();
  // Observed below; settled (or rejected by close()) whatever happens.
  first.catch(() => {});
  third.catch(() => {});
  controller.abort(new Error("aborted"));
  await assert.rejects(second, /aborted/);
  await turn();
  assert.equal(
    transport.maxReceivesInFlight,
    1,
    "the transport saw two receives at once: the third receive started while the first was still running",
  );
  while (transport.deliveries.length > 0) {
    transport.deliveries.shift()!({
      data: new Uint8Array([transport.deliveries.length]),
      type: 1,
      priority: 0,
    });
    await turn();
  }
  await Promise.allSettled([first, third]);
  channel.close();
});

Deno.test("aborting a queued send does not let the next one overtake the running one", async () => {
  const transport = new Manual();
  using channel = new Channel<Uint8Array>(transport, { codec: bytes });
  const first = channel.send(new Uint8Array([1]));
  const controller = new AbortController();
  const second = channel.send(new Uint8Array([2]), { signal: controller.signal });
  const third = channel.send(new Uint8Array([3]));
  first.catch(() => {});
  third.catch(() => {});
  controller.abort(new Error("aborted"));
  await assert.rejects(second, /aborted/);
  await turn();
  assert.equal(
    transport.maxSendsInFlight,
    1,
    "the transport saw two sends at once: the third send started while the first was still running",
  );
  while (transport.completions.length > 0) {
    transport.completions.shift()!();
    await turn();
  }
  await Promise.all([first, third]);
  assert.deepEqual(transport.sent, [1, 3]);
});

Deno.test("using / Symbol.dispose / Symbol.asyncDispose close the channel", async () => {
  const [a, b] = Pipe.pair();
  let outer: Channel<number>;
  {
    using left = new Channel<number>(a);
    outer = left;
    assert.equal(left.info.closed, false);
  }
  assert.equal(outer.info.closed, true);
  {
    await using right = new Channel<number>(b);
    outer = right;
  }
  assert.equal(outer.info.closed, true);
});

Deno.test("codecs: json, text, bytes and a custom codec round-trip", async () => {
  {
    using p = pair<unknown>({ codec: json });
    const values = [null, 0, -1.5, "x", [], [1, [2, { a: "ü\u{1F600}" }]], { nested: { deep: true } }, ""];
    for (const value of values) await p.left.send(value);
    for (const value of values) assert.deepEqual(await p.right.receive({ signal: timeout() }), value);
    assert.equal(p.left.info.codec, "json");
    await assert.rejects(p.left.send(undefined), TypeError);
    await assert.rejects(p.left.send(10n), TypeError);
  }
  {
    using p = pair<string>({ codec: text });
    for (const value of ["", "plain", "héllo \u{1F600}", "\0nul"]) {
      await p.left.send(value);
      assert.equal(await p.right.receive({ signal: timeout() }), value);
    }
    assert.equal(p.left.info.codec, "text");
    await assert.rejects(p.left.send(5 as unknown as string), TypeError);
  }
  {
    using p = pair<Uint8Array>({ codec: bytes });
    const sent = new Uint8Array([0, 255, 1, 254]);
    await p.left.send(sent);
    const got = await p.right.receive({ signal: timeout() });
    assert.deepEqual(got, sent);
    await p.left.send(new Uint8Array([9, 9, 9, 9]));
    assert.deepEqual(got, sent, "a received Uint8Array is not overwritten by later reads");
    assert.deepEqual(await p.right.receive({ signal: timeout() }), new Uint8Array([9, 9, 9, 9]));
    await assert.rejects(p.left.send([1, 2] as unknown as Uint8Array), TypeError);
  }
  {
    const u32: Codec<number> = {
      name: "u32",
      encode: (value) => new Uint8Array(new Uint32Array([value]).buffer),
      decode: (data) => new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true),
    };
    using p = pair<number>({ codec: u32 });
    for (const value of [0, 1, 0xdeadbeef]) await p.left.send(value);
    for (const value of [0, 1, 0xdeadbeef]) assert.equal(await p.right.receive({ signal: timeout() }), value);
    assert.equal(p.left.info.codec, "u32");
  }
});

Deno.test("json/text decode of malformed bytes is a FrameError and the channel keeps working", async () => {
  for (
    const [codec, bad, good, value] of [
      [json, [0x7b, 0x6e, 0x6f], new TextEncoder().encode('{"ok":1}'), { ok: 1 }],
      [json, [0xff, 0xfe, 0x31], new TextEncoder().encode("2"), 2],
      [text, [0xc3, 0x28], new TextEncoder().encode("fine"), "fine"],
      [text, [0xff], new Uint8Array(0), ""],
    ] as const
  ) {
    const [a, b] = Pipe.pair();
    using writer = new Channel<Uint8Array>(a, { codec: bytes });
    using reader = new Channel<unknown>(b, { codec: codec as Codec<unknown> });
    await writer.send(new Uint8Array(bad));
    await writer.send(good);
    const error = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(error instanceof FrameError, `${codec.name}: got ${error}`);
    assert.match(error.message, new RegExp(codec.name));
    assert.deepEqual(await reader.receive({ signal: timeout() }), value, `${codec.name}: next message`);
    // tryReceive reports it the same way.
    await writer.send(new Uint8Array(bad));
    assert.throws(() => reader.tryReceive(), FrameError);
    assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
  }
});

Deno.test("a custom codec whose decode throws gives a FrameError with the cause", async () => {
  const cause = new Error("cannot decode");
  const broken: Codec<number> = {
    name: "broken",
    encode: () => new Uint8Array([1]),
    decode: () => {
      throw cause;
    },
  };
  using p = pair<number>({ codec: broken });
  await p.left.send(1);
  const error = await p.right.receive({ signal: timeout() }).catch((e) => e);
  assert.ok(error instanceof FrameError);
  assert.equal(error.cause, cause);
  assert.match(error.message, /broken/);
});

interface Order {
  id: number;
}

function orderSchema(async: boolean): StandardSchemaV1<unknown, Order> {
  const check = (value: unknown) => {
    if (typeof value === "object" && value !== null && typeof (value as Order).id === "number") {
      return { value: { id: (value as Order).id * 10 } }; // a transforming schema
    }
    return { issues: [{ message: "expected a number", path: [{ key: "id" }] }, { message: "second issue" }] };
  };
  return {
    "~standard": {
      version: 1,
      vendor: "ipcbus-tests",
      validate: async ? (value) => Promise.resolve(check(value)) : check,
    },
  };
}

Deno.test("Standard Schema (sync and async) validates on receive with ValidationError naming the issues", async () => {
  for (const async of [false, true]) {
    const [a, b] = Pipe.pair();
    using writer = new Channel<unknown>(a);
    using reader = new Channel<Order>(b, { schema: orderSchema(async) });
    await writer.send({ id: 4 });
    await writer.send({ id: "four" });
    await writer.send({ id: 5 }, { type: 3 });
    assert.deepEqual(
      await reader.receive({ signal: timeout() }),
      { id: 40 },
      "the schema's output is returned",
    );
    const error = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(error instanceof ValidationError, `got ${error}`);
    assert.ok(error instanceof TypeError);
    assert.equal(error.name, "ValidationError");
    assert.equal(error.message, "message failed schema validation: id: expected a number; second issue");
    assert.equal(error.issues.length, 2);
    assert.deepEqual(await reader.receiveMessage({ signal: timeout() }), {
      value: { id: 50 },
      type: 3,
      priority: 0,
    });
    if (!async) {
      await writer.send({ nope: true });
      await writer.send({ id: 6 });
      assert.throws(() => reader.tryReceive(), ValidationError);
      assert.deepEqual(reader.tryReceive(), { ok: true, value: { id: 60 }, type: 1, priority: 0 });
    }
  }
  assert.throws(
    () => new Channel(Pipe.pair()[0], { schema: {} as unknown as StandardSchemaV1 }),
    TypeError,
  );
});

Deno.test("tryReceive with an async schema is a TypeError without an unhandled rejection", async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (event: PromiseRejectionEvent) => {
    event.preventDefault(); // keep the test runner alive; reported below
    unhandled.push(event.reason);
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    const [a, b] = Pipe.pair();
    using writer = new Channel<unknown>(a);
    using reader = new Channel<Order>(b, { schema: orderSchema(true) });
    await writer.send({ id: "not a number" });
    assert.throws(() => reader.tryReceive(), TypeError);
    for (let i = 0; i < 3; i++) await turn();
    assert.deepEqual(
      unhandled.map(String),
      [],
      "tryReceive left the async schema's rejected promise unhandled (the process would crash)",
    );
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
});

Deno.test("tryReceive with an async schema does not consume the message it refuses", async () => {
  const [a, b] = Pipe.pair();
  using writer = new Channel<unknown>(a);
  using reader = new Channel<Order>(b, { schema: orderSchema(true) });
  await writer.send({ id: 1 });
  assert.throws(() => reader.tryReceive(), TypeError);
  await writer.send({ id: 2 });
  assert.deepEqual(
    await reader.receive({ signal: timeout() }),
    { id: 10 },
    'the message tryReceive refused ("use receive()") was lost',
  );
});

Deno.test("type tags round-trip, including the extremes", async () => {
  using p = pair<number>();
  const types = [1, 2, 255, 256, 65_536, 0x7fff_ffff, 0xffff_ffff];
  for (const type of types) await p.left.send(type, { type });
  assert.equal(p.left.trySend(0, { type: 77 }), true);
  for (const type of types) {
    const message = await p.right.receiveMessage({ signal: timeout() });
    assert.equal(message.type, type);
    assert.equal(message.value, type);
  }
  assert.equal((await p.right.receiveMessage({ signal: timeout() })).type, 77);
});

Deno.test("invalid type or priority: RangeError / TypeError naming the transport; nothing is sent", async () => {
  using p = pair<number>();
  for (const type of [0, -1, 1.5, 2 ** 32, Number.NaN, Infinity]) {
    await assert.rejects(p.left.send(1, { type }), RangeError, `type ${type}`);
    assert.throws(() => p.left.trySend(1, { type }), RangeError, `type ${type}`);
  }
  const error = await p.left.send(1, { priority: 1 }).catch((e) => e);
  assert.ok(error instanceof TypeError && !(error instanceof RangeError), `got ${error}`);
  assert.match(error.message, /pipe/);
  assert.match(error.message, /priorit/);
  assert.throws(() => p.left.trySend(1, { priority: 3 }), /pipe/);
  await assert.rejects(p.left.send(1, { priority: -1 }), RangeError);
  await assert.rejects(p.left.send(1, { priority: 0.5 }), RangeError);
  await p.left.send(1, { priority: 0 }); // 0 is always fine
  assert.equal(await p.right.receive({ signal: timeout() }), 1);
  assert.deepEqual(
    p.right.tryReceive(),
    { ok: false, reason: "empty" },
    "none of the refused sends went out",
  );
});

Deno.test("receive({ type }) is a TypeError: pipes have no type filter", async () => {
  using p = pair<number>();
  const error = await p.right.receive({ type: 3 }).catch((e) => e);
  assert.ok(error instanceof TypeError, `got ${error}`);
  assert.match(error.message, /pipe/);
  assert.match(error.message, /type/);
  await assert.rejects(p.right.receiveMessage({ type: 2, except: true }), TypeError);
  assert.throws(() => p.right.tryReceive({ type: 3 }), TypeError);
  await p.left.send(1, { type: 3 });
  assert.equal(await p.right.receive({ type: 0, signal: timeout() }), 1, "type 0 means any");
});

Deno.test("MessageTooLargeError for a payload over maxMessageSize, with size and limit", async () => {
  using p = pair<Uint8Array>({ codec: bytes }, { maxMessageSize: 100 });
  assert.equal(p.left.info.maxMessageSize, 100);
  await p.left.send(new Uint8Array(100));
  const error = await p.left.send(new Uint8Array(101)).catch((e) => e);
  assert.ok(error instanceof MessageTooLargeError, `got ${error}`);
  assert.ok(error instanceof RangeError);
  assert.equal(error.name, "MessageTooLargeError");
  assert.equal(error.limit, 100);
  assert.equal(error.size, 101);
  assert.throws(() => p.left.trySend(new Uint8Array(1000)), MessageTooLargeError);
  assert.equal((await p.right.receive({ signal: timeout() })).length, 100);
  assert.deepEqual(p.right.tryReceive(), { ok: false, reason: "empty" });
  assert.throws(() => Pipe.pair({ maxMessageSize: -1 }), RangeError);
  assert.throws(() => Pipe.pair({ maxMessageSize: 2 ** 32 }), RangeError);
});

Deno.test("maxMessageSize 0: empty messages only", async () => {
  using p = pair<Uint8Array>({ codec: bytes }, { maxMessageSize: 0 });
  await p.left.send(new Uint8Array(0));
  assert.deepEqual(await p.right.receive({ signal: timeout() }), new Uint8Array(0));
  await assert.rejects(p.left.send(new Uint8Array(1)), MessageTooLargeError);
});

class Loopback implements Transport {
  #queue: ReceivedFrame[] = [];
  closed = false;
  readonly info: TransportInfo;
  constructor(address: string, readonly options: Readonly<Record<string, unknown>>) {
    this.info = {
      ...testTransportInfo(address.slice(0, address.indexOf(":")), { maxMessageSize: 64, maxType: 5 }),
      address,
      extra: "custom detail",
    };
  }
  trySend(data: Uint8Array, type: number): boolean {
    this.#queue.push({ data: data.slice(), type, priority: 0 });
    return true;
  }
  send(data: Uint8Array, type: number): undefined {
    this.trySend(data, type);
    return undefined;
  }
  tryReceive(): ReceivedFrame | null {
    return this.#queue.shift() ?? null;
  }
  receive(): Promise<ReceivedFrame> {
    const frame = this.#queue.shift();
    return frame ? Promise.resolve(frame) : Promise.reject(new ChannelClosedError("loopback is empty"));
  }
  close(): void {
    this.closed = true;
  }
  unlink(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("registerTransport plugs a custom transport into open()", async () => {
  const scheme = `loop-${crypto.randomUUID().slice(0, 8)}`;
  let made: Loopback | undefined;
  registerTransport(scheme, (address, options) => made = new Loopback(address, options));
  assert.ok(registeredSchemes().includes(scheme));
  assert.ok(registeredSchemes().includes("pipe") && registeredSchemes().includes("fifo"));
  const channel = await open<string>(`${scheme}:anything/here`, { codec: text, custom: 42 });
  assert.ok(made);
  assert.equal(made.options.custom, 42, "the factory gets open()'s options");
  assert.equal(channel.unsafeTransport, made);
  await channel.send("hi", { type: 5 });
  assert.deepEqual(await channel.receiveMessage(), { value: "hi", type: 5, priority: 0 });
  await assert.rejects(channel.send("x", { type: 6 }), RangeError, "maxType is honoured");
  await assert.rejects(channel.send("x".repeat(65)), MessageTooLargeError);
  const info = channel.info;
  assert.equal(info.scheme, scheme);
  assert.equal(info.address, `${scheme}:anything/here`);
  assert.equal(info.extra, "custom detail", "transport-specific info fields come through");
  assert.equal(info.codec, "text");
  channel.close();
  assert.equal(made.closed, true);

  assert.throws(
    () => registerTransport(scheme, () => new Loopback("x:", {})),
    TypeError,
    "already registered",
  );
  assert.throws(() => registerTransport("pipe", () => new Loopback("x:", {})), TypeError);
  for (const bad of ["", "Upper", "9digit", "has space", "colon:"]) {
    assert.throws(() => registerTransport(bad, () => new Loopback("x:", {})), TypeError, bad);
  }
  assert.throws(
    () => registerTransport(`ok-${crypto.randomUUID().slice(0, 8)}`, "nope" as never),
    TypeError,
  );
});

Deno.test("open() of an unknown scheme is a TypeError listing the known schemes", async () => {
  for (const address of ["nosuch:thing", "no-colon-at-all", ":empty", "PIPE:parent"]) {
    const error = await open(address).catch((e) => e);
    assert.ok(error instanceof TypeError, `${address}: got ${error}`);
    assert.match(error.message, /pipe:/);
    assert.match(error.message, /fifo:/);
  }
});

Deno.test("open() refuses an option a built-in scheme does not take, before touching anything", async () => {
  const name = `/ipcbus-test-${crypto.randomUUID().slice(0, 8)}`;
  for (
    const [address, options] of [
      [`shm:${name}`, { create: true, capcity: 4096 }],
      [`posix-mq:${name}`, { create: true, maxMesages: 4 }],
      [`fifo:/tmp${name}.fifo`, { create: true, writer: "single" }],
      ["sysv-mq:private", { spinn: 0 }],
      [`file:/tmp${name}.log`, { create: true, durabilty: "sync" }],
      ["pipe:parent", { timeout: 5 }],
    ] as const
  ) {
    const error = await open(address, options as never).catch((e) => e);
    assert.ok(error instanceof TypeError, `${address}: got ${error}`);
    assert.match(error.message, /unknown option "\w+"/);
    assert.match(error.message, /codec, schema, /, "the message lists what is taken");
  }
  // Nothing was made.
  for (const path of [`/dev/shm${name}`, `/dev/mqueue${name}`, `/tmp${name}.fifo`, `/tmp${name}.log`]) {
    assert.equal(lstatIpcPath(path), null, path);
  }
  // A registered transport's options are its own business.
  const scheme = `opts-${crypto.randomUUID().slice(0, 8)}`;
  registerTransport(scheme, () => new Loopback(`${scheme}:x`, {}));
  using channel = await open(`${scheme}:x`, { anything: 1 });
  assert.equal(channel.info.scheme, scheme);
});

Deno.test("info describes the channel and transport", () => {
  const [a, b] = Pipe.pair();
  const left = new Channel<number>(a);
  using _right = new Channel<number>(b, { codec: text as unknown as Codec<number> });
  const info = left.info;
  assert.equal(info.scheme, "pipe");
  assert.ok(info.address.startsWith("pipe:"), info.address);
  assert.deepEqual(info.capabilities, {
    types: true,
    typeFilter: false,
    priority: false,
    multiWriter: false,
    multiReader: false,
    persistent: false,
  });
  assert.equal(info.maxMessageSize, 16 * 1024 * 1024);
  assert.equal(info.maxType, 0xffff_ffff);
  assert.equal(info.maxPriority, 0);
  assert.equal(info.codec, "json");
  assert.equal(_right.info.codec, "text");
  assert.equal(info.closed, false);
  assert.equal(typeof info.readFd, "number");
  assert.equal(typeof info.writeFd, "number");
  info.closed = true;
  info.maxMessageSize = 1;
  assert.equal(left.info.closed, false, "info is a snapshot, not the channel's state");
  assert.equal(left.info.maxMessageSize, 16 * 1024 * 1024);
  left.close();
  assert.equal(left.info.closed, true);
});

Deno.test("a closed peer: receive ends, send rejects with ChannelClosedError (EPIPE), no SIGPIPE death", async () => {
  using p = pair<number>();
  p.right.close();
  const error = await p.left.send(1).catch((e) => e);
  assert.ok(error instanceof ChannelClosedError, `got ${error}`);
  assert.throws(() => p.left.trySend(1), ChannelClosedError);
  await assert.rejects(p.left.receive({ signal: timeout() }), ChannelClosedError);
});

Deno.test("randomized payloads and types round-trip byte for byte", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const cases = Array.from({ length: 300 }, () => {
    const size = random() < 0.1 ? Math.floor(random() * 200_000) : Math.floor(random() * 5000);
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (random() * 256) | 0;
    return { data, type: 1 + Math.floor(random() * 0xffff_fffe) };
  });
  const received = (async () => {
    for (const { data, type } of cases) {
      const message = await p.right.receiveMessage({ signal: timeout() });
      assert.equal(message.type, type);
      assert.deepEqual(message.value, data);
    }
  })();
  for (const { data, type } of cases) await p.left.send(data, { type });
  await received;
});

Deno.test("a send aborted after part of a large frame was written still delivers the whole frame", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  const big = new Uint8Array(1 << 20).fill(0x5a);
  const controller = new AbortController();
  const reason = new Error("abort mid-frame");
  const sending = p.left.send(big, { signal: controller.signal }); // only 64 KiB fit: it waits
  controller.abort(reason);
  assert.equal(await sending.catch((e) => e), reason);
  big.fill(0); // the caller may reuse its buffer once send has settled
  const next = p.left.send(new Uint8Array([1, 2, 3]), { signal: timeout() }); // behind the rest of the big frame
  const first = await p.right.receive({ signal: timeout() });
  assert.equal(first.length, 1 << 20);
  assert.ok(first.every((byte) => byte === 0x5a), "the rest of the frame was written from a copy");
  await next;
  assert.deepEqual(await p.right.receive({ signal: timeout() }), new Uint8Array([1, 2, 3]));
});

Deno.test("a large trySend is taken in part and finished in the background, from a copy", async () => {
  using p = pair<Uint8Array>({ codec: bytes });
  const big = new Uint8Array(300_000).fill(0x11);
  assert.equal(p.left.trySend(big), true);
  big.fill(0x22);
  assert.equal(p.left.trySend(new Uint8Array(1)), false, "nothing may pass the partly written frame");
  const sending = p.left.send(new Uint8Array([9]), { signal: timeout() });
  const first = await p.right.receive({ signal: timeout() });
  assert.ok(first.length === 300_000 && first.every((byte) => byte === 0x11));
  await sending;
  assert.deepEqual(await p.right.receive({ signal: timeout() }), new Uint8Array([9]));
});

Deno.test("spin: 0 (no spinning) still delivers; readable errors with FrameError on bad data", async () => {
  using p = pair<number>({}, { spin: 0 });
  const pending = p.right.receive({ signal: timeout() });
  await p.left.send(1);
  assert.equal(await pending, 1);
  const reader = p.right.readable.getReader();
  await p.left.send(2);
  assert.deepEqual(await reader.read(), { done: false, value: 2 });
  const bad = new Channel<Uint8Array>(p.left.unsafeTransport, { codec: bytes });
  await bad.send(new TextEncoder().encode("{oops"));
  await assert.rejects(reader.read(), FrameError);
});

Deno.test("channel_test leaves nothing under /tmp", () => {
  assert.deepEqual(leftovers(), []);
});

/**
 * A transport whose `tryReceive` never has anything and whose `receive`
 * answers in one of the three ways the Transport contract allows: the frame
 * itself (got within a spin), a promise, or another thenable.
 */
class Answering implements Transport {
  readonly info: TransportInfo = testTransportInfo("answering", { maxMessageSize: 64, maxType: 5 });
  receives = 0;
  constructor(readonly answer: "frame" | "promise" | "thenable" | "rejection") {}
  trySend(): boolean {
    return true;
  }
  send(): undefined {
    return undefined;
  }
  tryReceive(): ReceivedFrame | null {
    return null;
  }
  receive(): ReceivedFrame | Promise<ReceivedFrame> {
    const frame = { data: new TextEncoder().encode(`{"id":${++this.receives}}`), type: 2, priority: 0 };
    if (this.answer === "frame") return frame;
    if (this.answer === "promise") return Promise.resolve(frame);
    if (this.answer === "rejection") return Promise.reject(new FrameError("no frame"));
    // Another promise implementation: only `then` is there.
    return { then: (resolve: (value: ReceivedFrame) => void) => resolve(frame) } as unknown as Promise<
      ReceivedFrame
    >;
  }
  close(): void {}
  unlink(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("a transport's receive may hand over the frame itself, a promise or a thenable", async () => {
  for (const answer of ["frame", "promise", "thenable"] as const) {
    for (const schema of [undefined, orderSchema(false), orderSchema(true)]) {
      using channel = new Channel<Order>(new Answering(answer), { schema });
      const factor = schema ? 10 : 1;
      assert.deepEqual(
        await channel.receiveMessage(),
        { value: { id: factor }, type: 2, priority: 0 },
        answer,
      );
      assert.deepEqual(await channel.receive(), { id: 2 * factor }, answer);
      assert.deepEqual(await channel.receiveBatch(5), [{ value: { id: 3 * factor }, type: 2, priority: 0 }]);
      // Receives that queue behind one another still come in call order.
      const values = await Promise.all([channel.receive(), channel.receive(), channel.receive()]);
      assert.deepEqual(values.map((o) => o.id / factor), [4, 5, 6], answer);
    }
  }
  using failing = new Channel<Order>(new Answering("rejection"));
  await assert.rejects(failing.receive(), FrameError);
  failing.close();
  await assert.rejects(failing.receive(), ChannelClosedError);
});
