/**
 * Framing over a byte stream (pipes and FIFOs): the reader and writer shared
 * by the `pipe:` and `fifo:` transports. The format is in
 * `docs/wire-format.md`:
 *
 * ```text
 * offset size field
 *      0    2 magic   0x49 0x42 ("IB")
 *      2    1 version 1
 *      3    1 flags   0 (reserved; non-zero is refused)
 *      4    4 type    u32 little-endian, 1 ..= 2^32-1
 *      8    4 length  u32 little-endian, payload bytes that follow
 * ```
 *
 * @module
 */

import { ChannelClosedError, FrameError } from "../errors.ts";
import { PIPE_BUF, POLL } from "../ffi/constants.ts";
import { E, errno, lastError, libc } from "../ffi/libc.ts";
import { waitFd } from "../ffi/poller.ts";

/** Size of the frame header in bytes. */
export const HEADER_SIZE = 12;
/** First magic byte ("I"). */
export const MAGIC0 = 0x49;
/** Second magic byte ("B"). */
export const MAGIC1 = 0x42;
/** Wire format version. */
export const VERSION = 1;
/** Largest type a stream frame carries. */
export const MAX_STREAM_TYPE = 0xffff_ffff;
/** Default largest payload accepted from a stream peer (16 MiB). */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

/**
 * A frame taken off the stream. `data` is valid until the next read. It has
 * the shape of a transport's `ReceivedFrame` (priority 0), so the stream
 * transports hand it on as it is.
 */
export interface StreamFrame {
  /** Payload (a view into the reader's buffer). */
  data: Uint8Array;
  /** The frame's type tag. */
  type: number;
  /** Always 0: a stream carries no priorities. */
  priority: 0;
}

/** What {@linkcode FrameReader.next} returns when the writer side has gone. */
export const END_OF_STREAM: unique symbol = Symbol("end of stream");

/**
 * Bounded spinning before parking: retry the non-blocking call for up to
 * `budget` µs. Whether spinning pays is judged by the parked waits that
 * follow a miss: a wait that ends within {@linkcode ACTIVE_FACTOR} × budget
 * means the peer is active (spinning should go on: when both sides park,
 * each hop pays two thread wake-ups and neither catches the other); eight
 * longer waits in a row mean an idle peer, and spinning stops until a parked
 * wait is short again. So an idle channel wastes at most 8 spins.
 */
export class Spinner {
  readonly #budget: number;
  #idle = 0;
  #parkedAt = 0;

  /** @param budgetMicros Longest spin in µs (0 disables). */
  constructor(budgetMicros: number) {
    this.#budget = Math.max(0, budgetMicros);
  }

  /**
   * Spins until `attempt` returns something other than `undefined` or the
   * budget runs out (or returns at once when spinning does not pay now).
   * Call {@linkcode Spinner.woke} when the parked wait after a miss ends.
   *
   * @param attempt The non-blocking call.
   * @returns The attempt's result, or `undefined`: park now.
   */
  spin<R>(attempt: () => R | undefined): R | undefined {
    if (this.#budget > 0 && this.#idle < 8) {
      // Reading the clock costs about 100 ns, more than a try on shared memory: look at it every
      // CLOCK_EVERY tries (and not before the first ones), so the spin notices a peer's message sooner.
      for (let deadline = 0;;) {
        for (let i = 0; i < CLOCK_EVERY; i++) {
          const result = attempt();
          if (result !== undefined) return result;
        }
        const now = performance.now();
        if (deadline === 0) deadline = now + this.#budget / 1000;
        else if (now >= deadline) break;
      }
    }
    this.#parkedAt = performance.now();
    return undefined;
  }

