// MappedFile: create/open/exclusive/missing, MAP_SHARED across processes and
// MAP_PRIVATE copies, read-only maps, resize and remap (never past the end of
// the file), msync and flush, detach-safe views after close, futex wait and
// notify across processes (with timeout, abort and close), and refusals
// (symlinks, FIFOs, other users' files, bad offsets).
import assert from "node:assert/strict";
import { AlreadyExistsError, ChannelClosedError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { MappedFile } from "../memory/mapped_file.ts";
import { bounded, CommandChild, euid, fixture, leftovers, TempDir } from "./_helpers.ts";

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

async function mapChild(path: string): Promise<CommandChild> {
  const child = new CommandChild(fixture("file_lock_child.ts"), [path, "map"]);
  assert.match(await child.line(), /^ready \d+$/);
  return child;
}

Deno.test("create, open, exclusive, missing; the file's size is mapped; the mode is exact", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("a.bin");
  using file = MappedFile.open(path, { create: true, exclusive: true, size: 10_000, mode: 0o640 });
  assert.equal(file.created, true);
  assert.equal(file.length, 10_000);
  assert.equal(file.view.length, 10_000);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
  assert.throws(() => MappedFile.open(path, { create: true, exclusive: true }), AlreadyExistsError);
  assert.throws(() => MappedFile.open(dir.file("missing.bin")), NotFoundError);
  using again = MappedFile.open(path, { create: true });
  assert.equal(again.created, false);
  assert.equal(again.length, 10_000);
  // A smaller size leaves the file alone; a larger one grows it.
  using grown = MappedFile.open(path, { size: 20_000 });
  assert.equal(grown.length, 20_000);
  assert.equal(file.fileSize(), 20_000);
  // An empty file maps nothing.
  using empty = MappedFile.open(dir.file("empty.bin"), { create: true });
  assert.equal(empty.length, 0);
  assert.equal(empty.view.length, 0);
  assert.equal(empty.unsafePointer, null);
});

Deno.test("MAP_SHARED writes reach another process at once, and its writes reach us", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("shared.bin");
  using file = MappedFile.open(path, { create: true, size: 4096 });
  await using child = await mapChild(path);
  file.view.set([1, 2, 3], 100);
  assert.equal(await child.ask("read 100 3"), "data 010203");
  assert.equal(await child.ask("write 200 cafe"), "written");
  assert.equal(hex(file.view.subarray(200, 202)), "cafe");
  // MAP_PRIVATE: our writes are a private copy.
  using mine = MappedFile.open(path, { shared: false });
  mine.view[300] = 9;
  assert.equal(file.view[300], 0);
  assert.equal(await child.ask("read 300 1"), "data 00");
});

Deno.test("read-only maps, sync and flush, and views that go empty on close", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("ro.bin");
  const file = MappedFile.open(path, { create: true, size: 8192, allocate: true });
  file.view.fill(7);
  file.sync({ async: true });
  file.sync({ start: 4096, length: 10 });
  file.sync({ invalidate: true });
  await file.flush();
  await file.flush({ start: 100, length: 1, datasync: false });
  assert.equal((await Deno.readFile(path))[8191], 7);
  using reader = MappedFile.open(path, { readOnly: true });
  assert.equal(reader.readOnly, true);
  assert.equal(reader.view[5], 7);
  assert.throws(() => reader.resize(100), TypeError);
  assert.throws(() => MappedFile.open(path, { readOnly: true, size: 100_000 }), RangeError);
  const stale = file.view;
  const words = new Int32Array(file.buffer);
  file.close();
  file.close();
  assert.equal(stale.length, 0, "a view taken before close reads as empty");
  assert.equal(words.length, 0);
  assert.throws(() => file.view, ChannelClosedError);
  await assert.rejects(file.flush(), ChannelClosedError);
});

