/**
 * System V IPC constants and struct layouts (glibc, 64-bit). x86_64 and
 * aarch64 share them, except `struct semid_ds` (x86_64 pads its time
 * fields), with small codecs. Checked against the C headers by
 * `tests/ffi_layout_test.ts` when a C compiler is present.
 *
 * @module
 */

import { cString } from "./cstring.ts";
import { lastError, libc } from "./libc.ts";

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
 * ftok(3): a key from an existing path and a project id (1–255).
 *
 * @param path The path (it must exist).
 * @param project The project id.
 * @returns The key.
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
