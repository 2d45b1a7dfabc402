/**
 * Names of POSIX IPC objects (named semaphores, shared memory objects) and
 * where glibc keeps them: validation (also of POSIX queue names), the file
 * under `/dev/shm` that backs a name, the open-or-create loop of their open
 * calls, their failures explained (permission errors name the object's
 * owner and mode), and opening and sizing shared memory objects (the one
 * implementation behind `PosixSharedMemory` and the `shm:` ring).
 *
 * glibc (2.34 and later) maps `shm_open("/name")` to `/dev/shm/name` and
 * `sem_open("/name")` to `/dev/shm/sem.name`. The file is only inspected
 * (lstat) to explain failures and to check what a name refers to; every
 * object is opened through the libc calls themselves.
 *
 * @module
 */

import { AlreadyExistsError, errnoError, IpcError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { reserveFileSpace, setFileSize } from "./_file_space.ts";
import { O } from "./constants.ts";
import { cString } from "./cstring.ts";
import { closeFd, fchmodFd, fstatFd, lstatPath } from "./fd.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, libc, need, strerror } from "./libc.ts";
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
  /** What one object is called in `"/." and "/.." are not <noun> names` (default: `valid`). */
  noun?: string;
}

const encoder = new TextEncoder();

/**
 * Checks a POSIX IPC name: one leading slash, then 1 to `rule.max` bytes of
 * UTF-8 without another slash or a NUL, and neither `.` nor `..`.
 *
 * @param name The name.
 * @param rule What the object is and its length limit.
 * @param describe Builds the message from what is wrong with the name (default:
 *   `<what>: bad name "<name>": <problem>`), for callers that show more context, such as the address.
 * @returns The name, unchanged.
 * @throws {TypeError} When the name is not such a string.
 */
export function checkPosixName(
  name: unknown,
  rule: PosixNameRule,
  describe?: (problem: string) => string,
): string {
  if (typeof name !== "string") {
    throw new TypeError(`${rule.what}: the name must be a string such as "/jobs", got ${typeof name}`);
  }
  const problem = nameProblem(name, rule);
  if (problem === undefined) return name;
  throw new TypeError(
    describe ? describe(problem) : `${rule.what}: bad name ${JSON.stringify(name)}: ${problem}`,
  );
}

