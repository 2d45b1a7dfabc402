/**
 * Request/reply over one typed queue: the classic System V pattern where a
 * server takes requests of type 1 and answers each client with a type of its
 * own, all through one kernel queue. It works over any transport whose
 * `info.capabilities.typeFilter` is true (`sysv-mq:`); `pipe:` and `fifo:`
 * cannot receive by type, and `request`/`serve` refuse them with a
 * `TypeError`.
 *
 * ## Opting in: the `rpc()` codec
 *
 * A request must carry the type its reply goes to, and a reply the request
 * it answers. ipcbus never changes a codec's payload behind the user's back,
 * so request/reply is explicit: open the channel with the {@linkcode rpc}
 * codec, which wraps your codec(s) and puts a 16-byte header before each
 * payload. Such a channel carries {@linkcode RpcFrame} values, and
 * `channel.request(value)` / `channel.serve(handler)` (or the functions
 * {@linkcode request} and {@linkcode serve}) do the rest. Requests and
 * replies may have different types and even different codecs.
 *
 * ## Wire layout (every frame, little-endian, no padding)
 *
 * ```text
 * offset size field
 *      0    1 magic0     0x49 ('I')
 *      1    1 magic1     0x52 ('R')
 *      2    1 version    1
 *      3    1 kind       1 request, 2 reply, 3 error
 *      4    4 id         u32: chosen by the client, copied into the reply
 *      8    8 replyType  u64, 1 ..= 2^53 - 1: requests say which message type
 *                        the reply must be sent with; replies copy it
 *     16    … body       request: the request codec's payload
 *                        reply:   the reply codec's payload
 *                        error:   a UTF-8 message (why the request failed)
 * ```
 *
 * A request is sent with the message type `requestType` (default 1); its
 * reply (or error) with the message type `replyType` taken from the request.
 * A C server follows it with a few lines:
 *
 * ```c
 * struct { long mtype; unsigned char mtext[8192]; } in, out;
 * ssize_t n = msgrcv(q, &in, sizeof in.mtext, 1, 0);      // a request (type 1)
 * // in.mtext[0..3] == 'I','R',1,1; body = in.mtext + 16, n - 16 bytes
 * memcpy(&out.mtype, in.mtext + 8, 8);                      // reply type (little-endian host)
 * memcpy(out.mtext, in.mtext, 16); out.mtext[3] = 2;        // same header, kind = reply (3: error)
 * memcpy(out.mtext + 16, answer, len);
 * msgsnd(q, &out, 16 + len, 0);
 * ```
 *
 * and a C client sends `'I','R',1,1`, any id, a reply type of its own (the
 * classic choice is its pid) and its body with type 1, then
 * `msgrcv(q, &in, size, its_reply_type, 0)`.
 *
 * ## Reply types
 *
 * Each client *channel* gets one reply type, fixed at its first request:
 * `pid × 2^31 + slot`, where `slot` counts the process's client channels
 * from a random start (mod 2^31). Processes therefore use disjoint ranges
 * (pids are below 2^22, so every reply type is below 2^53), two channels of
 * one process never share a type, and Workers of one process (same pid,
 * separate counters) collide only with a probability of about n / 2^31.
 * Reply types are 2^31 and up; request types must be 1 … 2^31 − 1. Servers
 * answer whatever reply type a request names, so C clients may use their pid.
 *
 * Concurrent requests on one channel share its reply type and are told
 * apart by `id`: one receive loop per channel (running only while requests
 * are in flight) takes every frame of that type and hands each reply to the
 * request with its id. A slow request never delays the reply of a fast one.
 *
 * ## Aborted requests and stale replies
 *
 * Aborting a request (its `signal`, or `timeout`) rejects it with
 * `signal.reason` at once. If the server answers later, that reply still
 * lands in the queue under the channel's reply type, where no other client
 * looks. The channel's receive loop takes it off the queue and drops it (its
 * id is no longer pending) while the channel has requests in flight, or at
 * its next request. It is never delivered to a different request. A reply
 * that arrives after the client channel is closed, or after its process has
 * died, stays in a kernel queue (it counts against the queue's byte limit and
 * shows in `ipcs -q`) until the queue is removed or a later process with the
 * same pid and slot drains it (ids start at a random value, so such a reply
 * matches nothing and is dropped).
 *
 * ## Rules of use
 *
 * - Serve and request on different `Channel` objects (open the queue twice):
 *   both hold the channel's receive side while they wait.
 * - On a client channel, do not `receive()` with type 0 (any) while requests
 *   are in flight: it could take a reply.
 * - Several server channels or processes may serve one queue; each request
 *   goes to exactly one of them (with `concurrency`, requests a server cannot
 *   take yet stay in the queue for the others).
 *
 * @example A server and a client over one System V queue
 * ```ts ignore
 * import { open, rpc } from "@ipcbus/ipcbus";
 *
 * type Sum = { a: number; b: number };
 * const codec = rpc<Sum, number>();
 * using server = await open("sysv-mq:0x1a2b", { create: true, codec });
 * const stop = new AbortController();
 * const serving = server.serve(({ a, b }) => a + b, { signal: stop.signal });
 *
 * using client = await open("sysv-mq:0x1a2b", { codec });
 * console.log(await client.request({ a: 2, b: 3 }, { timeout: 1000 })); // 5
 * stop.abort();
 * await serving;
 * await server.unlink();
 * ```
 *
 * @module
 */

