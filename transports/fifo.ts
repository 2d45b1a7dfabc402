/**
 * The `fifo:` transport: a named pipe made with mkfifo(3).
 *
 * A FIFO carries bytes one way; a `Fifo` opens its read end on the first
 * receive and its write end on the first send, so one process may do either
 * or both. Readers outlive writers: when every writer has gone, the reader
 * reopens and waits for the next one, so `for await` over a FIFO ends only
 * when the channel is closed. A writer with no reader waits (`send`) or
 * reports full (`trySend`) until one appears. "No reader" is the kernel's
 * view: while another thread of a reader's process starts a child, the
 * child holds a copy of the read end until its exec closes it, so writes
 * made just after that reader closed may still go into the pipe (the next
 * reader gets them first).
 *
 * Several writers and frame sizes (`writers`):
 * - `"many"` (default): any number of writers, no locks. Every frame is one
 *   write(2) of at most `PIPE_BUF` (4096) bytes, which Linux makes atomic, so
 *   frames never interleave. Payloads are limited to 4084 bytes.
 * - `"locked"`: any number of writers and frames up to `maxMessageSize`;
 *   every frame is written under an exclusive open-file-description lock on
 *   the FIFO (two fcntl calls per message; the kernel drops the lock of a
 *   writer that dies). Every writer of the FIFO must use `"locked"`.
 * - `"single"`: the caller promises one writer; frames up to
 *   `maxMessageSize`, no locks.
 *
 * Safety: the path is checked with lstat(2) and every descriptor with
 * fstat(2): a symlink, a regular file or a FIFO owned by another user is
 * refused with {@linkcode PermissionDeniedError}.
 *
 * @example A reader and a writer
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.fifo`;
 * await using reader = await open<string>(`fifo:${path}`, { create: true });
 * await using writer = await open<string>(`fifo:${path}`);
 * const received = reader.receive();
 * await writer.send("hello");
 * console.log(await received); // "hello"
 * await reader.unlink();
 * ```
 *
 * @module
 */

import { NotFoundError, PermissionDeniedError } from "../errors.ts";
import { delay } from "../ffi/_delay.ts";
import { F, O, PIPE_BUF } from "../ffi/constants.ts";
import {
  closeFd,
  fchmodFd,
  type FileStat,
  fstatFd,
  lockWholeFile,
  lstatPath,
  mkfifoPath,
  openPath,
  unlinkPath,
} from "../ffi/fd.ts";
import { E, libc } from "../ffi/libc.ts";
import type { TransportInfo, TransportOptions } from "../transport.ts";
import {
  DEFAULT_MAX_MESSAGE_SIZE,
  FrameReader,
  FrameWriter,
  HEADER_SIZE,
  MAX_STREAM_TYPE,
} from "./_stream.ts";
import { Presence } from "../sync/presence.ts";
import { reopenRemoved } from "./_reopen.ts";
import { DEFAULT_SPIN_MICROS, StreamTransport } from "./_stream_transport.ts";

/** How writers share a FIFO (see the module documentation). */
export type FifoWriters = "many" | "locked" | "single";

/** Options of {@linkcode Fifo.open}. */
export interface FifoOptions {
  /** Make the FIFO when it does not exist (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /** Permission bits for a new FIFO (default `0o600`; the umask is not applied). */
  mode?: number;
  /** How writers share the FIFO (default `"many"`). */
  writers?: FifoWriters;
  /** Largest payload in bytes (default 16 MiB; `"many"` caps it at 4084). */
  maxMessageSize?: number;
  /** µs to spin on the non-blocking call before parking (default 100; 0 disables). */
  spin?: number;
}

/** Largest payload that fits one atomic write with its header. */
export const FIFO_ATOMIC_PAYLOAD = PIPE_BUF - HEADER_SIZE;

/**
 * One process's end of a named pipe.
 *
 * @example Several writers, each frame atomic
 * ```ts
 * import { Channel } from "@ipcbus/ipcbus";
 * import { Fifo } from "@ipcbus/ipcbus/fifo";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.fifo`;
 * using log = new Channel<string>(Fifo.open(path, { create: true }));
 * using client = new Channel<string>(Fifo.open(path));
 * const line = log.receive();
 * await client.send("started");
 * console.log(await line); // "started"
 * await log.unlink();
 * ```
 */
export class Fifo extends StreamTransport {
  readonly info: TransportInfo;
  readonly #path: string;
  readonly #identity: FileStat;
  readonly #writers: FifoWriters;
  readonly #maxMessageSize: number;
  #reader: FrameReader | null = null;
  #writer: FrameWriter | null = null;
  #presence: Presence | null;

