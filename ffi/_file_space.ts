/**
 * Sizing files and reserving their space (private): ftruncate(2) and
 * posix_fallocate(3), retried on `EINTR`, with the failures that bite
 * explained the same way wherever a file is sized (shared memory objects,
 * the `shm:` ring, mapped files, `file:` logs).
 *
 * @module
 */

import { errnoError, IpcError } from "../errors.ts";
import { E, errno, libc, strerror } from "./libc.ts";

/**
 * Sets a file's size (ftruncate(2)); retries `EINTR`.
 *
 * @param fd The descriptor (open for writing).
 * @param size The new size in bytes.
 * @param what What the file is, with its name or path (`"shared memory /frames"`).
 * @throws {RangeError} For `EFBIG`: the size is larger than the file system allows (the cause is the
 *   mapped `IpcError`).
 * @throws {IpcError} For other failures (`EINVAL`: the descriptor is not open for writing, or the
 *   file cannot be resized).
 */
export function setFileSize(fd: number, size: number, what: string): void {
  const { ftruncate } = libc();
  for (;;) {
    if (ftruncate(fd, BigInt(size)) === 0) return;
    const code = errno();
    if (code === E.EINTR) continue;
    throw sizeFailure("ftruncate", code, what, `to ${size} bytes`, size);
  }
}

/** How {@linkcode reserveFileSpace} explains and tolerates failures. */
export interface ReserveOptions {
  /** Where the space comes from, for `ENOSPC` (`"/dev/shm"`, `"the file system of /var/lib/app"`). */
  where: string;
  /** How to make room, ending the `ENOSPC` message (`"free disk space or choose a smaller maxSize"`). */
  advice: string;
  /**
   * Leave the file sparse, returning false, when the file system cannot
   * reserve space (`EOPNOTSUPP`, `EINVAL`), instead of failing.
   */
  sparseFallback?: boolean;
}

/**
 * Reserves the blocks of `length` bytes at `offset` (posix_fallocate(3)), so
 * that writing there later cannot fail for lack of space (through a
 * mapping, that failure would be SIGBUS); retries `EINTR`.
 *
 * @param fd The descriptor (open for writing).
 * @param offset First byte.
 * @param length Bytes.
 * @param what What the file is, with its name or path (`"mapped file /tmp/a.bin"`).
 * @param options Where the space comes from, what to advise when it is full, and whether a file
 *   system that cannot reserve is accepted.
 * @returns True when reserved; false when the file system cannot reserve and `sparseFallback` is set.
 * @throws {IpcError} For `ENOSPC` (naming `where`, the bytes and the advice) and other failures.
 * @throws {RangeError} For `EFBIG`: the end is beyond what the file system allows (the cause is the
 *   mapped `IpcError`).
 */
export function reserveFileSpace(
  fd: number,
  offset: number,
  length: number,
  what: string,
  options: ReserveOptions,
): boolean {
  const { posix_fallocate } = libc();
  let code: number;
  do code = posix_fallocate(fd, BigInt(offset), BigInt(length)); while (code === E.EINTR);
  if (code === 0) return true;
  if ((code === E.EOPNOTSUPP || code === E.EINVAL) && options.sparseFallback) return false;
  if (code === E.ENOSPC) {
    throw new IpcError(
      `posix_fallocate of ${what} (${length} bytes) failed: ENOSPC (${strerror(code)}): ${options.where} ` +
        `cannot hold ${length} more bytes (${options.advice})`,
      { errno: code, syscall: "posix_fallocate" },
    );
  }
  throw sizeFailure("posix_fallocate", code, what, `(${length} bytes at ${offset})`, offset + length);
}

/** The error of a failed ftruncate or posix_fallocate other than `ENOSPC`. */
function sizeFailure(syscall: string, code: number, what: string, detail: string, end: number): Error {
  const error = errnoError(code, syscall, `${what} ${detail}`, strerror(code));
  if (code === E.EFBIG) {
    return new RangeError(
      `${error.message}: ${end} bytes is larger than the file system allows for one file`,
      { cause: error },
    );
  }
  if (code === E.EINVAL && syscall === "ftruncate") {
    error.message += ": the descriptor is not open for writing, or the file cannot be resized";
  } else if (code === E.EOPNOTSUPP) {
    error.message += ": the file system cannot reserve space for files";
  }
  return error;
}