Deno.test("resize and remap: the other mapping sees growth after remap, never maps past the end", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("grow.bin");
  using a = MappedFile.open(path, { create: true, size: 4096 });
  using b = MappedFile.open(path);
  const before = a.view;
  a.resize(65536, { allocate: true });
  assert.equal(a.length, 65536);
  a.view[65535] = 42;
  b.remap();
  assert.equal(b.length, 65536);
  assert.equal(b.view[65535], 42);
  assert.ok(before.length === 0 || before.length === 4096, "an old view is empty if the mapping moved");
  // Shrink: b must not map past the new end.
  a.resize(8192);
  assert.throws(() => b.remap(65536), /reach past its end.*SIGBUS/);
  b.remap();
  assert.equal(b.length, 8192);
  a.resize(0);
  b.remap();
  assert.equal(b.length, 0);
});

Deno.test("wait and notify: across processes, with not-equal, timeout, abort and close", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("futex.bin");
  using file = MappedFile.open(path, { create: true, size: 4096 });
  await using child = await mapChild(path);
  assert.equal(await file.wait(0, 5), "not-equal");
  assert.equal(await file.wait(0, 0, { timeout: 20 }), "timed-out");
  // The child waits on a word; we change it and wake it ("not-equal" if the change came first).
  await child.send("wait-word 8 0 10000");
  Atomics.store(new Int32Array(file.buffer), 2, 1);
  file.notify(8);
  assert.match(await child.line(), /^waited (ok|not-equal)$/);
  // We wait; the child stores and notifies.
  const waiting = file.wait(12, 0, { timeout: 10_000 });
  assert.equal(await child.ask("store 12 3"), "stored");
  assert.match(await child.ask("notify 12"), /^notified \d$/);
  assert.equal(await bounded(waiting, "a futex wake from the child"), "ok");
  const controller = new AbortController();
  const aborted = file.wait(16, 0, { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop")), 10);
  await assert.rejects(aborted, /stop/);
  assert.throws(() => file.notify(4094), RangeError);
  assert.throws(() => file.notify(3), RangeError);
  const other = MappedFile.open(path);
  const closing = other.wait(20, 0);
  setTimeout(() => other.close(), 10);
  await assert.rejects(closing, ChannelClosedError);
});

Deno.test("refusals: relative paths, symlinks, FIFOs, directories, bad options", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("real.bin");
  MappedFile.open(path, { create: true, size: 16 }).close();
  assert.throws(() => MappedFile.open("real.bin"), TypeError);
  assert.throws(() => MappedFile.open(path, { size: -1 }), RangeError);
  assert.throws(() => MappedFile.open(path, { readOnly: true, create: true }), TypeError);
  await Deno.symlink(path, dir.file("link.bin"));
  assert.throws(() => MappedFile.open(dir.file("link.bin")), (error: Error) => {
    assert.ok(error instanceof PermissionDeniedError);
    assert.match(error.message, /symbolic link/);
    return true;
  });
  const fifo = dir.file("f.fifo");
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.throws(() => MappedFile.open(fifo), /is a fifo, not a regular file/);
  using file = MappedFile.open(path);
  file.unlink();
  assert.throws(() => file.unlink(), NotFoundError);
});

Deno.test({
  name: `another user's file is refused unless allowOtherOwner${
    euid() === 0 ? "" : " (skipped: needs root)"
  }`,
  ignore: euid() !== 0,
  async fn() {
    await using dir = await TempDir.make();
    const path = dir.file("theirs.bin");
    MappedFile.open(path, { create: true, size: 16, mode: 0o644 }).close();
    await Deno.chown(path, 65534, 65534);
    assert.throws(() => MappedFile.open(path), /belongs to uid 65534/);
    using file = MappedFile.open(path, { allowOtherOwner: true, readOnly: true });
    assert.equal(file.length, 16);
  },
});

Deno.test("no temporary files are left behind", () => {
  assert.deepEqual(leftovers(), []);
});
