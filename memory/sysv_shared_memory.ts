/**
 * System V shared memory segments: shmget(2), shmat(2), shmdt(2), shmctl(2).
 *
 * A segment is memory that any process knowing its key or id may attach;
 * {@linkcode SysvSharedMemory.view} is a `Uint8Array` over this process's
 * attachment, so a write by one process is seen by every other at once
 * (coordinate with a semaphore, for example a `SysvSemaphoreSet`). Anyone
 * who knows `ipcs -m`, `ipcrm -m` or Python's `sysv_ipc.SharedMemory` will
 * find the same objects here.
 *
 * Addresses (exactly one per {@linkcode SysvSharedMemory.open}):
 * - `{ key: 0x1a2b }`: a numeric key agreed on by the processes (not 0).
 * - `{ private: true }`: a new segment without a key (`IPC_PRIVATE`); hand
 *   its {@linkcode SysvSharedMemory.id} to the other processes.
 * - `{ path, project }`: the ftok(3) key of an existing path and a project
 *   id (1–255, default 1).
 * - `{ id }`: a segment that exists, by the id that `ipcs -m` shows.
 *
 * Sizes: the kernel keeps the size asked for at creation (`shm_segsz`,
 * {@linkcode SysvSharedMemory.size}, the length of the view) and maps whole
 * pages ({@linkcode SysvSharedMemory.mappedSize}, `size` rounded up to the
 * page size). A new segment is filled with zeros.
 *
 * Lifetime: a segment belongs to no process. {@linkcode SysvSharedMemory.detach}
 * (and `[Symbol.dispose]`) ends this process's attachment;
 * {@linkcode SysvSharedMemory.remove} (IPC_RMID, `ipcrm -m`) marks the segment
 * for destruction, which the kernel carries out when the last process
 * detaches (processes detach when they exit, however they exit). Until then
 * the attached processes keep using it, but no one can open it by key any more.
 *
 * Memory safety: the view points straight at the mapping. ipcbus detaches
 * only through `detach()`, which first neuters the view's `ArrayBuffer`
 * (every `Uint8Array`, `DataView` or `subarray` made over it then has
 * length 0, so stale references read `undefined` instead of crashing), and
 * after which `view` throws. Never copy the memory's address elsewhere
 * (through FFI) and use it after `detach()`. With `readOnly: true` the
 * mapping is read-only: **writing through the view kills the process with
 * SIGSEGV** (JavaScript cannot make a typed array read-only).
 *
 * @example Share bytes with another process
 * ```ts
 * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
 *
 * using shm = SysvSharedMemory.open({ private: true, size: 100 });
 * // Another process: SysvSharedMemory.open({ id: shm.id })
 * shm.view.set(new TextEncoder().encode("hello"));
 * console.log(shm.size, shm.mappedSize, shm.stat().nattch); // 100 4096 1
 * shm.remove(); // destroyed when the last process detaches
 * ```
 *
 * @module
 */

import { ChannelClosedError, errnoError, IpcError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { E, errno, libc, strerror } from "../ffi/libc.ts";
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
  pageSize,
  resolveSysvAddress,
  SHM,
  SHMID_DS,
} from "../ffi/sysv.ts";

/** What shmat(2) returns on failure: `(void *) -1`. */
const SHMAT_FAILED = 0xffff_ffff_ffff_ffffn;

/**
 * Options of {@linkcode SysvSharedMemory.open}: exactly one of `key`,
 * `private`, `path` (with `project`) or `id`, and how to create the segment.
 */
export interface SysvSharedMemoryOptions {
  /** A numeric key (a 32-bit integer, not 0: 0 is `IPC_PRIVATE`, use `private`). */
  key?: number;
  /** Create a new segment without a key (`IPC_PRIVATE`); needs `size`. */
  private?: boolean;
  /** An existing path whose ftok(3) key to use (with `project`). */
  path?: string;
  /** The ftok(3) project id, 1 to 255 (with `path`; default 1, as in `sysv-mq:` addresses). */
  project?: number;
  /** The id of an existing segment (as `ipcs -m` shows it). */
  id?: number;
  /**
   * Size in bytes. Needed to create (at least 1; the kernel maps whole
   * pages). When opening an existing segment it may be omitted or smaller
   * than the segment; a larger one is a `RangeError`.
   */
  size?: number;
  /** Create the segment when no segment has the key (default false; `private` always creates). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the key is taken (default false). */
  exclusive?: boolean;
  /** Permission bits of a new segment (default `0o600`; the umask does not apply). */
  mode?: number;
  /**
   * Attach read-only (`SHM_RDONLY`): needs only read permission. Writing
   * through the view then kills the process (SIGSEGV). Default false.
   */
  readOnly?: boolean;
}

