/**
 * Memory-mapped regular files: mmap(2) with `MAP_SHARED` or `MAP_PRIVATE`,
 * msync(2), mremap(2), and waiting on a word of the mapping across processes
 * (futex).
 *
 * A {@linkcode MappedFile} maps a whole file; {@linkcode MappedFile.view} is
 * a `Uint8Array` over the mapping. With `MAP_SHARED` (the default) writes go
 * to the page cache, so every process mapping the same file sees them at
 * once, and they reach the disk when the kernel writes them back or when
 * {@linkcode MappedFile.sync} / {@linkcode MappedFile.flush} asks for it.
 * With `shared: false` (`MAP_PRIVATE`) writes stay private to this mapping
 * (copy on write) and never reach the file.
 *
 * Safety:
 * - The path is opened with `O_NOFOLLOW` and checked with fstat(2): a
 *   symbolic link, a FIFO, a directory or (unless `allowOtherOwner`) another
 *   user's file is refused with `PermissionDeniedError`.
 * - The mapping never extends beyond the file's size when it is made:
 *   touching a page past the end of a file kills the process with SIGBUS.
 *   {@linkcode MappedFile.remap} re-reads the size (fstat) first. **A process
 *   that truncates the file while others have it mapped makes their accesses
 *   to the cut pages fatal (SIGBUS)**: the kernel gives no way to guard
 *   against that, so only trusted processes may have write access to a
 *   mapped file. Likewise, writing through the mapping to a hole of a sparse
 *   file on a full disk raises SIGBUS: pass `allocate: true` to reserve the
 *   blocks (posix_fallocate) when creating or growing.
 * - Views are detach-safe: {@linkcode MappedFile.close} and a remap that
 *   moves the mapping detach the `ArrayBuffer` first, so every view made from
 *   it reads as length 0 instead of touching unmapped memory. Take views
 *   again after `resize`/`remap`.
 *
 * @example Share bytes through a file
 * ```ts
 * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
 * using file = MappedFile.open(path, { create: true, size: 4096 });
 * file.view.set(new TextEncoder().encode("hello"));
 * using again = MappedFile.open(path); // another process would do this
 * console.log(new TextDecoder().decode(again.view.subarray(0, 5))); // "hello"
 * file.unlink();
 * ```
 *
 * @module
 */

import { HelperErrno } from "../ffi/_helper_thread.ts";
import { reserveFileSpace, setFileSize } from "../ffi/_file_space.ts";
import { ChannelClosedError, errnoError, PermissionDeniedError } from "../errors.ts";
import { delay } from "../ffi/_delay.ts";
import { closeFd, type FileStat, fstatFd, unlinkPath } from "../ffi/fd.ts";
import { futexWait, futexWake, syncRanges } from "../ffi/file_waiter.ts";
import { strerror } from "../ffi/libc.ts";
import { Mapping } from "../ffi/mmap.ts";
import { pageSize } from "../ffi/sysv.ts";
import { openRegularFile, syncParentDirectory, unlinkSameFile } from "./_regular_file.ts";

/** Options of {@linkcode MappedFile.open}. */
export interface MappedFileOptions {
  /** Create the file when it does not exist (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /** Permission bits of a new file (default `0o600`; the umask does not apply). */
  mode?: number;
  /**
   * Size in bytes. A new file is made this large (ftruncate, zero-filled);
   * an existing smaller file is grown to it (not with `readOnly`). Omitted:
   * an existing file is mapped at its size; a new file stays empty.
   */
  size?: number;
  /** Reserve the disk blocks of a new or grown file (posix_fallocate), so writes never hit a full disk. */
  allocate?: boolean;
  /** `MAP_SHARED` (default true): writes reach the file and other processes. False: `MAP_PRIVATE`. */
  shared?: boolean;
  /** Open and map read-only. Writing through the view then kills the process (SIGSEGV). */
  readOnly?: boolean;
  /** Accept a file owned by another user (default false: such a file is refused). */
  allowOtherOwner?: boolean;
}

/** Options of {@linkcode MappedFile.sync}. */
export interface MappedFileSyncOptions {
  /** `MS_ASYNC`: schedule the write-back and return (default: `MS_SYNC`, wait for it). */
  async?: boolean;
  /** `MS_INVALIDATE`: drop other mappings' cached copies of the range, so they reread the file. */
  invalidate?: boolean;
  /** First byte (rounded down to a page; default 0). */
  start?: number;
  /** Bytes from `start` (default: to the end of the mapping). */
  length?: number;
}