import type { Channel, ChannelInfo, StandardSchemaResult, StandardSchemaV1 } from "./channel.ts";
import { type Codec, json } from "./codec.ts";
import { ChannelClosedError, FrameError, ValidationError } from "./errors.ts";

const HEADER_SIZE = 16;
const MAGIC0 = 0x49; // 'I'
const MAGIC1 = 0x52; // 'R'
const VERSION = 1;
const KIND_REQUEST = 1;
const KIND_REPLY = 2;
const KIND_ERROR = 3;
/** Reply types are `pid × REPLY_SPAN + slot`; request types are below it. */
const REPLY_SPAN = 2 ** 31;
const MAX_ID = 0xffff_ffff;
const TWO_32 = 2 ** 32;
/** The high 32 bits of `Number.MAX_SAFE_INTEGER` (2^53 - 1): a reply type's high half is at most this. */
const MAX_SAFE_HIGH = 0x1f_ffff;

const utf8 = new TextEncoder();
const lenientUtf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

// ---------------------------------------------------------------------------
// Frames and the codec

/**
 * A request: `value`, to be answered with the message type `replyType`.
 *
 * @typeParam Req The request value's type.
 *
 * @example
 * ```ts
 * import type { RpcRequest } from "@ipcbus/ipcbus";
 *
 * const frame: RpcRequest<string> = { kind: "request", id: 1, replyType: 4242, value: "ping" };
 * console.log(frame.kind); // "request"
 * ```
 */
export interface RpcRequest<Req> {
  /** `"request"` (kind 1 on the wire). */
  readonly kind: "request";
  /** Chosen by the client (0 … 2^32 − 1), copied into the reply. */
  readonly id: number;
  /** The message type the reply must be sent with (1 … 2^53 − 1). */
  readonly replyType: number;
  /** The request. */
  readonly value: Req;
}

/**
 * A successful reply to the request `id`.
 *
 * @typeParam Res The reply value's type.
 *
 * @example
 * ```ts
 * import type { RpcReply } from "@ipcbus/ipcbus";
 *
 * const frame: RpcReply<string> = { kind: "reply", id: 1, replyType: 4242, value: "pong" };
 * console.log(frame.value); // "pong"
 * ```
 */
export interface RpcReply<Res> {
  /** `"reply"` (kind 2 on the wire). */
  readonly kind: "reply";
  /** The id of the request answered. */
  readonly id: number;
  /** The request's reply type (the message type this frame is sent with). */
  readonly replyType: number;
  /** The answer. */
  readonly value: Res;
}

/**
 * A failed request: the server's handler threw, or the request or the reply
 * could not be encoded, decoded or validated.
 *
 * @example
 * ```ts
 * import type { RpcFailure } from "@ipcbus/ipcbus";
 *
 * const frame: RpcFailure = { kind: "error", id: 1, replyType: 4242, message: "Error: no such order" };
 * console.log(frame.message); // "Error: no such order"
 * ```
 */
export interface RpcFailure {
  /** `"error"` (kind 3 on the wire). */
  readonly kind: "error";
  /** The id of the request answered. */
  readonly id: number;
  /** The request's reply type (the message type this frame is sent with). */
  readonly replyType: number;
  /** Why it failed (UTF-8 on the wire). */
  readonly message: string;
}

/**
 * Produced by the {@linkcode rpc} codec (never sent) when a frame's header
 * is sound but its body does not decode with the request or reply codec, so
 * that the server can still answer with an error and the client can still
 * reject the one request concerned. A bad header is a `FrameError` instead.
 *
 * @example
 * ```ts
 * import { rpc } from "@ipcbus/ipcbus";
 *
 * const codec = rpc<number>();
 * const data = codec.encode({ kind: "request", id: 1, replyType: 4242, value: 1 });
 * data[16] = 0x7b; // "{": no longer valid JSON
 * const frame = codec.decode(data);
 * console.log(frame.kind === "malformed" && frame.of); // "request"
 * ```
 */