  /** Reports that the wait parked after a miss got what it waited for. */
  woke(): void {
    const waited = (performance.now() - this.#parkedAt) * 1000;
    this.#idle = waited <= this.#budget * ACTIVE_FACTOR ? 0 : Math.min(8, this.#idle + 1);
  }
}

/** Tries between two looks at the clock while spinning. */
const CLOCK_EVERY = 8;

/** A parked wait shorter than this many spin budgets counts as an active peer. */
export const ACTIVE_FACTOR = 8;

/** Reads frames from a non-blocking descriptor. */
export class FrameReader {
  /** The descriptor read from (may be replaced by the owner, e.g. on FIFO reopen). */
  fd: number;
  readonly #maxMessageSize: number;
  readonly #resync: boolean;
  readonly #read = libc().read;
  #buffer = new Uint8Array(64 * 1024);
  #view = new DataView(this.#buffer.buffer);
  #capacity = BigInt(this.#buffer.length); // the read size into an empty buffer
  #start = 0;
  #end = 0;
  #broken: FrameError | undefined;
  #skipping = false;

  /**
   * @param fd A non-blocking descriptor.
   * @param maxMessageSize Largest payload accepted; a header claiming more is a {@linkcode FrameError}.
   * @param resync After malformed data, skip ahead to the next valid frame
   *   header (for streams with several writers, whose frames each start
   *   cleanly) instead of failing every later read with the same error.
   */
  constructor(fd: number, maxMessageSize: number, resync = false) {
    this.fd = fd;
    this.#maxMessageSize = maxMessageSize;
    this.#resync = resync;
  }

  /** Drops buffered bytes and any error state (after a reconnect). */
  reset(): void {
    this.#start = this.#end = 0;
    this.#broken = undefined;
    this.#skipping = false;
  }

  /**
   * The next frame without waiting.
   *
   * @returns A frame, `null` when no whole frame is available yet, or
   *   {@linkcode END_OF_STREAM} when every writer has closed.
   * @throws {FrameError} On malformed data, or a stream that ended inside a frame.
   */
  next(): StreamFrame | null | typeof END_OF_STREAM {
    if (this.#broken) throw this.#broken;
    for (;;) {
      if (!this.#skipping || this.#skip()) {
        const frame = this.#parse();
        if (frame !== null) return frame;
      }
      const more = this.#fill();
      if (more < 0) return null;
      if (more > 0) continue;
      const partial = this.#end - this.#start;
      const skipping = this.#skipping;
      this.reset();
      if (partial === 0 || skipping) return END_OF_STREAM;
      throw new FrameError(
        `stream ended inside a frame (${partial} bytes of an incomplete frame were discarded)`,
      );
    }
  }

  /** What is wrong with the 12-byte header at `at`, or null when it is valid. */
  #problem(at: number): string | null {
    const buffer = this.#buffer;
    if (buffer[at] !== MAGIC0 || buffer[at + 1] !== MAGIC1) {
      return `bad magic 0x${hex(buffer[at])}${hex(buffer[at + 1])} (expected 0x4942 "IB"): ` +
        `the peer does not speak the ipcbus wire format`;
    }
    if (buffer[at + 2] !== VERSION) {
      return `unsupported wire format version ${buffer[at + 2]} (this reader speaks ${VERSION})`;
    }
    if (buffer[at + 3] !== 0) return `unknown frame flags 0x${hex(buffer[at + 3])}`;
    if (this.#view.getUint32(at + 4, true) === 0) return "frame with type 0 (types start at 1)";
    const length = this.#view.getUint32(at + 8, true);
    if (length > this.#maxMessageSize) {
      return `frame claims ${length} bytes, more than maxMessageSize ${this.#maxMessageSize}`;
    }
    return null;
  }

  #parse(): StreamFrame | null {
    const available = this.#end - this.#start;
    if (available < HEADER_SIZE) return null;
    const at = this.#start;
    const problem = this.#problem(at);
    if (problem !== null) {
      if (!this.#resync) {
        this.#broken = new FrameError(problem);
        this.#start = this.#end = 0;
        throw this.#broken;
      }
      this.#start = at + 1;
      this.#skipping = true;
      throw new FrameError(`${problem}; skipping ahead to the next valid frame header`);
    }
    const type = this.#view.getUint32(at + 4, true);
    const total = HEADER_SIZE + this.#view.getUint32(at + 8, true);
    // Not all there yet. The buffer grows as bytes arrive (#fill), never
    // because a header claims a size.
    if (available < total) return null;
    this.#start = at + total;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return { data: this.#buffer.subarray(at + HEADER_SIZE, at + total), type, priority: 0 };
  }

