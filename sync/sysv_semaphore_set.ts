/**
 * System V semaphore sets: semget(2), semop(2)/semtimedop(2), semctl(2).
 *
 * A set holds `count` counters (0 to {@linkcode SEMVMX}) that any process
 * knowing the set's key or id may change. {@linkcode SysvSemaphoreSet.op}
 * applies several changes atomically: all of them or none, waiting until
 * all can be applied. Anyone who knows `ipcs -s`, `ipcrm -s` or Python's
 * `sysv_ipc.Semaphore` will find the same objects here.
 *
 * Addresses (exactly one per {@linkcode SysvSemaphoreSet.open}):
 * - `{ key: 0x1a2b }`: a numeric key agreed on by the processes (not 0).
 * - `{ private: true }`: a new set without a key (`IPC_PRIVATE`); hand its
 *   {@linkcode SysvSemaphoreSet.id} to the other processes.
 * - `{ path, project }`: the key that ftok(3) makes of an existing path and
 *   a project id (1–255, default 1).
 * - `{ id }`: a set that exists, by the id that `ipcs` shows.
 *
 * Initialization: semget(2) creates a set with every value 0 and
 * `sem_otime` 0; setting the initial values is a second call, so another
 * process could open the set in between and see (or even change) values
 * that are about to be overwritten. ipcbus uses the classic remedy (Stevens,
 * UNIX Network Programming vol. 2): the creator makes the set with
 * `IPC_CREAT | IPC_EXCL`, sets the values with `SETALL`, then performs one
 * semop(2) that changes nothing (+1 and −1 on semaphore 0, atomically),
 * which sets `sem_otime`. A process that opens a set it did not create waits
 * until `sem_otime` is not 0 (a few µs normally; at most `initTimeout` ms,
 * sleeping 1 ms at a time, then it fails with an {@linkcode IpcError} coded
 * `ETIMEDOUT`, because the creator most likely died between the two calls).
 * A set made by a program that never operates on it stays at `sem_otime` 0:
 * open such sets with `initTimeout: 0`, which skips the check.
 *
 * Waiting: every operation is first tried without waiting (`IPC_NOWAIT`,
 * a few µs on the calling thread). Only when it would block does a helper
 * thread wait for it (`semtimedop` in short slices, see `ffi/sysv_waiter.ts`),
 * so the event loop keeps running; an `AbortSignal`, {@linkcode SysvSemaphoreSet.close}
 * and a removed set settle the wait promptly. When a wait is cancelled just
 * as its operations completed, ipcbus applies the opposite operations
 * (without waiting), so a cancelled wait changes nothing.
 *
 * Removal: System V sets are not owned by a process: they live until
 * someone calls {@linkcode SysvSemaphoreSet.remove} (IPC_RMID, `ipcrm -s`)
 * or the system restarts. `close()` and `[Symbol.dispose]` release nothing
 * in the kernel. Waits on a removed set, in this process or any other,
 * reject with {@linkcode ChannelClosedError} (errno `EIDRM`, or `EINVAL`
 * for a call made after the removal), like a channel whose peer went away.
 *
 * @example Two processes taking turns with a private set
 * ```ts
 * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
 *
 * using set = SysvSemaphoreSet.open({ private: true, count: 1, initial: [1] });
 * // A child process would open it with SysvSemaphoreSet.open({ id: set.id }).
 * await set.wait(0, { undo: true }); // take the unit (given back if we die)
 * try {
 *   console.log("in the critical section");
 * } finally {
 *   set.post(0, { undo: true });
 * }
 * set.remove();
 * ```
 *
 * @module
 */

import { HelperErrno } from "../ffi/_helper_thread.ts";
import { ChannelClosedError, errnoError, IpcError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, type Libc, libc, strerror } from "../ffi/libc.ts";
import {
  checkSysvCreate,
  checkSysvMode,
  decodeIpcPerm,
  deniedWithOwner,
  describeObject,
  findOwner,
  getSysvObject,
  IPC,
  IPC_PERM,
  type IpcPermissions,
  resolveSysvAddress,
  SEM,
  SEMBUF,
  SEMID_DS,
} from "../ffi/sysv.ts";
import { MAX_SEMAPHORE_OPERATIONS, semaphoreOperation } from "../ffi/sysv_waiter.ts";
import { napSync } from "../ffi/_delay.ts";

/** The largest value a System V semaphore can hold (`SEMVMX`). */
export const SEMVMX = 32767;

/** The most semaphores one set may have here (`sem_num` is an unsigned short; the kernel's SEMMSL may be lower). */
const MAX_COUNT = 65535;

const COUNTS: readonly bigint[] = Array.from({ length: MAX_SEMAPHORE_OPERATIONS + 1 }, (_, n) => BigInt(n));

