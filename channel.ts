/**
 * `Channel<T>`: typed messages over any transport.
 *
 * @module
 */

import { abortable } from "./ffi/_delay.ts";
import { type Codec, copyBytes, json } from "./codec.ts";
import { ChannelClosedError, FrameError, MessageTooLargeError, ValidationError } from "./errors.ts";
import type { ReceivedFrame, ReceiveFilter, Transport, TransportInfo } from "./transport.ts";
import {
  request as requestOn,
  type RequestHandler,
  type RequestOptions,
  type RpcFrame,
  serve as serveOn,
  type ServeOptions,
} from "./request_reply.ts";

/**
 * A Standard Schema (v1) validator: Zod, Valibot, ArkType and others
 * implement it. Only the part ipcbus uses is spelled out here.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  /** The Standard Schema interface. */
  readonly "~standard": {
    /** Always 1. */
    readonly version: 1;
    /** The library that made the schema. */
    readonly vendor: string;
    /** Checks a value. */
    readonly validate: (
      value: unknown,
    ) =>
      | StandardSchemaResult<Output>
      | Promise<StandardSchemaResult<Output>>;
    /** Input and output types (type-level only). */
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/** What a Standard Schema's `validate` returns. */
export type StandardSchemaResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
    readonly issues: readonly { readonly message: string; readonly path?: readonly unknown[] }[];
  };

/** Options of {@linkcode Channel}. */
export interface ChannelOptions<T> {
  /** How values become bytes (default {@linkcode json}). */
  codec?: Codec<T>;
  /** Checked on every receive; a failing message rejects with `ValidationError`. */
  schema?: StandardSchemaV1<unknown, T>;
}

/** Tags for one message. */
export interface MessageTags {
  /** Message type, a positive integer (default 1). */
  type?: number;
  /** Priority, 0 or more (default 0). Only transports with `capabilities.priority`. */
  priority?: number;
}

/** Options of {@linkcode Channel.send}. */
export interface SendOptions extends MessageTags {
  /** Aborting it rejects a waiting send with `signal.reason`. */
  signal?: AbortSignal;
}

/** Which message to take. Type filters need `capabilities.typeFilter`. */
export interface ReceiveSelector {
  /** 0 (default) for any; otherwise the transport's type filter. */
  type?: number;
  /** Take any message except those of `type`. */
  except?: boolean;
}

/** Options of {@linkcode Channel.receive}. */
export interface ReceiveOptions extends ReceiveSelector {
  /** Aborting it rejects a waiting receive with `signal.reason`. */
  signal?: AbortSignal;
}

/** A received value with its tags. */
export interface Message<T> {
  /** The decoded value. */
  value: T;
  /** Its type. */
  type: number;
  /** Its priority. */
  priority: number;
}

/** The result of {@linkcode Channel.tryReceive}. */
export type TryReceiveResult<T> =
  | { ok: true; value: T; type: number; priority: number }
  | { ok: false; reason: "empty" | "closed" };

/** What {@linkcode Channel.info} reports. */
export interface ChannelInfo extends TransportInfo {
  /** The codec's name. */
  codec: string;
  /** Whether `close()` was called. */
  closed: boolean;
}

const NO_FILTER: ReceiveFilter = Object.freeze({ type: 0, except: false });

/** Stops a transport's batch early (see Transport.tryReceiveBatch). */
const STOP = Symbol("stop");

function checkMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new RangeError(`max must be a positive integer, got ${max}`);
  }
}

/** Serializes operations of one direction, first come first served. */
class Queue {
  #tail: Promise<void> = Promise.resolve();
  /** Operations waiting or running. */
  length = 0;

  async run<R>(signal: AbortSignal, operation: () => Promise<R>): Promise<R> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise((resolve) => release = resolve);
    this.length++;
    try {
      if (this.length > 1) await abortable(previous, signal);
      return await operation();
    } finally {
      this.length--;
      // An operation aborted while queued must not let the ones behind it
      // start before the ones ahead of it are done.
      previous.then(release);
    }
  }
}

/** What `send` returns when the transport took the message at once (one promise, shared). */
const SENT: Promise<void> = Promise.resolve();

function valueOf<T>(message: Message<T>): T {
  return message.value;
}

