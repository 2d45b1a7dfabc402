/**
 * Names of POSIX IPC objects (named semaphores, shared memory objects) and
 * where glibc keeps them: validation, the file under `/dev/shm` that backs a
 * name, and permission errors that name the object's owner and mode.
 *
 * glibc (2.34 and later) maps `shm_open("/name")` to `/dev/shm/name` and
 * `sem_open("/name")` to `/dev/shm/sem.name`. The file is only inspected
 * (lstat) to explain failures and to check what a name refers to; every
 * object is opened through the libc calls themselves.
 *
 * @module
 */

import { errnoError, type IpcError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { lstatPath } from "./fd.ts";
import { E, libc, strerror } from "./libc.ts";
import type { FileStat } from "./structs.ts";

/** The tmpfs directory glibc keeps POSIX semaphores and shared memory objects in. */
export const SHM_DIRECTORY = "/dev/shm";

/** What a name is checked for, and the longest part after the slash (bytes). */
export interface PosixNameRule {
  /** What the object is, starting messages (`"named semaphore"`). */
  what: string;
  /** Longest part after the leading slash, in UTF-8 bytes. */
  max: number;
  /** Why that is the limit, for the message. */
  reason: string;
}

const encoder = new TextEncoder();

/**
 * Checks a POSIX IPC name: one leading slash, then 1 to `rule.max` bytes of
 * UTF-8 without another slash or a NUL, and neither `.` nor `..`.
 *
 * @param name The name.
 * @param rule What the object is and its length limit.
 * @returns The name, unchanged.
 * @throws {TypeError} When the name is not such a string.
 */
export function checkPosixName(name: unknown, rule: PosixNameRule): string {
  const { what, max, reason } = rule;
  if (typeof name !== "string") {
    throw new TypeError(`${what}: the name must be a string such as "/jobs", got ${typeof name}`);
  }
  if (!name.startsWith("/") || name.length < 2) {
    throw new TypeError(`${what}: the name must be a slash followed by 1 to ${max} bytes, got "${name}"`);
  }
  const rest = name.slice(1);
  if (rest.includes("/")) {
    throw new TypeError(`${what}: the name may contain no slash after the first one, got "${name}"`);
  }
  if (rest.includes("\0")) throw new TypeError(`${what}: the name must not contain a NUL character`);
  if (rest === "." || rest === "..") throw new TypeError(`${what}: the name may not be "/." or "/.."`);
  const bytes = encoder.encode(rest).length;
  if (bytes > max) {
    throw new TypeError(
      `${what}: the name has ${bytes} bytes after the slash; at most ${max} are allowed (${reason})`,
    );
  }
  return name;
}

/**
 * The file that backs a name under {@linkcode SHM_DIRECTORY}.
 *
 * @param name A checked name (`"/jobs"`).
 * @param prefix `"sem."` for semaphores, `""` for shared memory.
 * @returns The path, such as `/dev/shm/sem.jobs`.
 */
export function backingPath(name: string, prefix: string): string {
  return `${SHM_DIRECTORY}/${prefix}${name.slice(1)}`;
}

/**
 * lstat(2) of a backing file, or null when it does not exist or cannot be
 * inspected (the checks that use it are then skipped).
 *
 * @param path The backing file.
 * @returns Its stat, or null.
 */
export function inspect(path: string): FileStat | null {
  try {
    return lstatPath(path);
  } catch {
    return null;
  }
}

/**
 * The same permission error, saying who owns the object, its mode, and who
 * is asking (the owner is read from the backing file; without it the error
 * is returned unchanged).
 *
 * @param error The error from the failed call.
 * @param what What the object is, with its name (`"named semaphore /jobs"`).
 * @param path Its backing file.
 * @returns The error to throw.
 */
export function deniedWithFileOwner(
  error: PermissionDeniedError,
  what: string,
  path: string,
): PermissionDeniedError {
  const owner = inspect(path);
  if (owner === null) return error;
  return new PermissionDeniedError(
    `${error.message}: ${what} (${path}) belongs to uid ${owner.uid} (gid ${owner.gid}) with mode ` +
      `0o${owner.permissions.toString(8).padStart(3, "0")}; this process runs as uid ${libc().geteuid()}`,
    { errno: error.errno, code: error.code, syscall: error.syscall },
  );
}

/**
 * The error for a failed open call (sem_open, shm_open) whose errno needs no
 * explanation of its own: the mapped error, naming the owner when
 * permission was refused, or saying that the name's backing file is not a
 * regular file.
 *
 * @param syscall The call (`"sem_open"`).
 * @param code Its errno.
 * @param what What the object is, with its name (`"named semaphore /jobs"`).
 * @param name The name.
 * @param path Its backing file.
 * @param notA What the backing file should be (`"a semaphore"`).
 * @returns The error to throw.
 */
export function openFailure(
  syscall: string,
  code: number,
  what: string,
  name: string,
  path: string,
  notA: string,
): IpcError {
  const error = errnoError(code, syscall, name, strerror(code));
  if (error instanceof PermissionDeniedError) return deniedWithFileOwner(error, what, path);
  const stat = inspect(path);
  if (stat !== null && stat.type !== "file") {
    return new PermissionDeniedError(`${error.message}: ${path} is a ${stat.type}, not ${notA}`, {
      errno: code,
      syscall,
    });
  }
  return error;
}

/**
 * The error for a failed unlink call (sem_unlink, shm_unlink).
 *
 * @param syscall The call (`"sem_unlink"`).
 * @param code Its errno.
 * @param what What the object is, with its name (`"named semaphore /jobs"`).
 * @param name The name.
 * @param path Its backing file.
 * @param kind What has no such name (`"named semaphore"`).
 * @returns The error to throw.
 */
export function unlinkFailure(
  syscall: string,
  code: number,
  what: string,
  name: string,
  path: string,
  kind: string,
): IpcError {
  if (code === E.ENOENT) {
    return new NotFoundError(`${syscall} ${name} failed: no ${kind} has this name`, { errno: code, syscall });
  }
  const error = errnoError(code, syscall, name, strerror(code));
  return error instanceof PermissionDeniedError ? deniedWithFileOwner(error, what, path) : error;
}

/** The identity of a backing file, to tell whether a name still refers to the same object. */
export interface FileIdentity {
  /** Device id. */
  dev: bigint;
  /** Inode number. */
  ino: bigint;
}

/**
 * Refuses to unlink a name that no longer refers to the object opened:
 * throws when the backing file is gone or is another file now; returns
 * when it is the same object, or cannot be inspected (the unlink call then
 * decides).
 *
 * @param syscall The unlink call (`"sem_unlink"`).
 * @param name The name.
 * @param path Its backing file.
 * @param identity What the backing file was when opened.
 * @param another What the name would refer to instead (`"another semaphore"`).
 * @throws {NotFoundError} When the name was removed, or names another object now.
 */
export function checkStillNamed(
  syscall: string,
  name: string,
  path: string,
  identity: FileIdentity,
  another: string,
): void {
  const verdict = sameObject(path, identity);
  if (verdict === "gone" || verdict === "other") {
    throw new NotFoundError(
      verdict === "gone"
        ? `${syscall} ${name} failed: the name was already removed`
        : `${syscall} ${name} refused: the name now refers to ${another} (ours was unlinked and the name ` +
          `created anew); left it alone`,
      { errno: E.ENOENT, syscall },
    );
  }
}

/** Whether the name's backing file is still `identity` (`"unknown"`: the directory cannot be inspected). */
function sameObject(path: string, identity: FileIdentity): "same" | "other" | "gone" | "unknown" {
  let now: FileStat | null;
  try {
    now = lstatPath(path);
  } catch {
    return "unknown";
  }
  if (now === null) return "gone";
  return now.dev === identity.dev && now.ino === identity.ino ? "same" : "other";
}

/**
 * Reads an optional boolean option.
 *
 * @param value The option's value.
 * @param what The option's name (`"create"`).
 * @param subject What the object is, starting the message (`"named semaphore"`).
 * @param fallback The value when the option is absent.
 * @returns The value.
 * @throws {TypeError} When the option is present and not a boolean.
 */
export function booleanOption(value: unknown, what: string, subject: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new TypeError(`${subject}: ${what} must be a boolean`);
  return value;
}

/**
 * Reads the `mode` option of a creating open.
 *
 * @param mode The option's value (default `0o600`).
 * @param subject What the object is, with its name (`"named semaphore /jobs"`).
 * @returns The permission bits.
 * @throws {RangeError} When they are not an integer from 0 to `0o777`.
 */
export function modeOption(mode: number | undefined, subject: string): number {
  mode ??= 0o600;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new RangeError(`${subject}: mode must be permission bits from 0 to 0o777, got ${mode}`);
  }
  return mode;
}