/** What IPC_STAT reports about a segment ({@linkcode SysvSharedMemory.stat}). */
export interface SysvSharedMemoryStat extends IpcPermissions {
  /** The key, as an unsigned 32-bit number (0 for a private segment, or once removed). */
  key: number;
  /** Size in bytes as created (`shm_segsz`; not rounded to pages). */
  size: number;
  /** How many attachments exist, over all processes. */
  nattch: number;
  /** Pid of the creator. */
  cpid: number;
  /** Pid of the last process that attached or detached. */
  lpid: number;
  /** Time of the last attach, or null if none. */
  atime: Date | null;
  /** Time of the last detach, or null if none. */
  dtime: Date | null;
  /** Time of the last change (creation, IPC_SET, IPC_RMID). */
  ctime: Date;
  /** Whether IPC_RMID was called: destroyed when `nattch` reaches 0 (`SHM_DEST`). */
  removed: boolean;
}

/**
 * A System V shared memory segment, attached in this process.
 *
 * @example Open by key in two places
 * ```ts
 * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
 *
 * const key = 0x10000000 + Math.floor(Math.random() * 0x0fffffff);
 * using writer = SysvSharedMemory.open({ key, size: 64, create: true, exclusive: true });
 * using reader = SysvSharedMemory.open({ key, readOnly: true }); // another process would do this
 * writer.view[0] = 42;
 * console.log(reader.view[0], reader.stat().nattch); // 42 2
 * writer.remove();
 * ```
 */
export class SysvSharedMemory {
  /** The segment's id (`shmid`), which any process may open with `{ id }`. */
  readonly id: number;
  /** The key, as an unsigned 32-bit number (0 for a private segment). */
  readonly key: number;
  /** The segment's size in bytes (`shm_segsz`): the length of {@linkcode SysvSharedMemory.view}. */
  readonly size: number;
  /** The size of the mapping: `size` rounded up to whole pages. */
  readonly mappedSize: number;
  /** Whether this call of `open` created the segment. */
  readonly created: boolean;
  /** Whether the segment is attached read-only. */
  readonly readOnly: boolean;

  readonly #label: string;
  #pointer: Deno.PointerObject | null;
  #buffer: ArrayBuffer | null;
  #view: Uint8Array | null;
  #removed = false;
  readonly #stat = new Uint8Array(SHMID_DS.size);

  private constructor(
    id: number,
    key: number,
    size: number,
    created: boolean,
    readOnly: boolean,
    pointer: Deno.PointerObject,
  ) {
    this.id = id;
    this.key = key;
    this.size = size;
    const page = pageSize();
    this.mappedSize = Math.ceil(size / page) * page;
    this.created = created;
    this.readOnly = readOnly;
    this.#label = describeObject(key, id);
    this.#pointer = pointer;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, size);
    this.#view = new Uint8Array(this.#buffer);
  }

  /**
   * Opens (and with `create`, makes) a segment and attaches it.
   *
   * @param options The address (exactly one of `key`, `private`, `path` + `project`, `id`), size and
   *   creation options.
   * @returns The attached segment.
   * @throws {TypeError} When not exactly one address is given, or an option has the wrong type.
   * @throws {RangeError} For a bad key, id, project, size or mode, or a `size` larger than the existing
   *   segment's.
   * @throws {NotFoundError} When the segment does not exist and `create` is not set (or the path does not
   *   exist, or a segment opened by id was removed).
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the key is taken.
   * @throws {PermissionDeniedError} When the segment's mode does not allow this user to read (and,
   *   without `readOnly`, write) it; the message names its owner and mode.
   * @throws {IpcError} For other shmget(2)/shmat(2) failures (for example `ENOSPC`, `ENOMEM`).
   *
   * @example Create a segment
   * ```ts
   * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
   *
   * using shm = SysvSharedMemory.open({ private: true, size: 10_000 });
   * console.log(shm.size, shm.mappedSize); // 10000 12288 (with 4 KiB pages)
   * shm.remove();
   * ```
   */
  static open(options: SysvSharedMemoryOptions): SysvSharedMemory {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("SysvSharedMemory.open: options must be an object");
    }
    const address = resolveSysvAddress("shared memory", options);
    const mode = checkSysvMode("shared memory", options.mode);
    const size = options.size;
    if (size !== undefined && (!Number.isSafeInteger(size) || size < 1)) {
      throw new RangeError(`shared memory: size must be a positive integer, got ${size}`);
    }
    const readOnly = options.readOnly ?? false;
    if (typeof readOnly !== "boolean") throw new TypeError("shared memory: readOnly must be a boolean");
    const creating = checkSysvCreate("shared memory", address, options);
    if (creating && size === undefined) {
      throw new TypeError(`shared memory: size is needed to create ${address.label}`);
    }

