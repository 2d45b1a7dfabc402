// The System V helper threads: a wait whose thread dies rejects instead of hanging, and later waits
// start a new thread.
import assert from "node:assert/strict";
import { semaphoreOperation, stopHelperThreads, waitForMessage } from "../ffi/sysv_waiter.ts";
import { SysvMessageQueue, SysvSemaphoreSet } from "../mod.ts";

Deno.test("a message wait and a semaphore wait whose helper thread stops reject, and later waits work", async () => {
  const queue = SysvMessageQueue.open("private");
  const set = SysvSemaphoreSet.open({ private: true, count: 1 });
  const id = queue.info.id as number;
  try {
    const signal = AbortSignal.timeout(20_000);
    const message = waitForMessage(id, 0n, 0, signal);
    const sops = new Uint8Array(6);
    new DataView(sops.buffer).setInt16(2, -1, true); // sem 0, take one unit
    const unit = semaphoreOperation(set.id, sops, signal);
    await stopHelperThreads();
    await assert.rejects(message, /helper thread stopped/);
    await assert.rejects(unit, /helper thread stopped/);
    // New waits get new threads.
    const again = waitForMessage(id, 0n, 0, signal);
    queue.trySend(new Uint8Array([1]), 1, 0);
    assert.deepEqual(await again, { kind: "ready" });
  } finally {
    await queue.unlink();
    queue.close();
    set.remove();
    set.close();
  }
});