/** What is wrong with a name, or undefined when nothing is. */
function nameProblem(name: string, { max, reason, noun }: PosixNameRule): string | undefined {
  if (!name.startsWith("/")) return `a name starts with one slash, then 1 to ${max} bytes`;
  const rest = name.slice(1);
  if (rest === "") return `the name is empty after the slash (1 to ${max} bytes must follow it)`;
  if (rest.includes("/")) return "a name has no slash but the first one";
  if (rest === "." || rest === "..") return `"/." and "/.." are not ${noun ?? "valid"} names`;
  if (rest.includes("\0")) return "the name contains a NUL character";
  const bytes = encoder.encode(rest).length;
  if (bytes > max) return `at most ${max} bytes may follow the slash (${reason}), got ${bytes}`;
  return undefined;
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
 * A kind of POSIX object (named semaphores, shared memory objects): its
 * name rule, calls, backing file, and what differs in the explanations of
 * its failures.
 */
export interface PosixObjectKind extends PosixNameRule {
  /** The open call (`"sem_open"`). */
  open: string;
  /** The unlink call (`"sem_unlink"`). */
  unlink: string;
  /** Prefix of the backing file's name under {@linkcode SHM_DIRECTORY} (`"sem."`, or `""`). */
  prefix: string;
  /** What one object is called in sentences (`"named semaphore"`, `"shared memory object"`). */
  object: string;
  /** What the backing file should be, for a name that refers to something else (`"a semaphore"`). */
  notA: string;
  /** How to make one, ending the message for a missing name (`"open with create: true to make one"`). */
  createHint: string;
  /** Why the open call needs a descriptor, for `EMFILE` (`"sem_open needs a descriptor for a moment"`). */
  descriptorNote: string;
  /** Explains the errno values peculiar to this kind (returns undefined for the others). */
  explain?: (code: number, name: string) => IpcError | undefined;
}

/**
 * The error for a failed open call (sem_open, shm_open), explained: no such
 * name, the name taken (`exclusive`), a symbolic link, the descriptor
 * limits, the kind's own cases, a full `/dev/shm`, a permission error
 * naming the owner and mode, or a name whose backing file is not a regular
 * file. Each message names the call, the name and the errno.
 *
 * @param kind The kind of object.
 * @param code The errno.
 * @param name The name.
 * @returns The error to throw.
 */
export function openFailure(kind: PosixObjectKind, code: number, name: string): IpcError {
  const syscall = kind.open;
  const path = backingPath(name, kind.prefix);
  const options = { errno: code, syscall };
  const failed = `${syscall} ${name} failed`;
  switch (code) {
    case E.ENOENT:
      return new NotFoundError(
        `${failed}: ENOENT (no ${kind.object} has this name: ${path}); ${kind.createHint}`,
        options,
      );
    case E.EEXIST:
      return new AlreadyExistsError(
        `${failed}: EEXIST (a ${kind.object} with this name exists and exclusive was asked for)`,
        options,
      );
    case E.ELOOP:
      return new PermissionDeniedError(
        `${failed}: ELOOP (${path} is a symbolic link; a ${kind.object} is never opened through links)`,
        options,
      );
    case E.EMFILE:
      return new IpcError(
        `${failed}: EMFILE (${strerror(code)}): ${kind.descriptorNote}, and this process has as many ` +
          `descriptors open as its limit allows; raise it (ulimit -n, RLIMIT_NOFILE) or close descriptors`,
        options,
      );
    case E.ENFILE:
      return new IpcError(
        `${failed}: ENFILE (${strerror(code)}): ${kind.descriptorNote}, and the system-wide limit on open ` +
          `files is reached; root raises it with sysctl fs.file-max=<n>, or close descriptors`,
        options,
      );
  }
  const own = kind.explain?.(code, name);
  if (own !== undefined) return own;
  if (code === E.ENOSPC) {
    return new IpcError(
      `${failed}: ENOSPC (${strerror(code)}): ${SHM_DIRECTORY} (a tmpfs) has no room or no free inodes ` +
        `for ${path}; see df ${SHM_DIRECTORY} and df -i ${SHM_DIRECTORY}, remove objects no one uses ` +
        `(ipcbus gc), or remount it larger (mount -o remount,size=...,nr_inodes=... ${SHM_DIRECTORY})`,
      options,
    );
  }
  const what = `${kind.what} ${name}`;
  const error = errnoError(code, syscall, name, strerror(code));
  if (error instanceof PermissionDeniedError) return deniedWithFileOwner(error, what, path);
  const stat = inspect(path);
  if (stat !== null && stat.type !== "file") {
    return new PermissionDeniedError(
      `${error.message}: ${path} is a ${stat.type}, not ${kind.notA}`,
      options,
    );
  }
  return error;
}

/**
 * The error for a failed unlink call (sem_unlink, shm_unlink).
 *
 * @param kind The kind of object.
 * @param code The errno.
 * @param name The name.
 * @returns The error to throw.
 */
export function unlinkFailure(kind: PosixObjectKind, code: number, name: string): IpcError {
  const syscall = kind.unlink;
  if (code === E.ENOENT) {
    return new NotFoundError(`${syscall} ${name} failed: ENOENT (no ${kind.object} has this name)`, {
      errno: code,
      syscall,
    });
  }
  const error = errnoError(code, syscall, name, strerror(code));
  return error instanceof PermissionDeniedError
    ? deniedWithFileOwner(error, `${kind.what} ${name}`, backingPath(name, kind.prefix))
    : error;
}

/**
 * The open-or-create loop of the POSIX open calls: with `create`, creates
 * exclusively (to know whether this call made it) and falls back to opening
 * the existing object unless `exclusive`; retries `EINTR`, an `ENOENT` that
 * is stale errno (the name's file is there), and an object removed between
 * the failed create and the open (created again, up to 8 times).
 *
 * @param kind The kind of object, for the errors.
 * @param name The name (checked).
 * @param options `create` and `exclusive`.
 * @param call Makes the call, exclusively creating when `creating`; returns null on failure with errno
 *   set (no other libc call may come in between).
 * @returns What the call returned, and whether it created the object.
 * @throws {IpcError} The explained {@linkcode openFailure}.
 */
export function openOrCreate<T>(
  kind: PosixObjectKind,
  name: string,
  options: { create: boolean; exclusive: boolean },
  call: (creating: boolean) => T | null,
): { handle: T; created: boolean } {
  const path = backingPath(name, kind.prefix);
  for (let attempt = 0;; attempt++) {
    if (options.create) {
      const handle = call(true);
      if (handle !== null) return { handle, created: true };
      const code = errno();
      if (code === E.EINTR) continue;
      if (code !== E.EEXIST || options.exclusive) throw openFailure(kind, code, name);
    }
    const handle = call(false);
    if (handle !== null) return { handle, created: false };
    const code = errno();
    if (code === E.EINTR) continue;
    // errno can be stale (see ffi/libc.ts): an ENOENT for a name whose file is there is retried.
    if (code === E.ENOENT && attempt < BELIEVE_ERRNO_AFTER && inspect(path) !== null) continue;
    // ENOENT after EEXIST: unlinked in between; try to create it again.
    if (!options.create || code !== E.ENOENT || attempt >= 8) throw openFailure(kind, code, name);
  }
}

// -- shared memory objects ------------------------------------------------------

/** Shared memory objects (shm_open(3)): `/name` is `/dev/shm/name`. */
export const SHARED_MEMORY: PosixObjectKind = {
  what: "shared memory",
  max: 255,
  reason: "glibc stores /name as /dev/shm/name and a file name has at most 255 bytes",
  noun: "shared memory",
  open: "shm_open",
  unlink: "shm_unlink",
  prefix: "",
  object: "shared memory object",
  notA: "a shared memory object",
  createHint: "open with create: true (and a size) to make one",
  descriptorNote: "every open object holds a descriptor",
};

/** What {@linkcode openSharedMemoryObject} opened. */
export interface OpenedSharedMemory {
  /** The descriptor (close-on-exec). */
  fd: number;
  /** Whether this call created the object. */
  created: boolean;
  /** fstat of the object (a created object's permissions are the mode asked for). */
  stat: FileStat;
  /** The name as a C string. */
  cname: Uint8Array<ArrayBuffer>;
}

/**
 * shm_open(3) of `name` ({@linkcode openOrCreate}), never through a symbolic
 * link (`O_NOFOLLOW`) and never waiting (`O_NONBLOCK`: a FIFO planted under
 * the name would otherwise block the open until a writer comes), then
 * checked with fstat to be a regular file. A created object gets `mode`
 * exactly (the umask is undone); on any failure after the open, the
 * descriptor is closed and a created object removed.
 *
 * @param name The name (checked).
 * @param options `create`, `exclusive`, `mode` of a new object, `readOnly` (`O_RDONLY`).
 * @returns The descriptor, whether it was created, its fstat, and the C name.
 * @throws {PermissionDeniedError} When the name refers to something that is not a regular file, or
 *   access is refused (the message names the owner and mode).
 * @throws {IpcError} The explained {@linkcode openFailure} of shm_open.
 */
export function openSharedMemoryObject(
  name: string,
  options: { create: boolean; exclusive: boolean; mode: number; readOnly?: boolean },
): OpenedSharedMemory {
  const shmOpen = need("shm_open");
  const cname = cString(name, "shared memory name");
  const access = (options.readOnly ? O.RDONLY : O.RDWR) | O.NONBLOCK | O.NOFOLLOW | O.CLOEXEC;
  const { handle: fd, created } = openOrCreate(SHARED_MEMORY, name, options, (creating) => {
    const fd = creating ? shmOpen(cname, access | O.CREAT | O.EXCL, options.mode) : shmOpen(cname, access, 0);
    return fd >= 0 ? fd : null;
  });
  try {
    const stat = fstatFd(fd);
    if (stat.type !== "file") {
      throw new PermissionDeniedError(
        `shm_open ${name}: ${backingPath(name, "")} is a ${stat.type}, not a shared memory object; ` +
          `refusing to use it`,
        { syscall: "fstat" },
      );
    }
    if (created && stat.permissions !== options.mode) {
      fchmodFd(fd, options.mode);
      stat.permissions = options.mode;
      stat.mode = (stat.mode & ~0o7777) | options.mode;
    }
    return { fd, created, stat, cname };
  } catch (error) {
    closeFd(fd);
    if (created) need("shm_unlink")(cname);
    throw error;
  }
}

/**
 * Sets the size of a new shared memory object (ftruncate) and, with
 * `reserve`, allocates its memory now (posix_fallocate), so that a full
 * `/dev/shm` fails here with `ENOSPC` rather than with SIGBUS on a later
 * write.
 *
 * @param fd The descriptor.
 * @param size Bytes.
 * @param what What the object is, with its name (`"shared memory /frames"`).
 * @param options `reserve`, and `orElse`: the caller's own way out, ending the `ENOSPC` advice
 *   (`"choose a smaller capacity"`).
 * @throws {IpcError} When ftruncate or posix_fallocate fails (`ENOSPC` explained).
 * @throws {RangeError} When the size is larger than the system allows (`EFBIG`).
 */
export function sizeSharedMemory(
  fd: number,
  size: number,
  what: string,
  options: { reserve: boolean; orElse: string },
): void {
  setFileSize(fd, size, what);
  if (!options.reserve) return;
  reserveFileSpace(fd, 0, size, what, {
    where: SHM_DIRECTORY,
    advice: `see df ${SHM_DIRECTORY}; raise its size with mount -o remount,size=... ${SHM_DIRECTORY}, or ` +
      options.orElse,
  });
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

/** The options every POSIX object's open takes, checked. */
export interface CheckedOpenOptions {
  /** Create the object when the name is free. */
  create: boolean;
  /** With `create`: fail when the name is taken. */
  exclusive: boolean;
  /** Permission bits of a new object (default `0o600`). */
  mode: number;
}

/**
 * Checks the name and the options every POSIX object's open takes:
 * `create` and `exclusive` (booleans; `exclusive` needs `create`) and
 * `mode` (permission bits, default `0o600`).
 *
 * @param kind The kind of object.
 * @param name The name.
 * @param options The caller's options object.
 * @param caller The method, for a non-object `options` (`"NamedSemaphore.open"`).
 * @returns `create`, `exclusive` and `mode`.
 * @throws {TypeError} For a bad name, options that are not an object, a non-boolean `create` or
 *   `exclusive`, or `exclusive` without `create`.
 * @throws {RangeError} When `mode` is not an integer from 0 to `0o777`.
 */
export function checkOpenOptions(
  kind: PosixObjectKind,
  name: string,
  options: { create?: boolean; exclusive?: boolean; mode?: number },
  caller: string,
): CheckedOpenOptions {
  checkPosixName(name, kind);
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${caller}: options must be an object`);
  }
  const { what } = kind;
  const create = booleanOption(options.create, "create", what, false);
  const exclusive = booleanOption(options.exclusive, "exclusive", what, false);
  if (exclusive && !create) throw new TypeError(`${what} ${name}: exclusive needs create: true`);
  const mode = options.mode ?? 0o600;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new RangeError(`${what} ${name}: mode must be permission bits from 0 to 0o777, got ${mode}`);
  }
  return { create, exclusive, mode };
}
