// FileLock: shared and exclusive byte ranges within a process and across
// processes, who holds a conflicting lock (F_OFD_GETLK / F_GETLK), waiting
// without blocking the event loop (abort, close), a holder killed with
// SIGKILL releasing its lock, the process-lock pitfall next to OFD locks,
// `using`, and bad input (paths, ranges, descriptors, another user's file).
import assert from "node:assert/strict";
import { AlreadyExistsError, ChannelClosedError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { readProcFile } from "../inspect.ts";
import { FileLock } from "../sync/file_lock.ts";
import { bounded, CommandChild, euid, fixture, hasSetpriv, leftovers, TempDir, until } from "./_helpers.ts";

function child(path: string, kind = "ofd"): CommandChild {
  return new CommandChild(fixture("file_lock_child.ts"), [path, kind]);
}

async function ready(process: CommandChild): Promise<number> {
  const line = await process.line();
  assert.match(line, /^ready \d+$/, line);
  return Number(line.split(" ")[1]);
}

/**
 * How many lock requests on the file at `path` wait in the kernel: the lines of /proc/locks
 * that start with "->" and name the file's inode ("fe:00:2146460" ends in ":2146460"). The
 * device is left out: /proc/locks shows the superblock's, which is not st_dev on btrfs
 * subvolumes or overlayfs (the wait would never be seen there); another file with the same
 * inode number and a blocked lock at that moment would only end the wait early.
 */
function blockedRequests(path: string): number {
  const file = `:${Deno.statSync(path).ino}`;
  return (readProcFile("/proc/locks") ?? "").split("\n")
    .filter((line) => / -> /.test(line) && line.split(/ +/).some((field) => field.endsWith(file))).length;
}

/**
 * Waits until `count` lock requests on `path` are blocked in the kernel. A waiting
 * `FileLock.lock()` of an OFD lock parks a helper thread in F_OFD_SETLKW on a probe
 * descriptor, which the kernel lists in /proc/locks: this is the wait's observable state,
 * so a test acts on a wait that is parked, instead of guessing how long parking takes.
 */
async function parkedInKernel(path: string, count: number, what: string): Promise<void> {
  await until(() => blockedRequests(path) >= count, what);
}

Deno.test("tryLock: shared locks coexist, exclusive ones conflict, disjoint ranges do not", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("a.lock");
  using a = FileLock.open(path, { create: true, exclusive: true });
  using b = FileLock.open(path);
  const shared = a.tryLock({ start: 0, length: 10, shared: true });
  assert.ok(shared?.held);
  assert.ok(b.tryLock({ start: 0, length: 10, shared: true }), "two shared locks");
  assert.equal(b.tryLock({ start: 5, length: 1 }), null, "exclusive inside a shared range");
  assert.ok(b.tryLock({ start: 10, length: 5 }), "a disjoint range");
  assert.equal(a.tryLock({ start: 12, length: 1 }), null, "conflicts with b's exclusive [10, 15)");
  // Upgrade: a's shared lock becomes exclusive once b lets go of its shared one.
  b.unlock({ start: 0, length: 10 });
  const upgraded = a.tryLock({ start: 0, length: 10 });
  assert.ok(upgraded && !upgraded.shared);
  assert.deepEqual(b.holder({ start: 0, length: 1, shared: true }), {
    shared: false,
    start: 0,
    length: 10,
    pid: null,
  });
  // `length: 0` runs to the end of the file and beyond.
  a.unlock();
  b.unlock();
  using whole = a.tryLock();
  assert.ok(whole);
  assert.equal(b.tryLock({ start: 1_000_000_000, length: 1 }), null);
  assert.throws(() => FileLock.open(path, { create: true, exclusive: true }), AlreadyExistsError);
});

Deno.test("lock(): waits without blocking the event loop, then gets the lock when it is released", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("wait.lock");
  using a = FileLock.open(path, { create: true });
  using b = FileLock.open(path);
  const first = a.tryLock({ start: 0, length: 1 })!;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  try {
    const waiting = b.lock({ start: 0, length: 1, signal: AbortSignal.timeout(10_000) });
    await until(() => ticks > 3, "the event loop to run while b waits");
    assert.ok(ticks > 3, "the event loop kept running while b waited");
    first.unlock();
    using second = await waiting;
    assert.ok(second.held);
    assert.equal(a.tryLock({ start: 0, length: 1 }), null);
  } finally {
    clearInterval(timer);
  }
});