/** One change of one semaphore, for {@linkcode SysvSemaphoreSet.op}. */
export interface SysvSemaphoreOperation {
  /** Which semaphore (0 to `count - 1`). */
  index: number;
  /**
   * The change: positive adds (never waits), negative subtracts (waits
   * until the value is at least `-delta`), 0 waits until the value is 0.
   * From `-SEMVMX` to `SEMVMX`.
   */
  delta: number;
  /**
   * `SEM_UNDO`: the kernel reverts this change when the process exits,
   * however it exits (even SIGKILL). Default false.
   */
  undo?: boolean;
  /**
   * `IPC_NOWAIT`: do not wait. A call with any `noWait` operation never
   * waits: when the operations cannot all be applied at once, none is and
   * `op` resolves to false. Default false.
   */
  noWait?: boolean;
}

/** Options of {@linkcode SysvSemaphoreSet.op}. */
export interface SysvSemaphoreOpOptions {
  /** Aborting it gives up the wait: the promise rejects with `signal.reason` and nothing is changed. */
  signal?: AbortSignal;
}

/** Options of {@linkcode SysvSemaphoreSet.wait}. */
export interface SysvSemaphoreWaitOptions extends SysvSemaphoreOpOptions {
  /** `SEM_UNDO`: give the unit back when this process exits (default false). */
  undo?: boolean;
}

/** Options of {@linkcode SysvSemaphoreSet.post} and {@linkcode SysvSemaphoreSet.tryWait}. */
export interface SysvSemaphorePostOptions {
  /** `SEM_UNDO`: revert the change when this process exits (default false). */
  undo?: boolean;
}

/**
 * Options of {@linkcode SysvSemaphoreSet.open}: exactly one of `key`,
 * `private`, `path` (with `project`) or `id`, and how to create the set.
 */
export interface SysvSemaphoreSetOptions {
  /** A numeric key (a 32-bit integer, not 0: 0 is `IPC_PRIVATE`, use `private`). */
  key?: number;
  /** Create a new set without a key (`IPC_PRIVATE`); needs `count`. */
  private?: boolean;
  /** An existing path whose ftok(3) key to use (with `project`). */
  path?: string;
  /** The ftok(3) project id, 1 to 255 (with `path`; default 1, as in `sysv-mq:` addresses). */
  project?: number;
  /** The id of an existing set (as `ipcs -s` shows it). */
  id?: number;
  /**
   * How many semaphores. Needed to create; when opening an existing set it
   * may be omitted or smaller than the set's (a larger one is a `RangeError`).
   */
  count?: number;
  /** Create the set when no set has the key (default false; `private` always creates). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the key is taken (default false). */
  exclusive?: boolean;
  /**
   * Permission bits of a new set (default `0o600`; the umask does not
   * apply). They must let the owner read and alter the set (`0o600`), or
   * the initial values cannot be set (root excepted).
   */
  mode?: number;
  /**
   * Initial values of a new set: one value for every semaphore, or an
   * array of `count` values (default 0). Ignored when the set exists.
   */
  initial?: number | readonly number[];
  /**
   * When the set existed: how long (ms) to wait for its creator to finish
   * setting the initial values (default 500; this blocks the calling thread,
   * but only while a creator is between its two calls). 0 skips the check,
   * for sets made by programs that never operate on them.
   */
  initTimeout?: number;
}

/** What IPC_STAT reports about a set ({@linkcode SysvSemaphoreSet.stat}). */
export interface SysvSemaphoreSetStat extends IpcPermissions {
  /** The key, as an unsigned 32-bit number (0 for a private set, or after IPC_RMID). */
  key: number;
  /** Number of semaphores. */
  count: number;
  /** Time of the last semop(2), or null if none yet. */
  otime: Date | null;
  /** Time of the last change by semctl(2) (creation, SETALL, IPC_SET). */
  ctime: Date;
}

/**
 * A System V semaphore set, opened in this process.
 *
 * @example A counting semaphore shared by key
 * ```ts
 * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
 *
 * const key = 0x10000000 + Math.floor(Math.random() * 0x0fffffff);
 * using slots = SysvSemaphoreSet.open({ key, count: 1, initial: 2, create: true, exclusive: true });
 * using other = SysvSemaphoreSet.open({ key }); // another process would do this
 * console.log(other.tryWait(), other.tryWait(), other.tryWait()); // true true false
 * slots.post();
 * console.log(slots.values()); // [ 1 ]
 * slots.remove();
 * ```
 */
export class SysvSemaphoreSet {
  /** The set's id (`semid`), which any process may open with `{ id }`. */
  readonly id: number;
  /** The key, as an unsigned 32-bit number (0 for a private set). */
  readonly key: number;
  /** Number of semaphores in the set. */
  readonly count: number;
  /** Whether this call of `open` created the set (and set its initial values). */
  readonly created: boolean;