export interface RpcMalformed {
  /** `"malformed"`: a received frame whose body could not be decoded. */
  readonly kind: "malformed";
  /** Which kind of frame it was. */
  readonly of: "request" | "reply";
  /** The frame's id. */
  readonly id: number;
  /** The frame's reply type. */
  readonly replyType: number;
  /** What went wrong. */
  readonly error: FrameError;
}

/**
 * What a channel opened with the {@linkcode rpc} codec carries.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 *
 * @example
 * ```ts
 * import { Channel, type RpcFrame } from "@ipcbus/ipcbus";
 *
 * function describe(frame: RpcFrame<string, number>): string {
 *   return frame.kind === "reply" ? `answer ${frame.value}` : frame.kind;
 * }
 * console.log(describe({ kind: "reply", id: 1, replyType: 9, value: 42 })); // "answer 42"
 * ```
 */
export type RpcFrame<Req, Res = Req> = RpcRequest<Req> | RpcReply<Res> | RpcFailure | RpcMalformed;

/**
 * The codec made by {@linkcode rpc}.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 *
 * @example
 * ```ts
 * import { rpc, type RpcCodec } from "@ipcbus/ipcbus";
 *
 * const codec: RpcCodec<string, number> = rpc<string, number>();
 * console.log(codec.name, codec.requestCodec.name); // "rpc(json)" "json"
 * ```
 */
export interface RpcCodec<Req, Res = Req> extends Codec<RpcFrame<Req, Res>> {
  /** Encodes request bodies. */
  readonly requestCodec: Codec<Req>;
  /** Encodes reply bodies. */
  readonly replyCodec: Codec<Res>;
}

/**
 * The request/reply codec: a 16-byte header (see the module documentation
 * for the layout) followed by the body encoded with `requestCodec` or
 * `replyCodec`. Open both ends' channels with it to use
 * `channel.request()` and `channel.serve()`.
 *
 * Decoding never trusts the header: a frame shorter than 16 bytes, with
 * another magic, version or kind, or a reply type of 0 or above 2^53 − 1 is a
 * `FrameError`. A sound header with a body that does not decode gives an
 * {@linkcode RpcMalformed} frame.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 * @param requestCodec Encodes request values (default `json`).
 * @param replyCodec Encodes reply values (default: `requestCodec`).
 * @returns The codec, named `rpc(<codec>)` or `rpc(<request codec>,<reply codec>)`.
 *
 * @example The bytes of a request
 * ```ts
 * import { rpc, text } from "@ipcbus/ipcbus";
 *
 * const codec = rpc(text);
 * const data = codec.encode({ kind: "request", id: 7, replyType: 4242, value: "hi" });
 * console.log(data.length, data[3]); // 18 1
 * const frame = codec.decode(data);
 * console.log(frame.kind === "request" && frame.value); // "hi"
 * ```
 */
