/**
 * System V IPC constants and struct layouts (glibc, 64-bit). x86_64 and
 * aarch64 share them, except `struct semid_ds` (x86_64 pads its time
 * fields), with small codecs. Checked against the C headers by
 * `tests/ffi_layout_test.ts` when a C compiler is present.
 *
 * @module
 */

import { PermissionDeniedError } from "../errors.ts";
import { cString } from "./cstring.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, lastError, libc } from "./libc.ts";

/** Flags and commands shared by msg*, sem* and shm*. */
export const IPC = {
  PRIVATE: 0,
  CREAT: 0o1000,
  EXCL: 0o2000,
  NOWAIT: 0o4000,
  RMID: 0,
  SET: 1,
  STAT: 2,
  INFO: 3,
} as const;

/** msgrcv(2) flags and msgctl(2) commands. */
export const MSG = {
  NOERROR: 0o10000,
  EXCEPT: 0o20000,
  COPY: 0o40000,
  STAT: 11,
  INFO: 12,
  STAT_ANY: 13,
} as const;

/** semctl(2) commands and semop(2) flags. */
export const SEM = {
  GETPID: 11,
  GETVAL: 12,
  GETALL: 13,
  GETNCNT: 14,
  GETZCNT: 15,
  SETVAL: 16,
  SETALL: 17,
  STAT: 18,
  INFO: 19,
  STAT_ANY: 20,
  UNDO: 0x1000,
} as const;

/** shmat(2) flags and shmctl(2) commands. */
export const SHM = { RDONLY: 0o10000, RND: 0o20000, STAT: 13, INFO: 14, STAT_ANY: 15, DEST: 0o1000 } as const;

/** `sysconf(_SC_PAGESIZE)` name. */
export const SC_PAGESIZE = 30;

/** Layout of `struct ipc_perm`. */
export const IPC_PERM = { size: 48, key: 0, uid: 4, gid: 8, cuid: 12, cgid: 16, mode: 20 } as const;
/** Layout of `struct msqid_ds`. */
export const MSQID_DS = {
  size: 120,
  msg_stime: 48,
  msg_rtime: 56,
  msg_ctime: 64,
  msg_cbytes: 72,
  msg_qnum: 80,
  msg_qbytes: 88,
  msg_lspid: 96,
  msg_lrpid: 100,
} as const;
/** Layout of `struct semid_ds`. */
export const SEMID_DS = Deno.build.arch === "aarch64"
  ? { size: 88, sem_otime: 48, sem_ctime: 56, sem_nsems: 64 } as const
  : { size: 104, sem_otime: 48, sem_ctime: 64, sem_nsems: 80 } as const;
/** Layout of `struct shmid_ds`. */
export const SHMID_DS = {
  size: 112,
  shm_segsz: 48,
  shm_atime: 56,
  shm_dtime: 64,
  shm_ctime: 72,
  shm_cpid: 80,
  shm_lpid: 84,
  shm_nattch: 88,
} as const;
/** Layout of `struct sembuf`. */
export const SEMBUF = { size: 6, sem_num: 0, sem_op: 2, sem_flg: 4 } as const;

/** The owner and permission part of every System V object. */
export interface IpcPermissions {
  /** The key it was created with (0 for private objects). */
  key: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Creator uid. */
  cuid: number;
  /** Creator gid. */
  cgid: number;
  /** Permission bits (`mode & 0o777`). */
  mode: number;
}

/**
 * Decodes the `struct ipc_perm` at the start of a `*id_ds` buffer.
 *
 * @param view A view over the buffer.
 * @returns The fields.
 */
export function decodeIpcPerm(view: DataView): IpcPermissions {
  return {
    key: view.getInt32(IPC_PERM.key, true),
    uid: view.getUint32(IPC_PERM.uid, true),
    gid: view.getUint32(IPC_PERM.gid, true),
    cuid: view.getUint32(IPC_PERM.cuid, true),
    cgid: view.getUint32(IPC_PERM.cgid, true),
    mode: view.getUint32(IPC_PERM.mode, true) & 0o777,
  };
}

/**
 * ftok(3): the System V key that `sysv-mq:/path?proj=N` (and C's ftok) use
 * for an existing path and a project id (1–255): glibc makes it from the
 * project id, the low byte of the path's device number and the low 16 bits
 * of its inode number, so two paths can share a key.
 *
 * @param path The path (it must exist).
 * @param project The project id.
 * @returns The key as the kernel keeps it (a signed 32-bit number; `>>> 0` for the unsigned one).
 * @throws {RangeError} For a project id outside 1–255.
 * @throws {NotFoundError} When the path does not exist.
 *
 * @example The key a C program would use
 * ```ts
 * import { ftokKey } from "@ipcbus/ipcbus/sysv-mq";
 *
 * console.log((ftokKey("/tmp", 7) >>> 0).toString(16).padStart(8, "0")); // e.g. "07xxxxxx"
 * ```
 */
