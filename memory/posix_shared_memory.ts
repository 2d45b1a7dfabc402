/**
 * POSIX shared memory objects: shm_open(3), ftruncate(2), mmap(2) with
 * `MAP_SHARED`, munmap(2), shm_unlink(3).
 *
 * A shared memory object is a named piece of memory (a file in the tmpfs
 * at `/dev/shm`) that any process knowing its name may map;
 * {@linkcode PosixSharedMemory.view} is a `Uint8Array` over this process's
 * mapping, so a write by one process is seen by every other at once
 * (coordinate with a semaphore, for example a `NamedSemaphore`). Anyone who
 * knows `shm_open` in C, Python's `multiprocessing.shared_memory` or
 * `posix_ipc.SharedMemory` will find the same objects here.
 *
 * Names: a slash followed by 1 to {@linkcode MAX_SHARED_MEMORY_NAME} bytes,
 * no other slash, not `/.` or `/..`; anything else is a `TypeError`.
 *
 * Sizes: the creator sets the size (`ftruncate`), and by default reserves
 * the memory (`posix_fallocate`, option `reserve`), so a full `/dev/shm`
 * fails at creation with a clear error instead of killing a process with
 * SIGBUS when it first touches a page that cannot be allocated. Whoever
 * opens an existing object gets its real size (`fstat`); a `size` that
 * disagrees is a `RangeError` naming both. A new object is filled with
 * zeros. Opening an object whose size is still 0 waits up to `initTimeout`
 * ms for its creator to set it (the creator does `shm_open`, then
 * `ftruncate`: a peer can come in between).
 *
 * Lifetime: the object lives until {@linkcode PosixSharedMemory.unlink}
 * removes its name and the last process unmaps it (processes unmap when
 * they exit, however they exit), or the system restarts.
 * {@linkcode PosixSharedMemory.close} (and `[Symbol.dispose]`) ends this
 * process's mapping only. After an unlink the processes that have it mapped
 * keep using it; the name can be created anew, as another object.
 *
 * Memory safety: the view points straight at the mapping. `close()`
 * first neuters the view's `ArrayBuffer` (every `Uint8Array`, `DataView` or
 * `subarray` made over it then has length 0, so stale references read
 * `undefined` instead of crashing), then unmaps. Never copy the memory's
 * address elsewhere (through FFI) and use it after `close()`. With
 * `readOnly: true` the mapping is read-only: **writing through the view
 * kills the process with SIGSEGV** (JavaScript cannot make a typed array
 * read-only). Any process with write permission can also shrink the object
 * (`ftruncate`): touching pages past the new end raises SIGBUS in every
 * process that maps it; only give write permission to programs you trust.
 *
 * @example Share bytes with another process
 * ```ts
 * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * using shm = PosixSharedMemory.open(name, { create: true, exclusive: true, size: 100 });
 * // Another process: PosixSharedMemory.open(name) maps the same 100 bytes.
 * shm.view.set(new TextEncoder().encode("hello"));
 * console.log(shm.size, shm.stat().mode.toString(8)); // 100 "600"
 * shm.unlink(); // the name goes; the memory goes with the last mapping
 * ```
 *
 * @module
 */

import { ChannelClosedError } from "../errors.ts";
import {
  backingPath,
  booleanOption,
  checkOpenOptions,
  checkPosixName,
  checkStillNamed,
  type FileIdentity,
  openSharedMemoryObject,
  SHARED_MEMORY,
  sizeSharedMemory,
  unlinkFailure,
} from "../ffi/_posix_object.ts";
import { cString } from "../ffi/cstring.ts";
import { closeFd, type FileStat, fstatFd } from "../ffi/fd.ts";
import { errno, need } from "../ffi/libc.ts";
import { Mapping } from "../ffi/mmap.ts";
import { napSync } from "../ffi/_delay.ts";

/** The longest name, in bytes after the slash (a file name in /dev/shm has at most 255 bytes). */
export const MAX_SHARED_MEMORY_NAME = 255;

