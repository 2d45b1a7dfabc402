// inspect.ts: reading kernel files and listing the IPC directories, and what both refuse.
import assert from "node:assert/strict";
import { listIpcDirectory, lstatIpcPath, readProcFile } from "../inspect.ts";
import { mkfifoPath } from "../ffi/fd.ts";
import { TempDir } from "./_helpers.ts";

Deno.test("readProcFile reads /proc and /sys files, and nothing a /proc path leads elsewhere to", () => {
  assert.ok(Number(readProcFile("/proc/sys/kernel/msgmax")) > 0);
  assert.equal(readProcFile("/proc/sys/kernel/no-such-setting"), null);
  assert.throws(() => readProcFile("/etc/hostname"), TypeError);
  assert.throws(() => readProcFile("/proc/../etc/hostname"), TypeError);
  // Magic links under /proc reach the whole file system: the file opened is checked.
  assert.throws(() => readProcFile("/proc/self/root/etc/hostname"), /procfs and sysfs|only \/proc and \/sys/);
  assert.throws(() => readProcFile(`/proc/self/cwd/deno.json`), TypeError);
});

Deno.test("readProcFile refuses a FIFO a /proc path leads to at once, never waiting for a writer", async () => {
  await using dir = await TempDir.make();
  const fifo = dir.file();
  mkfifoPath(fifo, 0o600);
  // In a child: an open that waited for a writer would block its event loop for good.
  const code = `
    import { readProcFile } from ${JSON.stringify(new URL("../inspect.ts", import.meta.url).href)};
    try {
      readProcFile(${JSON.stringify(`/proc/self/root${fifo}`)});
      console.log("read");
    } catch (error) {
      console.log(error.constructor.name + " " + error.message);
    }
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdin: "null",
    signal: AbortSignal.timeout(20_000), // the old open never returned: kill it
  }).output();
  const said = new TextDecoder().decode(output.stdout).trim();
  assert.equal(output.signal, null, "the child had to be killed: the open waited for a writer");
  assert.match(said, /^TypeError readProcFile reads only \/proc and \/sys files/);
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
