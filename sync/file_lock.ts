/**
 * fcntl(2) byte-range locks on a file: shared (read) and exclusive (write)
 * locks on any range of bytes, between processes, released by the kernel
 * when the holder dies (however it dies, SIGKILL included).
 *
 * Two kinds (`kind`):
 * - `"ofd"` (default): open file description locks (`F_OFD_SETLK`, Linux
 *   3.15+). A lock belongs to the open file description this `FileLock`
 *   opened: two `FileLock`s conflict even in one process, closing some
 *   *other* descriptor of the same file does not drop it, and it goes when
 *   this `FileLock` is closed (or the process ends).
 * - `"process"`: classic POSIX record locks (`F_SETLK`). A lock belongs to
 *   the *process*. **The pitfall**: closing *any* descriptor of the file in
 *   the process (another `FileLock`, a `Deno.open`/`Deno.readFile` of the
 *   same path, a library you call) silently drops every lock the process
 *   holds on it; and two `FileLock`s in one process never conflict (locks
 *   of one owner merge). Use it only to interoperate with programs that use
 *   `F_SETLK`/`lockf` and report the holder's pid ({@linkcode FileLock.holder}).
 *   OFD and process locks on the same file do conflict with each other.
 *
 * Waiting: {@linkcode FileLock.lock} first tries without waiting. Then, for
 * `"ofd"` locks, a helper thread waits in `F_OFD_SETLKW` on a private open
 * file description of the same file (through `/proc/self/fd`), which the
 * kernel wakes the moment the range is free; it lets go at once and this
 * thread takes the lock without waiting (retrying if another process was
 * faster). The event loop keeps running; an `AbortSignal` or `close()`
 * settles the wait at once (a cancelled helper stays blocked in the kernel
 * until the range is free, then takes and drops it at once, so a `tryLock`
 * made at that instant, here or elsewhere, may find it held; at most 16
 * such helpers; beyond that, and for
 * `"process"` locks, where a probe could not work, the wait polls with
 * `F_SETLK` every 1 to 16 ms). Where this `FileLock` already holds a lock
 * overlapping the range (an upgrade), the probe would wait for itself, so
 * the wait polls too.
 *
 * Ranges: `start` (default 0) and `length` (default 0, meaning "to the end
 * of the file, however large it grows"); they may lie beyond the end of the
 * file. Locks are advisory: they bind only processes that ask for them.
 *
 * @example Exclusive access across processes
 * ```ts
 * import { FileLock } from "@ipcbus/ipcbus/file-lock";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.lock`;
 * using lock = FileLock.open(path, { create: true });
 * {
 *   using held = await lock.lock({ signal: AbortSignal.timeout(5000) });
 *   console.log(held.shared); // false: exclusive, until the end of this block
 * }
 * lock.unlinkPath();
 * ```
 *
 * @module
 */

import { HelperErrno } from "../ffi/_helper_thread.ts";
import { ChannelClosedError, errnoError, IpcError, PermissionDeniedError } from "../errors.ts";
import { delay } from "../ffi/_delay.ts";
import { F, O } from "../ffi/constants.ts";
import { closeFd, type FileStat, fstatFd, openPath } from "../ffi/fd.ts";
import { canProbeLock, probeLock } from "../ffi/file_waiter.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, libc, strerror } from "../ffi/libc.ts";
import { fillFlock, FLOCK } from "../ffi/structs.ts";
import { openRegularFile, unlinkSameFile } from "../memory/_regular_file.ts";

/** Which kind of fcntl lock (see the module documentation). */
export type FileLockKind = "ofd" | "process";

/** Options of {@linkcode FileLock.open}. */
export interface FileLockOptions {
  /** Create the file when it does not exist (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /** Permission bits of a new file (default `0o600`; the umask does not apply). */
  mode?: number;
  /** `"ofd"` (default) or `"process"`. */
  kind?: FileLockKind;
  /** Open read-only: only shared locks can then be taken (default false). */
  readOnly?: boolean;
  /** Accept a file owned by another user (default false). */
  allowOtherOwner?: boolean;
}

/** Options of {@linkcode FileLock.fromFd}. */
export interface FileLockFdOptions {
  /** `"ofd"` (default) or `"process"`. */
  kind?: FileLockKind;
  /** What to call the file in errors (default `fd <n>`). */
  label?: string;
  /** Close the descriptor on {@linkcode FileLock.close} (default false: the caller keeps it). */
  owned?: boolean;
}

