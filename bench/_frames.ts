/**
 * The benchmark's wire protocol, shared by bench.ts, echo_child.ts and the C
 * program (bench/c/ipcbench.c).
 *
 * Frames are ipcbus's stream format: 'I' 'B' version=1 flags=0, u32 LE type,
 * u32 LE payload length, payload. ipcbus channels speak it themselves; the
 * plain-Deno baselines (`Deno.Command` stdio, Unix sockets) use the helpers
 * below.
 *
 * Message types:
 * - `ECHO` (1): the peer sends the frame back (round trip).
 * - `BEGIN` (2): payload u32 count (and u32 consumer mode for ipcbus): expect
 *   `count` frames of type `DATA`, then answer with `DONE`.
 * - `DATA` (3): counted by the consumer.
 * - `DONE` (4): consumer to producer, payload u32 count.
 * - `QUIT` (5): the peer exits (a FIFO reader never sees the end of the stream).
 *
 * A POSIX message queue carries no type: over `posix-mq:` (and in
 * bench/c/posixbench.c) a message's priority says what it is, by
 * {@linkcode PRIORITY_OF} (see {@linkcode kindTags} and {@linkcode kindOf}).
 * `BEGIN` outranks `DATA`, so it is taken first although both are queued.
 *
 * @module
 */

/** Frame header size. */
export const HEADER_SIZE = 12;

/** Message types of the benchmark protocol. */
export const T = { ECHO: 1, BEGIN: 2, DATA: 3, DONE: 4, QUIT: 5 } as const;

/** The priority standing for each message type over a POSIX queue (which has no types). */
export const PRIORITY_OF: Readonly<Record<number, number>> = {
  [T.DATA]: 0,
  [T.ECHO]: 1,
  [T.BEGIN]: 2,
  [T.DONE]: 3,
  [T.QUIT]: 4,
};

/** The message type each priority stands for over a POSIX queue (the inverse of {@linkcode PRIORITY_OF}). */
const TYPE_OF_PRIORITY: readonly number[] = [T.DATA, T.ECHO, T.BEGIN, T.DONE, T.QUIT];

/** How a message's kind travels over an ipcbus channel: as its type, or as its priority (`posix-mq:`). */
export type KindTag = "type" | "priority";

/**
 * The send options that carry a message type.
 *
 * @param tag How kinds travel.
 * @param kind One of {@linkcode T}.
 * @returns `{ type }` or `{ priority }`.
 */
export function kindTags(tag: KindTag, kind: number): { type?: number; priority?: number } {
  return tag === "type" ? { type: kind } : { priority: PRIORITY_OF[kind] };
}

/**
 * The message type of a received message.
 *
 * @param tag How kinds travel.
 * @param message Its tags.
 * @returns One of {@linkcode T} (-1 for an unknown priority).
 */
export function kindOf(tag: KindTag, message: { type: number; priority: number }): number {
  return tag === "type" ? message.type : TYPE_OF_PRIORITY[message.priority] ?? -1;
}

/** How an ipcbus consumer receives (sent in `BEGIN`): `receiveBatch`, or one `receiveMessage` per message. */
export const CONSUMER = { BATCH: 0, AWAIT_RECEIVE: 1 } as const;

/** Messages per `sendBatch`/`receiveBatch` call on the fast path. */
export const BATCH = 256;

/** From this size on, the fast path receives one message at a time, lent without a copy (`bytesView`). */
export const LARGE = 4096;

/**
 * A whole frame (header and payload) in a fresh buffer.
 *
 * @param type The type.
 * @param payload The payload.
 * @returns The frame bytes.
 */
export function encodeFrame(type: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(frame.buffer);
  frame[0] = 0x49;
  frame[1] = 0x42;
  frame[2] = 1;
  frame[3] = 0;
  view.setUint32(4, type, true);
  view.setUint32(8, payload.length, true);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/**
 * A payload of `size` bytes with a recognisable pattern.
 *
 * @param size Bytes.
 * @returns The payload.
 */
export function makePayload(size: number): Uint8Array {
  const payload = new Uint8Array(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 31 + 7) & 0xff;
  return payload;
}

/**
 * Little-endian u32 values as bytes.
 *
 * @param values The values.
 * @returns The bytes.
 */
export function u32s(...values: number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((value, i) => view.setUint32(i * 4, value, true));
  return bytes;
}

/**
 * Reads a little-endian u32.
 *
 * @param bytes The bytes.
 * @param offset Where.
 * @returns The value.
 */
export function readU32(bytes: Uint8Array, offset = 0): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset, true);
}

