/**
 * The contract between {@linkcode Channel} and a transport. A transport moves
 * frames (bytes plus a `type` and a `priority`) over one kernel mechanism and
 * knows nothing of codecs; the channel knows nothing of system calls.
 *
 * Implement it to plug a new mechanism in with `registerTransport`.
 *
 * @example A loopback transport for tests
 * ```ts
 * import type { ReceivedFrame, Transport } from "@ipcbus/ipcbus/transport";
 *
 * class Loopback implements Transport {
 *   #queue: ReceivedFrame[] = [];
 *   readonly info = {
 *     scheme: "loop",
 *     address: "loop:",
 *     capabilities: {
 *       types: true, typeFilter: false, priority: false,
 *       multiWriter: false, multiReader: false, persistent: false,
 *     },
 *     maxMessageSize: 1 << 20,
 *     maxType: 0xffff_ffff,
 *     maxPriority: 0,
 *   };
 *   trySend(data: Uint8Array, type: number): boolean {
 *     this.#queue.push({ data: data.slice(), type, priority: 0 });
 *     return true;
 *   }
 *   send(data: Uint8Array, type: number, priority: number): Promise<void> {
 *     this.trySend(data, type);
 *     return Promise.resolve();
 *   }
 *   tryReceive(): ReceivedFrame | null {
 *     return this.#queue.shift() ?? null;
 *   }
 *   async receive(): Promise<ReceivedFrame> {
 *     return this.#queue.shift() ?? Promise.reject(new Error("empty"));
 *   }
 *   close(): void {}
 *   unlink(): Promise<void> {
 *     return Promise.resolve();
 *   }
 * }
 * ```
 *
 * @module
 */

/** What a transport can do. The channel refuses what a transport cannot honour. */
export interface Capabilities {
  /** Carries each message's `type` end to end (`receiveMessage()` reports it). */
  types: boolean;
  /** Can receive selectively by type (`receive({ type })`). */
  typeFilter: boolean;
  /** Delivers higher `priority` first. */
  priority: boolean;
  /** Several processes may send at once without corrupting messages. */
  multiWriter: boolean;
  /** Several processes may receive at once, each message going to one of them. */
  multiReader: boolean;
  /** The object outlives the processes that use it, until `unlink()`. */
  persistent: boolean;
}

/** Describes an open transport. Transports may add fields of their own. */
export interface TransportInfo {
  /** The URL scheme, such as `"fifo"`. */
  scheme: string;
  /** The full address, such as `"fifo:/run/app.fifo"`. */
  address: string;
  /** What the transport supports. */
  capabilities: Capabilities;
  /** Largest payload in bytes that `send` accepts. */
  maxMessageSize: number;
  /** Largest `type` value carried (types start at 1). */
  maxType: number;
  /** Largest `priority` value accepted (0 when priorities are not supported). */
  maxPriority: number;
  /** Transport-specific details. */
  [detail: string]: unknown;
}

/** A frame as a transport delivers it. `data` may be reused after the next call. */
export interface ReceivedFrame {
  /** The payload. Valid until the next receive on the same transport. */
  data: Uint8Array;
  /** The message type (1 when the sender did not set one). */
  type: number;
  /** The message priority (0 when not supported). */
  priority: number;
}

/** Selects which message to receive. Only transports with `typeFilter` see a non-zero `type`. */
export interface ReceiveFilter {
  /** 0 for any; otherwise the transport's type filter semantics. */
  type: number;
  /** Receive anything except `type`. */
  except: boolean;
}

/**
 * One kernel mechanism, seen by {@linkcode Channel}. The channel validates
 * tags and sizes against {@linkcode TransportInfo} before calling, serializes
 * concurrent sends and concurrent receives, and maps aborts; so a transport
 * sees at most one `send` and one `receive` in flight at a time.
 */
export interface Transport {
  /** Static description. */
  readonly info: TransportInfo;
  /**
   * Sends without waiting.
   *
   * @returns False when there is no room now (nothing was sent).
   */
  trySend(data: Uint8Array, type: number, priority: number): boolean;
  /**
   * Sends, waiting for room. Returns `undefined` when the kernel took the
   * whole message at once, else a promise that settles when it has.
   */
  send(data: Uint8Array, type: number, priority: number, signal: AbortSignal): Promise<void> | undefined;
  /**
   * Receives without waiting.
   *
   * @returns The frame, or null when none is available.
   * @throws {ChannelClosedError} When the peer has gone for good.
   */
  tryReceive(filter: ReceiveFilter): ReceivedFrame | null;
  /**
   * Receives, waiting for a frame; rejects with `signal.reason` on abort.
   * Returns the frame itself (not a promise) when it got one without parking,
   * at once or within its bounded spin, so the caller pays no promise for it.
   * Errors always come as a rejected promise.
   */
  receive(filter: ReceiveFilter, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame>;
  /**
   * Optional: sends a prefix of `frames` without waiting, all with the same
   * tags, publishing and waking the peer once for the lot where the mechanism
   * allows. Without it the channel calls `trySend` per frame.
   *
   * @returns How many frames (from the first) were sent; 0 when there is no room now.
   */
  trySendBatch?(frames: readonly Uint8Array[], type: number, priority: number): number;
  /**
   * Optional: sends every frame in order, waiting for room (and for whatever
   * else a resolved send promises on this transport, such as a sync) as
   * `send` does. Without it the channel drives `trySendBatch`/`trySend` and
   * `send` itself.
   *
   * @returns `undefined` when all were sent at once, else a promise that settles when they have been.
   */
  sendBatch?(
    frames: readonly Uint8Array[],
    type: number,
    priority: number,
    signal: AbortSignal,
  ): Promise<void> | undefined;
  /**
   * Optional: receives up to `max` frames without waiting, handing each to
   * `sink` (its `data` is valid only during that call). If `sink` throws, the
   * frame counts as received, nothing more is taken, and the error
   * propagates. Without it the channel calls `tryReceive` per frame.
   *
   * @returns How many frames were handed to `sink`.
   * @throws {ChannelClosedError} When the peer has gone for good and nothing was taken.
   */
  tryReceiveBatch?(filter: ReceiveFilter, max: number, sink: (frame: ReceivedFrame) => void): number;
  /** Releases this process's handles. Idempotent. */
  close(): void;
  /** Destroys the kernel object or name, if there is one. */
  unlink(): Promise<void>;
}

/** Options handed to a transport factory: everything `open()` was given. */
export type TransportOptions = Readonly<Record<string, unknown>>;

/**
 * Builds a transport for an address with the given scheme.
 *
 * @param address The whole address, scheme included (`"fifo:/tmp/x"`).
 * @param options The options given to `open()`.
 */
export type TransportFactory = (
  address: string,
  options: TransportOptions,
) => Transport | Promise<Transport>;