/** Options of {@linkcode MappedFile.flush}. */
export interface MappedFileFlushOptions {
  /** First byte (rounded down to a page; default 0). */
  start?: number;
  /** Bytes from `start` (default: to the end of the mapping). */
  length?: number;
  /** Also fdatasync(2) the descriptor, for the file's size and other writes (default true). */
  datasync?: boolean;
}

/** Options of {@linkcode MappedFile.wait}. */
export interface MappedFileWaitOptions {
  /** Aborting it rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Give up after this many ms (default: wait forever). */
  timeout?: number;
}

/** How long one futex wait lasts before the value is read again, in ms. */
const WAIT_SLICE_MS = 1000;

/**
 * A regular file mapped into memory.
 *
 * @example Two mappings of one file, a word waited on and notified
 * ```ts
 * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
 * using a = MappedFile.open(path, { create: true, size: 4096 });
 * using b = MappedFile.open(path); // usually in another process
 * const words = new Int32Array(b.buffer);
 * const woken = a.wait(0, 0, { timeout: 5000 });
 * Atomics.store(words, 0, 1);
 * b.notify(0);
 * console.log(await woken); // "ok" (or "not-equal" if the store came first)
 * a.unlink();
 * ```
 */
export class MappedFile implements Disposable {
  /** The path it was opened with. */
  readonly path: string;
  /** Whether writes are shared with the file and other processes (`MAP_SHARED`). */
  readonly shared: boolean;
  /** Whether it is opened and mapped read-only. */
  readonly readOnly: boolean;
  /** Whether this open created the file. */
  readonly created: boolean;

  #fd: number;
  #mapping: Mapping | null;
  #view: Uint8Array<ArrayBuffer>;
  readonly #identity: FileStat;
  #closed = false;
  readonly #waits = new Set<AbortController>();

  private constructor(
    path: string,
    fd: number,
    identity: FileStat,
    shared: boolean,
    readOnly: boolean,
    created: boolean,
  ) {
    this.path = path;
    this.#fd = fd;
    this.#identity = identity;
    this.shared = shared;
    this.readOnly = readOnly;
    this.created = created;
    this.#mapping = null;
    this.#view = new Uint8Array(0);
  }

