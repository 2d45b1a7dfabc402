// Request/reply (request_reply.ts, channel.request/serve) over an in-memory
// model of one System V message queue shared by a server channel and several
// client channels, in one process. The model follows msgrcv(2): type 0 takes
// the first message, t > 0 the first of type t (any type but t with
// MSG_EXCEPT), t < 0 the first of the lowest type <= |t| (MSG_EXCEPT ignored,
// as Linux does); a sent message goes straight to the first waiting receiver
// whose filter matches (Linux's pipelined send), else to the queue's tail.
import assert from "node:assert/strict";
import { Channel } from "../channel.ts";
import { bytes, text } from "../codec.ts";
import { ChannelClosedError, FrameError, ValidationError } from "../errors.ts";
import type { StandardSchemaV1 } from "../channel.ts";
import type { ReceivedFrame, ReceiveFilter, Transport, TransportInfo } from "../transport.ts";
import { Pipe } from "../transports/pipe.ts";
import {
  RemoteError,
  request,
  type RequestContext,
  rpc,
  type RpcCodec,
  type RpcFrame,
  serve,
} from "../request_reply.ts";

// ---------------------------------------------------------------------------
// The model queue

interface Waiter {
  owner: FakeMq;
  filter: ReceiveFilter;
  resolve(frame: ReceivedFrame): void;
  reject(error: unknown): void;
}

/** Which message msgrcv(2) would take, or -1. */
function pick(messages: readonly ReceivedFrame[], { type, except }: ReceiveFilter): number {
  if (type === 0) return messages.length > 0 ? 0 : -1;
  if (type < 0) {
    let best = -1;
    for (let i = 0; i < messages.length; i++) {
      if (messages[i].type <= -type && (best < 0 || messages[i].type < messages[best].type)) best = i;
    }
    return best;
  }
  return except ? messages.findIndex((m) => m.type !== type) : messages.findIndex((m) => m.type === type);
}

/** One "kernel" queue; `attach()` is msgget on it (one transport per channel). */
class KernelQueue {
  readonly messages: ReceivedFrame[] = [];
  readonly waiters: Waiter[] = [];
  removed = false;
  static #next = 0;
  readonly name = `q${KernelQueue.#next++}`;

  attach(): FakeMq {
    return new FakeMq(this);
  }

  /** Messages of one type waiting in the queue. */
  count(type?: number): number {
    return this.messages.filter((m) => type === undefined || m.type === type).length;
  }

  put(frame: ReceivedFrame): void {
    const index = this.waiters.findIndex((w) => pick([frame], w.filter) === 0);
    if (index >= 0) {
      const [waiter] = this.waiters.splice(index, 1);
      waiter.resolve(frame);
    } else {
      this.messages.push(frame);
    }
  }

  take(filter: ReceiveFilter): ReceivedFrame | null {
    const index = pick(this.messages, filter);
    return index < 0 ? null : this.messages.splice(index, 1)[0];
  }

  /** IPC_RMID: every waiter, in every attached transport, gets EIDRM. */
  remove(): void {
    this.removed = true;
    this.messages.length = 0;
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(new ChannelClosedError(`msgrcv ${this.name} failed: EIDRM`, { errno: 43 }));
    }
  }
}

class FakeMq implements Transport {
  readonly info: TransportInfo;
  readonly #queue: KernelQueue;
  #closed = false;
  /** Calls made by the channel, in order: `"receive"` (a waiting receive) or `"send <type>"`. */
  readonly log: string[] = [];

  constructor(queue: KernelQueue) {
    this.#queue = queue;
    this.info = {
      scheme: "fake-mq",
      address: `fake-mq:${queue.name}`,
      capabilities: {
        types: true,
        typeFilter: true,
        priority: false,
        multiWriter: true,
        multiReader: true,
        persistent: true,
      },
      maxMessageSize: 8192,
      maxType: Number.MAX_SAFE_INTEGER,
      maxPriority: 0,
    };
  }

