/**
 * C struct layouts for x86_64 and aarch64 Linux (glibc), with small codecs.
 * Sizes and offsets are checked against the C headers by
 * `tests/ffi_layout_test.ts` when a C compiler is present.
 *
 * @module
 */

import { S } from "./constants.ts";

const arm = Deno.build.arch === "aarch64";

/** Layout of `struct stat`. */
export const STAT = arm
  ? { size: 128, st_dev: 0, st_ino: 8, st_mode: 16, st_nlink: 20, st_uid: 24, st_gid: 28, st_size: 48 }
  : { size: 144, st_dev: 0, st_ino: 8, st_nlink: 16, st_mode: 24, st_uid: 28, st_gid: 32, st_size: 48 };

/** Layout of `struct pollfd`. */
export const POLLFD = { size: 8, fd: 0, events: 4, revents: 6 } as const;

/** Layout of `struct iovec`. */
export const IOVEC = { size: 16, iov_base: 0, iov_len: 8 } as const;

/** Layout of `struct flock` (used with the `F_OFD_*` commands). */
export const FLOCK = { size: 32, l_type: 0, l_whence: 2, l_start: 8, l_len: 16, l_pid: 24 } as const;

/** `struct mq_attr` (byte offsets): four longs, then four reserved longs. */
export const MQ_ATTR = { size: 64, mq_flags: 0, mq_maxmsg: 8, mq_msgsize: 16, mq_curmsgs: 24 } as const;

/**
 * Fills a `struct flock` for fcntl(2) record locks: `type` over `length`
 * bytes from `start` (`SEEK_SET`; length 0: to the end of the file and
 * beyond), every other field zero (`l_pid` must be 0 for OFD locks).
 *
 * @param flock The struct's bytes ({@linkcode FLOCK}.size of them).
 * @param type `F.RDLCK`, `F.WRLCK` or `F.UNLCK`.
 * @param start First byte.
 * @param length Bytes.
 */
export function fillFlock(flock: Uint8Array, type: number, start: number, length: number): void {
  const view = new DataView(flock.buffer, flock.byteOffset, FLOCK.size);
  flock.fill(0, 0, FLOCK.size);
  view.setInt16(FLOCK.l_type, type, true);
  view.setBigInt64(FLOCK.l_start, BigInt(start), true);
  view.setBigInt64(FLOCK.l_len, BigInt(length), true);
}

/** Sizes of opaque glibc types, rounded up generously where glibc may grow them. */
export const OPAQUE = {
  /** `posix_spawn_file_actions_t` is 80 bytes on both. */
  posix_spawn_file_actions_t: 80,
  /** `posix_spawnattr_t` is 336 bytes on both. */
  posix_spawnattr_t: 336,
  /** `sigset_t` is 128 bytes on both. */
  sigset_t: 128,
} as const;

/** The fields of `struct stat` ipcbus uses. */
export interface FileStat {
  /** Device id. */
  dev: bigint;
  /** Inode number. */
  ino: bigint;
  /** Full `st_mode`: type and permission bits. */
  mode: number;
  /** Permission bits only (`mode & 0o7777`). */
  permissions: number;
  /** File type. */
  type: "fifo" | "file" | "directory" | "symlink" | "socket" | "char" | "block" | "unknown";
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Size in bytes. */
  size: number;
}

function typeOf(mode: number): FileStat["type"] {
  switch (mode & S.IFMT) {
    case S.IFIFO:
      return "fifo";
    case S.IFREG:
      return "file";
    case S.IFDIR:
      return "directory";
    case S.IFLNK:
      return "symlink";
    case S.IFSOCK:
      return "socket";
    case S.IFCHR:
      return "char";
    case S.IFBLK:
      return "block";
    default:
      return "unknown";
  }
}

/**
 * Decodes a `struct stat` filled by fstat/lstat.
 *
 * @param bytes A buffer of at least `STAT.size` bytes.
 * @returns The decoded fields.
 */
export function decodeStat(bytes: Uint8Array): FileStat {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mode = view.getUint32(STAT.st_mode, true);
  return {
    dev: view.getBigUint64(STAT.st_dev, true),
    ino: view.getBigUint64(STAT.st_ino, true),
    mode,
    permissions: mode & 0o7777,
    type: typeOf(mode),
    uid: view.getUint32(STAT.st_uid, true),
    gid: view.getUint32(STAT.st_gid, true),
    size: Number(view.getBigInt64(STAT.st_size, true)),
  };
}