Deno.test("lock(): an abort and close() settle a waiting lock at once; `using` releases", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("abort.lock");
  using a = FileLock.open(path, { create: true });
  const b = FileLock.open(path);
  {
    using _held = a.tryLock();
    const controller = new AbortController();
    const waiting = b.lock({ signal: controller.signal });
    // Abort the wait once it is parked in the kernel (its probe blocked in F_OFD_SETLKW).
    await parkedInKernel(path, 1, "the first wait to park in the kernel");
    controller.abort(new Error("gave up"));
    await assert.rejects(waiting, /gave up/);
    const closing = b.lock();
    // The cancelled probe stays blocked until the range is free: the second wait's probe makes two.
    await parkedInKernel(path, 2, "the second wait to park in the kernel");
    b.close();
    await assert.rejects(closing, ChannelClosedError);
    assert.throws(() => b.tryLock(), ChannelClosedError);
  }
  // The held lock went with the block: another description gets it now. (b's cancelled waits left
  // probes blocked in the kernel: freed, the range goes to each for an instant, which tryLock may meet.)
  using c = FileLock.open(path);
  await until(() => c.tryLock() !== null, "the range to be free after its holder let go");
});

Deno.test("across processes: a child's lock conflicts, F_OFD_GETLK reports it, and waiting gets it", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("cross.lock");
  using mine = FileLock.open(path, { create: true });
  await using other = child(path);
  await ready(other);
  assert.equal(await other.ask("lock 100 50 0"), "locked");
  assert.equal(mine.tryLock({ start: 120, length: 1 }), null);
  assert.ok(mine.tryLock({ start: 150, length: 1 }), "just after the child's range");
  assert.deepEqual(mine.holder({ start: 0, length: 0 }), {
    shared: false,
    start: 100,
    length: 50,
    pid: null,
  });
  assert.equal(mine.holder({ start: 0, length: 100 }), null);
  const waiting = mine.lock({ start: 110, length: 5, signal: AbortSignal.timeout(10_000) });
  assert.equal(await other.ask("unlock 100 50"), "unlocked");
  using got = await bounded(waiting, "the lock after the child released it");
  assert.ok(got.held);
  assert.equal(await other.ask("lock 112 1 1"), "busy");
  assert.match(
    await other.ask("holder 112 1 1"),
    /^holder \{"shared":false,"start":110,"length":5,"pid":null\}$/,
  );
});

Deno.test("a holder killed with SIGKILL releases its lock; the waiter gets it", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("killed.lock");
  using mine = FileLock.open(path, { create: true });
  await using holder = child(path);
  await ready(holder);
  assert.equal(await holder.ask("lock 0 0 0"), "locked");
  const waiting = mine.lock({ signal: AbortSignal.timeout(15_000) });
  // Kill the holder once the wait is parked in the kernel behind its lock: the kill then
  // has to wake a blocked F_OFD_SETLKW, not just let a later first try succeed.
  await parkedInKernel(path, 1, "the wait to park in the kernel behind the child's lock");
  holder.process.kill("SIGKILL");
  await holder.process.status;
  using got = await bounded(waiting, "the lock after its holder was killed");
  assert.ok(got.held);
  assert.equal(mine.holder(), null);
});

Deno.test("process locks: F_GETLK names the holder's pid; closing any descriptor drops them (the pitfall)", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("process.lock");
  using mine = FileLock.open(path, { create: true, kind: "process" });
  await using other = child(path, "process");
  const pid = await ready(other);
  assert.equal(await other.ask("lock 0 10 0"), "locked");
  assert.deepEqual(mine.holder({ start: 0, length: 10 }), { shared: false, start: 0, length: 10, pid });
  assert.equal(mine.tryLock({ start: 0, length: 1 }), null);
  // The child opens the same file again and closes that descriptor: its lock is gone.
  assert.equal(await other.ask("reopen-close"), "closed");
  assert.equal(mine.holder({ start: 0, length: 10 }), null, "the child's lock was dropped");
  assert.ok(mine.tryLock({ start: 0, length: 1 }));
  mine.unlock();
  // Open file description locks survive the same thing.
  await using ofd = child(path, "ofd");
  await ready(ofd);
  assert.equal(await ofd.ask("lock 0 10 0"), "locked");
  assert.equal(await ofd.ask("reopen-close"), "closed");
  assert.notEqual(mine.holder({ start: 0, length: 10 }), null, "the OFD lock is still held");
  // OFD and process locks conflict with each other.
  assert.equal(mine.tryLock({ start: 5, length: 1 }), null);
});