  #check(syscall: string): void {
    if (this.#closed) throw new ChannelClosedError(`${syscall}: transport closed`);
    if (this.#queue.removed) throw new ChannelClosedError(`${syscall} failed: EIDRM`, { errno: 43 });
  }

  trySend(data: Uint8Array, type: number): boolean {
    this.#check("msgsnd");
    this.log.push(`send ${type}`);
    this.#queue.put({ data: data.slice(), type, priority: 0 });
    return true;
  }
  send(data: Uint8Array, type: number): Promise<void> | undefined {
    this.trySend(data, type);
    return undefined;
  }
  tryReceive(filter: ReceiveFilter): ReceivedFrame | null {
    this.#check("msgrcv");
    return this.#queue.take(filter);
  }
  receive(filter: ReceiveFilter, signal: AbortSignal): Promise<ReceivedFrame> {
    this.log.push("receive");
    try {
      this.#check("msgrcv");
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal.aborted) return Promise.reject(signal.reason);
    const frame = this.#queue.take(filter);
    if (frame) return Promise.resolve(frame);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        owner: this,
        filter,
        resolve: (frame) => {
          signal.removeEventListener("abort", onAbort);
          resolve(frame);
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const index = this.#queue.waiters.indexOf(waiter);
        if (index >= 0) this.#queue.waiters.splice(index, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#queue.waiters.push(waiter);
    });
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#queue.waiters.filter((w) => w.owner === this)) {
      this.#queue.waiters.splice(this.#queue.waiters.indexOf(waiter), 1);
      waiter.reject(new ChannelClosedError("transport closed"));
    }
  }
  unlink(): Promise<void> {
    this.#queue.remove();
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------------------
// Helpers

/** Lets pending jobs and timers of 0 ms run once (not a timed wait). */
function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Waits, turn by turn, until `condition` holds; fails after many turns. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (condition()) return;
    await turn();
  }
  throw new Error(`gave up waiting for ${what}`);
}

function gate(): { promise: Promise<void>; open(): void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { promise, open: () => resolve() };
}

/** A queue with a server channel and `clients` client channels; all closed on dispose. */
function setup<Req, Res = Req>(clients = 1, codec: RpcCodec<Req, Res> = rpc<Req, Res>()) {
  const queue = new KernelQueue();
  const server = new Channel(queue.attach(), { codec });
  const clientChannels = Array.from({ length: clients }, () => new Channel(queue.attach(), { codec }));
  return {
    queue,
    server,
    client: clientChannels[0],
    clients: clientChannels,
    /** Another channel on the queue speaking raw bytes: a C program calling msgsnd/msgrcv. */
    raw(): Channel<Uint8Array> {
      const channel = new Channel<Uint8Array>(queue.attach(), { codec: bytes });
      clientChannels.push(channel as unknown as Channel<RpcFrame<Req, Res>>);
      return channel;
    },
    [Symbol.dispose]() {
      server.close();
      for (const channel of clientChannels) channel.close();
    },
  };
}

const timeout = () => AbortSignal.timeout(10_000);

/** A request/reply header as a C peer writes it. */
function header(kind: number, id: number, replyType: number, body: Uint8Array): Uint8Array {
  const data = new Uint8Array(16 + body.length);
  const view = new DataView(data.buffer);
  data.set([0x49, 0x52, 1, kind]);
  view.setUint32(4, id, true);
  view.setBigUint64(8, BigInt(replyType), true);
  data.set(body, 16);
  return data;
}

const utf8 = new TextEncoder();
const fromUtf8 = (data: Uint8Array) => new TextDecoder().decode(data);

const numberSchema: StandardSchemaV1<unknown, number> = {
  "~standard": {
    version: 1,
    vendor: "test",
    validate: (value) =>
      typeof value === "number" ? { value } : { issues: [{ message: "expected a number", path: [] }] },
  },
};

// ---------------------------------------------------------------------------
// The model itself

Deno.test("model queue: msgrcv type semantics (0, t, -t, except) and pipelined send", async () => {
  const queue = new KernelQueue();
  const a = queue.attach();
  for (const type of [5, 3, 7, 3, 1]) a.trySend(new Uint8Array([type]), type);
  const take = (type: number, except = false) => a.tryReceive({ type, except })?.type ?? null;
  assert.equal(take(-4), 1, "lowest type <= 4");
  assert.equal(take(-4), 3);
  assert.equal(take(3, true), 5, "first of any type but 3");
  assert.equal(take(7), 7);
  assert.equal(take(9), null);
  assert.equal(take(-9, true), 3, "MSG_EXCEPT is ignored for negative types");
  assert.equal(take(0), null);
  const waiting = a.receive({ type: 8, except: false }, timeout());
  a.trySend(new Uint8Array([2]), 2);
  a.trySend(new Uint8Array([8]), 8);
  assert.equal((await waiting).type, 8, "handed to the waiting receiver");
  assert.equal(queue.count(), 1);
  await a.unlink();
  await assert.rejects(a.receive({ type: 0, except: false }, timeout()), ChannelClosedError);
});

