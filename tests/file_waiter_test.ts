// The file helper threads: a lock wait or a futex wait whose thread dies rejects instead of hanging,
// closes what it opened, and later waits start a new thread.
import assert from "node:assert/strict";
import { futexWait, stopHelperThreads } from "../ffi/file_waiter.ts";
import { FileLock } from "../sync/file_lock.ts";
import { lstatPath } from "../ffi/fd.ts";
import { descriptorsOf, TempDir } from "./_helpers.ts";

Deno.test("a lock wait and a futex wait whose helper thread stops reject, and later waits work", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("waiter.lock");
  using holder = FileLock.open(path, { create: true, exclusive: true });
  using waiter = FileLock.open(path);
  const held = holder.tryLock();
  assert.ok(held);
  const before = descriptorsOf(lstatPath(path)!);
  const signal = AbortSignal.timeout(20_000);
  const lock = waiter.lock({ signal });
  const word = new Int32Array(1);
  const pointer = Deno.UnsafePointer.of(word)!;
  const futex = futexWait(pointer, 0, 0, 10_000, signal);
  await stopHelperThreads();
  await assert.rejects(lock, /file helper thread stopped/);
  await assert.rejects(futex, /file helper thread stopped/);
  assert.equal(descriptorsOf(lstatPath(path)!), before, "the lock probe's descriptor was closed");
  // New waits get new threads.
  const again = waiter.lock({ signal });
  held.unlock();
  (await again).unlock();
  word[0] = 1;
  assert.equal(await futexWait(pointer, 0, 0, 10_000, signal), "woken", "the word differs: at once");
});