/** A schema's verdict: the value, or the issues thrown as a ValidationError. */
function validOrThrow<T>(outcome: StandardSchemaResult<T>): T {
  if (outcome.issues) throw new ValidationError(outcome.issues);
  return outcome.value;
}

/** A transport's result that is still to come (a transport may return the value itself). */
function isPromise<R>(value: R | Promise<R>): value is Promise<R> {
  return typeof (value as { then?: unknown }).then === "function";
}

/**
 * Typed messages over one transport. Obtain one with `open()`, `spawn()`, or
 * `new Channel(transport)`.
 *
 * Sends are delivered in call order and receives are served in call order.
 * `close()` settles every pending operation with `ChannelClosedError`.
 *
 * @typeParam T The type of the values carried.
 *
 * @example Sending and receiving
 * ```ts
 * import { Channel } from "@ipcbus/ipcbus";
 * import { Pipe } from "@ipcbus/ipcbus/pipe";
 *
 * const [a, b] = Pipe.pair();
 * using left = new Channel<{ id: number }>(a);
 * using right = new Channel<{ id: number }>(b);
 * await left.send({ id: 1 }, { type: 7 });
 * const message = await right.receiveMessage({ signal: AbortSignal.timeout(1000) });
 * console.log(message.value.id, message.type); // 1 7
 * ```
 */
export class Channel<T> implements AsyncIterable<T>, Disposable, AsyncDisposable {
  readonly #transport: Transport;
  readonly #codec: Codec<T>;
  readonly #schema: StandardSchemaV1<unknown, T> | undefined;
  readonly #closer = new AbortController();
  readonly #sends = new Queue();
  readonly #receives = new Queue();
  #closed = false;
  #lastUserSignal: AbortSignal | undefined;
  #lastCombinedSignal: AbortSignal | undefined;
  #asyncSchema = false;
  #kept: Promise<Message<T>> | undefined; // see tryReceive
  #deferred: { error: unknown } | undefined; // see #takeBatch
  #readable: ReadableStream<T> | undefined;
  #writable: WritableStream<T> | undefined;

  /**
   * Wraps a transport.
   *
   * @param transport The transport; the channel owns it and closes it.
   * @param options Codec and schema.
   */
  constructor(transport: Transport, options: ChannelOptions<T> = {}) {
    this.#transport = transport;
    this.#codec = options.codec ?? (json as Codec<T>);
    this.#schema = options.schema;
    if (this.#schema !== undefined && typeof this.#schema["~standard"]?.validate !== "function") {
      throw new TypeError("schema must implement Standard Schema v1 (a `~standard.validate` function)");
    }
  }

