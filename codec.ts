/**
 * Codecs turn values into message bytes and back. `json` is the default;
 * `text` carries strings as UTF-8 and `bytes` carries a `Uint8Array` exactly
 * as given (so a C program sees the very bytes). Any object with `encode` and
 * `decode` is a codec.
 *
 * @example A custom codec
 * ```ts
 * import type { Codec } from "@ipcbus/ipcbus/codec";
 *
 * const u32: Codec<number> = {
 *   name: "u32",
 *   encode: (value) => new Uint8Array(new Uint32Array([value]).buffer),
 *   decode: (data) => new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true),
 * };
 * console.log(u32.decode(u32.encode(7))); // 7
 * ```
 *
 * @module
 */

import { FrameError } from "./errors.ts";

/**
 * Turns values of type `T` into bytes and back.
 *
 * `decode` receives a view that is only valid during the call: copy it if
 * the decoded value keeps the bytes. A `decode` that throws makes the receive
 * reject with a {@linkcode FrameError} (the message is consumed; the channel
 * stays usable).
 */
export interface Codec<T> {
  /** A short name, reported in `channel.info.codec`. */
  readonly name: string;
  /**
   * The decoded value refers to the received bytes instead of copying them
   * (see {@linkcode bytesView}): it stays valid only until the next receive
   * on the same channel. Batch receives, whose messages must all stay valid,
   * and channels with a schema then decode a copy.
   */
  readonly borrows?: boolean;
  /** Encodes one value. */
  encode(value: T): Uint8Array;
  /** Decodes one message (the bytes are only valid during the call). */
  decode(data: Uint8Array): T;
}

/** The JSON codec's type: it encodes and decodes any `T` (unchecked; add a `schema` to check). */
export interface JsonCodec {
  /** `"json"`. */
  readonly name: "json";
  /** `JSON.stringify`, UTF-8 encoded. */
  encode<T>(value: T): Uint8Array;
  /** UTF-8 decoded, `JSON.parse`d. */
  decode<T>(data: Uint8Array): T;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * JSON, UTF-8 encoded: the default codec.
 *
 * @example
 * ```ts
 * import { json } from "@ipcbus/ipcbus/codec";
 * console.log(json.decode<{ id: number }>(json.encode({ id: 1 })).id); // 1
 * ```
 */
export const json: JsonCodec = {
  name: "json",
  encode<T>(value: T): Uint8Array {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`json codec cannot encode ${typeof value}`);
    return encoder.encode(text);
  },
  decode<T>(data: Uint8Array): T {
    try {
      return JSON.parse(decoder.decode(data)) as T;
    } catch (cause) {
      throw new FrameError(`json codec: a ${data.length}-byte message is not valid UTF-8 JSON`, { cause });
    }
  },
};

/**
 * Strings as UTF-8. Invalid UTF-8 from a peer is a {@linkcode FrameError}.
 *
 * @example
 * ```ts
 * import { text } from "@ipcbus/ipcbus/codec";
 * console.log(text.decode(text.encode("héllo"))); // "héllo"
 * ```
 */
export const text: Codec<string> = {
  name: "text",
  encode(value: string): Uint8Array {
    if (typeof value !== "string") throw new TypeError(`text codec encodes strings, got ${typeof value}`);
    return encoder.encode(value);
  },
  decode(data: Uint8Array): string {
    try {
      return decoder.decode(data);
    } catch (cause) {
      throw new FrameError(`text codec: a ${data.length}-byte message is not valid UTF-8`, { cause });
    }
  },
};

/** Messages up to this many bytes are copied into a shared pool by {@linkcode bytes}. */
const POOLED_MAX = 512;
/** Size of each pool chunk. */
const POOL_SIZE = 16 * 1024;
let pool = new Uint8Array(0);
let poolBuffer = pool.buffer;
let poolOffset = 0;

/**
 * Raw bytes, unchanged: the payload is exactly the `Uint8Array` sent.
 *
 * Each received message is a copy the caller owns. Small messages (up to
 * 512 bytes) are copied into slices of a shared 16 KiB pool, as Node's
 * `Buffer` does, because allocating an `ArrayBuffer` per message costs more
 * than receiving it: so a received value's `.buffer` may hold other
 * messages too. Use the view (`byteOffset`, `byteLength`), or `.slice()` it
 * for a buffer of its own; a pool chunk stays in memory while any value
 * from it does.
 *
 * @example
 * ```ts
 * import { bytes } from "@ipcbus/ipcbus/codec";
 * console.log(bytes.decode(bytes.encode(new Uint8Array([1, 2])))); // Uint8Array(2) [ 1, 2 ]
 * ```
 */
export const bytes: Codec<Uint8Array> = {
  name: "bytes",
  encode(value: Uint8Array): Uint8Array {
    if (!(value instanceof Uint8Array)) throw new TypeError("bytes codec encodes Uint8Array values");
    return value;
  },
  decode: copyBytes,
};

/**
 * A copy of `data` the caller owns: from the shared pool for up to 512
 * bytes, else a buffer of its own (see {@linkcode bytes}).
 *
 * @param data The bytes.
 * @returns The copy.
 */
export function copyBytes(data: Uint8Array): Uint8Array {
  const length = data.length;
  if (length > POOLED_MAX) return data.slice();
  if (poolOffset + length > pool.length) {
    pool = new Uint8Array(POOL_SIZE);
    poolBuffer = pool.buffer;
    poolOffset = 0;
  }
  const offset = poolOffset;
  // Keep every slice 8-byte aligned, so a DataView or a typed array of
  // wider elements over a copy stays aligned as with a fresh buffer.
  poolOffset += (length + 7) & ~7;
  // Measured: copying into the pool and then making the view costs half of
  // `subarray` followed by `set` on the view.
  pool.set(data, offset);
  return new Uint8Array(poolBuffer, offset, length);
}

/**
 * Raw bytes without a copy on receive: each received value is a view of the
 * transport's own receive buffer, valid only until the next receive on the
 * same channel (the next receive overwrites it). For large messages this
 * saves allocating a buffer per message, which costs V8 more than moving the
 * message (7–12 µs for 64 KiB). Use the bytes, or copy what you keep, before
 * receiving again; for-await loops and `readable` are fine when each value is
 * used before the next is read. Batch receives copy each message anyway
 * (they return many at once), and so does a channel with a schema. Sending
 * is the same as {@linkcode bytes}.
 *
 * @example Receiving large messages without a copy each
 * ```ts
 * import { bytesView, Channel } from "@ipcbus/ipcbus";
 * import { Pipe } from "@ipcbus/ipcbus/pipe";
 *
 * const [a, b] = Pipe.pair();
 * using tx = new Channel(a, { codec: bytesView });
 * using rx = new Channel(b, { codec: bytesView });
 * const received = rx.receive(); // a 64 KiB message does not fit the pipe: receive first
 * await tx.send(new Uint8Array(65536).fill(7));
 * const view = await received; // valid until the next receive on rx
 * console.log(view.length, view[0]); // 65536 7
 * ```
 */
export const bytesView: Codec<Uint8Array> = {
  name: "bytes-view",
  borrows: true,
  encode: bytes.encode,
  decode(data: Uint8Array): Uint8Array {
    return data;
  },
};
