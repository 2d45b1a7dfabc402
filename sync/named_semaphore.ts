/**
 * POSIX named semaphores: sem_open(3), sem_post(3), sem_wait(3) and
 * friends, sem_getvalue(3), sem_close(3), sem_unlink(3).
 *
 * A named semaphore is a counter (0 to {@linkcode SEM_VALUE_MAX}) that any
 * process knowing its name may open: `wait` takes a unit (waiting until
 * there is one), `post` adds one. Anyone who knows `sem_open` in C,
 * Python's `posix_ipc.Semaphore` or Rust's `named-semaphore` will find the
 * same objects here: a name `/jobs` is the file `/dev/shm/sem.jobs`.
 *
 * Names: a slash followed by 1 to {@linkcode MAX_SEMAPHORE_NAME} bytes
 * (glibc prefixes `sem.` and the whole file name must fit `NAME_MAX`, 255),
 * no other slash, not `/.` or `/..`; anything else is a `TypeError`.
 *
 * Waiting: {@linkcode NamedSemaphore.wait} first tries `sem_trywait` (well
 * under a µs on the calling thread). Only when the value is 0 does a helper
 * thread wait (`sem_clockwait` in short slices, see `ffi/posix_sem_waiter.ts`),
 * so the event loop keeps running; an `AbortSignal` and
 * {@linkcode NamedSemaphore.close} settle the wait promptly, and a wait
 * that gives up never takes a unit: one its helper took at the last moment
 * is posted back.
 *
 * Lifetime: a named semaphore lives in the kernel (in tmpfs) until
 * {@linkcode NamedSemaphore.unlink} removes its name and the last process
 * closes it, or the system restarts. `close()` and `[Symbol.dispose]` only
 * release this process's mapping. Waits in other processes are not
 * interrupted by an unlink (POSIX semantics): the name goes, the semaphore
 * stays for those who have it open.
 *
 * Permissions: opening needs read and write permission (the mode is
 * applied exactly, whatever the umask). Unlike System V semaphores there
 * is no undo: a process that dies holding a unit does not give it back.
 *
 * Safety: glibc maps the semaphore's file without checking its size, so a
 * file too small to be a semaphore (planted or truncated) would crash the
 * process with SIGBUS on first use. ipcbus checks the file behind the name
 * after opening it (a regular file of at least 32 bytes) and refuses
 * anything else with {@linkcode PermissionDeniedError}; it cannot protect
 * against a process with write permission truncating the file later.
 *
 * @example Two processes handing over work
 * ```ts
 * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * using jobs = NamedSemaphore.open(name, { create: true, exclusive: true });
 * // Another process: NamedSemaphore.open(name).post()
 * jobs.post();
 * await jobs.wait({ signal: AbortSignal.timeout(1000) });
 * console.log(jobs.value); // 0
 * jobs.unlink();
 * ```
 *
 * @module
 */

import { ChannelClosedError, errnoError, IpcError, PermissionDeniedError } from "../errors.ts";
import {
  backingPath,
  checkOpenOptions,
  checkPosixName,
  checkStillNamed,
  type FileIdentity,
  inspect,
  openOrCreate,
  type PosixObjectKind,
  unlinkFailure,
} from "../ffi/_posix_object.ts";
import { O } from "../ffi/constants.ts";
import { cString } from "../ffi/cstring.ts";
import { closeFd, fchmodFd, fstatFd, openPath } from "../ffi/fd.ts";
import { E, errno, type Libc, need, strerror } from "../ffi/libc.ts";
import { trySemaphore, waitSemaphore } from "../ffi/posix_sem_waiter.ts";

/** The largest value a POSIX semaphore can hold (`SEM_VALUE_MAX` on Linux). */
export const SEM_VALUE_MAX = 2147483647;

/** The longest name, in bytes after the slash (glibc adds `sem.`; a file name has at most 255 bytes). */
export const MAX_SEMAPHORE_NAME = 251;

/** `sizeof(sem_t)` on 64-bit Linux: a smaller backing file is not a semaphore. */
const SEM_T_SIZE = 32;

/** Named semaphores (sem_open(3)): `/name` is `/dev/shm/sem.name`. */
const SEMAPHORE: PosixObjectKind = {
  what: "named semaphore",
  max: MAX_SEMAPHORE_NAME,
  reason: "glibc stores /name as /dev/shm/sem.name and a file name has at most 255 bytes",
  noun: "semaphore",
  open: "sem_open",
  unlink: "sem_unlink",
  prefix: "sem.",
  object: "named semaphore",
  notA: "a semaphore",
  createHint: "open with create: true to make one",
  descriptorNote: "sem_open needs a descriptor for a moment",
  explain: (code, name) =>
    code === E.ENOSPC || code === E.ENOMEM
      ? new IpcError(
        `sem_open ${name} failed: ${code === E.ENOSPC ? "ENOSPC" : "ENOMEM"} (${strerror(code)}): ` +
          `/dev/shm (a tmpfs) is full or memory is short; see df /dev/shm`,
        { errno: code, syscall: "sem_open" },
      )
      : undefined,
};