  /** What the channel and its transport are and can do. */
  get info(): ChannelInfo {
    return { ...this.#transport.info, codec: this.#codec.name, closed: this.#closed };
  }

  /** The transport underneath (escape hatch; the channel still owns it). */
  get unsafeTransport(): Transport {
    return this.#transport;
  }

  /**
   * Sends a value, waiting for room when the transport is full.
   *
   * @param value The value.
   * @param options `type`, `priority`, `signal`. On a byte stream (`pipe:`,
   *   `fifo:`), an abort that comes after part of a large message reached the
   *   kernel still lets the rest be written (half a frame cannot be taken
   *   back), so that message arrives although `send` rejected.
   * @returns Settles once the kernel has the whole message.
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   * @throws {MessageTooLargeError} When the encoded value is over `info.maxMessageSize`.
   * @throws {TypeError} When the transport cannot honour a tag.
   * @throws {RangeError} For a type or priority out of range.
   */
  send(value: T, options: SendOptions = {}): Promise<void> {
    try {
      const type = options.type ?? 1;
      const priority = options.priority ?? 0;
      this.#checkTags(type, priority);
      const data = this.#encodeChecked(value);
      const signal = this.#signal(options.signal);
      if (this.#sends.length === 0) {
        const pending = this.#transport.send(data, type, priority, signal);
        // Sent at once (the common case): no promise is made for it.
        if (pending === undefined) return SENT;
        // Later sends queue behind this one until the kernel has all of it.
        return this.#sends.run(signal, () => this.#settle(pending, options.signal));
      }
      return this.#sends.run(signal, async () => {
        const pending = this.#transport.send(data, type, priority, signal);
        if (pending !== undefined) await this.#settle(pending, options.signal);
      });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Sends without waiting.
   *
   * @param value The value.
   * @param options `type` and `priority`.
   * @returns False when the transport is full (or a `send` is still waiting): nothing was sent.
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   */
  trySend(value: T, options: MessageTags = {}): boolean {
    const type = options.type ?? 1;
    const priority = options.priority ?? 0;
    this.#checkTags(type, priority);
    const data = this.#encodeChecked(value);
    if (this.#sends.length > 0) return false;
    return this.#transport.trySend(data, type, priority);
  }

  /**
   * Receives the next value, waiting for one.
   *
   * @param options A type filter (where supported) and a `signal`.
   * @returns The value.
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   * @throws {FrameError} When the peer sent malformed data.
   * @throws {ValidationError} When the value fails the channel's schema.
   */
  receive(options: ReceiveOptions = {}): Promise<T> {
    try {
      const message = this.#receiveNow(options);
      return isPromise(message) ? message.then(valueOf) : Promise.resolve(message.value);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Receives the next value with its tags.
   *
   * @param options A type filter (where supported) and a `signal`.
   * @returns The value, its type and priority.
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   * @throws {FrameError} When the peer sent malformed data.
   * @throws {ValidationError} When the value fails the channel's schema.
   */
  receiveMessage(options: ReceiveOptions = {}): Promise<Message<T>> {
    try {
      const message = this.#receiveNow(options);
      return isPromise(message) ? message : Promise.resolve(message);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The work of `receive` and `receiveMessage`: the message itself when it
   * is there at once or within the transport's spin (no promise is made for
   * it), else a promise. Throws what those reject with.
   */
  #receiveNow(options: ReceiveOptions): Message<T> | Promise<Message<T>> {
    const filter = this.#filter(options);
    const kept = this.#kept;
    if (kept && this.#receives.length === 0) {
      this.#kept = undefined;
      return kept;
    }
    if (this.#receives.length === 0) {
      this.#throwDeferred();
      const frame = this.#transport.tryReceive(filter);
      if (frame !== null) return this.#decode(frame);
      // Nothing yet: the transport's bounded spin often gets the frame without parking, and then
      // hands it over without a promise (a round trip pays no queue, settle or decode promise).
      const signal = this.#signal(options.signal);
      const got = this.#transport.receive(filter, signal);
      if (!isPromise(got)) return this.#decode(got);
      return this.#receives.run(signal, async () => this.#decode(await this.#settle(got, options.signal)));
    }
    const signal = this.#signal(options.signal);
    return this.#receives.run(signal, async () => {
      this.#throwDeferred();
      const frame = await this.#settle(this.#transport.receive(filter, signal), options.signal);
      return await this.#decode(frame);
    });
  }

  /**
   * Receives without waiting.
   *
   * @param options A type filter (where supported).
   * @returns The value and tags, or why there is none: `"empty"`, or `"closed"`
   *   (closed here or by the peer).
   * @throws {FrameError} When the peer sent malformed data.
   * @throws {ValidationError} When the value fails a synchronous schema.
   * @throws {TypeError} When the schema is asynchronous (use `receive`).
   */
  tryReceive(options: ReceiveSelector = {}): TryReceiveResult<T> {
    if (this.#closed) return { ok: false, reason: "closed" };
    const filter = this.#filter(options);
    if (this.#asyncSchema) {
      throw new TypeError("tryReceive cannot run this channel's asynchronous schema; use receive()");
    }
    if (this.#receives.length > 0) return { ok: false, reason: "empty" };
    const deferred = this.#deferred;
    if (deferred !== undefined) {
      this.#deferred = undefined;
      if (deferred.error instanceof ChannelClosedError) return { ok: false, reason: "closed" };
      throw deferred.error;
    }
    let frame;
    try {
      frame = this.#transport.tryReceive(filter);
    } catch (error) {
      if (error instanceof ChannelClosedError) return { ok: false, reason: "closed" };
      throw error;
    }
    if (frame === null) return { ok: false, reason: "empty" };
    const value = this.#decodeValue(frame.data);
    const checked = this.#schema ? this.#validate(value) : value;
    if (checked instanceof Promise) {
      // Learnt too late: the message is already off the transport. Keep it
      // for the next receive() rather than lose it.
      this.#keep(checked, frame.type, frame.priority);
      throw new TypeError(
        "tryReceive cannot run this channel's asynchronous schema; the message is kept for the next receive()",
      );
    }
    return { ok: true, value: checked, type: frame.type, priority: frame.priority };
  }

  /**
   * Sends several values in order, waiting for room as needed: the same as
   * awaiting `send` for each, but the transport may publish and wake the
   * receiver once per batch (`shm:`, `file:`), and the per-message promise
   * and checks are paid once. Every value is encoded (and size-checked)
   * before the first is sent.
   *
   * @param values The values, all sent with the same `type` and `priority`.
   * @param options `type`, `priority`, `signal`.
   * @returns Settles once the kernel has all of them. When it rejects, the
   *   values before the one that failed were sent (an abort stops between
   *   messages, or as `send` describes for byte streams).
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   * @throws {MessageTooLargeError} When an encoded value is over `info.maxMessageSize` (nothing is sent).
   * @throws {TypeError} When the transport cannot honour a tag.
   * @throws {RangeError} For a type or priority out of range.
   *
   * @example Sending a burst
   * ```ts
   * import { Channel } from "@ipcbus/ipcbus";
   * import { Pipe } from "@ipcbus/ipcbus/pipe";
   *
   * const [a, b] = Pipe.pair();
   * using left = new Channel<number>(a);
   * using right = new Channel<number>(b);
   * await left.sendBatch([1, 2, 3]);
   * console.log((await right.receiveBatch(10)).map((m) => m.value)); // [ 1, 2, 3 ]
   * ```
   */
  async sendBatch(values: Iterable<T>, options: SendOptions = {}): Promise<void> {
    const { frames, type, priority } = this.#prepareBatch(values, options);
    if (frames.length === 0) return;
    const signal = this.#signal(options.signal);
    const transport = this.#transport;
    if (transport.sendBatch) {
      if (this.#sends.length === 0) {
        const pending = transport.sendBatch(frames, type, priority, signal);
        if (pending === undefined) return;
        return await this.#sends.run(signal, () => this.#settle(pending, options.signal));
      }
      return await this.#sends.run(signal, async () => {
        const pending = transport.sendBatch!(frames, type, priority, signal);
        if (pending !== undefined) await this.#settle(pending, options.signal);
      });
    }
    if (transport.trySendBatch) {
      // The transport publishes and wakes once per call (shm:, file:): offer it what is left, and wait
      // for room one frame at a time only when it takes nothing.
      let sent = 0;
      if (this.#sends.length === 0) {
        sent = transport.trySendBatch(frames, type, priority);
        if (sent === frames.length) return;
      }
      await this.#sends.run(signal, async () => {
        while (sent < frames.length) {
          if (signal.aborted) throw signal.reason;
          const more = transport.trySendBatch!(sent === 0 ? frames : frames.slice(sent), type, priority);
          if (more > 0) {
            sent += more;
            continue;
          }
          const pending = transport.send(frames[sent], type, priority, signal);
          if (pending !== undefined) await this.#settle(pending, options.signal);
          sent++;
        }
      });
      return;
    }
    // One `send` per frame: it returns nothing when the kernel took the whole frame at once (as cheap as
    // `trySend`), and unlike `trySend` it never copies a frame the kernel took only part of.
    let sent = 0;
    let pending: Promise<void> | undefined;
    if (this.#sends.length === 0) {
      while (sent < frames.length && pending === undefined) {
        pending = transport.send(frames[sent++], type, priority, signal);
      }
      if (pending === undefined) return;
    }
    await this.#sends.run(signal, async () => {
      if (pending !== undefined) await this.#settle(pending, options.signal);
      while (sent < frames.length) {
        if (signal.aborted) throw signal.reason;
        const next = transport.send(frames[sent++], type, priority, signal);
        if (next !== undefined) await this.#settle(next, options.signal);
      }
    });
  }

  /**
   * Sends as many of `values` as fit now, in order, without waiting.
   *
   * @param values The values, all with the same tags.
   * @param options `type` and `priority`.
   * @returns How many values (from the first) were sent; 0 when full or a `send` is still waiting.
   * @throws {ChannelClosedError} When the channel or the peer is closed.
   * @throws {MessageTooLargeError} When an encoded value is too large (nothing is sent).
   */
  trySendBatch(values: Iterable<T>, options: MessageTags = {}): number {
    const { frames, type, priority } = this.#prepareBatch(values, options);
    if (this.#sends.length > 0 || frames.length === 0) return 0;
    return this.#trySendFrames(frames, type, priority);
  }

  /**
   * Waits for at least one message, then takes up to `max` in all without
   * waiting again: the way to drain a busy channel, paying the wait, the
   * promise and (on `shm:` and `file:`) the wake-up once per batch instead
   * of once per message.
   *
   * @param max The most messages to return, at least 1.
   * @param options A type filter (where supported) and a `signal`.
   * @returns One to `max` messages, in the order `receiveMessage` would give them.
   * @throws {ChannelClosedError} When the channel or the peer is closed (and nothing was taken).
   * @throws {FrameError} When the peer sent malformed data (messages before it are returned first).
   * @throws {ValidationError} When a value fails the schema (messages before it are returned first).
   * @throws {RangeError} When `max` is not a positive integer.
   */
  async receiveBatch(max: number, options: ReceiveOptions = {}): Promise<Message<T>[]> {
    checkMax(max);
    const filter = this.#filter(options);
    if (this.#deferred === undefined && this.#receives.length === 0 && !this.#kept && !this.#asyncSchema) {
      const batch = this.#takeBatch(filter, max, []);
      if (batch.length > 0) return batch;
    }
    if (this.#asyncSchema || this.#kept) return [await this.receiveMessage(options)];
    const signal = this.#signal(options.signal);
    return await this.#receives.run(signal, async () => {
      // The first message must outlive the receives that take the rest: a borrowing codec decodes a copy.
      const first = this.#throwDeferred() ??
        await this.#decode(await this.#settle(this.#transport.receive(filter, signal), options.signal), true);
      if (this.#asyncSchema) return [first];
      return this.#takeBatch(filter, max - 1, [first]);
    });
  }

  /**
   * Takes up to `max` messages without waiting.
   *
   * @param max The most messages to return, at least 1.
   * @param options A type filter (where supported).
   * @returns The messages taken, possibly none.
   * @throws {ChannelClosedError} When the channel or the peer is closed (and nothing was taken).
   * @throws {FrameError} When the peer sent malformed data (messages before it are returned first).
   * @throws {ValidationError} When a value fails the schema (messages before it are returned first).
   * @throws {TypeError} When the schema is asynchronous (use `receiveBatch`).
   */
  tryReceiveBatch(max: number, options: ReceiveSelector = {}): Message<T>[] {
    checkMax(max);
    if (this.#closed) throw new ChannelClosedError(`${this.#transport.info.address} was closed`);
    const filter = this.#filter(options);
    if (this.#asyncSchema) {
      throw new TypeError(
        "tryReceiveBatch cannot run this channel's asynchronous schema; use receiveBatch()",
      );
    }
    if (this.#receives.length > 0 || this.#kept) return [];
    return this.#takeBatch(filter, max, []);
  }

  /**
   * Iterates over received values until the channel is closed (here or by
   * the peer). Other errors end the loop by throwing.
   *
   * @returns The iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      let value: T;
      try {
        value = await this.receive();
      } catch (error) {
        if (error instanceof ChannelClosedError) return;
        throw error;
      }
      yield value;
    }
  }

  /**
   * Received values as a web stream. It pulls only when read (no read-ahead),
   * ends when the channel closes, and cancelling it stops reading without
   * closing the channel.
   */
  get readable(): ReadableStream<T> {
    if (this.#readable) return this.#readable;
    const cancel = new AbortController();
    return this.#readable = new ReadableStream<T>({
      pull: async (controller) => {
        try {
          controller.enqueue(await this.receive({ signal: cancel.signal }));
        } catch (error) {
          if (error instanceof ChannelClosedError) controller.close();
          else if (!cancel.signal.aborted) controller.error(error);
        }
      },
      cancel: (reason) => cancel.abort(reason),
    }, { highWaterMark: 0 });
  }

  /** A web stream that sends what is written to it. Closing it leaves the channel open. */
  get writable(): WritableStream<T> {
    return this.#writable ??= new WritableStream<T>({ write: (value) => this.send(value) }, {
      highWaterMark: 1,
    });
  }

  /**
   * Sends a request and waits for its reply: the client half of
   * request/reply over one typed queue (see `request_reply.ts` for the wire
   * layout, reply types and late replies). Any number of requests may be in
   * flight on one channel; each gets its own reply, matched by id. Needs a
   * channel opened with the `rpc()` codec, over a transport with
   * `capabilities.typeFilter` (such as `sysv-mq:`).
   *
   * @typeParam Req The request value's type.
   * @typeParam Res The reply value's type.
   * @param value The request.
   * @param options `signal`, `timeout` (ms), `requestType` (default 1), `schema` for the reply.
   * @returns The reply's value.
   * @throws {RemoteError} When the server answered with an error (its handler threw, …).
   * @throws {TypeError} When the transport cannot receive by type (`capabilities.typeFilter`),
   *   the channel's codec is not `rpc()`, or the channel is serving.
   * @throws {RangeError} For a `requestType` outside 1 … 2^31 − 1.
   * @throws {ChannelClosedError} When the channel is closed or the queue removed before the reply.
   *
   * @example A client
   * ```ts ignore
   * import { open, rpc } from "@ipcbus/ipcbus";
   *
   * using client = await open("sysv-mq:0x1a2b", { codec: rpc<{ a: number; b: number }, number>() });
   * console.log(await client.request({ a: 2, b: 3 }, { timeout: 1000 })); // 5
   * ```
   */
  request<Req, Res>(
    this: Channel<RpcFrame<Req, Res>>,
    value: Req,
    options?: RequestOptions<Res>,
  ): Promise<Res> {
    return requestOn(this, value, options);
  }

  /**
   * Answers requests of `requestType` (default 1) with `handler` until the
   * signal aborts or the channel closes: the server half of request/reply
   * over one typed queue (see `request_reply.ts`). What the handler returns
   * goes back to the requesting client; what it throws reaches the client
   * as a `RemoteError`. Needs a channel opened with the `rpc()` codec, over a
   * transport with `capabilities.typeFilter`, and used for nothing else
   * while serving.
   *
   * @typeParam Req The request value's type.
   * @typeParam Res The reply value's type.
   * @param handler Answers one request (sync or async).
   * @param options `signal`, `requestType`, `concurrency` (default 1), `schema`, `errorMessage`, `onError`.
   * @returns Resolves once serving has stopped and the requests in hand are answered.
   * @throws {TypeError} When the transport cannot receive by type (`capabilities.typeFilter`),
   *   the channel's codec is not `rpc()`, or the channel is already serving.
   * @throws {RangeError} For a `requestType` outside 1 … 2^31 − 1 or a `concurrency` below 1.
   *
   * @example A server
   * ```ts ignore
   * import { open, rpc } from "@ipcbus/ipcbus";
   *
   * using server = await open("sysv-mq:0x1a2b", {
   *   create: true,
   *   codec: rpc<{ a: number; b: number }, number>(),
   * });
   * await server.serve(({ a, b }) => a + b, { signal: AbortSignal.timeout(60_000) });
   * await server.unlink();
   * ```
   */
  serve<Req, Res>(
    this: Channel<RpcFrame<Req, Res>>,
    handler: RequestHandler<Req, Res>,
    options?: ServeOptions<Req>,
  ): Promise<void> {
    return serveOn(this, handler, options);
  }

  /**
   * Releases this process's handles. Pending operations settle with
   * `ChannelClosedError`; later ones fail with it. Idempotent. The kernel
   * object, if any, stays until `unlink()`.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort(new ChannelClosedError(`${this.#transport.info.address} was closed`));
    this.#transport.close();
  }

  /**
   * Destroys the kernel object or name behind the channel (a FIFO's path, a
   * queue). Never done implicitly. Works after `close()` too.
   */
  async unlink(): Promise<void> {
    await this.#transport.unlink();
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  /** Throws when the channel is closed or the transport cannot carry these tags (no object per send). */
  #checkTags(type: number, priority: number): void {
    if (this.#closed) throw new ChannelClosedError(`${this.#transport.info.address} was closed`);
    if (type === 1 && priority === 0) return; // the defaults every transport carries
    const info = this.#transport.info;
    if (!Number.isSafeInteger(type) || type < 1) {
      throw new RangeError(`type must be a positive integer, got ${type}`);
    }
    if (type !== 1 && !info.capabilities.types) {
      throw new TypeError(
        `${info.scheme}: this transport does not carry message types (capabilities.types is false)`,
      );
    }
    if (type > info.maxType) {
      throw new RangeError(`${info.scheme}: type must be at most ${info.maxType}, got ${type}`);
    }
    if (!Number.isSafeInteger(priority) || priority < 0) {
      throw new RangeError(`priority must be a non-negative integer, got ${priority}`);
    }
    if (priority !== 0 && !info.capabilities.priority) {
      throw new TypeError(
        `${info.scheme}: this transport does not support priorities (capabilities.priority is false)`,
      );
    }
    if (priority > info.maxPriority) {
      throw new RangeError(`${info.scheme}: priority must be at most ${info.maxPriority}, got ${priority}`);
    }
  }

  #prepareBatch(
    values: Iterable<T>,
    options: MessageTags,
  ): { frames: Uint8Array[]; type: number; priority: number } {
    const type = options.type ?? 1;
    const priority = options.priority ?? 0;
    const frames: Uint8Array[] = [];
    for (const value of values) {
      if (frames.length === 0) this.#checkTags(type, priority); // an empty batch only checks for close
      frames.push(this.#encodeChecked(value));
    }
    if (frames.length === 0 && this.#closed) {
      throw new ChannelClosedError(`${this.#transport.info.address} was closed`);
    }
    return { frames, type, priority };
  }

  #encodeChecked(value: T): Uint8Array {
    const info = this.#transport.info;
    const data = this.#codec.encode(value);
    if (data.length > info.maxMessageSize) {
      const reason = typeof info.maxMessageSizeReason === "string"
        ? info.maxMessageSizeReason
        : `${info.scheme}: info.maxMessageSize`;
      throw new MessageTooLargeError(data.length, info.maxMessageSize, reason);
    }
    return data;
  }

  #trySendFrames(frames: readonly Uint8Array[], type: number, priority: number): number {
    const transport = this.#transport;
    if (transport.trySendBatch) return transport.trySendBatch(frames, type, priority);
    let sent = 0;
    while (sent < frames.length && transport.trySend(frames[sent], type, priority)) sent++;
    return sent;
  }

  /**
   * Appends up to `max` messages taken without waiting to `into`. An error
   * after some were taken is kept for the next receive, so nothing taken is
   * lost; with none taken it is thrown.
   */
  #takeBatch(filter: ReceiveFilter, max: number, into: Message<T>[]): Message<T>[] {
    const deferred = this.#deferred;
    if (deferred !== undefined) {
      if (into.length > 0) return into;
      this.#deferred = undefined;
      throw deferred.error;
    }
    const transport = this.#transport;
    const schema = this.#schema;
    try {
      if (transport.tryReceiveBatch) {
        if (max > 0) {
          // The hot path of small messages (shm:): decode inline, and map a codec failure to a
          // FrameError once, outside the per-frame closure.
          const codec = this.#codec;
          const copy = codec.borrows === true;
          let decoding = -1; // the length of the frame being decoded, while its codec runs
          try {
            transport.tryReceiveBatch(filter, max, (frame) => {
              const data = frame.data;
              decoding = data.length;
              const value = codec.decode(copy ? copyBytes(data) : data);
              decoding = -1;
              if (schema === undefined) {
                into.push({ value, type: frame.type, priority: frame.priority });
                return;
              }
              const checked = this.#validate(value);
              const { type, priority } = frame;
              if (checked instanceof Promise) {
                // Learnt only now: keep it for the next receive rather than lose it, and stop.
                this.#keep(checked, type, priority);
                throw STOP;
              }
              into.push({ value: checked, type, priority });
            });
          } catch (error) {
            if (error === STOP) return into;
            if (decoding >= 0 && !(error instanceof FrameError)) {
              throw new FrameError(`codec "${codec.name}" could not decode a ${decoding}-byte message`, {
                cause: error,
              });
            }
            throw error;
          }
        }
      } else {
        for (let i = 0; i < max; i++) {
          const frame = transport.tryReceive(filter);
          if (frame === null) break;
          const value = this.#decodeValue(frame.data, true);
          const checked = schema ? this.#validate(value) : value;
          const { type, priority } = frame;
          if (checked instanceof Promise) {
            // Learnt only now: keep it for the next receive rather than lose it.
            this.#keep(checked, type, priority);
            break;
          }
          into.push({ value: checked, type, priority });
        }
      }
    } catch (error) {
      if (into.length === 0) throw error;
      this.#deferred = { error };
    }
    return into;
  }

  #keep(checked: Promise<T>, type: number, priority: number): void {
    this.#kept = checked.then((value) => ({ value, type, priority }));
    this.#kept.catch(() => {}); // reported by the receive() that takes it
    this.#asyncSchema = true;
  }

  /** A failure kept by #takeBatch, thrown by the receive after the batch that preceded it. */
  #throwDeferred(): undefined {
    const deferred = this.#deferred;
    if (deferred === undefined) return undefined;
    this.#deferred = undefined;
    throw deferred.error;
  }

  #filter(options: ReceiveSelector): ReceiveFilter {
    const type = options.type ?? 0;
    const except = options.except ?? false;
    if (type === 0 && !except) return NO_FILTER;
    const info = this.#transport.info;
    if (!info.capabilities.typeFilter) {
      throw new TypeError(
        `${info.scheme}: this transport cannot receive by type (capabilities.typeFilter is false)`,
      );
    }
    if (!Number.isSafeInteger(type)) throw new RangeError(`type filter must be an integer, got ${type}`);
    if (except && type === 0) throw new RangeError("except needs a non-zero type");
    return { type, except };
  }

  #signal(user: AbortSignal | undefined): AbortSignal {
    if (this.#closed) throw new ChannelClosedError(`${this.#transport.info.address} was closed`);
    if (!user) return this.#closer.signal;
    // Callers usually pass the same signal (a shutdown signal) every time:
    // combine it once, not on every operation (AbortSignal.any costs µs).
    if (user !== this.#lastUserSignal) {
      this.#lastUserSignal = user;
      this.#lastCombinedSignal = AbortSignal.any([this.#closer.signal, user]);
    }
    return this.#lastCombinedSignal!;
  }

  /** Maps an abort caused by `close()` to ChannelClosedError, and a user abort to its reason. */
  async #settle<R>(promise: R | Promise<R>, user: AbortSignal | undefined): Promise<R> {
    try {
      return await promise;
    } catch (error) {
      if (user?.aborted && error === user.reason) throw error;
      if (this.#closed && !(error instanceof ChannelClosedError)) {
        throw new ChannelClosedError(`${this.#transport.info.address} was closed`, { cause: error });
      }
      throw error;
    }
  }

  #decodeValue(data: Uint8Array, keep = false): T {
    try {
      // A borrowing codec's value must outlive the next receive in a batch, and a schema (perhaps
      // asynchronous) may look at it later: decode a copy then.
      return this.#codec.decode(this.#codec.borrows && (keep || this.#schema) ? copyBytes(data) : data);
    } catch (error) {
      if (error instanceof FrameError) throw error;
      throw new FrameError(`codec "${this.#codec.name}" could not decode a ${data.length}-byte message`, {
        cause: error,
      });
    }
  }

  #validate(value: unknown): T | Promise<T> {
    const result = this.#schema!["~standard"].validate(value);
    return result instanceof Promise ? result.then(validOrThrow<T>) : validOrThrow(result);
  }

  /**
   * The message of a frame: at once, or (with a schema) once validated.
   * `keep` as for #decodeValue.
   */
  #decode(frame: ReceivedFrame, keep = false): Message<T> | Promise<Message<T>> {
    const value = this.#decodeValue(frame.data, keep);
    const type = frame.type;
    const priority = frame.priority;
    if (!this.#schema) return { value, type, priority };
    const checked = this.#validate(value);
    return checked instanceof Promise
      ? checked.then((valid) => ({ value: valid, type, priority }))
      : { value: checked, type, priority };
  }
}