export function rpc<Req = unknown, Res = Req>(
  requestCodec: Codec<Req> = json as Codec<Req>,
  replyCodec: Codec<Res> = requestCodec as unknown as Codec<Res>,
): RpcCodec<Req, Res> {
  for (const codec of [requestCodec, replyCodec]) {
    if (typeof codec?.encode !== "function" || typeof codec?.decode !== "function") {
      throw new TypeError("rpc() needs codecs with encode and decode functions");
    }
  }
  const name = requestCodec === (replyCodec as unknown)
    ? `rpc(${requestCodec.name})`
    : `rpc(${requestCodec.name},${replyCodec.name})`;
  return {
    name,
    requestCodec,
    replyCodec,
    encode(frame: RpcFrame<Req, Res>): Uint8Array {
      let kind: number;
      let body: Uint8Array;
      checkId(frame.id);
      checkReplyType(frame.replyType);
      switch (frame.kind) {
        case "request":
          kind = KIND_REQUEST;
          body = requestCodec.encode(frame.value);
          break;
        case "reply":
          kind = KIND_REPLY;
          body = replyCodec.encode(frame.value);
          break;
        case "error":
          kind = KIND_ERROR;
          body = utf8.encode(String(frame.message));
          break;
        default:
          throw new TypeError(
            `${name}: only "request", "reply" and "error" frames can be sent, got "${
              (frame as { kind: unknown }).kind
            }"`,
          );
      }
      const data = new Uint8Array(HEADER_SIZE + body.length);
      const view = new DataView(data.buffer);
      data[0] = MAGIC0;
      data[1] = MAGIC1;
      data[2] = VERSION;
      data[3] = kind;
      view.setUint32(4, frame.id, true);
      // The 64-bit reply type as two halves: no BigInt per frame.
      view.setUint32(8, frame.replyType >>> 0, true);
      view.setUint32(12, (frame.replyType / TWO_32) >>> 0, true);
      data.set(body, HEADER_SIZE);
      return data;
    },
    decode(data: Uint8Array): RpcFrame<Req, Res> {
      if (data.length < HEADER_SIZE) {
        throw new FrameError(
          `${name}: a ${data.length}-byte message is shorter than the ${HEADER_SIZE}-byte request/reply header`,
        );
      }
      if (data[0] !== MAGIC0 || data[1] !== MAGIC1) {
        const got = ((data[0] << 8) | data[1]).toString(16).padStart(4, "0");
        throw new FrameError(
          `${name}: bad magic 0x${got} (expected 0x4952, "IR"): the sender does not speak the ipcbus request/reply format`,
        );
      }
      if (data[2] !== VERSION) {
        throw new FrameError(`${name}: unsupported request/reply format version ${data[2]} (expected 1)`);
      }
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const id = view.getUint32(4, true);
      const low = view.getUint32(8, true);
      const high = view.getUint32(12, true);
      if (high > MAX_SAFE_HIGH || (high === 0 && low === 0)) {
        const wide = view.getBigUint64(8, true);
        throw new FrameError(`${name}: reply type ${wide} is outside 1 ..= 2^53 - 1`);
      }
      const replyType = high * TWO_32 + low;
      const body = data.subarray(HEADER_SIZE);
      switch (data[3]) {
        case KIND_REQUEST:
          try {
            return { kind: "request", id, replyType, value: requestCodec.decode(body) };
          } catch (error) {
            return {
              kind: "malformed",
              of: "request",
              id,
              replyType,
              error: bodyError(error, requestCodec, body),
            };
          }
        case KIND_REPLY:
          try {
            return { kind: "reply", id, replyType, value: replyCodec.decode(body) };
          } catch (error) {
            return {
              kind: "malformed",
              of: "reply",
              id,
              replyType,
              error: bodyError(error, replyCodec, body),
            };
          }
        case KIND_ERROR:
          return { kind: "error", id, replyType, message: lenientUtf8.decode(body) };
        default:
          throw new FrameError(`${name}: unknown frame kind ${data[3]} (expected 1, 2 or 3)`);
      }
    },
  };
}

function bodyError(error: unknown, codec: Codec<unknown>, body: Uint8Array): FrameError {
  if (error instanceof FrameError) return error;
  return new FrameError(`codec "${codec.name}" could not decode a ${body.length}-byte body`, {
    cause: error,
  });
}

function checkId(id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) {
    throw new RangeError(`request id must be an integer from 0 to ${MAX_ID}, got ${id}`);
  }
}

function checkReplyType(type: number): void {
  if (!Number.isSafeInteger(type) || type < 1) {
    throw new RangeError(`reply type must be a positive safe integer, got ${type}`);
  }
}

// ---------------------------------------------------------------------------
// Errors and options

/**
 * The server answered a request with an error: its handler threw, or the
 * request or the reply could not be decoded, validated or sent. The server's
 * own text is in {@linkcode RemoteError.remoteMessage}.
 *
 * @example Telling a failed request from a transport problem
 * ```ts
 * import { RemoteError } from "@ipcbus/ipcbus";
 *
 * const error = new RemoteError("Error: no such order", 4242, 7);
 * console.log(error instanceof RemoteError, error.remoteMessage); // true "Error: no such order"
 * ```
 */
export class RemoteError extends Error {
  /** The server's message (by default `"<error name>: <error message>"`). */
  readonly remoteMessage: string;
  /** The reply type the error came back with. */
  readonly replyType: number;
  /** The request's id. */
  readonly id: number;

  /**
   * Creates an error.
   *
   * @param remoteMessage What the server said.
   * @param replyType The reply type it came with.
   * @param id The request's id.
   */
  constructor(remoteMessage: string, replyType: number, id: number) {
    super(`the server failed the request: ${remoteMessage}`);
    this.name = "RemoteError";
    this.remoteMessage = remoteMessage;
    this.replyType = replyType;
    this.id = id;
  }
}

