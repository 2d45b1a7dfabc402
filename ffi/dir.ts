/**
 * Reading `/dev/shm`, `/dev/mqueue` and `/proc` through libc. Deno refuses
 * its own file APIs on `/dev` and `/proc` paths without `--allow-all`; what
 * ipcbus needs there it reads with opendir/readdir and open/read, under
 * `--allow-ffi` like everything else it does.
 *
 * @module
 */

import { cString, readCString } from "./cstring.ts";
import { O } from "./constants.ts";
import { closeFd, lstatPath, openPath } from "./fd.ts";
import { E, errno, lastError, libc } from "./libc.ts";
import type { FileStat } from "./structs.ts";

/** Offset of `d_name` in glibc's `struct dirent` on 64-bit Linux (ino 8, off 8, reclen 2, type 1). */
const D_NAME = 19;

/**
 * The names in a directory (without `.` and `..`).
 *
 * @param path The directory.
 * @returns The names, or null when the directory does not exist.
 * @throws {IpcError} When opendir(3)/readdir(3) fail otherwise (EACCES, ENOTDIR…).
 */
export function readDirectory(path: string): string[] | null {
  const { opendir, readdir, closedir } = libc();
  const dir = opendir(cString(path, "path"));
  if (dir === null) {
    if (errno() === E.ENOENT) return null;
    throw lastError("opendir", path);
  }
  const names: string[] = [];
  try {
    for (;;) {
      const entry = readdir(dir);
      if (entry === null) break;
      const name = readCString(Deno.UnsafePointer.offset(entry, D_NAME));
      if (name !== null && name !== "." && name !== "..") names.push(name);
    }
  } finally {
    closedir(dir);
  }
  return names.sort();
}

/** A directory entry with its lstat(2). */
export interface DirectoryEntry extends FileStat {
  /** The entry's name. */
  name: string;
}

/**
 * A directory's entries with their lstat(2), skipping entries that vanish meanwhile.
 *
 * @param path The directory.
 * @returns The entries, or null when the directory does not exist.
 */
export function readDirectoryEntries(path: string): DirectoryEntry[] | null {
  const names = readDirectory(path);
  if (names === null) return null;
  const entries: DirectoryEntry[] = [];
  for (const name of names) {
    const stat = lstatPath(`${path}/${name}`);
    if (stat !== null) entries.push({ name, ...stat });
  }
  return entries;
}

/** `f_type` of procfs and sysfs (`<linux/magic.h>`): the kernel's own files. */
export const KERNEL_FILESYSTEMS: readonly number[] = [0x9fa0, 0x6265_6572];

/** struct statfs: 120 bytes on 64-bit Linux (x86_64 and aarch64), `f_type` (a long) first. */
const STATFS_SIZE = 120;

/** How files are opened for reading: never waiting (a FIFO without a writer), never taking a terminal. */
const READ_FLAGS = O.RDONLY | O.NONBLOCK | O.NOCTTY;

/**
 * A whole small file as text (for `/proc` files, whose size reads as 0).
 * The file is opened without waiting (`O_NONBLOCK`: a FIFO does not block
 * the open until a writer comes).
 *
 * @param path The file.
 * @param limit The most bytes to read (default 1 MiB).
 * @param filesystems When given, the file must be on one of these (`statfs` `f_type`), wherever
 *   its path led (`/proc/self/root/...` leads elsewhere); it is checked before it is opened for
 *   reading (through an `O_PATH` descriptor), so a device elsewhere is never opened.
 * @returns The text, or null when the file does not exist.
 * @throws {TypeError} When the file is on another filesystem.
 * @throws {IpcError} When it cannot be opened or read (EACCES; EAGAIN from a file that would block).
 */
export function readTextFile(path: string, limit = 1 << 20, filesystems?: readonly number[]): string | null {
  let fd: number;
  try {
    fd = filesystems === undefined ? openPath(path, READ_FLAGS) : openOnFilesystem(path, filesystems);
  } catch (error) {
    if (error instanceof Error && "errno" in error && error.errno === E.ENOENT) return null;
    throw error;
  }
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    const { read } = libc();
    while (total < limit) {
      const chunk = new Uint8Array(Math.min(65536, limit - total));
      const n = Number(read(fd, chunk, BigInt(chunk.length)));
      if (n < 0) {
        if (errno() === E.EINTR) continue;
        throw lastError("read", path);
      }
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      total += n;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    closeFd(fd);
  }
}

/**
 * Opens `path` for reading once the file it leads to is known to be on one
 * of `filesystems`: located first with `O_PATH` (which opens nothing: no
 * device is started, no FIFO waited on), checked with fstatfs, then opened
 * through `/proc/self/fd` (the very file located, wherever its path led).
 */
function openOnFilesystem(path: string, filesystems: readonly number[]): number {
  const located = openPath(path, O.PATH);
  try {
    const buffer = new BigInt64Array(STATFS_SIZE / 8);
    if (libc().fstatfs(located, new Uint8Array(buffer.buffer)) < 0) throw lastError("fstatfs", path);
    const type = Number(BigInt.asUintN(32, buffer[0]));
    if (!filesystems.includes(type)) {
      throw new TypeError(`${path} is not on the expected filesystem (f_type 0x${type.toString(16)})`);
    }
    return openPath(`/proc/self/fd/${located}`, READ_FLAGS);
  } finally {
    closeFd(located);
  }
}