  readonly #label: string;
  readonly #closer = new AbortController();
  #closed = false;
  #removed = false;
  readonly #single = new Uint8Array(SEMBUF.size);
  readonly #singleView = new DataView(this.#single.buffer);
  readonly #stat = new Uint8Array(SEMID_DS.size);
  readonly #all: Uint16Array;
  /** Looked up once: it runs on every operation. */
  readonly #semop: Libc["semop"] = libc().semop;

  private constructor(id: number, key: number, count: number, created: boolean, label: string) {
    this.id = id;
    this.key = key;
    this.count = count;
    this.created = created;
    this.#label = label;
    this.#all = new Uint16Array(count);
  }

  /**
   * Opens a semaphore set, creating it when asked.
   *
   * @param options The address (exactly one of `key`, `private`, `path` + `project`, `id`) and creation options.
   * @returns The open set.
   * @throws {TypeError} When not exactly one address is given, or an option has the wrong type.
   * @throws {RangeError} For a bad key, id, project, count, mode or initial value, or a `count`
   *   larger than the existing set's.
   * @throws {NotFoundError} When the set does not exist and `create` is not set (or the path does not exist).
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the key is taken.
   * @throws {PermissionDeniedError} When the set's mode does not let this user read and alter it
   *   (the message names its owner and mode).
   * @throws {IpcError} When the existing set was never initialized within `initTimeout` (code `ETIMEDOUT`),
   *   or another semget(2) failure (for example `ENOSPC`: too many sets).
   *
   * @example Create or open by key
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * const key = 0x10000000 + Math.floor(Math.random() * 0x0fffffff);
   * using set = SysvSemaphoreSet.open({ key, count: 3, initial: [1, 0, 0], create: true });
   * console.log(set.created, set.values()); // true [ 1, 0, 0 ]
   * set.remove();
   * ```
   */
  static open(options: SysvSemaphoreSetOptions): SysvSemaphoreSet {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("SysvSemaphoreSet.open: options must be an object");
    }
    const address = resolveSysvAddress("semaphore set", options);
    const mode = checkSysvMode("semaphore set", options.mode);
    const count = options.count;
    if (count !== undefined && (!Number.isInteger(count) || count < 1 || count > MAX_COUNT)) {
      throw new RangeError(`semaphore set: count must be an integer from 1 to ${MAX_COUNT}, got ${count}`);
    }
    const initTimeout = options.initTimeout ?? 500;
    if (typeof initTimeout !== "number" || !(initTimeout >= 0) || initTimeout > 60_000) {
      throw new RangeError(`semaphore set: initTimeout must be from 0 to 60000 ms, got ${initTimeout}`);
    }
    const creating = checkSysvCreate("semaphore set", address, options);
    if (creating && count === undefined) {
      throw new TypeError(`semaphore set: count is needed to create ${address.label}`);
    }
    const initial = initialValues(options.initial, count ?? 0);

    const { semget } = libc();
    const { id, created } = getSysvObject(
      address,
      options,
      mode,
      // Ask for read and alter permission up front, so a set we may not use
      // fails here (semget with no permission bits never checks them).
      0o600,
      (key, flags) => semget(key, count ?? 0, flags),
      (key, code) => getFailure(address.label, count ?? 0, key, code),
    );