/**
 * Options of {@linkcode request} (and `channel.request()`).
 *
 * @typeParam Res The reply value's type.
 *
 * @example
 * ```ts
 * import type { RequestOptions } from "@ipcbus/ipcbus";
 *
 * const options: RequestOptions<number> = { requestType: 1, timeout: 1000 };
 * console.log(options.timeout); // 1000
 * ```
 */
export interface RequestOptions<Res = unknown> {
  /** Aborting it rejects the request with `signal.reason` (see the module docs on late replies). */
  signal?: AbortSignal;
  /** Milliseconds to wait for the reply, send included; then rejects with a `TimeoutError` `DOMException`. */
  timeout?: number;
  /** The message type requests are sent with: 1 … 2^31 − 1 (default 1), the server's `requestType`. */
  requestType?: number;
  /** Checks the reply; a failing reply rejects with `ValidationError`. */
  schema?: StandardSchemaV1<unknown, Res>;
}

/**
 * What a handler learns about the request besides its value.
 *
 * @example
 * ```ts
 * import type { RequestContext } from "@ipcbus/ipcbus";
 *
 * const log = (context: RequestContext) => `request ${context.id} from reply type ${context.replyType}`;
 * console.log(log({ type: 1, id: 3, replyType: 4242, signal: new AbortController().signal }));
 * ```
 */
export interface RequestContext {
  /** The request's message type (the server's `requestType`). */
  readonly type: number;
  /** The request's id, chosen by the client. */
  readonly id: number;
  /** The message type the reply goes back with; it identifies the client channel. */
  readonly replyType: number;
  /** Aborted when `serve` stops (its signal aborted, or the channel closed). */
  readonly signal: AbortSignal;
}

/**
 * Answers one request; may be async. What it returns is the reply; what it
 * throws goes back to the client as a {@linkcode RemoteError}.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 *
 * @example
 * ```ts
 * import type { RequestHandler } from "@ipcbus/ipcbus";
 *
 * const double: RequestHandler<number, number> = (n) => 2 * n;
 * ```
 */
export type RequestHandler<Req, Res> = (value: Req, context: RequestContext) => Res | Promise<Res>;

/**
 * Options of {@linkcode serve} (and `channel.serve()`).
 *
 * @typeParam Req The request value's type.
 *
 * @example
 * ```ts
 * import type { ServeOptions } from "@ipcbus/ipcbus";
 *
 * const options: ServeOptions<number> = { concurrency: 4, onError: (error) => console.warn(error) };
 * console.log(options.concurrency); // 4
 * ```
 */
export interface ServeOptions<Req = unknown> {
  /** Aborting it stops taking requests; `serve` resolves once the requests in hand are answered. */
  signal?: AbortSignal;
  /** The message type of the requests to take: 1 … 2^31 − 1 (default 1). */
  requestType?: number;
  /**
   * How many handlers may run at once (default 1; `Infinity` for no limit).
   * Requests beyond it wait in the queue, where other servers may take them.
   */
  concurrency?: number;
  /** Checks each request; a failing one is answered with a `ValidationError` message. */
  schema?: StandardSchemaV1<unknown, Req>;
  /**
   * The text sent to the client when a request fails (default
   * `"<name>: <message>"` of the error). Use it to hide internals; the text
   * is cut to fit the transport's message size.
   */
  errorMessage?: (error: unknown) => string;
  /**
   * Called for what cannot be answered: a frame that is not a request/reply
   * frame, a reply that could not be sent even as an error. Default:
   * `console.error`. Serving goes on either way.
   */
  onError?: (error: unknown) => void;
}

// ---------------------------------------------------------------------------
// Checks shared by request and serve

type AnyRpcChannel = Channel<RpcFrame<unknown, unknown>>;

function checkUsable(info: ChannelInfo, what: string): void {
  if (!info.capabilities.typeFilter) {
    throw new TypeError(
      `${info.scheme}: ${what} needs a transport that can receive by type (capabilities.typeFilter is false for ${info.address}); use a typed queue such as sysv-mq:`,
    );
  }
  if (!info.codec.startsWith("rpc(")) {
    throw new TypeError(
      `${what} needs a channel opened with the rpc() codec, e.g. { codec: rpc(${info.codec}) }; this channel's codec is "${info.codec}"`,
    );
  }
}

function checkRequestType(type: number, info: ChannelInfo): number {
  if (!Number.isSafeInteger(type) || type < 1 || type >= REPLY_SPAN) {
    throw new RangeError(
      `requestType must be an integer from 1 to ${
        REPLY_SPAN - 1
      } (types from 2^31 up are reply types), got ${type}`,
    );
  }
  if (type > info.maxType) {
    throw new RangeError(`${info.scheme}: requestType must be at most ${info.maxType}, got ${type}`);
  }
  return type;
}

