/**
 * The errors ipcbus throws.
 *
 * Every failed system call becomes an {@linkcode IpcError} carrying the
 * `errno`, its symbolic `code` (`"ENOENT"`) and the failing `syscall`. The
 * subclasses exist only where callers are expected to catch them. Empty and
 * full are results, never exceptions; aborts and timeouts reject with
 * `signal.reason`.
 *
 * This module is a leaf: it imports nothing, and every layer of ipcbus
 * (including `ffi/`) may import it.
 *
 * @example Telling "missing" from other failures
 * ```ts
 * import { open, NotFoundError } from "@ipcbus/ipcbus";
 *
 * try {
 *   await open("fifo:/tmp/does-not-exist.fifo");
 * } catch (error) {
 *   if (!(error instanceof NotFoundError)) throw error;
 *   console.log("no such FIFO:", error.code, error.syscall);
 * }
 * ```
 *
 * @module
 */

/** Options accepted by {@linkcode IpcError} and its subclasses. */
export interface IpcErrorOptions {
  /** The C `errno` value, or 0 when the error did not come from a syscall. */
  errno?: number;
  /** Symbolic errno name such as `"ENOENT"`; derived from `errno` when omitted. */
  code?: string;
  /** The failing call, for example `"open"` or `"write"`. */
  syscall?: string;
  /** The underlying cause, if any. */
  cause?: unknown;
}

/**
 * A failed IPC operation, usually a system call that returned an error.
 *
 * @example Inspecting a failure
 * ```ts
 * import { IpcError } from "@ipcbus/ipcbus/errors";
 *
 * const error = new IpcError("open /x failed", { errno: 2, syscall: "open" });
 * console.log(error.code); // "ENOENT"
 * ```
 */
export class IpcError extends Error {
  /** The C `errno` value (0 when not from a system call). */
  readonly errno: number;
  /** Symbolic errno name such as `"ENOENT"` (empty when `errno` is 0). */
  readonly code: string;
  /** The failing call, for example `"open"`. */
  readonly syscall: string;

  /**
   * Creates an error.
   *
   * @param message What failed, in words.
   * @param options errno, code, syscall and cause.
   */
  constructor(message: string, options: IpcErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.errno = options.errno ?? 0;
    this.code = options.code ?? errnoName(this.errno);
    this.syscall = options.syscall ?? "";
  }
}

/**
 * The named object (path, queue, segment) does not exist (`ENOENT`).
 *
 * @example
 * ```ts
 * import { NotFoundError } from "@ipcbus/ipcbus/errors";
 * console.log(new NotFoundError("gone", { errno: 2 }).code); // "ENOENT"
 * ```
 */
export class NotFoundError extends IpcError {}

/**
 * The object exists although exclusive creation was asked for (`EEXIST`).
 *
 * @example
 * ```ts
 * import { AlreadyExistsError } from "@ipcbus/ipcbus/errors";
 * console.log(new AlreadyExistsError("taken", { errno: 17 }).code); // "EEXIST"
 * ```
 */
export class AlreadyExistsError extends IpcError {}

/**
 * The caller may not use the object (`EACCES`, `EPERM`), or the object fails
 * a safety check (wrong owner, wrong file type, a symlink).
 *
 * @example
 * ```ts
 * import { PermissionDeniedError } from "@ipcbus/ipcbus/errors";
 * console.log(new PermissionDeniedError("no", { errno: 13 }).code); // "EACCES"
 * ```
 */
export class PermissionDeniedError extends IpcError {}

/**
 * The channel was closed by this process, or the peer went away (end of
 * stream, `EPIPE`, a removed queue). Pending and later operations settle with
 * this error; async iteration ends quietly on it.
 *
 * @example
 * ```ts
 * import { ChannelClosedError } from "@ipcbus/ipcbus/errors";
 * console.log(new ChannelClosedError("closed").name); // "ChannelClosedError"
 * ```
 */
export class ChannelClosedError extends IpcError {}

/**
 * A message is larger than the transport or the receiver allows. Thrown
 * before any system call, so nothing is sent.
 *
 * @example
 * ```ts
 * import { MessageTooLargeError } from "@ipcbus/ipcbus/errors";
 * const error = new MessageTooLargeError(5000, 4084, "fifo: frames must fit PIPE_BUF");
 * console.log(error.limit); // 4084
 * ```
 */
export class MessageTooLargeError extends RangeError {
  /** The size that was refused, in bytes. */
  readonly size: number;
  /** The largest size allowed, in bytes. */
  readonly limit: number;

  /**
   * Creates an error.
   *
   * @param size The refused size in bytes.
   * @param limit The largest allowed size in bytes.
   * @param detail Which limit this is and how to change it.
   */
  constructor(size: number, limit: number, detail: string) {
    super(`message of ${size} bytes exceeds the limit of ${limit} bytes (${detail})`);
    this.name = "MessageTooLargeError";
    this.size = size;
    this.limit = limit;
  }
}

/**
 * Malformed or corrupt data from a peer: wrong magic, unknown version, a
 * length beyond the limit, or a stream that ended inside a frame. The data is
 * never trusted further.
 *
 * @example
 * ```ts
 * import { FrameError } from "@ipcbus/ipcbus/errors";
 * console.log(new FrameError("bad magic 0x0000").name); // "FrameError"
 * ```
 */