/** Options of {@linkcode NamedSemaphore.open}. */
export interface NamedSemaphoreOptions {
  /** Create the semaphore when no semaphore has the name (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the name is taken (default false). */
  exclusive?: boolean;
  /** Value of a new semaphore, 0 to {@linkcode SEM_VALUE_MAX} (default 0). Ignored when it exists. */
  initial?: number;
  /** Permission bits of a new semaphore (default `0o600`; applied exactly, the umask does not apply). */
  mode?: number;
}

/** Options of {@linkcode NamedSemaphore.wait}. */
export interface NamedSemaphoreWaitOptions {
  /** Aborting it gives up the wait: the promise rejects with `signal.reason` and no unit is taken. */
  signal?: AbortSignal;
}

interface SemSymbols {
  open: NonNullable<Libc["sem_open"]>;
  close: NonNullable<Libc["sem_close"]>;
  unlink: NonNullable<Libc["sem_unlink"]>;
  post: NonNullable<Libc["sem_post"]>;
  getvalue: NonNullable<Libc["sem_getvalue"]>;
}

let loaded: SemSymbols | undefined;

/** The semaphore calls, looked up once (they are optional symbols: absent before glibc 2.34). */
function sem(): SemSymbols {
  return loaded ??= {
    open: need("sem_open"),
    close: need("sem_close"),
    unlink: need("sem_unlink"),
    post: need("sem_post"),
    getvalue: need("sem_getvalue"),
  };
}

/**
 * A POSIX named semaphore, opened in this process.
 *
 * @example A lock shared by name
 * ```ts
 * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * using lock = NamedSemaphore.open(name, { create: true, initial: 1 });
 * using other = NamedSemaphore.open(name); // another process would do this
 * console.log(other.tryWait(), lock.tryWait()); // true false
 * other.post();
 * console.log(lock.value); // 1
 * lock.unlink();
 * ```
 */
export class NamedSemaphore {
  /** The name, such as `"/jobs"`. */
  readonly name: string;
  /** Whether this call of `open` created the semaphore. */
  readonly created: boolean;

  readonly #cname: Uint8Array<ArrayBuffer>;
  readonly #path: string;
  readonly #identity: FileIdentity | null;
  readonly #closer = new AbortController();
  readonly #value = new Int32Array(1);
  readonly #valueBytes = new Uint8Array(this.#value.buffer);
  readonly #post = sem().post;
  #pointer: Deno.PointerObject | null;
  #closed = false;
  #unlinked = false;
  /** Waits whose helper thread may still use the pointer: sem_close waits for them. */
  #waits = 0;

  private constructor(
    name: string,
    cname: Uint8Array<ArrayBuffer>,
    pointer: Deno.PointerObject,
    created: boolean,
    identity: FileIdentity | null,
  ) {
    this.name = name;
    this.created = created;
    this.#cname = cname;
    this.#path = backingPath(name, "sem.");
    this.#pointer = pointer;
    this.#identity = identity;
  }