async function validate<V>(schema: StandardSchemaV1<unknown, V>, value: unknown): Promise<V> {
  const outcome: StandardSchemaResult<V> = await schema["~standard"].validate(value);
  if (outcome.issues) throw new ValidationError(outcome.issues);
  return outcome.value;
}

// ---------------------------------------------------------------------------
// The client side

let nextSlot = crypto.getRandomValues(new Uint32Array(1))[0] % REPLY_SPAN;

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** The request side of one channel: its reply type, requests in flight, and the loop taking replies. */
class Client {
  readonly replyType: number;
  readonly #channel: AnyRpcChannel;
  readonly #pending = new Map<number, Pending>();
  #nextId = crypto.getRandomValues(new Uint32Array(1))[0];
  #pumping = false;
  #stop: AbortController | undefined;

  constructor(channel: AnyRpcChannel) {
    const info = channel.info;
    const replyType = Deno.pid * REPLY_SPAN + nextSlot;
    if (!Number.isSafeInteger(replyType) || replyType > info.maxType) {
      throw new RangeError(
        `${info.scheme}: request needs reply types up to pid × 2^31 + 2^31 - 1 (${replyType} here), but this transport's types stop at ${info.maxType}`,
      );
    }
    nextSlot = (nextSlot + 1) % REPLY_SPAN;
    this.replyType = replyType;
    this.#channel = channel;
  }

  get busy(): boolean {
    return this.#pending.size > 0;
  }

  async call(value: unknown, requestType: number, signal: AbortSignal | undefined): Promise<unknown> {
    let id = this.#nextId;
    while (this.#pending.has(id)) id = (id + 1) >>> 0;
    this.#nextId = (id + 1) >>> 0;
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    promise.catch(() => {}); // a send that fails first is what the caller sees
    this.#pending.set(id, { resolve, reject });
    const onAbort = () => {
      this.#forget(id);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const frame = { kind: "request", id, replyType: this.replyType, value } as const;
      await this.#channel.send(frame, { type: requestType, signal });
      if (this.#pending.has(id)) this.#pump();
      return await promise;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#forget(id);
    }
  }

  #forget(id: number): void {
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#stop?.abort();
  }

  /** Takes frames of this channel's reply type while requests are in flight. */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#pending.size > 0) {
        // One controller for as long as it is not aborted: a new signal per reply would cost the channel
        // (and a parked transport) an AbortSignal.any each.
        let stop = this.#stop;
        if (stop === undefined || stop.signal.aborted) stop = this.#stop = new AbortController();
        let frame: RpcFrame<unknown, unknown>;
        try {
          frame = await this.#channel.receive({ type: this.replyType, signal: stop.signal });
        } catch (error) {
          if (stop.signal.aborted) continue; // the last request went; the loop condition decides
          // A frame of our type that cannot be read was consumed; whose it was is unknown.
          if (error instanceof FrameError || error instanceof ValidationError) continue;
          for (const pending of this.#pending.values()) pending.reject(error); // closed, removed, …
          this.#pending.clear();
          return;
        }
        this.#dispatch(frame);
      }
    } finally {
      this.#pumping = false;
      this.#stop = undefined;
    }
  }

  #dispatch(frame: RpcFrame<unknown, unknown>): void {
    const pending = this.#pending.get(frame.id);
    if (pending === undefined) return; // stale: its request was aborted; dropped
    switch (frame.kind) {
      case "reply":
        this.#pending.delete(frame.id);
        pending.resolve(frame.value);
        break;
      case "error":
        this.#pending.delete(frame.id);
        pending.reject(new RemoteError(frame.message, frame.replyType, frame.id));
        break;
      case "malformed":
        if (frame.of !== "reply") break;
        this.#pending.delete(frame.id);
        pending.reject(frame.error);
        break;
      default: // a request sent with our reply type answers nothing: dropped
        break;
    }
  }
}

const clients = new WeakMap<AnyRpcChannel, Client>();
const serving = new WeakSet<AnyRpcChannel>();