    let set: SysvSemaphoreSet;
    try {
      const buffer = new Uint8Array(SEMID_DS.size);
      const stat = readStat(id, buffer);
      if (stat === null) throw openStatFailure(id, address.label);
      if (count !== undefined && count > stat.count) {
        throw new RangeError(
          `semaphore set ${address.label} has ${stat.count} semaphores; ${count} were asked for`,
        );
      }
      set = new SysvSemaphoreSet(id, stat.key, stat.count, created, describeObject(stat.key, id));
      if (created) set.#initialize(initial);
      else if (initTimeout > 0 && stat.otime === null) set.#awaitInitialized(initTimeout);
    } catch (error) {
      if (created) libc().semctl(id, 0, IPC.RMID, 0n);
      throw error;
    }
    return set;
  }

  /** SETALL, then one operation that changes nothing, so `sem_otime` says "initialized". */
  #initialize(initial: readonly number[]): void {
    this.setValues(initial);
    const first = initial[0];
    const ops = first < SEMVMX
      ? [{ index: 0, delta: 1 }, { index: 0, delta: -1 }]
      : [{ index: 0, delta: -1 }, { index: 0, delta: 1 }];
    this.tryOp(ops);
  }

  #awaitInitialized(timeout: number): void {
    const deadline = performance.now() + timeout;
    while (this.#rawStat().otime === null) {
      if (performance.now() >= deadline) {
        throw new IpcError(
          `semaphore set ${this.#label} exists but was never initialized (sem_otime is still 0 after ` +
            `${timeout} ms): its creator may have died before setting its values. Remove it, or open ` +
            `it with initTimeout: 0 if a program that never calls semop made it`,
          { errno: E.ETIMEDOUT, code: "ETIMEDOUT", syscall: "semctl" },
        );
      }
      napSync(1);
    }
  }

  /**
   * Applies several operations atomically: all of them at once, or none.
   * Tries without waiting first; when that would block, waits on a helper
   * thread (the event loop keeps running) unless an operation has `noWait`.
   *
   * @param operations 1 to 64 operations (`index`, `delta`, `undo`, `noWait`).
   * @param options An optional `signal` to give up waiting.
   * @returns True when applied; false when an operation has `noWait` and they could not all be applied
   *   at once (nothing was changed).
   * @throws {RangeError} For a bad index or delta, too many operations, or a value that would exceed `SEMVMX`.
   * @throws {ChannelClosedError} When the set was removed (also while waiting) or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   * @throws {unknown} `signal.reason` when the signal aborts the wait (then nothing was changed).
   *
   * @example Take two semaphores at once
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 2, initial: [1, 0] });
   * const both = set.op([{ index: 0, delta: -1 }, { index: 1, delta: -1 }]);
   * console.log(set.values()); // [ 1, 0 ]: nothing taken while one is missing
   * set.post(1);
   * console.log(await both, set.values()); // true [ 0, 0 ]
   * set.remove();
   * ```
   */
  op(operations: readonly SysvSemaphoreOperation[], options: SysvSemaphoreOpOptions = {}): Promise<boolean> {
    try {
      this.#checkOpen("semop");
      const sops = new Uint8Array(checkCount(operations) * SEMBUF.size);
      const noWait = this.#encode(operations, sops);
      options.signal?.throwIfAborted();
      if (this.#tryApply(sops)) return Promise.resolve(true);
      if (noWait) return Promise.resolve(false);
      this.#clearNoWait(sops);
      return this.#wait(sops, options.signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Applies several operations atomically if that is possible right now.
   *
   * @param operations 1 to 64 operations (`noWait` is implied).
   * @returns True when applied; false when they could not all be applied (nothing was changed).
   * @throws {RangeError} For a bad index or delta, too many operations, or a value that would exceed `SEMVMX`.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   *
   * @example Take a unit of two semaphores, or neither
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 2, initial: [1, 0] });
   * console.log(set.tryOp([{ index: 0, delta: -1 }, { index: 1, delta: -1 }])); // false
   * set.remove();
   * ```
   */
  tryOp(operations: readonly SysvSemaphoreOperation[]): boolean {
    this.#checkOpen("semop");
    const sops = new Uint8Array(checkCount(operations) * SEMBUF.size);
    this.#encode(operations, sops);
    return this.#tryApply(sops);
  }

  /**
   * Takes one unit of a semaphore, waiting (without blocking the event
   * loop) until its value is at least 1.
   *
   * @param index Which semaphore (default 0).
   * @param options `signal` to give up waiting, `undo` to give the unit back when this process exits.
   * @returns Resolves when the unit is taken.
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed (also while waiting) or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   * @throws {unknown} `signal.reason` when the signal aborts the wait (then nothing was taken).
   *
   * @example Wait with a timeout
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * try {
   *   await set.wait(0, { signal: AbortSignal.timeout(10) });
   * } catch (error) {
   *   console.log((error as Error).name); // "TimeoutError"
   * }
   * set.remove();
   * ```
   */
  async wait(index = 0, options: SysvSemaphoreWaitOptions = {}): Promise<void> {
    this.#checkOpen("semop");
    this.#encodeOne(index, -1, options.undo);
    options.signal?.throwIfAborted();
    if (this.#tryApply(this.#single)) return;
    const sops = this.#single.slice();
    this.#clearNoWait(sops);
    await this.#wait(sops, options.signal);
  }

  /**
   * Takes one unit of a semaphore if its value is at least 1 now.
   *
   * @param index Which semaphore (default 0).
   * @param options `undo` to give the unit back when this process exits.
   * @returns True when taken, false when the value was 0.
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   *
   * @example Try to take a unit
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1, initial: 1 });
   * console.log(set.tryWait(), set.tryWait()); // true false
   * set.remove();
   * ```
   */
  tryWait(index = 0, options: SysvSemaphorePostOptions = {}): boolean {
    this.#checkOpen("semop");
    this.#encodeOne(index, -1, options.undo);
    return this.#tryApply(this.#single);
  }

  /**
   * Adds one unit to a semaphore (never waits), waking a waiter.
   *
   * @param index Which semaphore (default 0).
   * @param options `undo` to take the unit away again when this process exits.
   * @throws {RangeError} For a bad index, or when the value is already `SEMVMX`.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   *
   * @example Release a unit
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * set.post();
   * console.log(set.value(0)); // 1
   * set.remove();
   * ```
   */
  post(index = 0, options: SysvSemaphorePostOptions = {}): void {
    this.#checkOpen("semop");
    this.#encodeOne(index, 1, options.undo);
    if (!this.#tryApply(this.#single)) {
      // A positive change never blocks; EAGAIN here is not possible.
      throw new IpcError(`semop on semaphore set ${this.#label} would block on a post`, { syscall: "semop" });
    }
  }

  /**
   * The current value of one semaphore (GETVAL).
   *
   * @param index Which semaphore.
   * @returns Its value, 0 to `SEMVMX`.
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Read one value
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 2, initial: [4, 5] });
   * console.log(set.value(1)); // 5
   * set.remove();
   * ```
   */
  value(index: number): number {
    return this.#control(index, SEM.GETVAL, "GETVAL");
  }

  /**
   * The values of every semaphore (GETALL), read atomically.
   *
   * @returns `count` values.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Read every value
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 3, initial: [1, 2, 3] });
   * console.log(set.values()); // [ 1, 2, 3 ]
   * set.remove();
   * ```
   */
  values(): number[] {
    this.#checkOpen("semctl");
    const all = this.#all;
    if (libc().semctl_buffer(this.id, 0, SEM.GETALL, new Uint8Array(all.buffer)) < 0) {
      throw this.#failure("semctl", "GETALL");
    }
    return Array.from(all);
  }

  /**
   * Sets every value at once (SETALL). Waiters that can now proceed wake
   * up; the `undo` adjustments of every process for this set are cleared.
   *
   * @param values `count` values, each from 0 to `SEMVMX`.
   * @throws {RangeError} When there are not `count` values or one is out of range.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   *
   * @example Set every value
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 2 });
   * set.setValues([3, 4]);
   * console.log(set.values()); // [ 3, 4 ]
   * set.remove();
   * ```
   */
  setValues(values: readonly number[]): void {
    this.#checkOpen("semctl");
    if (!Array.isArray(values) || values.length !== this.count) {
      throw new RangeError(
        `semaphore set ${this.#label}: setValues needs ${this.count} values, got ${
          Array.isArray(values) ? values.length : typeof values
        }`,
      );
    }
    const all = new Uint16Array(this.count);
    values.forEach((value, index) => all[index] = checkValue(value, `value ${index}`));
    if (libc().semctl_buffer(this.id, 0, SEM.SETALL, new Uint8Array(all.buffer)) < 0) {
      throw this.#failure("semctl", "SETALL");
    }
  }

  /**
   * Sets one value (SETVAL). Waiters that can now proceed wake up; every
   * process's `undo` adjustment for this semaphore is cleared.
   *
   * @param index Which semaphore.
   * @param value From 0 to `SEMVMX`.
   * @throws {RangeError} For a bad index or value.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not alter the set.
   *
   * @example Set one value
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * set.setValue(0, 7);
   * console.log(set.value(0)); // 7
   * set.remove();
   * ```
   */
  setValue(index: number, value: number): void {
    this.#checkOpen("semctl");
    this.#checkIndex(index);
    const checked = checkValue(value, "value");
    if (libc().semctl(this.id, index, SEM.SETVAL, BigInt(checked)) < 0) {
      throw this.#failure("semctl", "SETVAL");
    }
  }

  /**
   * How many processes (threads) wait for this semaphore to grow (GETNCNT):
   * waits by this process count too while they are pending.
   *
   * @param index Which semaphore.
   * @returns The number of waiters.
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Count the waiters
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * console.log(set.waitingCount(0)); // 0
   * set.remove();
   * ```
   */
  waitingCount(index: number): number {
    return this.#control(index, SEM.GETNCNT, "GETNCNT");
  }

  /**
   * How many processes (threads) wait for this semaphore to become 0 (GETZCNT).
   *
   * @param index Which semaphore.
   * @returns The number of waiters.
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Count the waiters for zero
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * console.log(set.zeroWaitingCount(0)); // 0
   * set.remove();
   * ```
   */
  zeroWaitingCount(index: number): number {
    return this.#control(index, SEM.GETZCNT, "GETZCNT");
  }

  /**
   * The pid of the process that last operated on this semaphore (GETPID).
   *
   * @param index Which semaphore.
   * @returns The pid (0 if none yet).
   * @throws {RangeError} For a bad index.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Who operated last
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * set.post();
   * console.log(set.lastPid(0) === Deno.pid); // true
   * set.remove();
   * ```
   */
  lastPid(index: number): number {
    return this.#control(index, SEM.GETPID, "GETPID");
  }

  /**
   * What the kernel knows about the set (IPC_STAT).
   *
   * @returns Key, owner, creator, mode, count and times.
   * @throws {ChannelClosedError} When the set was removed or closed in this process.
   * @throws {PermissionDeniedError} When this user may not read the set.
   *
   * @example Owner, mode and count
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * using set = SysvSemaphoreSet.open({ private: true, count: 2, mode: 0o640 });
   * const { count, mode } = set.stat();
   * console.log(count, mode.toString(8)); // 2 "640"
   * set.remove();
   * ```
   */
  stat(): SysvSemaphoreSetStat {
    this.#checkOpen("semctl");
    return this.#rawStat();
  }

  /**
   * Removes the set from the system (IPC_RMID). Every wait on it, in this
   * process and others, rejects with {@linkcode ChannelClosedError}; later
   * calls on this object throw it too. Calling it again does nothing.
   *
   * @throws {NotFoundError} When another process removed the set first.
   * @throws {PermissionDeniedError} When this user is neither the owner, the creator, nor privileged.
   *
   * @example Remove the set
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * const set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * set.remove();
   * try {
   *   set.value(0);
   * } catch (error) {
   *   console.log((error as Error).name); // "ChannelClosedError"
   * }
   * ```
   */
  remove(): void {
    if (this.#removed) return;
    if (libc().semctl(this.id, 0, IPC.RMID, 0n) < 0) {
      const code = errno();
      if (code === E.EINVAL || code === E.EIDRM) {
        throw new NotFoundError(`semctl IPC_RMID failed: semaphore set ${this.#label} was already removed`, {
          errno: code,
          syscall: "semctl",
        });
      }
      throw this.#permissionAware(code, "semctl", "IPC_RMID");
    }
    this.#removed = true;
    this.close();
  }

  /**
   * Ends this process's use of the set: pending waits reject with
   * {@linkcode ChannelClosedError} and later calls throw it. The set itself
   * stays in the kernel (System V sets belong to no process): call
   * {@linkcode SysvSemaphoreSet.remove} to destroy it. Idempotent.
   *
   * @example Close without removing
   * ```ts
   * import { SysvSemaphoreSet } from "@ipcbus/ipcbus/sysv-semaphore-set";
   *
   * const set = SysvSemaphoreSet.open({ private: true, count: 1 });
   * const id = set.id;
   * set.close();
   * SysvSemaphoreSet.open({ id }).remove(); // still there until removed
   * ```
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort(
      this.#removed
        ? new ChannelClosedError(`semaphore set ${this.#label} was removed by this process`, {
          errno: E.EIDRM,
          syscall: "semctl",
        })
        : new ChannelClosedError(`semaphore set ${this.#label} was closed in this process`),
    );
  }

  /** Same as {@linkcode SysvSemaphoreSet.close}: releases nothing in the kernel. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---------------------------------------------------------------------------

  #checkOpen(syscall: string): void {
    if (!this.#closed) return;
    throw this.#removed
      ? new ChannelClosedError(`${syscall} failed: semaphore set ${this.#label} was removed`, {
        errno: E.EIDRM,
        syscall,
      })
      : new ChannelClosedError(`${syscall} failed: semaphore set ${this.#label} is closed in this process`, {
        syscall,
      });
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) {
      throw new RangeError(
        `semaphore set ${this.#label}: index must be an integer from 0 to ${this.count - 1}, got ${index}`,
      );
    }
  }

  #control(index: number, command: number, name: string): number {
    this.#checkOpen("semctl");
    this.#checkIndex(index);
    const result = libc().semctl(this.id, index, command, 0n);
    if (result < 0) throw this.#failure("semctl", name);
    return result;
  }

  #rawStat(): SysvSemaphoreSetStat {
    const stat = readStat(this.id, this.#stat);
    if (stat === null) throw this.#failure("semctl", "IPC_STAT");
    return stat;
  }

  #encodeOne(index: number, delta: number, undo: boolean | undefined): void {
    this.#checkIndex(index);
    const view = this.#singleView;
    view.setUint16(SEMBUF.sem_num, index, true);
    view.setInt16(SEMBUF.sem_op, delta, true);
    view.setInt16(SEMBUF.sem_flg, (undo ? SEM.UNDO : 0) | IPC.NOWAIT, true);
  }

  /** Encodes operations with IPC_NOWAIT on all; returns whether any asked for noWait. */
  #encode(operations: readonly SysvSemaphoreOperation[], sops: Uint8Array): boolean {
    const view = new DataView(sops.buffer, sops.byteOffset, sops.byteLength);
    let noWait = false;
    operations.forEach((operation, n) => {
      if (typeof operation !== "object" || operation === null) {
        throw new TypeError(`semaphore operation ${n} must be an object, got ${operation}`);
      }
      const { index, delta } = operation;
      this.#checkIndex(index);
      if (!Number.isInteger(delta) || delta < -SEMVMX || delta > SEMVMX) {
        throw new RangeError(
          `semaphore operation ${n}: delta must be an integer from ${-SEMVMX} to ${SEMVMX}, got ${delta}`,
        );
      }
      if (operation.noWait) noWait = true;
      const at = n * SEMBUF.size;
      view.setUint16(at + SEMBUF.sem_num, index, true);
      view.setInt16(at + SEMBUF.sem_op, delta, true);
      view.setInt16(at + SEMBUF.sem_flg, (operation.undo ? SEM.UNDO : 0) | IPC.NOWAIT, true);
    });
    return noWait;
  }

  #clearNoWait(sops: Uint8Array): void {
    const view = new DataView(sops.buffer, sops.byteOffset, sops.byteLength);
    for (let at = 0; at < sops.length; at += SEMBUF.size) {
      view.setInt16(at + SEMBUF.sem_flg, view.getInt16(at + SEMBUF.sem_flg, true) & ~IPC.NOWAIT, true);
    }
  }

  /** semop with IPC_NOWAIT: true when applied, false on EAGAIN. */
  #tryApply(sops: Uint8Array): boolean {
    const semop = this.#semop;
    const n = COUNTS[sops.length / SEMBUF.size];
    for (let odd = 0;;) {
      if (semop(this.id, sops, n) === 0) return true;
      const code = errno();
      if (code === E.EAGAIN) return false;
      if (code === E.EINTR) continue;
      // errno can be stale (see ffi/libc.ts): retry an unexpected error before believing it.
      if (++odd < BELIEVE_ERRNO_AFTER) continue;
      throw this.#failure("semop", "", code);
    }
  }

  async #wait(sops: Uint8Array, signal: AbortSignal | undefined): Promise<boolean> {
    const closing = this.#closer.signal;
    const combined = signal ? AbortSignal.any([signal, closing]) : closing;
    let completed: boolean;
    try {
      completed = await semaphoreOperation(this.id, sops, combined);
    } catch (error) {
      if (error instanceof HelperErrno) throw this.#failure(error.syscall, "", error.errno);
      throw error;
    }
    if (completed) return true;
    // Cancelled, but the helper applied the operations meanwhile: revert
    // them. If that cannot be done at once (a peer already took what they
    // posted), they stand, and the caller learns that they were applied.
    if (this.#revert(sops)) throw combined.reason;
    return true;
  }

  #revert(sops: Uint8Array): boolean {
    const view = new DataView(sops.buffer, sops.byteOffset, sops.byteLength);
    const opposite = new Uint8Array(sops.length);
    const out = new DataView(opposite.buffer);
    let n = 0;
    for (let at = 0; at < sops.length; at += SEMBUF.size) {
      const delta = view.getInt16(at + SEMBUF.sem_op, true);
      if (delta === 0) continue;
      const to = n++ * SEMBUF.size;
      out.setUint16(to + SEMBUF.sem_num, view.getUint16(at + SEMBUF.sem_num, true), true);
      out.setInt16(to + SEMBUF.sem_op, -delta, true);
      out.setInt16(
        to + SEMBUF.sem_flg,
        (view.getInt16(at + SEMBUF.sem_flg, true) & SEM.UNDO) | IPC.NOWAIT,
        true,
      );
    }
    if (n === 0) return true;
    try {
      return this.#tryApply(opposite.subarray(0, n * SEMBUF.size));
    } catch {
      return false;
    }
  }

  /** The error for a failed call; reads errno unless given (read it right after the call). */
  #failure(syscall: string, command: string, code: number = errno()): Error {
    if (code === E.EIDRM || (code === E.EINVAL && this.#gone())) {
      return new ChannelClosedError(
        `${syscall}${command ? ` ${command}` : ""} failed: semaphore set ${this.#label} was removed`,
        {
          errno: code,
          syscall,
        },
      );
    }
    if (code === E.ERANGE) {
      return new RangeError(
        `semaphore set ${this.#label}: a value would exceed SEMVMX (${SEMVMX}), or this process's undo ` +
          `adjustment would leave ${-SEMVMX}..${SEMVMX}`,
        { cause: errnoError(code, syscall, command, strerror(code)) },
      );
    }
    return this.#permissionAware(code, syscall, command);
  }

  #permissionAware(code: number, syscall: string, command: string): Error {
    const detail = `${command ? `${command} ` : ""}${this.#label}`;
    const error = errnoError(code, syscall, detail, strerror(code));
    if (!(error instanceof PermissionDeniedError)) return error;
    const owner = findOwner("sem", (_, id) => id === this.id);
    return owner ? deniedWithOwner(error, "semaphore set", owner) : error;
  }

  /** Whether the id no longer names a set (after an EINVAL). */
  #gone(): boolean {
    if (this.#removed) return true;
    if (libc().semctl_buffer(this.id, 0, IPC.STAT, this.#stat) === 0) return false;
    const code = errno();
    return code === E.EINVAL || code === E.EIDRM;
  }
}

// ---------------------------------------------------------------------------

function checkCount(operations: readonly SysvSemaphoreOperation[]): number {
  if (!Array.isArray(operations)) {
    throw new TypeError(`semaphore operations must be an array, got ${typeof operations}`);
  }
  if (operations.length < 1 || operations.length > MAX_SEMAPHORE_OPERATIONS) {
    throw new RangeError(
      `1 to ${MAX_SEMAPHORE_OPERATIONS} semaphore operations at once, got ${operations.length}`,
    );
  }
  return operations.length;
}

function checkValue(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > SEMVMX) {
    throw new RangeError(`semaphore ${what} must be an integer from 0 to ${SEMVMX}, got ${value}`);
  }
  return value;
}

