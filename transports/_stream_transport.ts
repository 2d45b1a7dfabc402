/**
 * The part of the `pipe:` and `fifo:` transports that is the same: frames
 * over non-blocking descriptors, the fast path (a synchronous read or write),
 * adaptive spinning, then parking on the poll helper.
 *
 * @module
 */

import { ChannelClosedError } from "../errors.ts";
import { POLL } from "../ffi/constants.ts";
import { waitFd } from "../ffi/poller.ts";
import type { ReceivedFrame, Transport, TransportInfo } from "../transport.ts";
import { END_OF_STREAM, type FrameReader, type FrameWriter, Spinner } from "./_stream.ts";

/** Default spin budget in µs before parking (see `Spinner`). */
export const DEFAULT_SPIN_MICROS = 100;

/** A stream transport's hooks. */
export abstract class StreamTransport implements Transport {
  /** Description. */
  abstract readonly info: TransportInfo;
  #closed = false;
  #background: AbortController | undefined;
  readonly #receiveSpinner: Spinner;
  readonly #sendSpinner: Spinner;

  /** @param spinMicros Spin budget in µs before parking. */
  constructor(spinMicros: number) {
    this.#receiveSpinner = new Spinner(spinMicros);
    this.#sendSpinner = new Spinner(spinMicros);
  }

  /** The reader, opened on first use. */
  protected abstract reader(): FrameReader;
  /** The writer, opened on first use; null while it cannot be opened yet. */
  protected abstract writer(): FrameWriter | null;
  /**
   * Called when every writer has closed.
   *
   * @returns True to go on reading (the transport reopened), false when the stream is over.
   */
  protected abstract endOfStream(): boolean;
  /**
   * Called when the writer failed with `EPIPE` before writing anything.
   *
   * @returns True to retry (the transport dropped the writer), false to fail.
   */
  protected readerGone(): boolean {
    return false;
  }
  /** Waits until `writer()` may succeed (a reader appeared). */
  protected waitForWriter(_signal: AbortSignal): Promise<void> {
    return Promise.reject(new Error("no writer"));
  }
  /** Closes the descriptors. */
  protected abstract release(): void;

  /** Whether `close()` was called. */
  protected get closed(): boolean {
    return this.#closed;
  }

  #checkOpen(): void {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
  }

  tryReceive(): ReceivedFrame | null {
    this.#checkOpen();
    const frame = this.reader().next();
    if (frame === END_OF_STREAM) {
      if (this.endOfStream()) return null;
      throw new ChannelClosedError(`${this.info.address}: the peer closed the stream`, { syscall: "read" });
    }
    return frame; // null, or a frame already shaped as a ReceivedFrame
  }

  receive(_filter: unknown, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame> {
    try {
      const frame = this.tryReceive() ?? this.#receiveSpinner.spin(this.#retake);
      if (frame) return frame;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#receiveSlowly(signal);
  }

  readonly #retake = (): ReceivedFrame | undefined => this.tryReceive() ?? undefined;

  async #receiveSlowly(signal: AbortSignal): Promise<ReceivedFrame> {
    const spinner = this.#receiveSpinner;
    for (;;) {
      await waitFd(this.reader().fd, POLL.IN, signal);
      const frame = this.tryReceive();
      if (frame) {
        spinner.woke();
        return frame;
      }
    }
  }

  trySend(data: Uint8Array, type: number): boolean {
    const outcome = this.#attempt(data, type);
    if (outcome === "written") return true;
    if (!outcome.partial) return false;
    // The kernel took part of a large frame: finish it off the fast path with
    // a copy of the rest (the caller may reuse its buffer). The next send
    // waits for it, as FrameWriter.write reports "full" until then.
    this.#finishLater(outcome.writer!);
    return true;
  }

  /**
   * Called when a frame left partly written (by `trySend`, or by a `send`
   * aborted midway) has been finished in the background.
   */
  protected frameFinished(_writer: FrameWriter): void {}

  #finishLater(writer: FrameWriter): void {
    writer.ownPending();
    this.#background ??= new AbortController(); // aborted by close()
    writer.flush(this.#background.signal).then(() => this.frameFinished(writer), () => writer.reset());
  }

  send(data: Uint8Array, type: number, _priority: number, signal: AbortSignal): Promise<void> | undefined {
    const writer = this.#attempt(data, type);
    return writer === "written" ? undefined : this.#sendSlowly(data, type, signal, writer);
  }

  /** One non-blocking try: "written", or what to wait on (null: no reader yet). */
  #attempt(data: Uint8Array, type: number): "written" | { writer: FrameWriter | null; partial: boolean } {
    for (;;) {
      this.#checkOpen();
      const writer = this.writer();
      if (writer === null) return { writer, partial: false };
      try {
        const outcome = writer.write(data, type);
        return outcome === "written" ? outcome : { writer, partial: outcome === "partial" };
      } catch (error) {
        if (error instanceof ChannelClosedError && !writer.pending && this.readerGone()) continue;
        throw error;
      }
    }
  }

  async #sendSlowly(
    data: Uint8Array,
    type: number,
    signal: AbortSignal,
    state: { writer: FrameWriter | null; partial: boolean },
  ): Promise<void> {
    for (;;) {
      if (state.partial) return await this.#finishFrame(state.writer!, signal);
      if (state.writer === null) await this.waitForWriter(signal);
      else if (state.writer.pending) await this.#finishFrame(state.writer, signal); // left by trySend
      else await waitFd(state.writer.fd, POLL.OUT, signal);
      const next = this.#attempt(data, type);
      if (next === "written") return;
      state = next;
    }
  }

  /** Writes the rest of a partly written frame: spin while the reader drains, then park. */
  async #finishFrame(writer: FrameWriter, signal: AbortSignal): Promise<void> {
    const spinner = this.#sendSpinner;
    if (spinner.spin(() => writer.flushSome() || undefined)) return;
    try {
      await writer.flush(signal);
      spinner.woke();
    } catch (error) {
      // Part of the frame is in the stream and cannot be taken back: the rest
      // is still written, or every later frame would be garbage.
      if (signal.aborted && !this.#closed) this.#finishLater(writer);
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#background?.abort();
    this.release();
  }

  unlink(): Promise<void> {
    return Promise.resolve();
  }
}