// ---------------------------------------------------------------------------
// The codec and the wire layout

Deno.test("rpc codec: header layout, round trip, names", () => {
  const codec = rpc<{ n: number }, string>(undefined, text);
  assert.equal(codec.name, "rpc(json,text)");
  assert.equal(rpc().name, "rpc(json)");
  const data = codec.encode({ kind: "request", id: 0xdeadbeef, replyType: 2 ** 40 + 5, value: { n: 1 } });
  assert.deepEqual(
    [...data],
    [...header(1, 0xdeadbeef, 2 ** 40 + 5, utf8.encode('{"n":1}'))],
  );
  assert.deepEqual([...data.subarray(0, 8)], [0x49, 0x52, 1, 1, 0xef, 0xbe, 0xad, 0xde]);
  assert.deepEqual(codec.decode(data), {
    kind: "request",
    id: 0xdeadbeef,
    replyType: 2 ** 40 + 5,
    value: { n: 1 },
  });
  const reply = codec.encode({ kind: "reply", id: 1, replyType: 9, value: "ok" });
  assert.deepEqual([...reply], [...header(2, 1, 9, utf8.encode("ok"))]);
  assert.deepEqual(codec.decode(reply), { kind: "reply", id: 1, replyType: 9, value: "ok" });
  const failure = codec.encode({ kind: "error", id: 2, replyType: 9, message: "Error: nö" });
  assert.deepEqual([...failure], [...header(3, 2, 9, utf8.encode("Error: nö"))]);
  assert.deepEqual(codec.decode(failure), { kind: "error", id: 2, replyType: 9, message: "Error: nö" });
  // Offsets are honoured when the bytes are a view into a larger buffer.
  const padded = new Uint8Array(reply.length + 3);
  padded.set(reply, 3);
  assert.deepEqual(codec.decode(padded.subarray(3)), { kind: "reply", id: 1, replyType: 9, value: "ok" });
});

Deno.test("rpc codec: refuses bad frames to send and bad headers received", () => {
  const codec = rpc<number>();
  assert.throws(() => codec.encode({ kind: "request", id: -1, replyType: 5, value: 1 }), RangeError);
  assert.throws(() => codec.encode({ kind: "request", id: 2 ** 32, replyType: 5, value: 1 }), RangeError);
  assert.throws(() => codec.encode({ kind: "request", id: 1, replyType: 0, value: 1 }), RangeError);
  assert.throws(() => codec.encode({ kind: "request", id: 1, replyType: 2 ** 53, value: 1 }), RangeError);
  assert.throws(
    () =>
      codec.encode({
        kind: "malformed",
        of: "request",
        id: 1,
        replyType: 5,
        error: new FrameError("x"),
      }),
    TypeError,
  );
  const good = codec.encode({ kind: "request", id: 1, replyType: 5, value: 1 });
  const broken = (at: number, byte: number) => {
    const copy = good.slice();
    copy[at] = byte;
    return copy;
  };
  assert.throws(() => codec.decode(good.subarray(0, 15)), /shorter than the 16-byte/);
  assert.throws(
    () => codec.decode(broken(0, 0x7b)),
    (e) => e instanceof FrameError && /bad magic/.test(e.message),
  );
  assert.throws(
    () => codec.decode(broken(2, 2)),
    (e) => e instanceof FrameError && /version 2/.test(e.message),
  );
  assert.throws(() => codec.decode(broken(3, 4)), (e) => e instanceof FrameError && /kind 4/.test(e.message));
  assert.throws(() => codec.decode(header(1, 1, 0, new Uint8Array())), FrameError);
  const huge = header(1, 1, 1, new Uint8Array());
  new DataView(huge.buffer).setBigUint64(8, 2n ** 53n, true);
  assert.throws(() => codec.decode(huge), /outside 1 \.\.= 2\^53 - 1/);
  // A sound header with a body that does not decode is reported, not thrown.
  const bad = codec.decode(header(1, 3, 77, utf8.encode("{")));
  assert.equal(bad.kind, "malformed");
  assert.ok(bad.kind === "malformed" && bad.of === "request" && bad.id === 3 && bad.replyType === 77);
  assert.ok(bad.kind === "malformed" && bad.error instanceof FrameError);
});

// ---------------------------------------------------------------------------
// Round trips