/** Something that reads into a buffer: `Deno.Conn`, `Deno.stdin`, a BYOB stream adapter. */
export type ReadInto = (buffer: Uint8Array) => Promise<number | null>;

/** A frame as seen by {@linkcode FrameReader}: valid until the next call. */
export interface RawFrame {
  /** Its type. */
  type: number;
  /** Header and payload. */
  frame: Uint8Array;
  /** The payload alone. */
  payload: Uint8Array;
}

/** Buffered frame reader over any byte source (reads as much as is available). */
export class FrameReader {
  readonly #read: ReadInto;
  #buffer = new Uint8Array(256 * 1024);
  #view = new DataView(this.#buffer.buffer);
  #start = 0;
  #end = 0;

  /** @param read The byte source. */
  constructor(read: ReadInto) {
    this.#read = read;
  }

  /**
   * A frame already buffered, without reading.
   *
   * @returns The frame, or null.
   */
  tryNext(): RawFrame | null {
    const available = this.#end - this.#start;
    if (available < HEADER_SIZE) return null;
    const at = this.#start;
    if (this.#buffer[at] !== 0x49 || this.#buffer[at + 1] !== 0x42) throw new Error("bad frame magic");
    const type = this.#view.getUint32(at + 4, true);
    const total = HEADER_SIZE + this.#view.getUint32(at + 8, true);
    if (available < total) return null;
    this.#start += total;
    const frame = this.#buffer.subarray(at, at + total);
    return { type, frame, payload: frame.subarray(HEADER_SIZE) };
  }

  /**
   * The next frame, reading as needed.
   *
   * @returns The frame, or null at end of stream.
   */
  async next(): Promise<RawFrame | null> {
    for (;;) {
      const frame = this.tryNext();
      if (frame) return frame;
      this.#makeRoom();
      const n = await this.#read(this.#buffer.subarray(this.#end));
      if (n === null || n === 0) {
        if (this.#end !== this.#start) throw new Error("stream ended inside a frame");
        return null;
      }
      this.#end += n;
    }
  }

  #makeRoom(): void {
    const kept = this.#end - this.#start;
    let needed = HEADER_SIZE;
    if (kept >= HEADER_SIZE) needed = HEADER_SIZE + this.#view.getUint32(this.#start + 8, true);
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    }
    if (this.#buffer.length - this.#start >= needed && this.#end < this.#buffer.length) return;
    if (needed > this.#buffer.length) {
      const grown = new Uint8Array(Math.max(needed, this.#buffer.length * 2));
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = grown;
      this.#view = new DataView(grown.buffer);
    } else {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    }
    this.#start = 0;
    this.#end = kept;
  }
}

/**
 * Writes every byte (a `write` may take only part).
 *
 * @param write A writer such as `Deno.Conn.write`.
 * @param bytes What to write.
 */
export async function writeAll(
  write: (bytes: Uint8Array) => Promise<number>,
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await write(bytes.subarray(offset));
}

/**
 * Adapts a byte `ReadableStream` (such as a child's stdout) to {@linkcode ReadInto}.
 *
 * @param stream The stream.
 * @returns The reader function and a way to release the lock.
 */
export function byobSource(stream: ReadableStream<Uint8Array>): { read: ReadInto; release(): void } {
  const reader = stream.getReader({ mode: "byob" });
  // A BYOB read transfers the buffer it is given: read into one scratch
  // buffer, taken back after every read, and copy into the caller's.
  let scratch = new ArrayBuffer(256 * 1024);
  return {
    read: async (buffer) => {
      const length = Math.min(buffer.length, scratch.byteLength);
      const { value, done } = await reader.read(new Uint8Array(scratch, 0, length));
      if (done || !value) return null;
      scratch = value.buffer as ArrayBuffer;
      buffer.set(value);
      return value.length;
    },
    release: () => reader.releaseLock(),
  };
}
