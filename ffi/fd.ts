/**
 * Safe wrappers over the descriptor and path calls: each retries `EINTR`
 * where the call allows it and throws the mapped error otherwise.
 *
 * @module
 */

import { cString } from "./cstring.ts";
import { EFD, F, O } from "./constants.ts";
import { E, errno, lastError, libc } from "./libc.ts";
import { decodeStat, type FileStat, fillFlock, FLOCK, STAT } from "./structs.ts";

export type { FileStat } from "./structs.ts";

/**
 * open(2) with `O_CLOEXEC` always added; retries `EINTR`.
 *
 * @param path The path.
 * @param flags `O_*` flags.
 * @param mode Creation mode.
 * @returns The descriptor.
 */
export function openPath(path: string, flags: number, mode = 0o600): number {
  const { open } = libc();
  const cpath = cString(path, "path");
  for (;;) {
    const fd = open(cpath, flags | O.CLOEXEC, mode);
    if (fd >= 0) return fd;
    if (errno() !== E.EINTR) throw lastError("open", path);
  }
}

/**
 * close(2). `EINTR` is not retried (Linux has released the descriptor).
 *
 * @param fd The descriptor.
 */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/**
 * fstat(2).
 *
 * @param fd The descriptor.
 * @returns The decoded stat.
 */
export function fstatFd(fd: number): FileStat {
  const buffer = new Uint8Array(STAT.size);
  if (libc().fstat(fd, buffer) !== 0) throw lastError("fstat", `fd ${fd}`);
  return decodeStat(buffer);
}

/**
 * lstat(2): the link itself, not its target.
 *
 * @param path The path.
 * @returns The decoded stat, or null when the path does not exist (seen twice: errno read after an FFI
 *   call can be stale, and callers remove things on "gone").
 */
export function lstatPath(path: string): FileStat | null {
  const buffer = new Uint8Array(STAT.size);
  const cpath = cString(path, "path");
  const { lstat } = libc();
  for (let attempt = 0;; attempt++) {
    if (lstat(cpath, buffer) === 0) return decodeStat(buffer);
    const code = errno();
    if (code === E.ENOENT && attempt > 0) return null;
    if (code !== E.ENOENT && code !== E.EINTR) throw lastError("lstat", path);
  }
}

/**
 * mkfifo(3). The mode is applied exactly (the umask is undone with fchmod by
 * the caller where that matters).
 *
 * @param path The path.
 * @param mode The permission bits.
 */
export function mkfifoPath(path: string, mode: number): void {
  if (libc().mkfifo(cString(path, "path"), mode) !== 0) throw lastError("mkfifo", path);
}

/**
 * unlink(2).
 *
 * @param path The path.
 */
export function unlinkPath(path: string): void {
  if (libc().unlink(cString(path, "path")) !== 0) throw lastError("unlink", path);
}

/**
 * fchmod(2).
 *
 * @param fd The descriptor.
 * @param mode The permission bits.
 */
export function fchmodFd(fd: number, mode: number): void {
  if (libc().fchmod(fd, mode) !== 0) throw lastError("fchmod", `fd ${fd}`);
}

/**
 * pipe2(2) with `O_CLOEXEC`.
 *
 * @param nonblocking Also set `O_NONBLOCK` on both ends.
 * @returns `[readEnd, writeEnd]`.
 */
export function makePipe(nonblocking = false): [number, number] {
  const fds = new Int32Array(2);
  const flags = O.CLOEXEC | (nonblocking ? O.NONBLOCK : 0);
  if (libc().pipe2(new Uint8Array(fds.buffer), flags) !== 0) throw lastError("pipe2");
  return [fds[0], fds[1]];
}

/**
 * An eventfd(2), non-blocking and close-on-exec.
 *
 * @returns The descriptor.
 */
export function makeEventFd(): number {
  const fd = libc().eventfd(0, EFD.NONBLOCK | EFD.CLOEXEC);
  if (fd < 0) throw lastError("eventfd");
  return fd;
}

/**
 * Sets or clears `O_NONBLOCK`.
 *
 * @param fd The descriptor.
 * @param on Whether the descriptor should be non-blocking.
 */
export function setNonBlocking(fd: number, on: boolean): void {
  const { fcntl } = libc();
  const flags = fcntl(fd, F.GETFL, 0);
  if (flags < 0) throw lastError("fcntl(F_GETFL)", `fd ${fd}`);
  const next = on ? flags | O.NONBLOCK : flags & ~O.NONBLOCK;
  if (next !== flags && fcntl(fd, F.SETFL, next) < 0) throw lastError("fcntl(F_SETFL)", `fd ${fd}`);
}

/**
 * Sets `FD_CLOEXEC`.
 *
 * @param fd The descriptor.
 */
export function setCloseOnExec(fd: number): void {
  if (libc().fcntl(fd, F.SETFD, F.FD_CLOEXEC) < 0) throw lastError("fcntl(F_SETFD)", `fd ${fd}`);
}

/**
 * The capacity of a pipe or FIFO in bytes (`F_GETPIPE_SZ`).
 *
 * @param fd A pipe or FIFO descriptor.
 * @returns The capacity.
 */
export function pipeCapacity(fd: number): number {
  const size = libc().fcntl(fd, F.GETPIPE_SZ, 0);
  if (size < 0) throw lastError("fcntl(F_GETPIPE_SZ)", `fd ${fd}`);
  return size;
}

/**
 * Takes or releases an open-file-description lock on a whole file
 * (`F_OFD_SETLKW`/`F_OFD_SETLK`). Blocking is only used by callers that
 * accept a synchronous wait.
 *
 * @param fd The descriptor.
 * @param type `F.WRLCK`, `F.RDLCK` or `F.UNLCK`.
 * @param wait Wait for a conflicting lock to go (`F_OFD_SETLKW`).
 * @returns False when `wait` is false and another description holds a conflicting lock.
 */
export function lockWholeFile(fd: number, type: number, wait: boolean): boolean {
  const flock = new Uint8Array(FLOCK.size);
  fillFlock(flock, type, 0, 0);
  const { fcntl_lock } = libc();
  for (;;) {
    if (fcntl_lock(fd, wait ? F.OFD_SETLKW : F.OFD_SETLK, flock) === 0) return true;
    const code = errno();
    if (code === E.EINTR) continue;
    if (!wait && (code === E.EAGAIN || code === E.EACCES)) return false;
    throw lastError("fcntl(F_OFD_SETLK)", `fd ${fd}`);
  }
}

/**
 * A close-on-exec duplicate of `fd` numbered `minimum` or above (`F_DUPFD_CLOEXEC`).
 *
 * @param fd The descriptor.
 * @param minimum The lowest acceptable number.
 * @returns The duplicate.
 */
export function duplicateAbove(fd: number, minimum: number): number {
  const copy = libc().fcntl(fd, F.DUPFD_CLOEXEC, minimum);
  if (copy < 0) throw lastError("fcntl(F_DUPFD_CLOEXEC)", `fd ${fd}`);
  return copy;
}