Deno.test("request/serve: round trips, with the handler's context", async () => {
  using s = setup<{ a: number; b: number }, number>();
  const contexts: RequestContext[] = [];
  const serving = s.server.serve(({ a, b }, context) => {
    contexts.push(context);
    return a + b;
  });
  assert.equal(await s.client.request({ a: 2, b: 3 }, { signal: timeout() }), 5);
  assert.equal(await s.client.request({ a: 10, b: -1 }, { timeout: 10_000 }), 9);
  assert.equal(contexts.length, 2);
  const [first, second] = contexts;
  assert.equal(first.type, 1);
  assert.equal(first.replyType, second.replyType, "one reply type per client channel");
  assert.ok(first.replyType >= 2 ** 31 && Number.isSafeInteger(first.replyType));
  assert.equal(Math.floor(first.replyType / 2 ** 31), Deno.pid, "reply types are pid × 2^31 + slot");
  assert.notEqual(first.id, second.id);
  assert.equal(first.signal.aborted, false);
  assert.equal(s.queue.count(), 0, "nothing left behind");
  s.server.close();
  await serving;
  assert.equal(first.signal.aborted, true, "the handlers' signal aborts when serving stops");
});

Deno.test("request/serve: async handlers, distinct request and reply codecs, a custom request type", async () => {
  using s = setup<string, number>(1, rpc<string, number>(text, rpc<number>().requestCodec));
  const stop = new AbortController();
  const serving = s.server.serve(async (word) => {
    await turn();
    return word.length;
  }, { requestType: 7, signal: stop.signal });
  assert.equal(await s.client.request("héllo", { requestType: 7, signal: timeout() }), 5);
  // A request of another type is not taken by this server.
  const other = new AbortController();
  const unanswered = s.client.request("x", { requestType: 1, signal: other.signal });
  await until(() => s.queue.count(1) === 1, "the type-1 request to wait in the queue");
  other.abort(new Error("nobody serves type 1"));
  await assert.rejects(unanswered, /nobody serves type 1/);
  stop.abort();
  await serving;
});

Deno.test("many concurrent requests from one client each get their own reply, in any order", async () => {
  using s = setup<number, { n: number; doubled: number }>();
  const serving = s.server.serve(async (n) => {
    for (let i = 0; i < (n * 7) % 5; i++) await turn(); // replies leave out of order
    return { n, doubled: 2 * n };
  }, { concurrency: 16 });
  const values = Array.from({ length: 100 }, (_, i) => i);
  const replies = await Promise.all(values.map((n) => s.client.request(n, { signal: timeout() })));
  assert.deepEqual(replies, values.map((n) => ({ n, doubled: 2 * n })));
  assert.equal(s.queue.count(), 0);
  s.server.close();
  await serving;
});

Deno.test("a slow request does not hold back the reply of a fast one on the same channel", async () => {
  using s = setup<string>();
  const slow = gate();
  const serving = s.server.serve(async (what) => {
    if (what === "slow") await slow.promise;
    return `${what} done`;
  }, { concurrency: 2 });
  const first = s.client.request("slow", { signal: timeout() });
  let firstDone = false;
  first.then(() => firstDone = true, () => {});
  assert.equal(await s.client.request("fast", { signal: timeout() }), "fast done");
  assert.equal(firstDone, false);
  slow.open();
  assert.equal(await first, "slow done");
  s.server.close();
  await serving;
});

Deno.test("several clients on one queue each get their own replies", async () => {
  using s = setup<{ client: number; n: number }, string>(5);
  const replyTypes = new Map<number, Set<number>>();
  const serving = s.server.serve(async ({ client, n }, { replyType }) => {
    if (!replyTypes.has(client)) replyTypes.set(client, new Set());
    replyTypes.get(client)!.add(replyType);
    if (n % 3 === 0) await turn();
    return `client ${client} request ${n}`;
  }, { concurrency: 4 });
  const all = s.clients.flatMap((channel, client) =>
    Array.from({ length: 30 }, async (_, n) => {
      assert.equal(
        await channel.request({ client, n }, { signal: timeout() }),
        `client ${client} request ${n}`,
      );
    })
  );
  await Promise.all(all);
  const perClient = [...replyTypes.values()];
  assert.equal(perClient.length, 5);
  assert.ok(perClient.every((set) => set.size === 1), "each client channel keeps one reply type");
  assert.equal(new Set(perClient.map((set) => [...set][0])).size, 5, "no two clients share a reply type");
  s.server.close();
  await serving;
});