/** Options of {@linkcode PosixSharedMemory.open}. */
export interface PosixSharedMemoryOptions {
  /** Create the object when no object has the name (default false). Needs `size`. */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the name is taken (default false). */
  exclusive?: boolean;
  /**
   * Size in bytes (at least 1). Needed to create. When the object exists it
   * may be omitted (its real size is used); a size that disagrees with the
   * object's is a `RangeError`. An existing object is never resized.
   */
  size?: number;
  /** Permission bits of a new object (default `0o600`; applied exactly, the umask does not apply). */
  mode?: number;
  /**
   * Open and map read-only (`O_RDONLY`, `PROT_READ`): needs only read
   * permission, and cannot create. Writing through the view then kills the
   * process (SIGSEGV). Default false.
   */
  readOnly?: boolean;
  /**
   * When creating: allocate all the memory now (`posix_fallocate`), so a full
   * `/dev/shm` fails here with `ENOSPC` rather than with SIGBUS on a later
   * write. Default true; false leaves the object sparse (pages are allocated
   * when first touched).
   */
  reserve?: boolean;
  /**
   * When the object exists with size 0: how long (ms) to wait for its
   * creator to set the size (default 500; this blocks the calling thread,
   * but only while a creator is between `shm_open` and `ftruncate`). 0 does
   * not wait.
   */
  initTimeout?: number;
}

/** What fstat(2) reports about the object ({@linkcode PosixSharedMemory.stat}). */
export interface PosixSharedMemoryStat {
  /** Size in bytes, now (another process may have resized it). */
  size: number;
  /** Permission bits (`mode & 0o777`). */
  mode: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
}

/**
 * A POSIX shared memory object, mapped in this process.
 *
 * @example Open by name in two places
 * ```ts
 * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * using writer = PosixSharedMemory.open(name, { create: true, size: 64 });
 * using reader = PosixSharedMemory.open(name, { readOnly: true }); // another process would do this
 * writer.view[0] = 42;
 * console.log(reader.view[0], reader.size); // 42 64
 * writer.unlink();
 * ```
 */
export class PosixSharedMemory {
  /** The name, such as `"/frames"`. */
  readonly name: string;
  /** The object's size in bytes when it was opened: the length of {@linkcode PosixSharedMemory.view}. */
  readonly size: number;
  /** Whether this call of `open` created the object. */
  readonly created: boolean;
  /** Whether the object is opened and mapped read-only. */
  readonly readOnly: boolean;

  readonly #cname: Uint8Array<ArrayBuffer>;
  readonly #path: string;
  readonly #identity: FileIdentity;
  #fd: number;
  #mapping: Mapping | null;
  #view: Uint8Array | null;
  #unlinked = false;

  private constructor(
    name: string,
    cname: Uint8Array<ArrayBuffer>,
    fd: number,
    mapping: Mapping,
    created: boolean,
    readOnly: boolean,
    identity: FileIdentity,
  ) {
    this.name = name;
    this.size = mapping.length;
    this.created = created;
    this.readOnly = readOnly;
    this.#cname = cname;
    this.#path = backingPath(name, "");
    this.#fd = fd;
    this.#mapping = mapping;
    this.#view = new Uint8Array(mapping.buffer);
    this.#identity = identity;
  }