/** A byte range. */
export interface LockRange {
  /** First byte (default 0). */
  start?: number;
  /** Bytes (default 0: from `start` to the end of the file, however large it grows). */
  length?: number;
  /** A shared (read) lock instead of an exclusive (write) one (default false). */
  shared?: boolean;
}

/** Options of {@linkcode FileLock.lock}. */
export interface LockOptions extends LockRange {
  /** Aborting it gives up the wait: the promise rejects with `signal.reason` and nothing is held. */
  signal?: AbortSignal;
}

/** A lock that conflicts with a request ({@linkcode FileLock.holder}). */
export interface LockHolder {
  /** Whether the conflicting lock is shared (read) rather than exclusive. */
  shared: boolean;
  /** Its first byte. */
  start: number;
  /** Its length (0: to the end of the file and beyond). */
  length: number;
  /** The holder's process id for `"process"` locks; null for open file description locks (the kernel does not say). */
  pid: number | null;
}

/** Polling backoff bounds when no probe can wait (ms). */
const POLL_MIN_MS = 1;
const POLL_MAX_MS = 16;

/**
 * A lock this process holds; `unlock()` or `using` releases it.
 *
 * @example A shared lock on a range
 * ```ts
 * import { FileLock } from "@ipcbus/ipcbus/file-lock";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.lock`;
 * using lock = FileLock.open(path, { create: true });
 * const held = lock.tryLock({ start: 10, length: 5, shared: true });
 * console.log(held?.start, held?.length, held?.shared); // 10 5 true
 * held?.unlock();
 * lock.unlinkPath();
 * ```
 */
export class HeldLock implements Disposable {
  /** First byte. */
  readonly start: number;
  /** Bytes (0: to the end of the file and beyond). */
  readonly length: number;
  /** Whether it is a shared (read) lock. */
  readonly shared: boolean;
  readonly #owner: FileLock;
  #held = true;

  /** @internal */
  constructor(owner: FileLock, start: number, length: number, shared: boolean) {
    this.#owner = owner;
    this.start = start;
    this.length = length;
    this.shared = shared;
  }

  /** Whether this lock is still held (false after `unlock()` or the `FileLock`'s `close()`). */
  get held(): boolean {
    return this.#held && !this.#owner.closed;
  }