Deno.test("several servers on one queue share the requests", async () => {
  using s = setup<number, string>(1);
  const second = new Channel(s.queue.attach(), { codec: rpc<number, string>() });
  try {
    const gates = [gate(), gate()];
    const stop = new AbortController();
    let started = 0;
    const servers = [s.server, second].map((channel, i) =>
      channel.serve(async (n) => {
        started++;
        await gates[i].promise;
        return `server ${i} got ${n}`;
      }, { signal: stop.signal })
    );
    const replies = Promise.all([1, 2].map((n) => s.client.request(n, { signal: timeout() })));
    await until(() => started === 2, "both servers to hold a request");
    gates[0].open();
    gates[1].open();
    assert.deepEqual((await replies).map((r) => r.slice(0, 8)).sort(), ["server 0", "server 1"]);
    stop.abort();
    await Promise.all(servers);
  } finally {
    second.close();
  }
});

// ---------------------------------------------------------------------------
// Errors

Deno.test("a handler's error reaches the client as a RemoteError; serving goes on", async () => {
  using s = setup<string, string>();
  const serving = s.server.serve(async (what) => {
    if (what === "throw") throw new RangeError("no such order");
    if (what === "reject") {
      await turn();
      throw new Error("async failure");
    }
    if (what === "string") throw "a bare string";
    return what;
  });
  const error = await s.client.request("throw", { signal: timeout() }).catch((e) => e);
  assert.ok(error instanceof RemoteError, `got ${error}`);
  assert.equal(error.remoteMessage, "RangeError: no such order");
  assert.match(error.message, /RangeError: no such order/);
  assert.ok(error.replyType >= 2 ** 31);
  await assert.rejects(
    s.client.request("reject", { signal: timeout() }),
    (e) => e instanceof RemoteError && e.remoteMessage === "Error: async failure",
  );
  await assert.rejects(
    s.client.request("string", { signal: timeout() }),
    (e) => e instanceof RemoteError && e.remoteMessage === "a bare string",
  );
  assert.equal(await s.client.request("fine", { signal: timeout() }), "fine");
  s.server.close();
  await serving;
});

Deno.test("serve: errorMessage hides internals; unencodable and oversized replies become errors", async () => {
  using s = setup<string, unknown>();
  const serving = s.server.serve((what) => {
    if (what === "secret") throw new Error("password=hunter2");
    if (what === "undefined") return undefined;
    if (what === "huge") return "x".repeat(10_000);
    return what;
  }, {
    errorMessage: (error) =>
      error instanceof Error && error.message.includes("password") ? "internal error" : String(error),
  });
  await assert.rejects(
    s.client.request("secret", { signal: timeout() }),
    (e) => e instanceof RemoteError && e.remoteMessage === "internal error",
  );
  await assert.rejects(
    s.client.request("undefined", { signal: timeout() }),
    (e) => e instanceof RemoteError && /json codec cannot encode undefined/.test(e.remoteMessage),
  );
  await assert.rejects(
    s.client.request("huge", { signal: timeout() }),
    (e) => e instanceof RemoteError && /exceeds the limit of 8192 bytes/.test(e.remoteMessage),
  );
  s.server.close();
  await serving;
});

Deno.test("schemas: a request failing the server's schema, a reply failing the client's", async () => {
  using s = setup<unknown, unknown>();
  const serving = s.server.serve((value) => value === 1 ? "not a number" : value, { schema: numberSchema });
  await assert.rejects(
    s.client.request("one", { signal: timeout() }),
    (e) => e instanceof RemoteError && /ValidationError: .*expected a number/.test(e.remoteMessage),
  );
  await assert.rejects(s.client.request(1, { signal: timeout(), schema: numberSchema }), ValidationError);
  assert.equal(await s.client.request(2, { signal: timeout(), schema: numberSchema }), 2);
  s.server.close();
  await serving;
});

// ---------------------------------------------------------------------------
// Foreign peers: the wire layout as a C program sees it