export class FrameError extends Error {
  /**
   * Creates an error.
   *
   * @param message What was wrong with the data.
   * @param options An optional cause.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FrameError";
  }
}

/**
 * Data that was received intact but failed the channel's schema.
 *
 * @example
 * ```ts
 * import { ValidationError } from "@ipcbus/ipcbus/errors";
 * const error = new ValidationError([{ message: "expected a number", path: ["id"] }]);
 * console.log(error.message); // "message failed schema validation: id: expected a number"
 * ```
 */
export class ValidationError extends TypeError {
  /** The issues reported by the schema. */
  readonly issues: readonly { message: string; path?: readonly unknown[] }[];

  /**
   * Creates an error.
   *
   * @param issues The Standard Schema issues.
   */
  constructor(issues: readonly { message: string; path?: readonly unknown[] }[]) {
    const described = issues.map((issue) => {
      const path = (issue.path ?? []).map((key) =>
        typeof key === "object" && key !== null && "key" in key ? String(key.key) : String(key)
      ).join(".");
      return path ? `${path}: ${issue.message}` : issue.message;
    });
    super(`message failed schema validation: ${described.join("; ")}`);
    this.name = "ValidationError";
    this.issues = issues;
  }
}

/** What a {@linkcode MessagesLostError} reports: a log reader's loss. */
export interface MessagesLost {
  /** `"overrun"` (the reader fell behind the ring) or `"gap"` (sequence numbers missing after a crash). */
  kind: "overrun" | "gap" | "damage";
  /** How many messages were lost, when known. */
  lost: number | null;
  /** The sequence number the reader expected next. */
  expected: number;
  /** The sequence number of the message it gets next instead (null when none is there yet). */
  next: number | null;
  /** What happened, in words. */
  message: string;
}

/**
 * A log reader fell behind the ring (or asked for messages no longer
 * retained): `lost` messages are gone. Thrown once by the receive that finds
 * out; the next receive goes on with the oldest message still there.
 *
 * @example Reading the numbers of a loss
 * ```ts
 * import { MessagesLostError } from "@ipcbus/ipcbus/errors";
 *
 * const error = new MessagesLostError({ kind: "overrun", lost: 3, expected: 10, next: 13, message: "x" });
 * console.log(error.lost, error.next); // 3 13
 * ```
 */
export class MessagesLostError extends Error {
  /** `"overrun"` or `"gap"`. */
  readonly kind: "overrun" | "gap";
  /** How many messages were lost, when known. */
  readonly lost: number | null;
  /** The sequence number expected. */
  readonly expected: number;
  /** The sequence number of the next message delivered (null when none is there yet). */
  readonly next: number | null;

  /**
   * Creates the error.
   *
   * @param loss What was lost.
   */
  constructor(loss: MessagesLost) {
    super(loss.message);
    this.name = "MessagesLostError";
    this.kind = loss.kind === "gap" ? "gap" : "overrun";
    this.lost = loss.lost;
    this.expected = loss.expected;
    this.next = loss.next;
  }
}

/** Linux errno names (identical on x86_64 and aarch64: asm-generic). */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  29: "ESPIPE",
  30: "EROFS",
  31: "EMLINK",
  32: "EPIPE",
  34: "ERANGE",
  35: "EDEADLK",
  36: "ENAMETOOLONG",
  37: "ENOLCK",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  42: "ENOMSG",
  43: "EIDRM",
  61: "ENODATA",
  62: "ETIME",
  74: "EBADMSG",
  75: "EOVERFLOW",
  90: "EMSGSIZE",
  95: "EOPNOTSUPP",
  110: "ETIMEDOUT",
  122: "EDQUOT",
  125: "ECANCELED",
  130: "EOWNERDEAD",
};

/**
 * The symbolic name of a Linux errno value.
 *
 * @param errno The errno value.
 * @returns Its name (`"ENOENT"`), `"E<n>"` for unknown values, or `""` for 0.
 *
 * @example
 * ```ts
 * import { errnoName } from "@ipcbus/ipcbus/errors";
 * console.log(errnoName(2)); // "ENOENT"
 * ```
 */
export function errnoName(errno: number): string {
  if (errno === 0) return "";
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/**
 * Builds the error class that fits an errno: {@linkcode NotFoundError} for
 * `ENOENT`, {@linkcode AlreadyExistsError} for `EEXIST`,
 * {@linkcode PermissionDeniedError} for `EACCES`/`EPERM`,
 * {@linkcode ChannelClosedError} for `EPIPE`/`EIDRM`, else {@linkcode IpcError}.
 *
 * @param errno The errno value.
 * @param syscall The failing call.
 * @param detail What the call was doing, such as the path.
 * @param reason The C library's description of the errno, if known.
 * @returns The error, ready to throw.
 *
 * @example
 * ```ts
 * import { errnoError } from "@ipcbus/ipcbus/errors";
 * const error = errnoError(2, "open", "/tmp/x");
 * console.log(error.message); // "open /tmp/x failed: ENOENT"
 * ```
 */
export function errnoError(errno: number, syscall: string, detail = "", reason = ""): IpcError {
  const code = errnoName(errno);
  const what = detail ? `${syscall} ${detail}` : syscall;
  const message = `${what} failed: ${code}${reason ? ` (${reason})` : ""}`;
  const options = { errno, code, syscall };
  switch (code) {
    case "ENOENT":
      return new NotFoundError(message, options);
    case "EEXIST":
      return new AlreadyExistsError(message, options);
    case "EACCES":
    case "EPERM":
      return new PermissionDeniedError(message, options);
    case "EPIPE":
    case "EIDRM":
      return new ChannelClosedError(message, options);
    default:
      return new IpcError(message, options);
  }
}