  /**
   * Releases the range. Idempotent; does nothing after the `FileLock` was closed.
   *
   * @throws {IpcError} When fcntl fails.
   */
  unlock(): void {
    if (!this.#held) return;
    this.#held = false;
    if (!this.#owner.closed) this.#owner.unlock({ start: this.start, length: this.length });
  }

  /** Same as `unlock()`. */
  [Symbol.dispose](): void {
    this.unlock();
  }
}

/**
 * fcntl locks on one open file.
 *
 * @example Who holds the lock?
 * ```ts
 * import { FileLock } from "@ipcbus/ipcbus/file-lock";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.lock`;
 * using a = FileLock.open(path, { create: true });
 * using b = FileLock.open(path); // another process would do this
 * using held = a.tryLock({ start: 0, length: 1 });
 * console.log(b.tryLock({ start: 0, length: 1 })); // null: a holds it
 * console.log(b.holder({ start: 0, length: 1 })); // { shared: false, start: 0, length: 1, pid: null }
 * a.unlinkPath();
 * ```
 */
export class FileLock implements Disposable {
  /** The path it was opened with (empty for {@linkcode FileLock.fromFd}). */
  readonly path: string;
  /** `"ofd"` or `"process"`. */
  readonly kind: FileLockKind;
  #fd: number;
  readonly #owned: boolean;
  readonly #label: string;
  readonly #identity: FileStat | null;
  readonly #flock = new Uint8Array(FLOCK.size);
  readonly #fcntlLock = libc().fcntl_lock;
  readonly #flockView = new DataView(this.#flock.buffer);
  readonly #setCommand: number;
  readonly #closer = new AbortController();
  /** Ranges held through this object: [start, end) with end Infinity for "to the end". */
  #held: { start: number; end: number; shared: boolean }[] = [];
  #closed = false;

  private constructor(
    fd: number,
    path: string,
    kind: FileLockKind,
    owned: boolean,
    label: string,
    identity: FileStat | null,
  ) {
    this.#fd = fd;
    this.path = path;
    this.kind = kind;
    this.#owned = owned;
    this.#label = label;
    this.#identity = identity;
    this.#setCommand = kind === "ofd" ? F.OFD_SETLK : F.SETLK;
  }

  /**
   * Opens (and with `create`, makes) a regular file to lock. The path is
   * opened with `O_NOFOLLOW` and checked with fstat: symlinks, non-regular
   * files and (unless allowed) other users' files are refused.
   *
   * @param path Absolute path.
   * @param options Creation, kind and access options.
   * @returns The lock object; it holds nothing yet.
   * @throws {TypeError} For a relative path or a bad `kind`.
   * @throws {RangeError} For a bad `mode`.
   * @throws {NotFoundError} When the file does not exist and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
   * @throws {PermissionDeniedError} For a symlink, a FIFO, another user's file, or no access.
   *
   * @example Process locks, to interoperate with lockf(3) users
   * ```ts
   * import { FileLock } from "@ipcbus/ipcbus/file-lock";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.lock`;
   * using lock = FileLock.open(path, { create: true, kind: "process" });
   * console.log(lock.kind, lock.tryLock() !== null); // "process" true
   * lock.unlinkPath();
   * ```
   */
  static open(path: string, options: FileLockOptions = {}): FileLock {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("file lock: options must be an object");
    }
    const kind = checkKind(options.kind);
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`file lock: mode must be permission bits from 0 to 0o777, got ${mode}`);
    }
    if (options.exclusive && !options.create) throw new TypeError("file lock: exclusive needs create: true");
    const { fd, stat } = openRegularFile(path, {
      create: options.create,
      exclusive: options.exclusive,
      mode,
      readOnly: options.readOnly,
      allowOtherOwner: options.allowOtherOwner,
      label: "file lock",
    });
    return new FileLock(fd, path, kind, true, path, stat);
  }

  /**
   * Locks through a descriptor the caller opened (any file type fcntl
   * accepts). With `"ofd"` locks, every descriptor sharing the open file
   * description (dup(2), inheritance) shares the locks too.
   *
   * @param fd An open descriptor.
   * @param options `kind`, `label`, `owned`.
   * @returns The lock object.
   * @throws {TypeError} For a bad descriptor number or `kind`.
   *
   * @example Locking through a mapped file's descriptor
   * ```ts
   * import { FileLock } from "@ipcbus/ipcbus/file-lock";
   * import { MappedFile } from "@ipcbus/ipcbus/mapped-file";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bin`;
   * using file = MappedFile.open(path, { create: true, size: 4096 });
   * using lock = FileLock.fromFd(file.fd, { label: path });
   * console.log(lock.tryLock({ start: 0, length: 4096 }) !== null); // true
   * file.unlink();
   * ```
   */
  static fromFd(fd: number, options: FileLockFdOptions = {}): FileLock {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`file lock: bad descriptor ${fd}`);
    const kind = checkKind(options.kind);
    return new FileLock(fd, "", kind, options.owned ?? false, options.label ?? `fd ${fd}`, null);
  }

  /** The descriptor (owned by this object when it opened the path). */
  get fd(): number {
    this.#check();
    return this.#fd;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Takes a lock without waiting.
   *
   * @param range `start`, `length`, `shared`.
   * @returns The held lock, or null when another holder's lock conflicts.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {RangeError} For a bad range.
   * @throws {PermissionDeniedError} For an exclusive lock on a read-only descriptor (`EBADF`).
   * @throws {IpcError} When fcntl fails otherwise (`ENOLCK`: the system's lock table is full).
   */
  tryLock(range: LockRange = {}): HeldLock | null {
    this.#check();
    const { start, length, shared } = checkRange(range);
    if (!this.#set(shared ? F.RDLCK : F.WRLCK, start, length)) return null;
    this.#track(start, length, shared);
    return new HeldLock(this, start, length, shared);
  }

  /**
   * Takes a lock, waiting (without blocking the event loop) while another
   * holder's lock conflicts.
   *
   * @param options `start`, `length`, `shared`, `signal`.
   * @returns The held lock.
   * @throws {ChannelClosedError} When the lock object is closed, also while waiting.
   * @throws {RangeError} For a bad range.
   * @throws {PermissionDeniedError} For an exclusive lock on a read-only descriptor.
   * @throws {IpcError} When fcntl fails.
   *
   * @example Wait at most one second
   * ```ts
   * import { FileLock } from "@ipcbus/ipcbus/file-lock";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.lock`;
   * using a = FileLock.open(path, { create: true });
   * using b = FileLock.open(path);
   * const first = a.tryLock()!;
   * const second = b.lock({ signal: AbortSignal.timeout(1000) });
   * first.unlock();
   * using held = await second;
   * console.log(held.held); // true
   * a.unlinkPath();
   * ```
   */
  async lock(options: LockOptions = {}): Promise<HeldLock> {
    this.#check();
    const { start, length, shared } = checkRange(options);
    const type = shared ? F.RDLCK : F.WRLCK;
    const user = options.signal;
    user?.throwIfAborted();
    if (this.#set(type, start, length)) {
      this.#track(start, length, shared);
      return new HeldLock(this, start, length, shared);
    }
    const signal = user ? AbortSignal.any([user, this.#closer.signal]) : this.#closer.signal;
    try {
      for (let pause = 0;;) {
        let probed = false;
        if (this.kind === "ofd" && !this.#overlapsHeld(start, length) && canProbeLock()) {
          const probe = this.#openProbe(shared);
          if (probe >= 0) {
            try {
              await probeLock(probe, type, start, length, signal, () => closeFd(probe));
              probed = true;
            } catch (error) {
              if (!(error instanceof HelperErrno)) throw error;
              // ENOLCK or the like on the probe: poll instead.
            }
          }
        }
        if (!probed) {
          pause = Math.min(POLL_MAX_MS, pause * 2 || POLL_MIN_MS);
          await delay(pause, signal);
        }
        this.#check();
        if (this.#set(type, start, length)) {
          this.#track(start, length, shared);
          return new HeldLock(this, start, length, shared);
        }
      }
    } catch (error) {
      if (user?.aborted && error === user.reason) throw error;
      if (this.#closed) {
        throw new ChannelClosedError(`file lock ${this.#label} was closed while waiting`, { cause: error });
      }
      throw error;
    }
  }

  /**
   * Releases a range (held locks inside it end; a lock partly inside is
   * split, as fcntl does).
   *
   * @param range `start` and `length` (default: everything).
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When fcntl fails.
   */
  unlock(range: LockRange = {}): void {
    this.#check();
    const { start, length } = checkRange(range);
    this.#set(F.UNLCK, start, length);
    const end = length === 0 ? Infinity : start + length;
    const kept: { start: number; end: number; shared: boolean }[] = [];
    for (const held of this.#held) {
      if (held.end <= start || held.start >= end) {
        kept.push(held);
        continue;
      }
      if (held.start < start) kept.push({ start: held.start, end: start, shared: held.shared });
      if (held.end > end) kept.push({ start: end, end: held.end, shared: held.shared });
    }
    this.#held = kept;
  }

  /**
   * The first lock, held through *another* open file description (`"ofd"`)
   * or by *another* process (`"process"`), that conflicts with taking
   * `range` (`F_OFD_GETLK` / `F_GETLK`).
   *
   * @param range `start`, `length`, and `shared` (the lock you would ask for: a shared request only
   *   conflicts with exclusive locks).
   * @returns The conflicting lock, or null when the lock could be taken now.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When fcntl fails.
   */
  holder(range: LockRange = {}): LockHolder | null {
    this.#check();
    const { start, length, shared } = checkRange(range);
    this.#fill(shared ? F.RDLCK : F.WRLCK, start, length);
    const command = this.kind === "ofd" ? F.OFD_GETLK : F.GETLK;
    for (;;) {
      if (this.#fcntlLock(this.#fd, command, this.#flock) === 0) break;
      const code = errno();
      if (code !== E.EINTR) throw this.#error(code, command === F.OFD_GETLK ? "F_OFD_GETLK" : "F_GETLK");
    }
    const view = this.#flockView;
    const type = view.getInt16(FLOCK.l_type, true);
    if (type === F.UNLCK) return null;
    const pid = view.getInt32(FLOCK.l_pid, true);
    return {
      shared: type === F.RDLCK,
      start: Number(view.getBigInt64(FLOCK.l_start, true)),
      length: Number(view.getBigInt64(FLOCK.l_len, true)),
      pid: pid > 0 ? pid : null,
    };
  }

  /**
   * Removes the file's name (for lock files made with `create`), after
   * checking that the path still names this file. Locks stay until closed.
   *
   * @throws {TypeError} For a lock made with {@linkcode FileLock.fromFd}.
   * @throws {NotFoundError} When the path no longer exists.
   * @throws {PermissionDeniedError} When the path now names another file.
   */
  unlinkPath(): void {
    if (this.#identity === null) throw new TypeError("file lock: made from a descriptor, it has no path");
    unlinkSameFile(this.path, this.#identity, "file lock");
  }

  /**
   * Releases every lock held through this object and, when it opened the
   * file (or `owned` was set), closes the descriptor. Pending `lock()` calls
   * reject with `ChannelClosedError`. Idempotent. (For `"process"` locks,
   * closing the descriptor drops every lock this process holds on the file.)
   */
  close(): void {
    if (this.#closed) return;
    if (this.#held.length > 0) {
      try {
        this.#set(F.UNLCK, 0, 0);
      } catch {
        // Closing the descriptor releases them anyway.
      }
    }
    this.#closed = true;
    this.#held = [];
    this.#closer.abort(new ChannelClosedError(`file lock ${this.#label} was closed`));
    if (this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #check(): void {
    if (this.#closed) throw new ChannelClosedError(`file lock ${this.#label} was closed`);
  }

  #fill(type: number, start: number, length: number): void {
    fillFlock(this.#flock, type, start, length);
  }

  /** One F_(OFD_)SETLK; false when a conflicting lock is held elsewhere. */
  #set(type: number, start: number, length: number): boolean {
    this.#fill(type, start, length);
    const fcntl_lock = this.#fcntlLock;
    for (let odd = 0;;) {
      if (fcntl_lock(this.#fd, this.#setCommand, this.#flock) === 0) return true;
      const code = errno();
      if (code === E.EINTR) continue;
      if (code === E.EAGAIN || code === E.EACCES) return false;
      // errno may be stale after V8 work on this thread (see ffi/libc.ts): confirm odd errors.
      if (++odd < BELIEVE_ERRNO_AFTER) continue;
      throw this.#error(code, this.kind === "ofd" ? "F_OFD_SETLK" : "F_SETLK");
    }
  }

  #error(code: number, command: string): IpcError {
    if (code === E.EBADF) {
      return new PermissionDeniedError(
        `fcntl(${command}) ${this.#label} failed: EBADF (an exclusive lock needs the file open for ` +
          `writing, a shared one for reading)`,
        { errno: code, syscall: "fcntl" },
      );
    }
    if (code === E.ENOLCK) {
      return new IpcError(
        `fcntl(${command}) ${this.#label} failed: ENOLCK (the system's table of locks is full)`,
        { errno: code, syscall: "fcntl" },
      );
    }
    return errnoError(code, "fcntl", `(${command}) ${this.#label}`, strerror(code));
  }

  #track(start: number, length: number, shared: boolean): void {
    this.#held.push({ start, end: length === 0 ? Infinity : start + length, shared });
  }

  #overlapsHeld(start: number, length: number): boolean {
    const end = length === 0 ? Infinity : start + length;
    return this.#held.some((held) => held.start < end && start < held.end);
  }

  /** A private open file description of the same file, for a probe; -1 when none can be opened. */
  #openProbe(shared: boolean): number {
    const access = libc().fcntl(this.#fd, F.GETFL, 0);
    if (access < 0) return -1;
    const mode = (access & 3) === O.RDONLY ? O.RDONLY : shared ? O.RDONLY : O.RDWR;
    try {
      const fd = openPath(`/proc/self/fd/${this.#fd}`, mode | O.NONBLOCK | O.NOCTTY);
      const a = fstatFd(fd);
      const b = fstatFd(this.#fd);
      if (a.dev !== b.dev || a.ino !== b.ino) {
        closeFd(fd);
        return -1;
      }
      return fd;
    } catch {
      return -1; // no /proc, or no access: poll instead
    }
  }
}

function checkKind(kind: unknown): FileLockKind {
  if (kind === undefined) return "ofd";
  if (kind !== "ofd" && kind !== "process") {
    throw new TypeError(`file lock: kind must be "ofd" or "process", got ${String(kind)}`);
  }
  return kind;
}

function checkRange(range: LockRange): { start: number; length: number; shared: boolean } {
  const start = range.start ?? 0;
  const length = range.length ?? 0;
  if (!Number.isSafeInteger(start) || start < 0) {
    throw new RangeError(`file lock: start must be a non-negative integer, got ${start}`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`file lock: length must be a non-negative integer (0: to the end), got ${length}`);
  }
  return { start, length, shared: range.shared ?? false };
}