Deno.test("a C-style client (raw msgsnd/msgrcv, reply type = its pid) is answered", async () => {
  using s = setup<{ n: number }, { n: number }>();
  const serving = s.server.serve(({ n }) => ({ n: n + 1 }));
  const c = s.raw();
  await c.send(header(1, 7, 4242, utf8.encode('{"n":41}')), { type: 1 });
  const reply = await c.receiveMessage({ type: 4242, signal: timeout() });
  assert.equal(reply.type, 4242);
  assert.deepEqual([...reply.value], [...header(2, 7, 4242, utf8.encode('{"n":42}'))]);
  // A body that does not decode is answered with an error frame.
  await c.send(header(1, 8, 4242, utf8.encode("{not json")), { type: 1 });
  const failure = await c.receive({ type: 4242, signal: timeout() });
  assert.deepEqual([...failure.subarray(0, 16)], [...header(3, 8, 4242, new Uint8Array())]);
  assert.match(fromUtf8(failure.subarray(16)), /^FrameError: json codec/);
  s.server.close();
  await serving;
});

Deno.test("a C-style server (copies the header, sets kind 2 or 3) answers channel.request", async () => {
  using s = setup<string, string>();
  const c = s.raw();
  const cServer = (async () => {
    for (let i = 0; i < 3; i++) {
      const request = await c.receive({ type: 1, signal: timeout() });
      assert.deepEqual([...request.subarray(0, 4)], [0x49, 0x52, 1, 1]);
      const replyType = Number(new DataView(request.buffer, request.byteOffset).getBigUint64(8, true));
      const body = JSON.parse(fromUtf8(request.subarray(16)));
      const reply = request.slice(0, 16);
      if (body === "fail") {
        reply[3] = 3;
        await c.send(new Uint8Array([...reply, ...utf8.encode("out of paper")]), { type: replyType });
      } else if (body === "garble") {
        await c.send(new Uint8Array([...reply.subarray(0, 3), 2, ...reply.subarray(4), 0xff]), {
          type: replyType,
        });
      } else {
        reply[3] = 2;
        await c.send(new Uint8Array([...reply, ...utf8.encode(JSON.stringify(body.toUpperCase()))]), {
          type: replyType,
        });
      }
    }
  })();
  assert.equal(await s.client.request("hello", { signal: timeout() }), "HELLO");
  await assert.rejects(
    s.client.request("fail", { signal: timeout() }),
    (e) => e instanceof RemoteError && e.remoteMessage === "out of paper",
  );
  await assert.rejects(s.client.request("garble", { signal: timeout() }), FrameError);
  await cServer;
});

Deno.test("serve reports frames it cannot answer to onError and goes on", async () => {
  using s = setup<number>();
  const reported: unknown[] = [];
  const serving = s.server.serve((n) => n * 10, { onError: (error) => reported.push(error) });
  const c = s.raw();
  await c.send(utf8.encode("plain text, no header"), { type: 1 });
  await c.send(header(2, 1, 4242, utf8.encode("1")), { type: 1 }); // a reply sent as a request
  await c.send(header(1, 2, 1, utf8.encode("1")), { type: 1 }); // asks for a reply of type 1
  assert.equal(await s.client.request(4, { signal: timeout() }), 40);
  await until(() => reported.length === 3, "three reports");
  assert.ok(reported.every((error) => error instanceof FrameError));
  assert.match(String(reported[0]), /bad magic/);
  assert.match(String(reported[1]), /"reply" frame arrived with the request type 1/);
  assert.match(String(reported[2]), /asks for its reply with the request type 1/);
  assert.equal(s.queue.count(), 0, "nothing was answered to type 1 or 4242");
  s.server.close();
  await serving;
});

// ---------------------------------------------------------------------------
// Aborts, timeouts, stale replies

Deno.test("an aborted request rejects with signal.reason; its late reply reaches no other request", async () => {
  using s = setup<string>();
  const hold = gate();
  let replyType = 0;
  const serving = s.server.serve(async (what, context) => {
    replyType = context.replyType;
    if (what === "late") await hold.promise;
    return `${what} answered`;
  }, { concurrency: 4 });

  const controller = new AbortController();
  const reason = new Error("changed my mind");
  const late = s.client.request("late", { signal: controller.signal });
  await until(() => replyType !== 0, "the server to take the request");
  controller.abort(reason);
  assert.equal(await late.catch((e) => e), reason);

  // No request in flight: the late reply waits in the queue under the channel's reply type.
  hold.open();
  await until(() => s.queue.count(replyType) === 1, "the late reply to land in the queue");
  // The next request drains it (dropped: its id is not pending) and gets its own reply.
  assert.equal(await s.client.request("next", { signal: timeout() }), "next answered");
  assert.equal(s.queue.count(), 0, "the stale reply was drained");
  s.server.close();
  await serving;
});

