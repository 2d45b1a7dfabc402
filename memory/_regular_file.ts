/**
 * Opening regular files safely (private): `O_NOFOLLOW`, `fstat` checks of
 * the type and the owner, exact creation modes, and a durable directory
 * entry. Shared by `MappedFile` and the `file:` log.
 *
 * @module
 */

import { IpcError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { O } from "../ffi/constants.ts";
import { closeFd, fchmodFd, type FileStat, fstatFd, lstatPath, openPath, unlinkPath } from "../ffi/fd.ts";
import { E, lastError, libc } from "../ffi/libc.ts";

/** How {@linkcode openRegularFile} opens. */
export interface RegularFileOptions {
  /** Create the file when it does not exist. */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /** Permission bits of a new file (applied exactly: the umask is undone). */
  mode: number;
  /** Open read-only (`O_RDONLY`) instead of read-write. */
  readOnly?: boolean;
  /** Accept a file owned by another user (default: refuse it). */
  allowOtherOwner?: boolean;
  /** Refuse a file that any user may write (mode `o+w`). */
  refuseWorldWritable?: boolean;
  /** What to call the file in errors, such as `"file:"` or `"mapped file"`. */
  label: string;
}

/** An open regular file. */
export interface OpenedFile {
  /** The descriptor (close-on-exec). */
  fd: number;
  /** Its fstat at open. */
  stat: FileStat;
  /** Whether this call created it. */
  created: boolean;
}

/**
 * Opens (and with `create`, makes) a regular file, refusing symbolic links
 * (`O_NOFOLLOW`), anything that is not a regular file (checked with fstat on
 * the descriptor, so a swap after a path check cannot fool it), and, unless
 * allowed, files of other users.
 *
 * @param path An absolute path.
 * @param options How to open.
 * @returns The descriptor, its stat, and whether it was created.
 * @throws {TypeError} For a relative path.
 * @throws {NotFoundError} When it does not exist and `create` is not set.
 * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
 * @throws {PermissionDeniedError} For a symlink, a FIFO, a directory, another user's file, a
 *   world-writable file (when refused), or when the kernel refuses access.
 */
export function openRegularFile(path: string, options: RegularFileOptions): OpenedFile {
  const { label } = options;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new TypeError(`${label}: the path must be absolute, got "${path}"`);
  }
  // O_NONBLOCK: opening a FIFO planted at the path must not block; it is refused below.
  const flags = (options.readOnly ? O.RDONLY : O.RDWR) | O.NOFOLLOW | O.NONBLOCK | O.NOCTTY;
  let fd = -1;
  let created = false;
  if (options.create) {
    try {
      fd = openPath(path, flags | O.CREAT | O.EXCL, options.mode);
      created = true;
    } catch (error) {
      if (!(error instanceof IpcError) || error.errno !== E.EEXIST || options.exclusive) {
        throw refine(error, path, label);
      }
    }
  }
  if (fd < 0) {
    try {
      fd = openPath(path, flags);
    } catch (error) {
      throw refine(error, path, label, options.create ? "" : " (open with { create: true } to make it)");
    }
  }
  try {
    const stat = fstatFd(fd);
    if (stat.type !== "file") {
      throw new PermissionDeniedError(`${label}: ${path} is a ${stat.type}, not a regular file`, {
        syscall: "fstat",
      });
    }
    const uid = libc().geteuid();
    if (stat.uid !== uid && !options.allowOtherOwner) {
      throw new PermissionDeniedError(
        `${label}: ${path} belongs to uid ${stat.uid}, not to this user (uid ${uid}); refusing to use it ` +
          `(another user could change or truncate it under this process; pass allowOtherOwner: true to accept)`,
        { syscall: "fstat" },
      );
    }
    if (created && stat.permissions !== options.mode) {
      fchmodFd(fd, options.mode); // undo the umask
      stat.permissions = options.mode;
      stat.mode = (stat.mode & ~0o7777) | options.mode;
    }
    if (options.refuseWorldWritable && (stat.permissions & 0o002) !== 0) {
      throw new PermissionDeniedError(
        `${label}: ${path} has mode 0o${stat.permissions.toString(8).padStart(3, "0")}: any user may write ` +
          `it; refusing to use it (remove o+w, and share through a group instead)`,
        { syscall: "fstat" },
      );
    }
    return { fd, stat, created };
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

function refine(error: unknown, path: string, label: string, hint = ""): unknown {
  if (!(error instanceof IpcError)) return error;
  if (error.errno === E.ELOOP) {
    return new PermissionDeniedError(
      `${label}: ${path} is a symbolic link; ipcbus does not follow links to files it maps`,
      { errno: error.errno, syscall: "open", cause: error },
    );
  }
  if (error.errno === E.EISDIR) {
    return new PermissionDeniedError(`${label}: ${path} is a directory, not a regular file`, {
      errno: error.errno,
      syscall: "open",
      cause: error,
    });
  }
  if (error instanceof NotFoundError) {
    return new NotFoundError(`${label}: ${path} does not exist${hint}`, {
      errno: error.errno,
      syscall: "open",
      cause: error,
    });
  }
  return error;
}

/**
 * fsync(2) of the directory holding `path`, so that a new directory entry
 * survives a power loss.
 *
 * @param path A path whose parent directory to sync.
 * @throws {IpcError} When the directory cannot be opened or synced.
 */
export function syncParentDirectory(path: string): void {
  const parent = path.slice(0, path.lastIndexOf("/")) || "/";
  const fd = openPath(parent, O.RDONLY | O.DIRECTORY);
  try {
    if (libc().fsync(fd) !== 0) throw lastError("fsync", parent);
  } finally {
    closeFd(fd);
  }
}

/**
 * Removes `path` (unlink), after checking with lstat that it still names the
 * file that was opened (same device and inode).
 *
 * @param path The path.
 * @param identity The opened file's stat.
 * @param label What to call the file in errors, such as `"mapped file"`.
 * @throws {NotFoundError} When the path no longer exists.
 * @throws {PermissionDeniedError} When the path now names another file.
 */
export function unlinkSameFile(path: string, identity: FileStat, label: string): void {
  const stat = lstatPath(path);
  if (stat === null) {
    throw new NotFoundError(`unlink ${path} failed: ENOENT`, { errno: E.ENOENT, syscall: "unlink" });
  }
  if (stat.dev !== identity.dev || stat.ino !== identity.ino) {
    throw new PermissionDeniedError(`${label}: ${path} now names another file; not removed`, {
      syscall: "lstat",
    });
  }
  unlinkPath(path);
}