/**
 * Sends a request and waits for its reply (what `channel.request()` does).
 *
 * The request goes out with the message type `requestType`; the reply comes
 * back with the channel's own reply type and is matched by id, so any number
 * of requests may be in flight on one channel, each getting its own reply.
 * See the module documentation for the wire layout, the reply types, and
 * what happens to a reply that arrives after its request was aborted.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 * @param channel A channel opened with the {@linkcode rpc} codec over a
 *   transport with `capabilities.typeFilter`.
 * @param value The request.
 * @param options `signal`, `timeout`, `requestType` (default 1), `schema` for the reply.
 * @returns The reply's value.
 * @throws {RemoteError} When the server answered with an error (its handler threw, …).
 * @throws {TypeError} When the transport cannot receive by type, or the channel's codec is not `rpc()`,
 *   or the channel is serving.
 * @throws {RangeError} For a `requestType` outside 1 … 2^31 − 1 or a bad `timeout`.
 * @throws {ChannelClosedError} When the channel is closed (or the queue removed) before the reply.
 * @throws {FrameError} When the reply's body does not decode.
 * @throws {ValidationError} When the reply fails `schema`.
 *
 * @example Asking a server on a System V queue
 * ```ts ignore
 * import { open, request, rpc } from "@ipcbus/ipcbus";
 *
 * using client = await open("sysv-mq:0x1a2b", { codec: rpc<string, string>() });
 * console.log(await request(client, "ping", { timeout: 1000 })); // "pong"
 * ```
 */
export async function request<Req, Res>(
  channel: Channel<RpcFrame<Req, Res>>,
  value: Req,
  options: RequestOptions<Res> = {},
): Promise<Res> {
  const any = channel as AnyRpcChannel;
  const info = channel.info;
  checkUsable(info, "request");
  const requestType = checkRequestType(options.requestType ?? 1, info);
  let signal = options.signal;
  if (options.timeout !== undefined) {
    const { timeout } = options;
    if (typeof timeout !== "number" || !(timeout >= 0) || timeout > 0x7fff_ffff) {
      throw new RangeError(`timeout must be a number of milliseconds from 0 to 2^31 - 1, got ${timeout}`);
    }
    const timer = AbortSignal.timeout(timeout);
    signal = signal ? AbortSignal.any([signal, timer]) : timer;
  }
  signal?.throwIfAborted();
  if (info.closed) throw new ChannelClosedError(`${info.address} was closed`);
  if (serving.has(any)) {
    throw new TypeError(
      `${info.address}: this channel is serving; make requests on another channel (open the queue again)`,
    );
  }
  let client = clients.get(any);
  if (client === undefined) clients.set(any, client = new Client(any));
  const reply = await client.call(value, requestType, signal) as Res;
  return options.schema ? await validate(options.schema, reply) : reply;
}

// ---------------------------------------------------------------------------
// The server side

/** Resolves after `count` turns of the microtask queue (no timer, no event-loop turn). */
async function microtaskTurns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await undefined;
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/**
 * Answers requests until `signal` aborts or the channel closes (what
 * `channel.serve()` does).
 *
 * It takes requests of `requestType` (1 by default) and calls `handler` with
 * each value (at most `concurrency` at once), then sends what it returns
 * with the type the request names. When the handler throws (or the request
 * does not decode or fails `schema`, or the reply cannot be encoded or is
 * too large), the client gets an error frame and its `request()` rejects
 * with a {@linkcode RemoteError} carrying the message. Frames that cannot be
 * answered at all go to `onError`; serving goes on.
 *
 * @typeParam Req The request value's type.
 * @typeParam Res The reply value's type.
 * @param channel A channel opened with the {@linkcode rpc} codec over a
 *   transport with `capabilities.typeFilter`, used for nothing else while serving.
 * @param handler Answers one request (sync or async).
 * @param options `signal`, `requestType`, `concurrency`, `schema`, `errorMessage`, `onError`.
 * @returns Resolves once serving has stopped (signal aborted, channel closed
 *   or queue removed) and the requests in hand have been answered.
 * @throws {TypeError} When the transport cannot receive by type, the
 *   channel's codec is not `rpc()`, or the channel is already serving or has
 *   requests in flight.
 * @throws {RangeError} For a `requestType` outside 1 … 2^31 − 1 or a `concurrency` below 1.
 * @throws {IpcError} When receiving fails for another reason than closing (after the requests in hand are answered).
 *
 * @example A server that stops after a while
 * ```ts ignore
 * import { open, rpc, serve } from "@ipcbus/ipcbus";
 *
 * using server = await open("sysv-mq:0x1a2b", { create: true, codec: rpc<string, string>() });
 * await serve(server, (text) => text.toUpperCase(), { signal: AbortSignal.timeout(60_000) });
 * await server.unlink();
 * ```
 */
