/**
 * Read-only views of the system's IPC state for tools such as the `ipcbus`
 * command: `/proc` and `/sys` files, and the `/dev/shm` and `/dev/mqueue`
 * directories. Deno's own file APIs refuse `/proc` and `/dev` paths without
 * `--allow-all`; these read them through libc, so `--allow-ffi` is enough.
 *
 * @example Reading a kernel limit and listing POSIX queues
 * ```ts
 * import { listIpcDirectory, readProcFile } from "@ipcbus/ipcbus/inspect";
 *
 * console.log(Number(readProcFile("/proc/sys/kernel/msgmax")) > 0); // true
 * console.log(Array.isArray(listIpcDirectory("/dev/shm"))); // true
 * ```
 *
 * @module
 */

import { KERNEL_FILESYSTEMS, readDirectoryEntries, readTextFile } from "./ffi/dir.ts";
import { lstatPath } from "./ffi/fd.ts";

/** One entry of {@linkcode listIpcDirectory}. */
export interface IpcDirectoryEntry {
  /** File name (a POSIX object's name without its leading slash; `sem.<name>` for named semaphores). */
  name: string;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Permission bits. */
  mode: number;
  /** Size in bytes (for a POSIX queue, of its status text). */
  size: number;
  /** File type. */
  type: string;
}

/** The directories {@linkcode listIpcDirectory} reads. */
export type IpcDirectory = "/dev/shm" | "/dev/mqueue";

/**
 * Reads a file under `/proc` or `/sys` (kernel limits, `/proc/sysvipc/*`).
 *
 * @param path An absolute path starting with `/proc/` or `/sys/`.
 * @returns Its text, or null when it does not exist.
 * @throws {TypeError} For a path elsewhere, containing `..`, or leading off procfs and sysfs
 *   (`/proc/self/root/…`, `/proc/<pid>/cwd/…`: the file opened is checked, not only the path).
 * @throws {IpcError} When it cannot be read (EACCES…).
 */
export function readProcFile(path: string): string | null {
  if (!/^\/(proc|sys)\//.test(path) || path.split("/").includes("..")) {
    throw new TypeError(`readProcFile reads only /proc and /sys files, got "${path}"`);
  }
  try {
    // A path under /proc may still lead elsewhere (/proc/self/root/..., /proc/<pid>/cwd/...).
    return readTextFile(path, 1 << 20, KERNEL_FILESYSTEMS);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    throw new TypeError(`readProcFile reads only /proc and /sys files, got "${path}" (${error.message})`);
  }
}

/**
 * Lists `/dev/shm` (POSIX shared memory, named semaphores as `sem.*`,
 * ipcbus presence records) or `/dev/mqueue` (POSIX message queues, when the
 * mqueue filesystem is mounted there).
 *
 * @param directory `"/dev/shm"` or `"/dev/mqueue"`.
 * @returns The entries, or null when the directory does not exist (mqueue not mounted).
 * @throws {TypeError} For another directory.
 */
export function listIpcDirectory(directory: IpcDirectory): IpcDirectoryEntry[] | null {
  if (directory !== "/dev/shm" && directory !== "/dev/mqueue") {
    throw new TypeError(`listIpcDirectory lists /dev/shm or /dev/mqueue, got "${directory}"`);
  }
  const entries = readDirectoryEntries(directory);
  return entries === null ? null : entries.map(({ name, uid, gid, permissions, size, type }) => ({
    name,
    uid,
    gid,
    mode: permissions,
    size,
    type,
  }));
}

/** What {@linkcode lstatIpcPath} reports: a directory entry's fields, without the name. */
export type IpcPathStat = Omit<IpcDirectoryEntry, "name">;

/**
 * lstat(2) of a path through libc: for FIFOs, logs and other IPC paths
 * under `/dev` (a `file:` log kept in `/dev/shm`, say), which Deno's own
 * `Deno.lstatSync` refuses without `--allow-all`. A symbolic link is
 * reported as such, not followed.
 *
 * @param path An absolute path.
 * @returns What it is, or null when nothing has that name (or a component of the path is not a
 *   directory).
 * @throws {TypeError} For a relative path.
 * @throws {IpcError} When it cannot be looked at (EACCES on a directory on the way, a path too long).
 *
 * @example Looking at a path under /dev
 * ```ts
 * import { lstatIpcPath } from "@ipcbus/ipcbus/inspect";
 *
 * console.log(lstatIpcPath("/dev/shm")?.type); // "directory"
 * console.log(lstatIpcPath("/dev/shm/no-such-object")); // null
 * ```
 */
export function lstatIpcPath(path: string): IpcPathStat | null {
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new TypeError(`lstatIpcPath needs an absolute path, got "${path}"`);
  }
  let stat;
  try {
    stat = lstatPath(path);
  } catch (error) {
    if (error instanceof Error && "code" in error && error.code === "ENOTDIR") return null;
    throw error;
  }
  if (stat === null) return null;
  return { uid: stat.uid, gid: stat.gid, mode: stat.permissions, size: stat.size, type: stat.type };
}