  /**
   * Opens (and with `create`, makes) a shared memory object and maps it.
   *
   * @param name A slash and 1 to {@linkcode MAX_SHARED_MEMORY_NAME} bytes without another slash (`"/frames"`).
   * @param options `create`, `exclusive`, `size`, `mode`, `readOnly`, `reserve`, `initTimeout`.
   * @returns The mapped object.
   * @throws {TypeError} For a bad name, `exclusive` without `create`, `create` without `size`, `create` with
   *   `readOnly`, or an option of the wrong type.
   * @throws {RangeError} For a bad size, mode or initTimeout; a `size` that disagrees with the existing
   *   object's; an existing object of size 0 (nothing to map); or a size the system refuses (`EFBIG`).
   * @throws {NotFoundError} When no object has the name and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the name is taken.
   * @throws {PermissionDeniedError} When this user may not read (and, without `readOnly`, write) the
   *   object (the message names its owner and mode), or the name refers to something that is not a
   *   regular file (a FIFO, a symbolic link).
   * @throws {IpcError} For other failures, each explained: `ENOSPC` when `/dev/shm` cannot hold the size,
   *   `EMFILE`, `ENOMEM` from mmap.
   *
   * @example Create, or open with the real size
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using made = PosixSharedMemory.open(name, { create: true, size: 10_000 });
   * using found = PosixSharedMemory.open(name);
   * console.log(made.created, found.created, found.size); // true false 10000
   * made.unlink();
   * ```
   */
  static open(name: string, options: PosixSharedMemoryOptions = {}): PosixSharedMemory {
    const { create, exclusive, mode } = checkOpenOptions(
      SHARED_MEMORY,
      name,
      options,
      "PosixSharedMemory.open",
    );
    const readOnly = booleanOption(options.readOnly, "readOnly", "shared memory", false);
    const reserve = booleanOption(options.reserve, "reserve", "shared memory", true);
    if (create && readOnly) {
      throw new TypeError(
        `shared memory ${name}: readOnly cannot create (the size is set through a writable open)`,
      );
    }
    const size = options.size;
    if (size !== undefined && (!Number.isSafeInteger(size) || size < 1)) {
      throw new RangeError(`shared memory ${name}: size must be a positive integer, got ${size}`);
    }
    if (create && size === undefined) {
      throw new TypeError(`shared memory ${name}: size is needed to create it`);
    }
    const initTimeout = options.initTimeout ?? 500;
    if (typeof initTimeout !== "number" || !(initTimeout >= 0) || initTimeout > 60_000) {
      throw new RangeError(
        `shared memory ${name}: initTimeout must be from 0 to 60000 ms, got ${initTimeout}`,
      );
    }

    // Never through a link, never waiting on a planted FIFO, a regular file, exactly `mode` when created.
    const opened = openSharedMemoryObject(name, { create, exclusive, mode, readOnly });
    const { fd, created, cname } = opened;
    try {
      let stat = opened.stat;
      let actual: number;
      if (created) {
        sizeSharedMemory(fd, size!, `shared memory ${name}`, {
          reserve,
          orElse: "open with reserve: false to allocate pages only when touched, at the risk of SIGBUS",
        });
        actual = size!;
      } else {
        stat = awaitSize(fd, stat, initTimeout);
        actual = stat.size;
        if (size !== undefined && size !== actual) {
          throw new RangeError(
            `shared memory ${name} has ${actual} bytes; ${size} were asked for (an existing object is never ` +
              `resized: open it without size to use its size${
                actual === 0 ? ", or wait for its creator" : ""
              })`,
          );
        }
        if (actual === 0) {
          throw new RangeError(
            `shared memory ${name} has 0 bytes: nothing to map (its creator has not set a size within ` +
              `${initTimeout} ms; it may have died between shm_open and ftruncate)`,
          );
        }
      }
      const mapping = Mapping.map(fd, actual, { writable: !readOnly, label: `shared memory ${name}` });
      return new PosixSharedMemory(name, cname, fd, mapping, created, readOnly, {
        dev: stat.dev,
        ino: stat.ino,
      });
    } catch (error) {
      closeFd(fd);
      if (created) need("shm_unlink")(cname);
      throw error;
    }
  }

  /**
   * Removes a name without opening it (shm_unlink(3)): processes that have
   * the object mapped keep using it; the name can be created anew.
   *
   * @param name The name.
   * @throws {TypeError} For a bad name.
   * @throws {NotFoundError} When no object has the name.
   * @throws {PermissionDeniedError} When this user may not remove it (the message names its owner).
   *
   * @example Remove an object left behind
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * PosixSharedMemory.open(name, { create: true, size: 1 }).close();
   * PosixSharedMemory.unlink(name);
   * ```
   */
  static unlink(name: string): void {
    checkPosixName(name, SHARED_MEMORY);
    const cname = cString(name, "shared memory name");
    if (need("shm_unlink")(cname) !== 0) throw unlinkFailure(SHARED_MEMORY, errno(), name);
  }