export async function serve<Req, Res>(
  channel: Channel<RpcFrame<Req, Res>>,
  handler: RequestHandler<Req, Res>,
  options: ServeOptions<Req> = {},
): Promise<void> {
  const any = channel as AnyRpcChannel;
  const info = channel.info;
  checkUsable(info, "serve");
  const requestType = checkRequestType(options.requestType ?? 1, info);
  const concurrency = options.concurrency ?? 1;
  if (!(concurrency >= 1) || (concurrency !== Infinity && !Number.isSafeInteger(concurrency))) {
    throw new RangeError(`concurrency must be an integer of 1 or more (or Infinity), got ${concurrency}`);
  }
  if (typeof handler !== "function") throw new TypeError("serve needs a handler function");
  if (serving.has(any)) {
    throw new TypeError(
      `${info.address}: this channel is already serving; open the queue again to serve twice`,
    );
  }
  if (clients.get(any)?.busy) {
    throw new TypeError(`${info.address}: this channel has requests in flight; serve on another channel`);
  }
  const user = options.signal;
  if (user?.aborted) return;
  const onError = options.onError ?? ((error: unknown) => console.error("ipcbus serve:", error));
  const errorMessage = options.errorMessage ?? describe;
  const schema = options.schema;
  const stopping = new AbortController();
  const stopped = new Promise<void>((resolve) =>
    stopping.signal.addEventListener("abort", () => resolve(), { once: true })
  );
  const onAbort = () => stopping.abort(user!.reason);
  user?.addEventListener("abort", onAbort, { once: true });

  const report = (error: unknown) => {
    try {
      onError(error);
    } catch {
      // a failing reporter must not stop the server
    }
  };

  const fail = async (frame: { id: number; replyType: number }, error: unknown) => {
    let message: string;
    try {
      message = String(errorMessage(error));
    } catch {
      message = "the request failed";
    }
    const room = channel.info.maxMessageSize - HEADER_SIZE;
    if (utf8.encode(message).length > room) message = message.slice(0, Math.max(0, Math.floor(room / 3)));
    try {
      await channel.send({ kind: "error", id: frame.id, replyType: frame.replyType, message }, {
        type: frame.replyType,
      });
    } catch (sendError) {
      if (!(sendError instanceof ChannelClosedError)) report(sendError);
    }
  };

  const answer = async (frame: RpcFrame<Req, Res>): Promise<void> => {
    if (frame.kind !== "request" && !(frame.kind === "malformed" && frame.of === "request")) {
      report(new FrameError(`serve: a "${frame.kind}" frame arrived with the request type ${requestType}`));
      return;
    }
    const { id, replyType } = frame;
    if (replyType === requestType) {
      report(new FrameError(`serve: request ${id} asks for its reply with the request type ${requestType}`));
      return;
    }
    let result: Res;
    try {
      if (frame.kind === "malformed") throw frame.error;
      const value = schema ? await validate(schema, frame.value) : frame.value;
      result = await handler(value, { type: requestType, id, replyType, signal: stopping.signal });
    } catch (error) {
      return await fail(frame, error);
    }
    try {
      await channel.send({ kind: "reply", id, replyType, value: result }, { type: replyType });
    } catch (error) {
      if (!(error instanceof ChannelClosedError)) await fail(frame, error); // too large, not encodable, …
    }
  };

  serving.add(any);
  const inFlight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  try {
    for (;;) {
      if (stopping.signal.aborted) break;
      if (inFlight.size >= concurrency) {
        await Promise.race([...inFlight, stopped]);
        continue;
      }
      let frame: RpcFrame<Req, Res>;
      try {
        frame = await channel.receive({ type: requestType, signal: stopping.signal });
      } catch (error) {
        if (stopping.signal.aborted || error instanceof ChannelClosedError) break;
        if (error instanceof FrameError || error instanceof ValidationError) {
          report(error); // not a request/reply frame: nobody to answer
          continue;
        }
        failure = { error };
        break;
      }
      const task: Promise<void> = answer(frame).catch(report).finally(() => inFlight.delete(task));
      inFlight.add(task);
      // Let a handler that needs no I/O reply before the next receive: a
      // transport's receive may spin on this thread before it parks, which
      // would hold the reply back (measured on sysv-mq: ~20 µs → ~500 µs).
      if (inFlight.size < concurrency) await Promise.race([task, microtaskTurns(32)]);
    }
  } finally {
    user?.removeEventListener("abort", onAbort);
    if (!stopping.signal.aborted) {
      stopping.abort(failure ? failure.error : new ChannelClosedError(`${info.address} was closed`));
    }
    await Promise.all(inFlight);
    serving.delete(any);
  }
  if (failure) throw failure.error;
}
