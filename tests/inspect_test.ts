// inspect.ts: reading kernel files and listing the IPC directories, and what both refuse.
import assert from "node:assert/strict";
import { listIpcDirectory, lstatIpcPath, readProcFile } from "../inspect.ts";

Deno.test("readProcFile reads /proc and /sys files, and nothing a /proc path leads elsewhere to", () => {
  assert.ok(Number(readProcFile("/proc/sys/kernel/msgmax")) > 0);
  assert.equal(readProcFile("/proc/sys/kernel/no-such-setting"), null);
  assert.throws(() => readProcFile("/etc/hostname"), TypeError);
  assert.throws(() => readProcFile("/proc/../etc/hostname"), TypeError);
  // Magic links under /proc reach the whole file system: the file opened is checked.
  assert.throws(() => readProcFile("/proc/self/root/etc/hostname"), /procfs and sysfs|only \/proc and \/sys/);
  assert.throws(() => readProcFile(`/proc/self/cwd/deno.json`), TypeError);
});

Deno.test("listIpcDirectory lists /dev/shm and refuses other directories", () => {
  assert.ok(Array.isArray(listIpcDirectory("/dev/shm")));
  assert.throws(() => listIpcDirectory("/tmp" as "/dev/shm"), TypeError);
});

Deno.test("lstatIpcPath looks at paths under /dev without following links; missing is null", () => {
  assert.equal(lstatIpcPath("/dev/shm")?.type, "directory");
  assert.equal(lstatIpcPath("/dev/null")?.type, "char");
  assert.equal(lstatIpcPath("/dev/shm/ipcbus-no-such-object"), null);
  assert.equal(lstatIpcPath("/dev/null/below-a-file"), null);
  assert.equal(lstatIpcPath("/proc/self")?.type, "symlink");
  assert.throws(() => lstatIpcPath("dev/shm"), TypeError);
});