  private constructor(
    path: string,
    identity: FileStat,
    writers: FifoWriters,
    maxMessageSize: number,
    spin: number,
  ) {
    super(spin);
    this.#path = path;
    this.#identity = identity;
    this.#writers = writers;
    this.#maxMessageSize = maxMessageSize;
    this.info = {
      scheme: "fifo",
      address: `fifo:${path}`,
      capabilities: {
        types: true,
        typeFilter: false,
        priority: false,
        multiWriter: writers !== "single",
        multiReader: false,
        persistent: true,
      },
      maxMessageSize,
      maxType: MAX_STREAM_TYPE,
      maxPriority: 0,
      maxMessageSizeReason: writers === "many"
        ? `fifo: with writers "many" a frame must fit PIPE_BUF (${PIPE_BUF} bytes) to stay atomic; ` +
          `open with { writers: "locked" } or { writers: "single" } for larger messages`
        : `fifo: maxMessageSize is ${maxMessageSize}`,
      path,
      writers,
      owner: identity.uid,
      mode: identity.permissions,
    };
    this.#presence = Presence.hold(`fifo:${path}`, { mode: identity.permissions & 0o666 });
  }

  /**
   * Opens (and with `create`, makes) a FIFO.
   *
   * @param path Absolute path of the FIFO.
   * @param options Creation, sharing and size options.
   * @returns The transport.
   * @throws {NotFoundError} When the FIFO does not exist and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
   * @throws {PermissionDeniedError} When the path is a symlink, not a FIFO, or another user's.
   */
  static open(path: string, options: FifoOptions = {}): Fifo {
    if (!path.startsWith("/")) throw new TypeError(`fifo: the path must be absolute, got "${path}"`);
    const writers = options.writers ?? "many";
    if (!["many", "locked", "single"].includes(writers)) {
      throw new TypeError(`fifo: writers must be "many", "locked" or "single", got "${writers}"`);
    }
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`fifo: mode must be permission bits from 0 to 0o777, got ${mode}`);
    }
    let maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    if (!Number.isSafeInteger(maxMessageSize) || maxMessageSize < 0 || maxMessageSize > 0xffff_ffff) {
      throw new RangeError(
        `fifo: maxMessageSize must be an integer from 0 to 4294967295, got ${maxMessageSize}`,
      );
    }
    if (writers === "many") maxMessageSize = Math.min(maxMessageSize, FIFO_ATOMIC_PAYLOAD);

    let created = false;
    if (options.create) {
      try {
        mkfifoPath(path, mode);
        created = true;
      } catch (error) {
        if (options.exclusive || !(error instanceof Error && "code" in error && error.code === "EEXIST")) {
          throw error;
        }
      }
    }
    const identity = checkPath(path, created);
    if (created) {
      // mkfifo applied the umask: set the exact mode asked for.
      const fd = openPath(path, O.RDONLY | O.NONBLOCK | O.NOFOLLOW);
      try {
        sameFile(fstatFd(fd), identity, path);
        fchmodFd(fd, mode);
        identity.permissions = mode;
      } finally {
        closeFd(fd);
      }
    }
    const fifo = new Fifo(path, identity, writers, maxMessageSize, options.spin ?? DEFAULT_SPIN_MICROS);
    if (fifo.#presence?.contended && fifo.#replaced()) {
      fifo.close();
      return reopenRemoved(`fifo:${path}`, () => Fifo.open(path, options));
    }
    return fifo;
  }

  /** Whether the path no longer names this FIFO (removed, or replaced). */
  #replaced(): boolean {
    const now = lstatPath(this.#path);
    return now === null || now.ino !== this.#identity.ino || now.dev !== this.#identity.dev;
  }

  #openEnd(flags: number): number {
    const fd = openPath(this.#path, flags | O.NONBLOCK | O.NOFOLLOW);
    try {
      sameFile(fstatFd(fd), this.#identity, this.#path);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    return fd;
  }

  protected reader(): FrameReader {
    // Several writers, each frame starting cleanly: after malformed data the
    // reader skips ahead to the next valid header.
    return this.#reader ??= new FrameReader(this.#openEnd(O.RDONLY), this.#maxMessageSize, true);
  }

  protected writer(): FrameWriter | null {
    if (this.#writer) return this.#writer;
    let fd: number;
    try {
      fd = this.#openEnd(O.WRONLY);
    } catch (error) {
      // ENXIO: no process has the FIFO open for reading yet.
      if (error instanceof Error && "errno" in error && error.errno === E.ENXIO) return null;
      throw error;
    }
    return this.#writer = new FrameWriter(fd);
  }

  protected override async waitForWriter(signal: AbortSignal): Promise<void> {
    // Linux cannot poll for "a reader appeared"; retry the open with backoff.
    this.#backoff = Math.min(50, this.#backoff * 2 || 1);
    await delay(this.#backoff, signal);
  }
  #backoff = 0;

  protected endOfStream(): boolean {
    // Every writer has gone. Open a fresh read end before closing the old one,
    // so writers arriving meanwhile never see "no reader"; a fresh end does not
    // report a hang-up until a writer has come and gone again.
    const reader = this.#reader!;
    let fresh: number;
    try {
      fresh = this.#openEnd(O.RDONLY);
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      return false; // the FIFO was removed: no writer can come back
    }
    closeFd(reader.fd);
    reader.fd = fresh;
    reader.reset();
    return true;
  }

  protected override readerGone(): boolean {
    closeFd(this.#writer!.fd);
    this.#writer = null;
    return true;
  }

  override trySend(data: Uint8Array, type: number): boolean {
    if (this.#writers !== "locked") {
      this.#backoff = 0;
      return super.trySend(data, type);
    }
    const writer = this.writer();
    if (writer === null) return false;
    if (!lockWholeFile(writer.fd, F.WRLCK, false)) return false;
    try {
      return super.trySend(data, type);
    } finally {
      this.#unlock(writer);
    }
  }

  /** Releases the write lock, unless part of a frame is still to be written (then frameFinished does). */
  #unlock(writer: FrameWriter): void {
    if (this.#writer === writer && !writer.pending && !this.closed) lockWholeFile(writer.fd, F.UNLCK, false);
  }

  protected override frameFinished(writer: FrameWriter): void {
    if (this.#writers === "locked") this.#unlock(writer);
  }

  override send(
    data: Uint8Array,
    type: number,
    priority: number,
    signal: AbortSignal,
  ): Promise<void> | undefined {
    if (this.#writers !== "locked") {
      const pending = super.send(data, type, priority, signal);
      if (pending === undefined) this.#backoff = 0;
      return pending;
    }
    return this.#sendLocked(data, type, priority, signal);
  }

  async #sendLocked(data: Uint8Array, type: number, priority: number, signal: AbortSignal): Promise<void> {
    // Take the lock without blocking the event loop: retry with backoff.
    let writer = this.writer();
    for (let pause = 0; writer === null || !lockWholeFile(writer.fd, F.WRLCK, false);) {
      pause = Math.min(20, pause * 2 || 0.25);
      await delay(pause, signal);
      writer = this.writer();
    }
    try {
      await super.send(data, type, priority, signal);
    } finally {
      this.#unlock(writer);
    }
  }

  protected release(): void {
    this.#presence?.release();
    // The FIFO removed or replaced by someone else while we had it: drop
    // its presence record, which nobody can use any more.
    if (this.#presence && this.#replaced()) Presence.forget(`fifo:${this.#path}`);
    if (this.#reader) closeFd(this.#reader.fd);
    if (this.#writer) closeFd(this.#writer.fd);
  }

  /** Removes the FIFO's name. Open ends keep working until closed. */
  override unlink(): Promise<void> {
    const stat = lstatPath(this.#path);
    if (stat === null) {
      Presence.forget(`fifo:${this.#path}`);
      return Promise.reject(
        new NotFoundError(`unlink ${this.#path} failed: ENOENT`, { errno: E.ENOENT, syscall: "unlink" }),
      );
    }
    sameFile(stat, this.#identity, this.#path);
    unlinkPath(this.#path);
    Presence.forget(`fifo:${this.#path}`);
    return Promise.resolve();
  }
}

function checkPath(path: string, created: boolean): FileStat {
  const stat = lstatPath(path);
  if (stat === null) {
    throw new NotFoundError(`fifo: ${path} does not exist (open with { create: true } to make it)`, {
      errno: E.ENOENT,
      syscall: "lstat",
    });
  }
  if (stat.type === "symlink") {
    throw new PermissionDeniedError(
      `fifo: ${path} is a symbolic link; ipcbus does not follow links to FIFOs`,
      {
        syscall: "lstat",
      },
    );
  }
  if (stat.type !== "fifo") {
    throw new PermissionDeniedError(`fifo: ${path} is a ${stat.type}, not a FIFO`, { syscall: "lstat" });
  }
  const uid = libc().geteuid();
  if (stat.uid !== uid) {
    throw new PermissionDeniedError(
      `fifo: ${path} belongs to uid ${stat.uid}, not to this user (uid ${uid})${
        created ? "" : "; refusing to use it"
      }`,
      { syscall: "lstat" },
    );
  }
  return stat;
}

function sameFile(stat: FileStat, identity: FileStat, path: string): void {
  if (stat.dev !== identity.dev || stat.ino !== identity.ino || stat.type !== "fifo") {
    throw new PermissionDeniedError(`fifo: ${path} was replaced by another file after it was checked`, {
      syscall: "fstat",
    });
  }
}

/**
 * Factory for `fifo:` addresses.
 *
 * @param address `fifo:/absolute/path`.
 * @param options Options given to `open()`.
 * @returns The transport.
 */
export function openFifo(address: string, options: TransportOptions): Fifo {
  return Fifo.open(address.slice("fifo:".length), options as FifoOptions);
}