  /**
   * Opens a named semaphore, creating it when asked.
   *
   * @param name A slash and 1 to {@linkcode MAX_SEMAPHORE_NAME} bytes without another slash (`"/jobs"`).
   * @param options `create`, `exclusive`, `initial` value and `mode` of a new semaphore.
   * @returns The open semaphore.
   * @throws {TypeError} For a bad name, `exclusive` without `create`, or an option of the wrong type.
   * @throws {RangeError} For an `initial` value or `mode` out of range.
   * @throws {NotFoundError} When no semaphore has the name and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the name is taken.
   * @throws {PermissionDeniedError} When this user may not read and write the semaphore (the message
   *   names its owner and mode), or the name refers to something that is not a semaphore.
   * @throws {IpcError} For other sem_open(3) failures (`EMFILE`, `ENOSPC`, `ENOMEM`), each explained.
   *
   * @example Create, then open the same semaphore again
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using first = NamedSemaphore.open(name, { create: true, initial: 3 });
   * using second = NamedSemaphore.open(name, { create: true, initial: 9 });
   * console.log(first.created, second.created, second.value); // true false 3
   * first.unlink();
   * ```
   */
  static open(name: string, options: NamedSemaphoreOptions = {}): NamedSemaphore {
    const { create, exclusive, mode } = checkOpenOptions(SEMAPHORE, name, options, "NamedSemaphore.open");
    const initial = options.initial ?? 0;
    if (!Number.isInteger(initial) || initial < 0 || initial > SEM_VALUE_MAX) {
      throw new RangeError(
        `named semaphore ${name}: initial must be an integer from 0 to SEM_VALUE_MAX (${SEM_VALUE_MAX}), ` +
          `got ${initial}`,
      );
    }

    const { open, close } = sem();
    const cname = cString(name, "named semaphore name");
    const path = backingPath(name, "sem.");
    const { handle: pointer, created } = openOrCreate(
      SEMAPHORE,
      name,
      { create, exclusive },
      (creating) => creating ? open(cname, O.CREAT | O.EXCL, mode, initial) : open(cname, 0, 0, 0),
    );

    let identity: FileIdentity | null = null;
    try {
      const stat = inspect(path);
      if (stat !== null) {
        if (stat.type !== "file" || stat.size < SEM_T_SIZE) {
          throw new PermissionDeniedError(
            `sem_open ${name}: ${path} is ${
              stat.type === "file" ? `a file of ${stat.size} bytes` : `a ${stat.type}`
            }, not a semaphore (a sem_t has ${SEM_T_SIZE} bytes); refusing to use it`,
            { syscall: "sem_open" },
          );
        }
        identity = { dev: stat.dev, ino: stat.ino };
        if (created && stat.permissions !== mode) setMode(path, identity, mode);
      }
    } catch (error) {
      close(pointer);
      if (created) sem().unlink(cname);
      throw error;
    }
    return new NamedSemaphore(name, cname, pointer, created, identity);
  }

  /**
   * Removes a name without opening it (sem_unlink(3)): processes that have
   * the semaphore open keep using it; the name can be created anew.
   *
   * @param name The name.
   * @throws {TypeError} For a bad name.
   * @throws {NotFoundError} When no semaphore has the name.
   * @throws {PermissionDeniedError} When this user may not remove it (the message names its owner).
   *
   * @example Remove a semaphore left behind
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * NamedSemaphore.open(name, { create: true }).close();
   * NamedSemaphore.unlink(name);
   * ```
   */
  static unlink(name: string): void {
    checkPosixName(name, SEMAPHORE);
    const cname = cString(name, "named semaphore name");
    if (sem().unlink(cname) !== 0) throw unlinkFailure(SEMAPHORE, errno(), name);
  }

