// Channel.sendBatch / trySendBatch / receiveBatch / tryReceiveBatch, over
// Pipe.pair() (the per-frame fallback) and over a transport with the optional
// batch hooks.
import assert from "node:assert/strict";
import {
  bytes,
  bytesView,
  Channel,
  ChannelClosedError,
  type Codec,
  FrameError,
  json,
  MessageTooLargeError,
  Pipe,
  type ReceivedFrame,
  type ReceiveFilter,
  type StandardSchemaV1,
  type Transport,
  type TransportInfo,
  ValidationError,
} from "../mod.ts";
import { testTransportInfo } from "./_helpers.ts";

function pair<T>(codec?: Codec<T>) {
  const [a, b] = Pipe.pair();
  const left = new Channel<T>(a, { codec });
  const right = new Channel<T>(b, { codec });
  return {
    left,
    right,
    [Symbol.dispose]() {
      left.close();
      right.close();
    },
  };
}

const timeout = () => AbortSignal.timeout(10_000);

/** An in-memory transport with the batch hooks; counts how often each path ran. */
class Batching implements Transport {
  readonly frames: ReceivedFrame[] = [];
  room: number;
  batchSends = 0;
  batchReceives = 0;
  readonly #waiters: (() => void)[] = [];
  readonly info: TransportInfo = testTransportInfo("batching", { maxMessageSize: 16, maxType: 100 });
  constructor(room = Infinity) {
    this.room = room;
  }
  trySend(data: Uint8Array, type: number): boolean {
    if (this.frames.length >= this.room) return false;
    this.frames.push({ data: data.slice(), type, priority: 0 });
    this.#waiters.splice(0).forEach((wake) => wake());
    return true;
  }
  send(data: Uint8Array, type: number, _priority: number, signal: AbortSignal): Promise<void> | undefined {
    if (this.trySend(data, type)) return undefined;
    return new Promise((resolve, reject) => {
      const retry = () => this.trySend(data, type) ? resolve() : this.#waiters.push(retry);
      this.#waiters.push(retry);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
  trySendBatch(frames: readonly Uint8Array[], type: number): number {
    this.batchSends++;
    let sent = 0;
    while (sent < frames.length && this.trySend(frames[sent], type)) sent++;
    return sent;
  }
  tryReceive(): ReceivedFrame | null {
    const frame = this.frames.shift() ?? null;
    if (frame) this.#waiters.splice(0).forEach((wake) => wake());
    return frame;
  }
  tryReceiveBatch(_filter: ReceiveFilter, max: number, sink: (frame: ReceivedFrame) => void): number {
    this.batchReceives++;
    let taken = 0;
    while (taken < max && this.frames.length > 0) {
      taken++;
      sink(this.tryReceive()!);
    }
    return taken;
  }
  receive(_filter: ReceiveFilter, signal: AbortSignal): Promise<ReceivedFrame> {
    return new Promise((resolve, reject) => {
      const retry = () => {
        const frame = this.tryReceive();
        if (frame) resolve(frame);
        else this.#waiters.push(retry);
      };
      retry();
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
  close(): void {}
  unlink(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("sendBatch/receiveBatch over a pipe keep order, tags and max", async () => {
  using p = pair<number>();
  await p.left.sendBatch([1, 2, 3, 4, 5], { type: 9 });
  const first = await p.right.receiveBatch(3, { signal: timeout() });
  assert.deepEqual(first, [1, 2, 3].map((value) => ({ value, type: 9, priority: 0 })));
  const rest = await p.right.receiveBatch(100, { signal: timeout() });
  assert.deepEqual(rest.map((m) => m.value), [4, 5]);
  assert.deepEqual(p.right.tryReceiveBatch(10), []);
  await p.left.sendBatch([]);
  assert.equal(p.left.trySendBatch([]), 0);
});

Deno.test("receiveBatch waits for the first message, then takes what is there", async () => {
  using p = pair<string>();
  const pending = p.right.receiveBatch(10, { signal: timeout() });
  await p.left.send("a");
  assert.deepEqual((await pending).map((m) => m.value), ["a"]);
});

Deno.test("sendBatch over a full pipe waits for room and delivers everything in order", async () => {
  using p = pair<Uint8Array>(bytes);
  const values = Array.from({ length: 300 }, (_, i) => new Uint8Array(1000).fill(i & 0xff));
  const taken = p.left.trySendBatch(values);
  assert.ok(taken > 0 && taken < values.length, "a pipe takes part of 300 KB at once");
  let drained = 0;
  while (drained < taken) drained += p.right.tryReceiveBatch(1000).length;
  assert.equal(drained, taken);
  const sending = p.left.sendBatch(values, { signal: timeout() });
  const got: number[] = [];
  while (got.length < values.length) {
    for (const m of await p.right.receiveBatch(64, { signal: timeout() })) got.push(m.value[0]);
  }
  await sending;
  assert.deepEqual(got, values.map((v) => v[0]));
});

Deno.test("sendBatch: an abort while waiting for room rejects with the reason; the prefix was sent", async () => {
  using p = pair<Uint8Array>(bytes);
  const values = Array.from({ length: 300 }, () => new Uint8Array(1000));
  const controller = new AbortController();
  const reason = new Error("stop");
  const sending = p.left.sendBatch(values, { signal: controller.signal });
  controller.abort(reason);
  assert.equal(await sending.catch((e) => e), reason);
  let arrived = 0;
  for (let got; (got = p.right.tryReceiveBatch(100).length) > 0;) arrived += got;
  assert.ok(arrived > 0 && arrived < values.length, `the values before the abort arrived (${arrived})`);
});

Deno.test("sendBatch refuses an oversized value before sending any; bad tags are errors", async () => {
  using t = new Channel<Uint8Array>(new Batching(), { codec: bytes });
  const error = await t.sendBatch([new Uint8Array(1), new Uint8Array(17)]).catch((e) => e);
  assert.ok(error instanceof MessageTooLargeError);
  assert.equal(t.tryReceiveBatch(10).length, 0, "nothing was sent");
  await assert.rejects(t.sendBatch([new Uint8Array(1)], { type: 0 }), RangeError);
  await assert.rejects(t.sendBatch([new Uint8Array(1)], { priority: 1 }), TypeError);
  assert.throws(() => t.tryReceiveBatch(0), RangeError);
  await assert.rejects(t.receiveBatch(1.5), RangeError);
});

Deno.test("the transport's batch hooks are used when present", async () => {
  const transport = new Batching();
  using t = new Channel<number>(transport);
  await t.sendBatch([1, 2, 3]);
  assert.equal(t.trySendBatch([4, 5]), 2);
  assert.equal(transport.batchSends, 2);
  assert.deepEqual((await t.receiveBatch(4)).map((m) => m.value), [1, 2, 3, 4]);
  assert.deepEqual(t.tryReceiveBatch(4).map((m) => m.value), [5]);
  assert.equal(transport.batchReceives, 2);
});

Deno.test("sendBatch through the hooks waits for room as the receiver drains", async () => {
  const transport = new Batching(2);
  using t = new Channel<number>(transport);
  const values = Array.from({ length: 10 }, (_, i) => i);
  const sending = t.sendBatch(values, { signal: timeout() });
  const got: number[] = [];
  while (got.length < values.length) {
    for (const m of await t.receiveBatch(3, { signal: timeout() })) got.push(m.value);
  }
  await sending;
  assert.deepEqual(got, values);
});

for (const hooks of [false, true]) {
  const label = hooks ? "through the hooks" : "over a pipe";
  Deno.test(`a malformed message mid-batch: the messages before it are returned, then FrameError (${label})`, async () => {
    const codec: Codec<number> = {
      name: "fussy",
      encode: (value) => new Uint8Array([value]),
      decode: (data) => {
        if (data[0] === 0xff) throw new Error("bad byte");
        return data[0];
      },
    };
    const transport = hooks ? new Batching() : undefined;
    const [a, b] = transport ? [transport, transport] : Pipe.pair();
    const left = new Channel<number>(a, { codec });
    const right = transport ? left : new Channel<number>(b, { codec });
    try {
      await left.sendBatch([1, 2, 0xff, 3]);
      assert.deepEqual((await right.receiveBatch(10, { signal: timeout() })).map((m) => m.value), [1, 2]);
      await assert.rejects(right.receiveBatch(10, { signal: timeout() }), FrameError);
      assert.deepEqual((await right.receiveBatch(10, { signal: timeout() })).map((m) => m.value), [3]);
      // The same through tryReceiveBatch, then tryReceive.
      await left.sendBatch([4, 0xff]);
      assert.deepEqual(right.tryReceiveBatch(10).map((m) => m.value), [4]);
      assert.throws(() => right.tryReceive(), FrameError);
      assert.deepEqual(right.tryReceive(), { ok: false, reason: "empty" });
    } finally {
      left.close();
      right.close();
    }
  });

  Deno.test(`a schema failure mid-batch keeps the valid messages before it (${label})`, async () => {
    const schema: StandardSchemaV1<unknown, number> = {
      "~standard": {
        version: 1,
        vendor: "tests",
        validate: (value) =>
          typeof value === "number" ? { value } : { issues: [{ message: "not a number" }] },
      },
    };
    const transport = hooks ? new Batching() : undefined;
    const [a, b] = transport ? [transport, transport] : Pipe.pair();
    const left = new Channel<unknown>(a, { codec: json });
    const right = transport ? left : new Channel<unknown>(b, { codec: json, schema });
    const checked = transport ? new Channel<number>(transport, { schema }) : right;
    try {
      await left.sendBatch([1, "two", 3]);
      assert.deepEqual((await checked.receiveBatch(10, { signal: timeout() })).map((m) => m.value), [1]);
      await assert.rejects(checked.receiveMessage({ signal: timeout() }), ValidationError);
      assert.deepEqual((await checked.receiveBatch(10, { signal: timeout() })).map((m) => m.value), [3]);
    } finally {
      left.close();
      right.close();
    }
  });

  Deno.test(`an asynchronous schema met mid-batch keeps that message for the next receive (${label})`, async () => {
    const schema: StandardSchemaV1<unknown, number> = {
      "~standard": {
        version: 1,
        vendor: "tests",
        validate: (value) => Promise.resolve({ value: value as number }),
      },
    };
    const transport = hooks ? new Batching() : undefined;
    const [a, b] = transport ? [transport, transport] : Pipe.pair();
    const left = new Channel<number>(a);
    const right = new Channel<number>(transport ?? b, { schema });
    try {
      await left.sendBatch([1, 2, 3]);
      // The first message shows the schema is asynchronous: it is kept, not lost.
      const got: number[] = [];
      while (got.length < 3) {
        for (const m of await right.receiveBatch(10, { signal: timeout() })) got.push(m.value);
      }
      assert.deepEqual(got, [1, 2, 3]);
      assert.throws(() => right.tryReceiveBatch(10), TypeError);
    } finally {
      left.close();
      right.close();
    }
  });
}

Deno.test("batches on a closed channel: ChannelClosedError; a peer gone after a batch ends the next one", async () => {
  const p = pair<number>();
  await p.left.sendBatch([1, 2]);
  p.left.close();
  await assert.rejects(p.left.sendBatch([3]), ChannelClosedError);
  assert.throws(() => p.left.trySendBatch([3]), ChannelClosedError);
  assert.deepEqual((await p.right.receiveBatch(10, { signal: timeout() })).map((m) => m.value), [1, 2]);
  await assert.rejects(p.right.receiveBatch(10, { signal: timeout() }), ChannelClosedError);
  p.right.close();
  assert.throws(() => p.right.tryReceiveBatch(1), ChannelClosedError);
  await assert.rejects(p.right.receiveBatch(1), ChannelClosedError);
});

Deno.test("close() settles a waiting receiveBatch with ChannelClosedError", async () => {
  using p = pair<number>();
  const pending = p.right.receiveBatch(10);
  p.right.close();
  await assert.rejects(pending, ChannelClosedError);
});

Deno.test("a transport's own sendBatch is used when present, and awaited", async () => {
  class Waiting extends Batching {
    calls = 0;
    sendBatch(frames: readonly Uint8Array[], type: number): Promise<void> {
      this.calls++;
      for (const frame of frames) this.trySend(frame, type);
      return new Promise((resolve) => setTimeout(resolve, 0)); // e.g. a sync the send waits for
    }
  }
  const transport = new Waiting();
  using t = new Channel<number>(transport);
  await t.sendBatch([1, 2, 3]);
  await Promise.all([t.sendBatch([4]), t.sendBatch([5, 6])]);
  assert.equal(transport.calls, 3);
  assert.deepEqual((await t.receiveBatch(10)).map((m) => m.value), [1, 2, 3, 4, 5, 6]);
});

Deno.test("receiveBatch with a borrowing codec copies the message it waited for", async () => {
  /** Hands out every frame in one receive buffer, as the stream transports do. */
  class Reusing extends Batching {
    readonly #buffer = new Uint8Array(16);
    override tryReceive(): ReceivedFrame | null {
      const frame = super.tryReceive();
      if (frame === null) return null;
      this.#buffer.set(frame.data);
      return { ...frame, data: this.#buffer.subarray(0, frame.data.length) };
    }
  }
  const transport = new Reusing();
  using t = new Channel<Uint8Array>(transport, { codec: bytesView });
  const pending = t.receiveBatch(10, { signal: timeout() });
  transport.trySend(new Uint8Array([1]), 1);
  transport.trySend(new Uint8Array([2]), 1);
  assert.deepEqual((await pending).map((m) => Array.from(m.value)), [[1], [2]]);
});