Deno.test("a late reply arriving while other requests are in flight is dropped at once", async () => {
  using s = setup<string>();
  const holds = { late: gate(), other: gate() };
  const started = new Set<string>();
  const serving = s.server.serve(async (what) => {
    started.add(what);
    await holds[what as keyof typeof holds].promise;
    return what;
  }, { concurrency: 2 });
  const controller = new AbortController();
  const late = s.client.request("late", { signal: controller.signal });
  const other = s.client.request("other", { signal: timeout() });
  await until(() => started.size === 2, "both requests to be taken");
  controller.abort(new Error("gone"));
  await assert.rejects(late, /gone/);
  holds.late.open();
  await until(() => s.queue.count() === 0 && s.queue.waiters.length === 2, "the late reply to be drained");
  holds.other.open();
  assert.equal(await other, "other");
  s.server.close();
  await serving;
});

Deno.test("request: timeout rejects with a TimeoutError; an aborted signal sends nothing", async () => {
  using s = setup<number>();
  const error = await s.client.request(1, { timeout: 20 }).catch((e) => e);
  assert.ok(error instanceof DOMException && error.name === "TimeoutError", `got ${error}`);
  assert.equal(s.queue.count(1), 1, "the request itself was sent and waits for a server");
  await s.server.receive({ type: 1, signal: timeout() });
  const already = await s.client.request(2, { signal: AbortSignal.abort("nope") }).catch((e) => e);
  assert.equal(already, "nope");
  assert.equal(s.queue.count(), 0, "nothing was sent");
  await assert.rejects(s.client.request(1, { timeout: -1 }), RangeError);
  assert.equal(s.queue.waiters.length, 0, "no receive left waiting once nothing is in flight");
});

Deno.test("closing a client channel rejects its requests in flight with ChannelClosedError", async () => {
  using s = setup<number>();
  const pending = [s.client.request(1), s.client.request(2)];
  await until(() => s.queue.count(1) === 2, "both requests sent");
  s.client.close();
  for (const request of pending) await assert.rejects(request, ChannelClosedError);
  await assert.rejects(s.client.request(3), ChannelClosedError);
});

// ---------------------------------------------------------------------------
// Stopping a server

Deno.test("serve stops on abort, after answering the requests in hand", async () => {
  using s = setup<number>();
  const hold = gate();
  const stop = new AbortController();
  let context: RequestContext | undefined;
  let finished = false;
  const serving = s.server.serve(async (n, c) => {
    context = c;
    await hold.promise;
    return n + 1;
  }, { signal: stop.signal }).then(() => finished = true);
  const reply = s.client.request(1, { signal: timeout() });
  await until(() => context !== undefined, "the request to be taken");
  const reason = new Error("shutting down");
  stop.abort(reason);
  await turn();
  assert.equal(finished, false, "waits for the request in hand");
  assert.equal(context!.signal.aborted, true);
  assert.equal(context!.signal.reason, reason);
  hold.open();
  assert.equal(await reply, 2);
  await serving;
  // No longer served: a new request waits in the queue.
  const controller = new AbortController();
  const unanswered = s.client.request(5, { signal: controller.signal });
  await until(() => s.queue.count(1) === 1, "the request to wait in the queue");
  controller.abort(new Error("stop"));
  await assert.rejects(unanswered, /stop/);
  // An already aborted signal: returns at once.
  await s.server.serve(() => 0, { signal: AbortSignal.abort() });
});

Deno.test("serve stops when its channel closes or the queue is removed", async () => {
  {
    using s = setup<number>();
    const serving = s.server.serve((n) => n);
    assert.equal(await s.client.request(3, { signal: timeout() }), 3);
    s.server.close();
    await serving;
    await s.server.serve((n) => n); // a closed channel: nothing to serve
  }
  {
    using s = setup<number>();
    const hold = gate();
    const serving = s.server.serve(async (n) => {
      await hold.promise;
      return n;
    }, { concurrency: 2 });
    const first = s.client.request(1);
    await until(() => s.queue.count() === 0 && s.queue.waiters.length === 2, "request taken, all waiting");
    await s.server.unlink(); // IPC_RMID: the server's and the client's receives fail with EIDRM
    await assert.rejects(first, ChannelClosedError);
    hold.open();
    await serving;
  }
});