  /**
   * Takes one unit, waiting (without blocking the event loop) until the
   * value is at least 1.
   *
   * @param options `signal` to give up waiting.
   * @returns Resolves when the unit is taken.
   * @throws {ChannelClosedError} When the semaphore is (or gets) closed in this process.
   * @throws {unknown} `signal.reason` when the signal aborts the wait (then nothing was taken).
   * @throws {IpcError} When sem_wait fails otherwise (it does not for a valid semaphore).
   *
   * @example Wait with a timeout
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using semaphore = NamedSemaphore.open(name, { create: true });
   * try {
   *   await semaphore.wait({ signal: AbortSignal.timeout(10) });
   * } catch (error) {
   *   console.log((error as Error).name); // "TimeoutError"
   * }
   * semaphore.unlink();
   * ```
   */
  wait(options: NamedSemaphoreWaitOptions = {}): Promise<void> {
    try {
      const pointer = this.#open("sem_wait");
      options.signal?.throwIfAborted();
      if (trySemaphore(pointer, this.name)) return Promise.resolve();
      return this.#slowWait(pointer, options.signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Takes one unit if the value is at least 1 now (sem_trywait(3)).
   *
   * @returns True when taken, false when the value was 0.
   * @throws {ChannelClosedError} When the semaphore is closed in this process.
   *
   * @example Try to take a unit
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using semaphore = NamedSemaphore.open(name, { create: true, initial: 1 });
   * console.log(semaphore.tryWait(), semaphore.tryWait()); // true false
   * semaphore.unlink();
   * ```
   */
  tryWait(): boolean {
    return trySemaphore(this.#open("sem_trywait"), this.name);
  }

  /**
   * Adds one unit (sem_post(3), never waits), waking a waiter.
   *
   * @throws {ChannelClosedError} When the semaphore is closed in this process.
   * @throws {RangeError} When the value is already {@linkcode SEM_VALUE_MAX} (`EOVERFLOW`; nothing changed).
   *
   * @example Release a unit
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using semaphore = NamedSemaphore.open(name, { create: true });
   * semaphore.post();
   * console.log(semaphore.value); // 1
   * semaphore.unlink();
   * ```
   */
  post(): void {
    const pointer = this.#open("sem_post");
    if (this.#post(pointer) === 0) return;
    const code = errno();
    if (code === E.EOVERFLOW) {
      throw new RangeError(
        `sem_post ${this.name} failed: the value is already SEM_VALUE_MAX (${SEM_VALUE_MAX})`,
        { cause: errnoError(code, "sem_post", this.name, strerror(code)) },
      );
    }
    throw errnoError(code, "sem_post", this.name, strerror(code));
  }

  /**
   * The current value (sem_getvalue(3)): a snapshot that other processes
   * may change at any time.
   *
   * @returns 0 to {@linkcode SEM_VALUE_MAX}.
   * @throws {ChannelClosedError} When the semaphore is closed in this process.
   *
   * @example Read the value
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using semaphore = NamedSemaphore.open(name, { create: true, initial: 2 });
   * console.log(semaphore.value); // 2
   * semaphore.unlink();
   * ```
   */
  get value(): number {
    const pointer = this.#open("sem_getvalue");
    if (sem().getvalue(pointer, this.#valueBytes) !== 0) {
      const code = errno();
      throw errnoError(code, "sem_getvalue", this.name, strerror(code));
    }
    return this.#value[0];
  }

  /** Whether {@linkcode NamedSemaphore.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Removes the name (sem_unlink(3)). This object, and every process that
   * has the semaphore open, keeps using it; new opens by name fail (or
   * create a new semaphore). Works after `close()`. Calling it again does
   * nothing. When the name meanwhile refers to another semaphore (ours was
   * unlinked and the name created anew), that one is left alone.
   *
   * @throws {NotFoundError} When the name is gone, or now refers to another semaphore.
   * @throws {PermissionDeniedError} When this user may not remove it (the message names its owner).
   *
   * @example Unlink while open
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using semaphore = NamedSemaphore.open(name, { create: true });
   * semaphore.unlink();
   * semaphore.post(); // still usable
   * console.log(semaphore.value); // 1
   * ```
   */
  unlink(): void {
    if (this.#unlinked) return;
    if (this.#identity !== null) {
      checkStillNamed("sem_unlink", this.name, this.#path, this.#identity, "another semaphore");
    }
    if (sem().unlink(this.#cname) !== 0) throw unlinkFailure(SEMAPHORE, errno(), this.name);
    this.#unlinked = true;
  }

  /**
   * Ends this process's use of the semaphore: pending waits reject with
   * {@linkcode ChannelClosedError} (within one helper slice) and later calls
   * throw it. The semaphore is released with sem_close(3) once no helper
   * thread uses it any more. The semaphore itself stays until unlinked.
   * Idempotent.
   *
   * @example Close settles a pending wait
   * ```ts
   * import { NamedSemaphore } from "@ipcbus/ipcbus/named-semaphore";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * const semaphore = NamedSemaphore.open(name, { create: true });
   * const pending = semaphore.wait().catch((error) => error.name);
   * semaphore.close();
   * console.log(await pending); // "ChannelClosedError"
   * NamedSemaphore.unlink(name);
   * ```
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort(new ChannelClosedError(`named semaphore ${this.name} was closed in this process`));
    if (this.#waits === 0) this.#release();
  }

  /** Same as {@linkcode NamedSemaphore.close}: never unlinks. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---------------------------------------------------------------------------

  #open(syscall: string): Deno.PointerObject {
    if (this.#closed) {
      throw new ChannelClosedError(
        `${syscall} failed: named semaphore ${this.name} is closed in this process`,
        {
          syscall,
        },
      );
    }
    return this.#pointer!;
  }

  async #slowWait(pointer: Deno.PointerObject, signal: AbortSignal | undefined): Promise<void> {
    const closing = this.#closer.signal;
    const combined = signal ? AbortSignal.any([signal, closing]) : closing;
    this.#waits++;
    try {
      await waitSemaphore(pointer, combined, this.name);
    } finally {
      if (--this.#waits === 0 && this.#closed) this.#release();
    }
  }

  #release(): void {
    const pointer = this.#pointer;
    if (pointer === null) return;
    this.#pointer = null;
    sem().close(pointer);
  }
}

// ---------------------------------------------------------------------------

/** Gives a semaphore this process just created exactly `mode` (glibc's creation applies the umask). */
function setMode(path: string, identity: FileIdentity, mode: number): void {
  const fd = openPath(path, O.RDONLY | O.NOFOLLOW);
  try {
    const stat = fstatFd(fd);
    if (stat.dev !== identity.dev || stat.ino !== identity.ino) {
      throw new PermissionDeniedError(`sem_open: ${path} was replaced by another file after it was created`, {
        syscall: "fstat",
      });
    }
    fchmodFd(fd, mode);
  } finally {
    closeFd(fd);
  }
}