  /**
   * Opens (and with `create`, makes) a file and maps all of it.
   *
   * @param path Absolute path of a regular file.
   * @param options Creation, size, sharing and access options.
   * @returns The mapped file.
   * @throws {TypeError} For a relative path or a bad option.
   * @throws {RangeError} For a bad `size` or `mode`, or a size its file system does not allow (`EFBIG`).
   * @throws {NotFoundError} When the file does not exist and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
   * @throws {PermissionDeniedError} For a symlink, a non-regular file, another user's file, or no access.
   * @throws {IpcError} When ftruncate, posix_fallocate or mmap fails (for example `ENOSPC`, `ENOMEM`).
   *
   * @example Map a file read-only
   * ```ts
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * MappedFile.open(path, { create: true, size: 16 }).close();
   * using file = MappedFile.open(path, { readOnly: true });
   * console.log(file.length, file.readOnly); // 16 true
   * file.unlink();
   * ```
   */
  static open(path: string, options: MappedFileOptions = {}): MappedFile {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("mapped file: options must be an object");
    }
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`mapped file: mode must be permission bits from 0 to 0o777, got ${mode}`);
    }
    const size = options.size;
    if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) {
      throw new RangeError(`mapped file: size must be a non-negative integer, got ${size}`);
    }
    const readOnly = options.readOnly ?? false;
    const shared = options.shared ?? true;
    if (options.exclusive && !options.create) {
      throw new TypeError("mapped file: exclusive needs create: true");
    }
    if (readOnly && options.create) {
      throw new TypeError("mapped file: a read-only open cannot create the file");
    }
    const { fd, stat, created } = openRegularFile(path, {
      create: options.create,
      exclusive: options.exclusive,
      mode,
      readOnly,
      allowOtherOwner: options.allowOtherOwner,
      label: "mapped file",
    });
    const file = new MappedFile(path, fd, stat, shared, readOnly, created);
    try {
      let length = stat.size;
      if (size !== undefined && size > length) {
        if (readOnly) {
          throw new RangeError(
            `mapped file: ${path} has ${length} bytes; ${size} were asked for (read-only)`,
          );
        }
        setFileSize(fd, size, `mapped file ${path}`);
        length = size;
      }
      if (options.allocate && !readOnly && length > 0) allocate(fd, 0, length, path);
      if (created) syncParentDirectory(path);
      file.#map(length);
      return file;
    } catch (error) {
      file.#release();
      if (created) {
        try {
          unlinkPath(path);
        } catch {
          // Best effort: the error that made the open fail is the one to report.
        }
      }
      throw error;
    }
  }

  /**
   * Maps a regular file the caller opened; the mapped file takes ownership
   * of the descriptor (`close()` closes it). It is mapped at its size now.
   *
   * @param fd An open descriptor of a regular file (read-write unless `readOnly`).
   * @param options `path` (for errors and `unlink`), `shared`, `readOnly`.
   * @returns The mapped file.
   * @throws {PermissionDeniedError} When the descriptor is not a regular file.
   * @throws {IpcError} When fstat or mmap fails.
   *
   * @example Adopt a descriptor opened through FFI
   * ```ts ignore
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const fd: number = openedElsewhere(); // a regular file, O_RDWR
   * using file = MappedFile.fromFd(fd, { path: "/var/lib/app/state.bin" });
   * console.log(file.length); // the file's size
   * ```
   */
  static fromFd(
    fd: number,
    options: { path?: string; shared?: boolean; readOnly?: boolean } = {},
  ): MappedFile {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`mapped file: bad descriptor ${fd}`);
    const path = options.path ?? `fd ${fd}`;
    const stat = fstatFd(fd);
    if (stat.type !== "file") {
      throw new PermissionDeniedError(`mapped file: ${path} is a ${stat.type}, not a regular file`, {
        syscall: "fstat",
      });
    }
    const file = new MappedFile(path, fd, stat, options.shared ?? true, options.readOnly ?? false, false);
    try {
      file.#map(stat.size);
    } catch (error) {
      file.#fd = -1; // still the caller's on failure
      throw error;
    }
    return file;
  }

  /** The descriptor (for fcntl locks or fdatasync; the mapped file owns it: do not close it). */
  get fd(): number {
    this.#check();
    return this.#fd;
  }

  /** Mapped bytes: the file's size when it was last mapped (0 after close). */
  get length(): number {
    return this.#mapping?.length ?? 0;
  }

  /**
   * The mapped bytes. Take it again after `resize`/`remap`; every view from
   * before a move reads as length 0.
   *
   * @returns The view.
   * @throws {ChannelClosedError} After `close()`.
   */
  get view(): Uint8Array<ArrayBuffer> {
    this.#check();
    return this.#view;
  }

  /**
   * The `ArrayBuffer` over the mapping, for `Int32Array`s and `DataView`s.
   *
   * @returns The buffer (an empty one for an empty file).
   * @throws {ChannelClosedError} After `close()`.
   */
  get buffer(): ArrayBuffer {
    this.#check();
    return this.#view.buffer;
  }

  /**
   * The mapping's address, for FFI calls (escape hatch). It changes on
   * `resize`/`remap`, and is invalid after `close()`.
   *
   * @returns The pointer, or null while nothing is mapped (an empty file).
   * @throws {ChannelClosedError} After `close()`.
   */
  get unsafePointer(): Deno.PointerObject | null {
    this.#check();
    return this.#mapping?.pointer ?? null;
  }

  /**
   * The file's size now (fstat), which another process may have changed.
   *
   * @returns Bytes.
   * @throws {ChannelClosedError} After `close()`.
   */
  fileSize(): number {
    this.#check();
    return fstatFd(this.#fd).size;
  }

  /**
   * Flushes mapped pages to the file with msync(2) on this thread. With
   * `MS_SYNC` (the default) this blocks the event loop until the disk has
   * them: prefer {@linkcode MappedFile.flush} for that.
   *
   * @param options `async` (MS_ASYNC), `invalidate` (MS_INVALIDATE), `start`, `length`.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When msync fails (`EIO`...).
   *
   * @example Schedule a write-back
   * ```ts
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * using file = MappedFile.open(path, { create: true, size: 4096 });
   * file.view[0] = 1;
   * file.sync({ async: true });
   * file.unlink();
   * ```
   */
  sync(options: MappedFileSyncOptions = {}): void {
    this.#check();
    const mapping = this.#mapping;
    if (mapping === null) return;
    const { start, length } = this.#range(options.start, options.length);
    if (length === 0) return;
    mapping.sync({ async: options.async, invalidate: options.invalidate, start, length });
  }

  /**
   * Writes mapped pages to stable storage (msync `MS_SYNC`, then fdatasync)
   * on a helper thread: the event loop keeps running.
   *
   * @param options `start`, `length`, `datasync`.
   * @returns Resolves once the data is on stable storage.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When msync or fdatasync fails (`EIO`, `ENOSPC`...): the data may not be durable.
   *
   * @example Make a change durable
   * ```ts
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * using file = MappedFile.open(path, { create: true, size: 4096 });
   * file.view[0] = 42;
   * await file.flush();
   * file.unlink();
   * ```
   */
  async flush(options: MappedFileFlushOptions = {}): Promise<void> {
    this.#check();
    const mapping = this.#mapping;
    const { start, length } = this.#range(options.start, options.length);
    const datasync = options.datasync ?? true;
    const ranges = mapping !== null && length > 0 && this.shared
      ? [{ pointer: mapping.pointer, offset: start, length }]
      : [];
    try {
      await syncRanges(ranges, datasync ? this.#fd : -1);
    } catch (error) {
      if (this.#closed) {
        throw new ChannelClosedError(`mapped file ${this.path} was closed during flush`, { cause: error });
      }
      if (error instanceof HelperErrno) {
        throw errnoError(error.errno, error.syscall, this.path, strerror(error.errno));
      }
      throw error;
    }
  }

  /**
   * Sets the file's size (ftruncate) and maps all of it. Shrinking unmaps
   * the cut part first. Other processes must `remap()` to see a larger file
   * (and must not touch a cut part: SIGBUS).
   *
   * @param size The new size in bytes.
   * @param options `allocate`: reserve the disk blocks of the grown part (posix_fallocate).
   * @throws {ChannelClosedError} After `close()`.
   * @throws {TypeError} On a read-only file.
   * @throws {RangeError} For a bad size, or one its file system does not allow (`EFBIG`).
   * @throws {IpcError} When ftruncate, posix_fallocate or mremap fails (`ENOSPC` explained).
   *
   * @example Grow a file
   * ```ts
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * using file = MappedFile.open(path, { create: true, size: 4096 });
   * file.resize(8192);
   * console.log(file.length, file.view.length); // 8192 8192
   * file.unlink();
   * ```
   */
  resize(size: number, options: { allocate?: boolean } = {}): void {
    this.#check();
    if (this.readOnly) throw new TypeError(`mapped file: ${this.path} is open read-only`);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`mapped file: size must be a non-negative integer, got ${size}`);
    }
    const before = this.length;
    if (size < before) this.#map(size);
    setFileSize(this.#fd, size, `mapped file ${this.path}`);
    if (options.allocate && size > before) allocate(this.#fd, before, size - before, this.path);
    if (size > before) this.#map(size);
  }

  /**
   * Maps the file at its current size (after another process resized it),
   * or at `length` bytes. Never maps past the end of the file.
   *
   * @param length Bytes to map (default: the file's size now, by fstat).
   * @throws {ChannelClosedError} After `close()`.
   * @throws {RangeError} When `length` is larger than the file.
   * @throws {IpcError} When mmap/mremap fails.
   *
   * @example See a file another process grew
   * ```ts
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * using a = MappedFile.open(path, { create: true, size: 4096 });
   * using b = MappedFile.open(path);
   * a.resize(65536);
   * b.remap();
   * console.log(b.length); // 65536
   * a.unlink();
   * ```
   */
  remap(length?: number): void {
    this.#check();
    const size = fstatFd(this.#fd).size;
    const wanted = length ?? size;
    if (!Number.isSafeInteger(wanted) || wanted < 0) {
      throw new RangeError(`mapped file: length must be a non-negative integer, got ${wanted}`);
    }
    if (wanted > size) {
      throw new RangeError(
        `mapped file: ${this.path} has ${size} bytes; mapping ${wanted} would reach past its end ` +
          `(touching those pages raises SIGBUS)`,
      );
    }
    this.#map(wanted);
  }

  /**
   * Waits while the 32-bit word at `offset` holds `expected`, like
   * `Atomics.wait` but across processes (a futex on the shared file
   * mapping), without blocking the event loop. Wake it with
   * {@linkcode MappedFile.notify} from any process mapping the file.
   *
   * @param offset Byte offset of the word, a multiple of 4 within the mapping.
   * @param expected The value to sleep on (compared as 32 bits).
   * @param options `signal` and `timeout` (ms).
   * @returns `"not-equal"` when the word did not hold `expected`, `"ok"` when woken (or the value
   *   changed), `"timed-out"`.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {RangeError} For an offset outside the mapping or not a multiple of 4.
   */
  async wait(offset: number, expected: number, options: MappedFileWaitOptions = {}): Promise<
    "ok" | "not-equal" | "timed-out"
  > {
    this.#check();
    this.#checkWord(offset);
    const { signal, timeout } = options;
    signal?.throwIfAborted();
    const words = new Int32Array(this.#view.buffer, offset, 1);
    if (Atomics.load(words, 0) !== (expected | 0)) return "not-equal";
    const deadline = timeout === undefined ? Infinity : performance.now() + Math.max(0, timeout);
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#waits.add(controller);
    try {
      for (let pause = 1;;) {
        const left = deadline - performance.now();
        if (left <= 0) return "timed-out";
        if (this.#closed) throw new ChannelClosedError(`mapped file ${this.path} was closed`);
        if (words.length === 0 || Atomics.load(words, 0) !== (expected | 0)) return "ok";
        const slice = Math.min(left, WAIT_SLICE_MS);
        const result = await futexWait(this.#mapping!.pointer, offset, expected, slice, controller.signal);
        if (result === "woken") return "ok";
        if (result === "busy") {
          pause = Math.min(16, pause * 2);
          await delay(Math.min(pause, left), controller.signal);
        }
      }
    } catch (error) {
      if (this.#closed && !signal?.aborted) {
        throw new ChannelClosedError(`mapped file ${this.path} was closed`, { cause: error });
      }
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#waits.delete(controller);
    }
  }

  /**
   * Wakes processes waiting on the word at `offset` (futex wake; see
   * {@linkcode MappedFile.wait}).
   *
   * @param offset Byte offset of the word, a multiple of 4 within the mapping.
   * @param count How many waiters to wake at most (default all).
   * @returns How many were woken.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {RangeError} For an offset outside the mapping or not a multiple of 4.
   */
  notify(offset: number, count = Infinity): number {
    this.#check();
    this.#checkWord(offset);
    const n = Number.isFinite(count) ? Math.max(0, Math.min(0x7fff_ffff, Math.floor(count))) : 0x7fff_ffff;
    return Math.max(0, futexWake(this.#mapping!.pointer, offset, n));
  }

  /**
   * Removes the file's name (unlink), after checking that the path still
   * names this file. The mapping stays usable until closed.
   *
   * @throws {NotFoundError} When the path no longer exists.
   * @throws {PermissionDeniedError} When the path now names another file.
   */
  unlink(): void {
    unlinkSameFile(this.path, this.#identity, "mapped file");
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Unmaps and closes the descriptor. Views read as length 0 afterwards;
   * pending `wait`s reject with `ChannelClosedError`, and so does a `flush`
   * in flight (its data may or may not have reached the disk). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Wake the helper threads while the words are still mapped.
    for (const wait of this.#waits) wait.abort(new ChannelClosedError(`mapped file ${this.path} was closed`));
    this.#release();
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #release(): void {
    const mapping = this.#mapping;
    this.#mapping = null;
    this.#view = new Uint8Array(0);
    if (this.#fd >= 0) {
      closeFd(this.#fd);
      this.#fd = -1;
    }
    mapping?.unmap();
  }

  #check(): void {
    if (this.#closed) throw new ChannelClosedError(`mapped file ${this.path} was closed`);
  }

  #checkWord(offset: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4 !== 0 || offset + 4 > this.length) {
      throw new RangeError(
        `mapped file: a word offset must be a multiple of 4 within the ${this.length}-byte mapping, got ${offset}`,
      );
    }
  }

  #range(start = 0, length?: number): { start: number; length: number } {
    const total = this.length;
    if (!Number.isSafeInteger(start) || start < 0 || start > total) {
      throw new RangeError(`mapped file: start must be from 0 to ${total}, got ${start}`);
    }
    const end = length === undefined ? total : start + length;
    if (!Number.isSafeInteger(end) || end < start) {
      throw new RangeError(`mapped file: length must be a non-negative integer, got ${length}`);
    }
    const page = pageSize();
    const from = Math.floor(start / page) * page;
    return { start: from, length: Math.min(end, total) - from };
  }

  #map(length: number): void {
    const current = this.#mapping;
    if (length === 0) {
      this.#mapping = null;
      this.#view = new Uint8Array(0);
      current?.unmap();
      return;
    }
    if (current !== null) {
      if (current.length === length) return;
      current.remap(length);
    } else {
      this.#mapping = Mapping.map(this.#fd, length, {
        shared: this.shared,
        writable: !this.readOnly,
        label: this.path,
      });
    }
    this.#view = new Uint8Array(this.#mapping!.buffer);
  }
}

/** Reserves the blocks of `length` bytes at `start`, explaining a full file system. */
function allocate(fd: number, start: number, length: number, path: string): void {
  reserveFileSpace(fd, start, length, `mapped file ${path}`, {
    where: "its file system",
    advice: "see df on its directory; free space there, or leave out allocate: true to keep the file " +
      "sparse, at the risk of SIGBUS when a write through the mapping finds the disk full",
  });
}