function initialValues(initial: number | readonly number[] | undefined, count: number): number[] {
  if (initial === undefined) return new Array(count).fill(0);
  if (typeof initial === "number") return new Array(count).fill(checkValue(initial, "initial value"));
  if (!Array.isArray(initial)) {
    throw new TypeError(`semaphore set: initial must be a number or an array, got ${typeof initial}`);
  }
  if (initial.length !== count) {
    throw new RangeError(`semaphore set: initial has ${initial.length} values for ${count} semaphores`);
  }
  return initial.map((value, index) => checkValue(value, `initial value ${index}`));
}

/** The error for a failed semget(2). */
function getFailure(label: string, count: number, key: number, code: number = errno()): Error {
  if (code === E.EINVAL) {
    // An existing set with fewer semaphores, or a count beyond SEMMSL.
    const existing = key === IPC.PRIVATE ? -1 : libc().semget(key, 0, 0);
    const stat = existing < 0 ? null : readStat(existing, new Uint8Array(SEMID_DS.size));
    if (stat !== null && stat.count < count) {
      return new RangeError(
        `semaphore set ${
          describeObject(key, existing)
        } has ${stat.count} semaphores; ${count} were asked for`,
        { cause: errnoError(code, "semget", label, strerror(code)) },
      );
    }
    return new RangeError(
      `semget ${label} failed: EINVAL (the existing set has fewer than ${count} semaphores, ` +
        `or ${count} exceeds the system's limit SEMMSL, see /proc/sys/kernel/sem)`,
      { cause: errnoError(code, "semget", label, strerror(code)) },
    );
  }
  if (code === E.ENOENT) {
    return new NotFoundError(
      `semget failed: no semaphore set has ${label} (open with create: true to make one)`,
      { errno: code, syscall: "semget" },
    );
  }
  if (code === E.ENOSPC) {
    return new IpcError(
      `semget ${label} failed: ENOSPC (the system's limit on semaphore sets or semaphores is reached, ` +
        `see /proc/sys/kernel/sem)`,
      { errno: code, syscall: "semget" },
    );
  }
  const error = errnoError(code, "semget", label, strerror(code));
  if (!(error instanceof PermissionDeniedError)) return error;
  const owner = key === IPC.PRIVATE ? undefined : findOwner("sem", (k) => k === key);
  return owner ? deniedWithOwner(error, "semaphore set", owner) : error;
}