export function ftokKey(path: string, project: number): number {
  if (!Number.isInteger(project) || project < 1 || project > 255) {
    throw new RangeError(`ftok project id must be an integer from 1 to 255, got ${project}`);
  }
  const key = libc().ftok(cString(path, "path"), project);
  if (key === -1) throw lastError("ftok", path);
  return key;
}

/**
 * The system page size.
 *
 * @returns Bytes per page.
 */
export function pageSize(): number {
  return Number(libc().sysconf(SC_PAGESIZE));
}

/** The ftok(3) project id used when an address gives a path but no project. */
export const DEFAULT_FTOK_PROJECT = 1;

/**
 * A key as System V tools print it (`ipcs`): 0x and eight hex digits.
 *
 * @param key The key (signed or unsigned).
 * @returns Text such as `0x00001a2b`.
 */
export function keyHex(key: number): string {
  return `0x${(key >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * Names an object by id, and by key unless it is private.
 *
 * @param key Its key (0 for a private object).
 * @param id Its id.
 * @returns Text such as `id 5 (key 0x00001a2b)`.
 */
export function describeObject(key: number, id: number): string {
  return key === 0 ? `id ${id} (private)` : `id ${id} (key ${keyHex(key)})`;
}

/** How a semaphore set or shared memory segment is found: exactly one of these. */
export interface SysvAddressOptions {
  /** A key (a 32-bit integer, not 0). */
  key?: number;
  /** A new object without a key (`IPC_PRIVATE`). */
  private?: boolean;
  /** An existing file whose ftok(3) key to use. */
  path?: string;
  /** The ftok(3) project id with `path` (1–255, default 1). */
  project?: number;
  /** The id of an existing object (such as a private one handed over by its creator). */
  id?: number;
}

/** A resolved address, with a label for messages. */
export type SysvAddress =
  | { key: number; label: string }
  | { id: number; label: string }
  | { private: true; label: string };

/**
 * Checks `options` names exactly one way to find an object, and resolves it.
 *
 * @param what What the object is, starting messages (`"semaphore set"`).
 * @param options The address options.
 * @returns The key (signed 32-bit, as the syscalls take it), id, or private.
 * @throws {TypeError} When not exactly one is given, or one has the wrong type.
 * @throws {RangeError} For a key, project or id out of range.
 */
export function resolveSysvAddress(what: string, options: SysvAddressOptions): SysvAddress {
  const given = (["key", "private", "path", "id"] as const).filter((name) => options[name] !== undefined);
  if (given.length !== 1) {
    throw new TypeError(
      `${what}: give exactly one of key, private, path (with project) or id; got ${
        given.length ? given.join(", ") : "none"
      }`,
    );
  }
  if (options.project !== undefined && options.path === undefined) {
    throw new TypeError(`${what}: project goes with path`);
  }
  if (options.key !== undefined) {
    const key = options.key;
    if (typeof key !== "number") throw new TypeError(`${what}: key must be a number, got ${typeof key}`);
    if (!Number.isInteger(key) || key < -0x8000_0000 || key > 0xffff_ffff) {
      throw new RangeError(`${what}: key must be a 32-bit integer, got ${key}`);
    }
    if (key === 0) {
      throw new RangeError(`${what}: key 0 is IPC_PRIVATE; use { private: true } for one without a key`);
    }
    return { key: key | 0, label: `key ${keyHex(key)}` };
  }
  if (options.private !== undefined) {
    if (options.private !== true) throw new TypeError(`${what}: private must be true when given`);
    return { private: true, label: "(private)" };
  }
  if (options.path !== undefined) {
    if (typeof options.path !== "string" || options.path === "") {
      throw new TypeError(`${what}: path must be a non-empty string`);
    }
    const project = options.project ?? DEFAULT_FTOK_PROJECT;
    const key = ftokKey(options.path, project);
    return { key, label: `key ${keyHex(key)} (ftok ${options.path}, project ${project})` };
  }
  const id = options.id;
  if (typeof id !== "number") throw new TypeError(`${what}: id must be a number, got ${typeof id}`);
  if (!Number.isInteger(id) || id < 0 || id > 0x7fff_ffff) {
    throw new RangeError(`${what}: id must be an integer from 0 to 2147483647, got ${id}`);
  }
  return { id, label: `id ${id}` };
}

/** The creation options {@linkcode checkSysvCreate} and {@linkcode getSysvObject} read. */
export interface SysvCreateOptions {
  /** Create the object when none has the key. */
  create?: boolean;
  /** With `create`: fail when one has the key. */
  exclusive?: boolean;
}

/**
 * Checks a `mode` option: permission bits 0 to 0o777.
 *
 * @param what What the object is, starting messages (`"semaphore set"`).
 * @param mode The option, or undefined for the default `0o600`.
 * @returns The mode.
 * @throws {RangeError} For anything else.
 */
export function checkSysvMode(what: string, mode: number | undefined): number {
  const checked = mode ?? 0o600;
  if (!Number.isInteger(checked) || checked < 0 || checked > 0o777) {
    throw new RangeError(`${what}: mode must be permission bits from 0 to 0o777, got ${checked}`);
  }
  return checked;
}

/**
 * Checks `create` and `exclusive` against the address.
 *
 * @param what What the object is, starting messages (`"semaphore set"`).
 * @param address The resolved address.
 * @param options The creation options.
 * @returns Whether opening creates (or may create) the object: a private one, or `create`.
 * @throws {TypeError} For `create` or `exclusive` with an id, or `exclusive` without `create`.
 */
export function checkSysvCreate(what: string, address: SysvAddress, options: SysvCreateOptions): boolean {
  const creating = "private" in address || options.create === true;
  if ("id" in address && (options.create || options.exclusive)) {
    throw new TypeError(`${what}: create and exclusive do not apply when opening by id`);
  }
  if (options.exclusive && !creating) throw new TypeError(`${what}: exclusive needs create: true`);
  return creating;
}

/**
 * semget/shmget for an address: an id is taken as is; a private object is
 * created; a key is created exclusively (to know whether this call made it)
 * when creating, else (or when it exists) opened asking for `access`, so an
 * object this process may not use fails here. One removed between the two
 * calls is created again.
 *
 * @param address The resolved address.
 * @param options The creation options (checked by {@linkcode checkSysvCreate}).
 * @param mode Permission bits of a created object.
 * @param access Permission bits asked for when opening an existing one.
 * @param get The get call for a key and flags (returns -1 and sets errno on failure).
 * @param fail The error for a failed get, given the key and errno.
 * @returns The id, and whether this call created the object.
 * @throws {Error} What `fail` makes.
 */
export function getSysvObject(
  address: SysvAddress,
  options: SysvCreateOptions,
  mode: number,
  access: number,
  get: (key: number, flags: number) => number,
  fail: (key: number, code: number) => Error,
): { id: number; created: boolean } {
  if ("id" in address) return { id: address.id, created: false };
  if ("private" in address) {
    for (let odd = 1;; odd++) {
      const id = get(IPC.PRIVATE, IPC.CREAT | IPC.EXCL | mode);
      if (id >= 0) return { id, created: true };
      // errno can be stale (see libc.ts): a failure is believed when it repeats.
      const code = errno();
      if (odd >= BELIEVE_ERRNO_AFTER) throw fail(IPC.PRIVATE, code);
    }
  }
  const key = address.key;
  const creating = options.create === true;
  for (let attempt = 0, odd = 0;; attempt++) {
    if (creating) {
      const id = get(key, IPC.CREAT | IPC.EXCL | mode);
      if (id >= 0) return { id, created: true };
      const code = errno();
      if (code !== E.EEXIST && ++odd < BELIEVE_ERRNO_AFTER) continue; // see above
      if (code !== E.EEXIST || options.exclusive) throw fail(key, code);
    }
    const id = get(key, access);
    if (id >= 0) return { id, created: false };
    const code = errno();
    // ENOENT after EEXIST: removed in between; try to create it again.
    if (creating && code === E.ENOENT && attempt < 8) continue;
    if (code !== E.ENOENT && ++odd < BELIEVE_ERRNO_AFTER) continue; // see above
    throw fail(key, code);
  }
}

/**
 * Finds an object's owner without needing read permission (`*_STAT_ANY`,
 * Linux 4.17 and later), scanning the kernel's table of that kind.
 *
 * @param kind Which table: semaphore sets or shared memory segments.
 * @param match Picks the object by key or id.
 * @returns Its permissions and id, or undefined when not found or unavailable.
 */
export function findOwner(
  kind: "sem" | "shm",
  match: (key: number, id: number) => boolean,
): (IpcPermissions & { id: number }) | undefined {
  const lib = libc();
  // Big enough for struct semid_ds/shmid_ds and the *_INFO structs.
  const buffer = new Uint8Array(128);
  const view = new DataView(buffer.buffer);
  const control = kind === "sem"
    ? (index: number, command: number) => lib.semctl_buffer(index, 0, command, buffer)
    : (index: number, command: number) => lib.shmctl(index, command, buffer);
  const highest = control(0, kind === "sem" ? SEM.INFO : SHM.INFO);
  for (let index = 0; index <= highest; index++) {
    const id = control(index, kind === "sem" ? SEM.STAT_ANY : SHM.STAT_ANY);
    if (id < 0) continue;
    const perm = decodeIpcPerm(view);
    if (match(perm.key, id)) return { ...perm, id };
  }
  return undefined;
}

/**
 * The same permission error, saying who owns the object and who is asking.
 *
 * @param error The error from the failed call.
 * @param what What the object is (`"semaphore set"`).
 * @param owner Its owner, from {@linkcode findOwner}.
 * @returns The more helpful error.
 */
export function deniedWithOwner(
  error: PermissionDeniedError,
  what: string,
  owner: IpcPermissions & { id: number },
): PermissionDeniedError {
  return new PermissionDeniedError(
    `${error.message}: ${what} id ${owner.id} belongs to uid ${owner.uid} (gid ${owner.gid}) ` +
      `with mode 0o${owner.mode.toString(8).padStart(3, "0")}; this process runs as uid ${libc().geteuid()}`,
    { errno: error.errno, code: error.code, syscall: error.syscall },
  );
}