  /**
   * Looks for the next valid header in the buffered bytes.
   *
   * @returns True when found (reading resumes there); false when more bytes
   *   are needed (a possible header start is kept, the rest dropped).
   */
  #skip(): boolean {
    const buffer = this.#buffer;
    for (let at = this.#start; at < this.#end; at++) {
      if (buffer[at] !== MAGIC0) continue;
      if (this.#end - at < HEADER_SIZE) {
        this.#start = at;
        return false;
      }
      if (this.#problem(at) === null) {
        this.#start = at;
        this.#skipping = false;
        return true;
      }
    }
    this.#start = this.#end = 0;
    return false;
  }

  /** Makes room at the end of a full buffer: move the kept bytes to the front, or double the buffer. */
  #makeRoom(): void {
    const kept = this.#end - this.#start;
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    } else {
      // A full buffer holding an incomplete frame from offset 0: that frame is
      // longer than the buffer, and (checked in #parse) at most the limit.
      const grown = new Uint8Array(Math.min(this.#buffer.length * 2, HEADER_SIZE + this.#maxMessageSize));
      grown.set(this.#buffer.subarray(0, kept));
      this.#buffer = grown;
      this.#view = new DataView(grown.buffer);
      this.#capacity = BigInt(grown.length);
    }
    this.#start = 0;
    this.#end = kept;
  }

  /** @returns Bytes read, 0 at end of stream, -1 when nothing is available. */
  #fill(): number {
    if (this.#end === this.#buffer.length) this.#makeRoom();
    const read = this.#read;
    for (;;) {
      // Reading into an empty buffer (the usual case, and every attempt of a
      // spin) allocates nothing; a partial frame needs a view past it.
      const n = this.#end === 0
        ? Number(read(this.fd, this.#buffer, this.#capacity))
        : Number(read(this.fd, this.#buffer.subarray(this.#end), BigInt(this.#buffer.length - this.#end)));
      if (n > 0) {
        this.#end += n;
        return n;
      }
      if (n === 0) return 0;
      const code = errno();
      if (code === E.EAGAIN) return -1;
      if (code !== E.EINTR) throw lastError("read", `fd ${this.fd}`);
    }
  }
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

/** Result of a write attempt. */
export type WriteOutcome = "written" | "full" | "partial";

/** Writes frames to a non-blocking descriptor. */
export class FrameWriter {
  /** The descriptor written to (may be replaced by the owner on reconnect). */
  fd: number;
  readonly #write = libc().write;
  readonly #writev = libc().writev;
  #scratch = new Uint8Array(PIPE_BUF * 16);
  #scratchView = new DataView(this.#scratch.buffer);
  #header = new Uint8Array(HEADER_SIZE);
  #headerView = new DataView(this.#header.buffer);
  #iov = new BigUint64Array(4);
  #iovBytes = new Uint8Array(this.#iov.buffer);
  // A frame the kernel took only part of: the rest goes before anything else.
  #rest: { header: Uint8Array; payload: Uint8Array; offset: number } | null = null;

  /** @param fd A non-blocking descriptor. */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** True while part of a frame is still waiting to be written. */
  get pending(): boolean {
    return this.#rest !== null;
  }

  /** Copies the rest of a partly written frame, so the caller may reuse its buffer. */
  ownPending(): void {
    if (this.#rest) this.#rest.payload = this.#rest.payload.slice();
  }

  /** Drops a partly written frame (after the reader went away). */
  reset(): void {
    this.#rest = null;
  }

  /**
   * Writes one frame without waiting. A frame of at most `PIPE_BUF` bytes is
   * written whole or not at all; a larger one may be taken in part, and then
   * the rest must be finished with {@linkcode flush} before the next frame.
   *
   * @param payload The payload.
   * @param type The type tag.
   * @returns `"written"`, `"full"` (nothing written) or `"partial"`.
   * @throws {ChannelClosedError} When no reader is left (`EPIPE`).
   */
  write(payload: Uint8Array, type: number): WriteOutcome {
    if (this.#rest !== null && !this.flushSome()) return "full";
    const total = HEADER_SIZE + payload.length;
    if (total <= this.#scratch.length) {
      const scratch = this.#scratch;
      const view = this.#scratchView;
      scratch[0] = MAGIC0;
      scratch[1] = MAGIC1;
      scratch[2] = VERSION;
      scratch[3] = 0;
      view.setUint32(4, type, true);
      view.setUint32(8, payload.length, true);
      scratch.set(payload, HEADER_SIZE);
      const n = this.#writeBytes(scratch, total);
      if (n === total) return "written";
      if (n <= 0) return "full";
      // Only frames beyond PIPE_BUF can be split by the kernel.
      this.#rest = { header: scratch.slice(0, HEADER_SIZE), payload, offset: n };
      return "partial";
    }
    const header = this.#header;
    header[0] = MAGIC0;
    header[1] = MAGIC1;
    header[2] = VERSION;
    header[3] = 0;
    this.#headerView.setUint32(4, type, true);
    this.#headerView.setUint32(8, payload.length, true);
    this.#rest = { header: header.slice(), payload, offset: 0 };
    if (this.flushSome()) return "written";
    return this.#rest.offset === 0 ? this.#dropUnstarted() : "partial";
  }

  #dropUnstarted(): "full" {
    this.#rest = null;
    return "full";
  }

  /**
   * Writes as much of a partly written frame as the kernel takes now.
   *
   * @returns True when nothing is left pending.
   */
  flushSome(): boolean {
    const rest = this.#rest;
    if (rest === null) return true;
    const writev = this.#writev;
    const total = HEADER_SIZE + rest.payload.length;
    while (rest.offset < total) {
      let count = 0;
      if (rest.offset < HEADER_SIZE) {
        this.#iov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(rest.header))) +
          BigInt(rest.offset);
        this.#iov[1] = BigInt(HEADER_SIZE - rest.offset);
        count = 1;
      }
      if (rest.payload.length > 0) {
        const from = Math.max(0, rest.offset - HEADER_SIZE);
        this.#iov[count * 2] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(rest.payload))) +
          BigInt(from);
        this.#iov[count * 2 + 1] = BigInt(rest.payload.length - from);
        count++;
      }
      const n = Number(writev(this.fd, this.#iovBytes, count));
      if (n > 0) {
        rest.offset += n;
        continue;
      }
      const code = errno();
      if (code === E.EAGAIN) return false;
      if (code === E.EINTR) continue;
      this.#rest = null;
      throw writeError(code, this.fd);
    }
    this.#rest = null;
    return true;
  }

  #writeBytes(bytes: Uint8Array, length: number): number {
    const write = this.#write;
    for (;;) {
      const n = Number(write(this.fd, bytes, BigInt(length)));
      if (n >= 0) return n;
      const code = errno();
      if (code === E.EAGAIN) return 0;
      if (code !== E.EINTR) throw writeError(code, this.fd);
    }
  }

  /**
   * Finishes a partly written frame, waiting for room as needed.
   *
   * @param signal Aborting it stops the wait (the frame stays partly written).
   */
  async flush(signal: AbortSignal): Promise<void> {
    while (!this.flushSome()) await waitFd(this.fd, POLL.OUT, signal);
  }
}

function writeError(code: number, fd: number): Error {
  if (code === E.EPIPE) {
    return new ChannelClosedError(`write to fd ${fd} failed: EPIPE (the reading side has closed)`, {
      errno: code,
      syscall: "write",
    });
  }
  return lastError("write", `fd ${fd}`);
}