/** IPC_STAT into `buffer`; null on failure (errno is left for the caller). */
function readStat(id: number, buffer: Uint8Array): SysvSemaphoreSetStat | null {
  if (libc().semctl_buffer(id, 0, IPC.STAT, buffer) < 0) return null;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const otime = Number(view.getBigInt64(SEMID_DS.sem_otime, true));
  return {
    ...decodeIpcPerm(view),
    key: view.getUint32(IPC_PERM.key, true),
    count: Number(view.getBigUint64(SEMID_DS.sem_nsems, true)),
    otime: otime === 0 ? null : new Date(otime * 1000),
    ctime: new Date(Number(view.getBigInt64(SEMID_DS.sem_ctime, true)) * 1000),
  };
}

/** The error for a failed IPC_STAT while opening (by id, or right after semget). */
function openStatFailure(id: number, label: string): Error {
  const code = errno();
  if (code === E.EINVAL || code === E.EIDRM) {
    return new NotFoundError(`semctl IPC_STAT failed: no semaphore set has ${label}`, {
      errno: code,
      syscall: "semctl",
    });
  }
  const error = errnoError(code, "semctl", `IPC_STAT ${label}`, strerror(code));
  if (!(error instanceof PermissionDeniedError)) return error;
  const owner = findOwner("sem", (_, found) => found === id);
  return owner ? deniedWithOwner(error, "semaphore set", owner) : error;
}