  /**
   * The mapped memory: `size` bytes, shared with every process that maps
   * the object. Get it once and keep it while open; after
   * {@linkcode PosixSharedMemory.close} every view made from it has length 0.
   *
   * @returns The view.
   * @throws {ChannelClosedError} After `close()`.
   *
   * @example Atomics over the shared bytes
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using shm = PosixSharedMemory.open(name, { create: true, size: 16 });
   * const counters = new Int32Array(shm.view.buffer, shm.view.byteOffset, 4);
   * Atomics.add(counters, 0, 1);
   * console.log(counters[0]); // 1
   * shm.unlink();
   * ```
   */
  get view(): Uint8Array {
    if (this.#view === null) {
      throw new ChannelClosedError(`shared memory ${this.name} is closed in this process`);
    }
    return this.#view;
  }

  /** Whether {@linkcode PosixSharedMemory.close} was called. */
  get closed(): boolean {
    return this.#mapping === null;
  }

  /**
   * What fstat(2) says about the object now: size, mode and owner. Works
   * after an unlink (the object lives while mapped).
   *
   * @returns The size, permission bits, uid and gid.
   * @throws {ChannelClosedError} After `close()`.
   *
   * @example Mode and owner
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using shm = PosixSharedMemory.open(name, { create: true, size: 8, mode: 0o640 });
   * const { size, mode } = shm.stat();
   * console.log(size, mode.toString(8)); // 8 "640"
   * shm.unlink();
   * ```
   */
  stat(): PosixSharedMemoryStat {
    if (this.#mapping === null) {
      throw new ChannelClosedError(`fstat failed: shared memory ${this.name} is closed in this process`, {
        syscall: "fstat",
      });
    }
    const stat = fstatFd(this.#fd);
    return { size: stat.size, mode: stat.permissions, uid: stat.uid, gid: stat.gid };
  }

  /**
   * Removes the name (shm_unlink(3)). This object, and every process that
   * has it mapped, keeps using the memory; it is freed with the last
   * mapping. Works after `close()`. Calling it again does nothing. When the
   * name meanwhile refers to another object (ours was unlinked and the name
   * created anew), that one is left alone.
   *
   * @throws {NotFoundError} When the name is gone, or now refers to another object.
   * @throws {PermissionDeniedError} When this user may not remove it (the message names its owner).
   *
   * @example Unlink while open
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using shm = PosixSharedMemory.open(name, { create: true, size: 8 });
   * shm.unlink();
   * shm.view[0] = 1; // still mapped: still usable
   * console.log(shm.view[0]); // 1
   * ```
   */
  unlink(): void {
    if (this.#unlinked) return;
    checkStillNamed("shm_unlink", this.name, this.#path, this.#identity, "another object");
    if (need("shm_unlink")(this.#cname) !== 0) throw unlinkFailure(SHARED_MEMORY, errno(), this.name);
    this.#unlinked = true;
  }

  /**
   * Ends this process's use of the object: neuters every view (they read
   * as length 0), unmaps it and closes the descriptor. The object stays
   * until unlinked. Idempotent.
   *
   * @throws {IpcError} When munmap(2) fails (it cannot for a mapping made here).
   *
   * @example Stale views become empty
   * ```ts
   * import { PosixSharedMemory } from "@ipcbus/ipcbus/posix-shared-memory";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * const shm = PosixSharedMemory.open(name, { create: true, size: 16 });
   * const view = shm.view;
   * shm.close();
   * console.log(view.length, shm.closed); // 0 true
   * PosixSharedMemory.unlink(name);
   * ```
   */
  close(): void {
    const mapping = this.#mapping;
    if (mapping === null) return;
    this.#mapping = null;
    this.#view = null;
    const fd = this.#fd;
    this.#fd = -1;
    try {
      mapping.unmap();
    } finally {
      closeFd(fd);
    }
  }

  /** Same as {@linkcode PosixSharedMemory.close}: never unlinks. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------

/** While the object has size 0, waits (1 ms at a time, up to `timeout` ms) for its creator to set it. */
function awaitSize(fd: number, stat: FileStat, timeout: number): FileStat {
  if (stat.size !== 0 || timeout === 0) return stat;
  const deadline = performance.now() + timeout;
  while (stat.size === 0 && performance.now() < deadline) {
    napSync(1);
    stat = fstatFd(fd);
  }
  return stat;
}
