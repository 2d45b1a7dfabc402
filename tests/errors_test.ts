// errors.ts: the error classes, their fields and names, and the errno mapping.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  ChannelClosedError,
  FrameError,
  IpcError,
  MessageTooLargeError,
  NotFoundError,
  PermissionDeniedError,
  ValidationError,
} from "../mod.ts";
import { errnoError, errnoName } from "../errors.ts";

Deno.test("errnoName: known names, E<n> for unknown values, empty for 0", () => {
  assert.equal(errnoName(0), "");
  for (
    const [n, name] of [
      [1, "EPERM"],
      [2, "ENOENT"],
      [4, "EINTR"],
      [6, "ENXIO"],
      [9, "EBADF"],
      [11, "EAGAIN"],
      [13, "EACCES"],
      [17, "EEXIST"],
      [22, "EINVAL"],
      [24, "EMFILE"],
      [28, "ENOSPC"],
      [32, "EPIPE"],
      [38, "ENOSYS"],
      [40, "ELOOP"],
      [43, "EIDRM"],
      [90, "EMSGSIZE"],
      [110, "ETIMEDOUT"],
    ] as const
  ) assert.equal(errnoName(n), name);
  assert.equal(errnoName(9999), "E9999");
  assert.equal(errnoName(-3), "E-3");
});

Deno.test("errnoError maps errno to the error class callers catch", () => {
  const cases: [number, new (...args: never[]) => Error][] = [
    [2, NotFoundError],
    [17, AlreadyExistsError],
    [13, PermissionDeniedError],
    [1, PermissionDeniedError],
    [32, ChannelClosedError],
    [43, ChannelClosedError],
  ];
  for (const [errno, type] of cases) {
    const error = errnoError(errno, "open", "/x");
    assert.ok(error instanceof type, `${errno} → ${type.name}, got ${error.name}`);
    assert.ok(error instanceof IpcError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, type.name);
    assert.equal(error.errno, errno);
    assert.equal(error.code, errnoName(errno));
    assert.equal(error.syscall, "open");
  }
  for (const errno of [4, 9, 11, 22, 28, 12345]) {
    const error = errnoError(errno, "write");
    assert.equal(error.constructor, IpcError, `errno ${errno} is a plain IpcError`);
    assert.equal(error.name, "IpcError");
  }
});

Deno.test("errnoError messages: syscall, detail, code and reason", () => {
  assert.equal(errnoError(2, "open", "/tmp/x").message, "open /tmp/x failed: ENOENT");
  assert.equal(errnoError(2, "open").message, "open failed: ENOENT");
  assert.equal(
    errnoError(13, "mkfifo", "/a", "Permission denied").message,
    "mkfifo /a failed: EACCES (Permission denied)",
  );
  assert.equal(errnoError(777, "poll").message, "poll failed: E777");
});

Deno.test("IpcError fields: errno, code (derived or given), syscall, cause", () => {
  const cause = new Error("root cause");
  const error = new IpcError("it failed", { errno: 2, syscall: "lstat", cause });
  assert.equal(error.message, "it failed");
  assert.equal(error.errno, 2);
  assert.equal(error.code, "ENOENT");
  assert.equal(error.syscall, "lstat");
  assert.equal(error.cause, cause);
  assert.equal(error.name, "IpcError");
  assert.ok(error.stack?.includes("IpcError"));

  const bare = new IpcError("bare");
  assert.equal(bare.errno, 0);
  assert.equal(bare.code, "");
  assert.equal(bare.syscall, "");
  assert.equal(bare.cause, undefined);
  assert.equal("cause" in bare, false, "no cause property unless one was given");

  assert.equal(new IpcError("x", { errno: 2, code: "ECUSTOM" }).code, "ECUSTOM");
  for (const type of [NotFoundError, AlreadyExistsError, PermissionDeniedError, ChannelClosedError]) {
    const sub = new type("m", { errno: 5 });
    assert.equal(sub.name, type.name);
    assert.ok(sub instanceof IpcError);
    assert.equal(sub.code, "EIO");
  }
});

Deno.test("MessageTooLargeError is a RangeError carrying size and limit", () => {
  const error = new MessageTooLargeError(5000, 4084, "fifo: frames must fit PIPE_BUF");
  assert.ok(error instanceof RangeError);
  assert.ok(!(error instanceof IpcError));
  assert.equal(error.name, "MessageTooLargeError");
  assert.equal(error.size, 5000);
  assert.equal(error.limit, 4084);
  assert.equal(
    error.message,
    "message of 5000 bytes exceeds the limit of 4084 bytes (fifo: frames must fit PIPE_BUF)",
  );
});

Deno.test("FrameError and ValidationError", () => {
  const cause = new SyntaxError("bad json");
  const frame = new FrameError("bad magic 0x0000", { cause });
  assert.equal(frame.name, "FrameError");
  assert.equal(frame.cause, cause);
  assert.ok(frame instanceof Error);
  assert.ok(!(frame instanceof IpcError));

  const validation = new ValidationError([
    { message: "expected a number", path: ["id"] },
    { message: "too short", path: [{ key: "items" }, 0, { key: "name" }] },
    { message: "no path" },
    { message: "empty path", path: [] },
  ]);
  assert.ok(validation instanceof TypeError);
  assert.equal(validation.name, "ValidationError");
  assert.equal(
    validation.message,
    "message failed schema validation: id: expected a number; items.0.name: too short; no path; empty path",
  );
  assert.equal(validation.issues.length, 4);
});

Deno.test("String(error) starts with the error's name", () => {
  for (
    const error of [
      new NotFoundError("a", { errno: 2 }),
      new ChannelClosedError("b"),
      new FrameError("c"),
      new MessageTooLargeError(2, 1, "d"),
      new ValidationError([{ message: "e" }]),
    ]
  ) {
    assert.match(String(error), new RegExp(`^${error.name}: `));
  }
});