Deno.test("process locks in one process never conflict with each other", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("same.lock");
  using a = FileLock.open(path, { create: true, kind: "process" });
  using b = FileLock.open(path, { kind: "process" });
  assert.ok(a.tryLock());
  assert.ok(b.tryLock(), "one owner: the process");
  using c = FileLock.open(path);
  assert.equal(c.tryLock(), null, "an OFD lock conflicts with them");
  // A waiting process lock polls (no probe can work) and still gets it.
  a.close(); // closing a descriptor drops the process's locks: b's included
  using d = FileLock.open(path, { kind: "process" });
  using got = await bounded(d.lock({ signal: AbortSignal.timeout(5000) }), "a process lock");
  assert.ok(got.held);
});

Deno.test("bad input: relative paths, missing files, symlinks, FIFOs, directories, ranges, read-only", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("real.lock");
  FileLock.open(path, { create: true }).close();
  assert.throws(() => FileLock.open("relative.lock"), TypeError);
  assert.throws(() => FileLock.open(dir.file("missing.lock")), NotFoundError);
  assert.throws(() => FileLock.open(path, { kind: "flock" as "ofd" }), TypeError);
  assert.throws(() => FileLock.open(path, { exclusive: true }), TypeError);
  assert.throws(() => FileLock.open(path, { create: true, mode: 0o1000 }), RangeError);
  await Deno.symlink(path, dir.file("link.lock"));
  assert.throws(() => FileLock.open(dir.file("link.lock")), (error: Error) => {
    assert.ok(error instanceof PermissionDeniedError);
    assert.match(error.message, /symbolic link/);
    return true;
  });
  const fifo = dir.file("f.fifo");
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.throws(() => FileLock.open(fifo), /is a fifo, not a regular file/);
  assert.throws(() => FileLock.open(dir.path), /is a directory|EISDIR/);
  using lock = FileLock.open(path);
  assert.throws(() => lock.tryLock({ start: -1 }), RangeError);
  assert.throws(() => lock.tryLock({ length: 1.5 }), RangeError);
  using reader = FileLock.open(path, { readOnly: true });
  assert.ok(reader.tryLock({ shared: true }));
  assert.throws(() => reader.tryLock({ start: 100 }), (error: Error) => {
    assert.ok(error instanceof PermissionDeniedError);
    assert.match(error.message, /EBADF.*writing/);
    return true;
  });
  assert.throws(() => FileLock.fromFd(-1), TypeError);
});

Deno.test({
  name: `another user's file is refused, and allowed with allowOtherOwner${
    euid() === 0 ? "" : " (skipped: needs root to chown)"
  }`,
  ignore: euid() !== 0,
  async fn() {
    await using dir = await TempDir.make();
    const path = dir.file("theirs.lock");
    FileLock.open(path, { create: true, mode: 0o644 }).close();
    await Deno.chown(path, 65534, 65534);
    assert.throws(() => FileLock.open(path), (error: Error) => {
      assert.ok(error instanceof PermissionDeniedError);
      assert.match(error.message, /belongs to uid 65534/);
      return true;
    });
    using lock = FileLock.open(path, { allowOtherOwner: true });
    assert.ok(lock.tryLock());
  },
});

Deno.test({
  name: `a user without access gets PermissionDeniedError${
    hasSetpriv && euid() === 0 ? "" : " (skipped: needs root and setpriv(1))"
  }`,
  ignore: !hasSetpriv || euid() !== 0,
  async fn() {
    await using dir = await TempDir.make();
    await Deno.chmod(dir.path, 0o755);
    const path = dir.file("private.lock");
    FileLock.open(path, { create: true, mode: 0o600 }).close();
    const output = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        Deno.execPath(),
        "run",
        "--quiet",
        "--no-prompt",
        "--allow-ffi",
        fixture("file_lock_child.ts"),
        path,
      ],
      env: { DENO_DIR: dir.path, HOME: dir.path },
      stdin: "null",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.match(new TextDecoder().decode(output.stdout), /^error PermissionDeniedError EACCES /);
  },
});

Deno.test("no temporary files are left behind", () => {
  assert.deepEqual(leftovers(), []);
});