    const { shmget } = libc();
    const asked = BigInt(size ?? 0);
    const { id, created } = getSysvObject(
      address,
      options,
      mode,
      readOnly ? 0o400 : 0o600, // ask for the access we need, so a segment we may not use fails here
      (key, flags) => shmget(key, asked, flags),
      (key, code) => getFailure(address.label, key, size ?? 0, code),
    );

    try {
      const pointer = libc().shmat(id, null, readOnly ? SHM.RDONLY : 0);
      if (pointer === null || BigInt(Deno.UnsafePointer.value(pointer)) === SHMAT_FAILED) {
        throw attachFailure(id, address.label);
      }
      const stat = readStat(id, new Uint8Array(SHMID_DS.size));
      if (stat === null) {
        const error = errnoError(errno(), "shmctl", `IPC_STAT ${address.label}`);
        libc().shmdt(pointer);
        throw error;
      }
      if (size !== undefined && size > stat.size) {
        libc().shmdt(pointer);
        throw new RangeError(
          `shared memory ${describeObject(stat.key, id)} has ${stat.size} bytes; ${size} were asked for`,
        );
      }
      return new SysvSharedMemory(id, stat.key, stat.size, created, readOnly, pointer);
    } catch (error) {
      if (created) libc().shmctl(id, IPC.RMID, null);
      throw error;
    }
  }

  /**
   * The attached memory: `size` bytes, shared with every process that
   * attached the segment. Get it once and keep it while attached; after
   * {@linkcode SysvSharedMemory.detach} every view made from it has length 0.
   *
   * @returns The view.
   * @throws {ChannelClosedError} After `detach()`.
   *
   * @example Atomics over the shared bytes
   * ```ts
   * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
   *
   * using shm = SysvSharedMemory.open({ private: true, size: 16 });
   * const counters = new Int32Array(shm.view.buffer, shm.view.byteOffset, 4);
   * Atomics.add(counters, 0, 1);
   * console.log(counters[0]); // 1
   * shm.remove();
   * ```
   */
  get view(): Uint8Array {
    if (this.#view === null) {
      throw new ChannelClosedError(`shared memory ${this.#label} is detached from this process`);
    }
    return this.#view;
  }

  /** Whether this process still has the segment attached through this object. */
  get attached(): boolean {
    return this.#view !== null;
  }

  /**
   * Detaches the segment from this process (shmdt). Views over it become
   * empty (length 0) and {@linkcode SysvSharedMemory.view} throws. The
   * segment itself stays until removed; a removed segment is destroyed when
   * its last attachment goes. Idempotent.
   *
   * @throws {IpcError} When shmdt(2) fails (it cannot for an address from shmat).
   *
   * @example Stale views become empty
   * ```ts
   * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
   *
   * const shm = SysvSharedMemory.open({ private: true, size: 16 });
   * const view = shm.view;
   * shm.detach();
   * console.log(view.length, shm.attached); // 0 false
   * shm.remove();
   * ```
   */
  detach(): void {
    const pointer = this.#pointer;
    if (pointer === null) return;
    this.#pointer = null;
    this.#view = null;
    const buffer = this.#buffer!;
    this.#buffer = null;
    try {
      // Detach the ArrayBuffer: stale views over it become empty instead of
      // pointing at unmapped memory.
      buffer.transfer(0);
    } catch {
      // Not detachable in this runtime: stale references stay dangerous (see the module docs).
    }
    if (libc().shmdt(pointer) < 0) throw errnoError(errno(), "shmdt", this.#label);
  }

  /**
   * Marks the segment for removal (IPC_RMID): it is destroyed when the last
   * process detaches. Until then attached processes keep using it, but it
   * can no longer be opened by key. Calling it again does nothing.
   *
   * @throws {NotFoundError} When the segment no longer exists.
   * @throws {PermissionDeniedError} When this user is neither the owner, the creator, nor privileged.
   *
   * @example Remove while attached
   * ```ts
   * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
   *
   * using shm = SysvSharedMemory.open({ private: true, size: 16 });
   * shm.remove();
   * shm.view[0] = 1; // still attached: still usable
   * console.log(shm.stat().removed); // true
   * ```
   */
  remove(): void {
    if (this.#removed) return;
    if (libc().shmctl(this.id, IPC.RMID, null) < 0) {
      const code = errno();
      if (code === E.EINVAL || code === E.EIDRM) {
        throw new NotFoundError(`shmctl IPC_RMID failed: shared memory ${this.#label} no longer exists`, {
          errno: code,
          syscall: "shmctl",
        });
      }
      throw permissionAware(code, "shmctl", `IPC_RMID ${this.#label}`, (_, id) => id === this.id);
    }
    this.#removed = true;
  }

  /**
   * What the kernel knows about the segment (IPC_STAT). Works after
   * `detach()` as long as the segment exists.
   *
   * @returns Key, owner, mode, size, attachments, pids and times.
   * @throws {ChannelClosedError} When the segment was destroyed.
   * @throws {PermissionDeniedError} When this user may not read the segment.
   *
   * @example Attachments and creator
   * ```ts
   * import { SysvSharedMemory } from "@ipcbus/ipcbus/sysv-shared-memory";
   *
   * using shm = SysvSharedMemory.open({ private: true, size: 16 });
   * const { nattch, cpid, size } = shm.stat();
   * console.log(nattch, cpid === Deno.pid, size); // 1 true 16
   * shm.remove();
   * ```
   */
  stat(): SysvSharedMemoryStat {
    const stat = readStat(this.id, this.#stat);
    if (stat !== null) return stat;
    const code = errno();
    if (code === E.EINVAL || code === E.EIDRM) {
      throw new ChannelClosedError(`shmctl IPC_STAT failed: shared memory ${this.#label} was destroyed`, {
        errno: code,
        syscall: "shmctl",
      });
    }
    throw permissionAware(code, "shmctl", `IPC_STAT ${this.#label}`, (_, id) => id === this.id);
  }

  /** Same as {@linkcode SysvSharedMemory.detach}: the segment stays until removed. */
  [Symbol.dispose](): void {
    this.detach();
  }
}

// ---------------------------------------------------------------------------

/** IPC_STAT into `buffer`; null on failure (errno is left for the caller). */
function readStat(id: number, buffer: Uint8Array): SysvSharedMemoryStat | null {
  if (libc().shmctl(id, IPC.STAT, buffer) < 0) return null;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const time = (offset: number) => {
    const seconds = Number(view.getBigInt64(offset, true));
    return seconds === 0 ? null : new Date(seconds * 1000);
  };
  return {
    ...decodeIpcPerm(view),
    key: view.getUint32(IPC_PERM.key, true),
    size: Number(view.getBigUint64(SHMID_DS.shm_segsz, true)),
    nattch: Number(view.getBigUint64(SHMID_DS.shm_nattch, true)),
    cpid: view.getInt32(SHMID_DS.shm_cpid, true),
    lpid: view.getInt32(SHMID_DS.shm_lpid, true),
    atime: time(SHMID_DS.shm_atime),
    dtime: time(SHMID_DS.shm_dtime),
    ctime: time(SHMID_DS.shm_ctime) ?? new Date(0),
    removed: (view.getUint32(IPC_PERM.mode, true) & SHM.DEST) !== 0,
  };
}

/** The error for a failed shmget(2). */
function getFailure(label: string, key: number, size: number, code: number = errno()): Error {
  if (code === E.EINVAL) {
    // An existing segment smaller than size, or a size outside SHMMIN..SHMMAX.
    const existing = key === IPC.PRIVATE ? -1 : libc().shmget(key, 0n, 0);
    const stat = existing < 0 ? null : readStat(existing, new Uint8Array(SHMID_DS.size));
    if (stat !== null && stat.size < size) {
      return new RangeError(
        `shared memory ${describeObject(key, existing)} has ${stat.size} bytes; ${size} were asked for`,
        { cause: errnoError(code, "shmget", label, strerror(code)) },
      );
    }
    return new RangeError(
      `shmget ${label} failed: EINVAL (the existing segment is smaller than ${size} bytes, ` +
        `or ${size} is outside the system's limits, see /proc/sys/kernel/shmmax)`,
      { cause: errnoError(code, "shmget", label, strerror(code)) },
    );
  }
  if (code === E.ENOENT) {
    return new NotFoundError(
      `shmget failed: no shared memory segment has ${label} (open with create: true to make one)`,
      { errno: code, syscall: "shmget" },
    );
  }
  if (code === E.ENOSPC) {
    return new IpcError(
      `shmget ${label} failed: ENOSPC (the system's limit on segments or shared memory is reached, ` +
        `see /proc/sys/kernel/shmmni and shmall)`,
      { errno: code, syscall: "shmget" },
    );
  }
  return permissionAware(code, "shmget", label, (found) => key !== IPC.PRIVATE && found === key);
}

/** The error for a failed shmat(2). */
function attachFailure(id: number, label: string): Error {
  const code = errno();
  if (code === E.EINVAL || code === E.EIDRM) {
    return new NotFoundError(`shmat failed: no shared memory segment has ${label}`, {
      errno: code,
      syscall: "shmat",
    });
  }
  return permissionAware(code, "shmat", label, (_, found) => found === id);
}

function permissionAware(
  code: number,
  syscall: string,
  detail: string,
  match: (key: number, id: number) => boolean,
): Error {
  const error = errnoError(code, syscall, detail, strerror(code));
  if (!(error instanceof PermissionDeniedError)) return error;
  const owner = findOwner("shm", match);
  return owner ? deniedWithOwner(error, "shared memory", owner) : error;
}