Deno.test("serve honours concurrency", async () => {
  using s = setup<number>();
  const holds: (() => void)[] = [];
  let active = 0;
  let most = 0;
  const serving = s.server.serve(async (n) => {
    active++;
    most = Math.max(most, active);
    await new Promise<void>((resolve) => holds.push(resolve));
    active--;
    return n;
  }, { concurrency: 3 });
  const replies = Promise.all(
    Array.from({ length: 10 }, (_, n) => s.client.request(n, { signal: timeout() })),
  );
  await until(() => active === 3, "three handlers");
  for (let i = 0; i < 5; i++) await turn();
  assert.equal(active, 3, "no fourth handler while three run");
  assert.equal(s.queue.count(1), 7, "the other requests wait in the queue");
  for (let released = 0; released < 10; released++) {
    await until(() => holds.length > 0, "a handler");
    holds.shift()!();
    assert.ok(active <= 3);
  }
  assert.deepEqual(await replies, Array.from({ length: 10 }, (_, n) => n));
  assert.equal(most, 3);
  s.server.close();
  await serving;
});

Deno.test("serve with concurrency > 1 sends a quick handler's reply before it receives again", async () => {
  // A real transport's receive may spin on the main thread before parking;
  // a reply queued behind it would wait (measured on sysv-mq: 20 µs → 500 µs).
  const queue = new KernelQueue();
  const transport = queue.attach();
  const codec = rpc<number>();
  using server = new Channel(transport, { codec });
  using client = new Channel(queue.attach(), { codec });
  let replyType = 0;
  const handlers = {
    sync: (n: number, context: RequestContext) => {
      replyType = context.replyType;
      return n;
    },
    async: async (n: number) => {
      await null;
      return n;
    },
  };
  for (const [name, handler] of Object.entries(handlers)) {
    const stop = new AbortController();
    const serving = server.serve(handler, { concurrency: 8, signal: stop.signal });
    await until(() => transport.log.at(-1) === "receive", "the server to wait");
    transport.log.length = 0;
    assert.equal(await client.request(1, { signal: timeout() }), 1);
    await until(() => transport.log.length === 2, "the reply and the next receive");
    assert.deepEqual(transport.log, [`send ${replyType}`, "receive"], `${name} handler`);
    stop.abort();
    await serving;
  }
});

// ---------------------------------------------------------------------------
// Misuse

Deno.test("a transport without typeFilter: request and serve reject with a TypeError naming both", async () => {
  const [a, b] = Pipe.pair();
  using left = new Channel(a, { codec: rpc<number>() });
  using right = new Channel(b, { codec: rpc<number>() });
  const check = (error: unknown) =>
    error instanceof TypeError && /^pipe: /.test(error.message) &&
    /capabilities\.typeFilter is false/.test(error.message);
  await assert.rejects(left.request(1), check);
  await assert.rejects(right.serve((n) => n), check);
});

Deno.test("misuse: a channel without the rpc codec, bad types and options, serving and requesting on one channel", async () => {
  using s = setup<number>();
  const plain = new Channel<number>(s.queue.attach());
  try {
    await assert.rejects(
      request(plain as unknown as Channel<RpcFrame<number>>, 1),
      (e) => e instanceof TypeError && /rpc\(\) codec, e\.g\. \{ codec: rpc\(json\) \}/.test(e.message),
    );
    await assert.rejects(serve(plain as unknown as Channel<RpcFrame<number>>, (n) => n), TypeError);
  } finally {
    plain.close();
  }
  for (const requestType of [0, -1, 1.5, 2 ** 31]) {
    await assert.rejects(s.client.request(1, { requestType }), RangeError);
    await assert.rejects(s.server.serve((n) => n, { requestType }), RangeError);
  }
  for (const concurrency of [0, 1.5, NaN]) {
    await assert.rejects(s.server.serve((n) => n, { concurrency }), RangeError);
  }
  const stop = new AbortController();
  const serving = s.server.serve((n) => n, { signal: stop.signal });
  await assert.rejects(s.server.serve((n) => n), /already serving/);
  await assert.rejects(s.server.request(1), /this channel is serving/);
  const pending = s.client.request(1, { signal: timeout() });
  assert.equal(await pending, 1);
  const inFlight = s.client.request(2, { signal: AbortSignal.timeout(10_000) });
  await assert.rejects(s.client.serve((n) => n), /requests in flight/);
  assert.equal(await inFlight, 2);
  stop.abort();
  await serving;
  assert.equal(s.queue.count(), 0);
});
