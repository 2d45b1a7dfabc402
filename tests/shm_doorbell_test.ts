// The doorbell of the shm: ring (ffi/_doorbell.ts): a parked handle is woken through a Unix
// socket its event loop reads, across processes and within one; stray bytes and unknown
// numbers are ignored; a bell that cannot be rung says so (the ring then posts the semaphore);
// nothing is left open once the last handle closes.
import assert from "node:assert/strict";
import {
  addBell,
  BELL_PREFIX,
  leaveDoorbell,
  removeBell,
  ringBell,
  startDoorbell,
  useDoorbell,
} from "../ffi/_doorbell.ts";
import { readProcFile } from "../inspect.ts";
import { ShmRing } from "../transports/shm_ring.ts";
import { bounded, DenoChild, fixture, RUN, until } from "./_helpers.ts";
import { makeMessage } from "./fixtures/shm_ring_message.ts";

const ANY = { type: 0, except: false } as const;

function idHex(id: Uint32Array): string {
  return Array.from(id, (word) => word.toString(16).padStart(8, "0")).join("");
}

/** Whether an abstract socket named after doorbell `hex` is bound on the machine. */
function listening(hex: string): boolean {
  return (readProcFile("/proc/net/unix") ?? "").includes(`@${BELL_PREFIX}${hex}`);
}

Deno.test("a doorbell rings across processes; stray bytes and unknown numbers are ignored", async () => {
  useDoorbell();
  let left = false;
  try {
    const id = await startDoorbell();
    assert.ok(id, "no doorbell could be started here");
    const hex = idHex(id);
    assert.ok(listening(hex), "the doorbell socket is not bound");
    let rings = 0;
    const number = addBell(() => rings++);
    await using child = new DenoChild(fixture("doorbell_child.ts"), [hex, String(number), "3"]);
    assert.equal(await child.line(), "rang 3");
    await until(() => rings === 3, "three rings");
    // Within the process a ring is a call, not a write.
    assert.equal(ringBell(id[0], id[1], id[2], id[3], number), true);
    assert.equal(rings, 4);
    removeBell(number);
    assert.equal(ringBell(id[0], id[1], id[2], id[3], number), false, "a removed bell still rings");
    // No doorbell by that id: the caller must post the semaphore instead.
    const nobody = crypto.getRandomValues(new Uint32Array(4));
    assert.equal(ringBell(nobody[0], nobody[1], nobody[2], nobody[3], 1), false);
    leaveDoorbell();
    left = true;
    assert.ok(!listening(hex), "the last user left, the socket stayed");
  } finally {
    if (!left) leaveDoorbell();
  }
});

Deno.test("parked ring handles register a doorbell unless told not to, and wake one another", async () => {
  const name = `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
  using a = ShmRing.open(name, { create: true, spin: 0 });
  try {
    using quiet = ShmRing.open(name, { spin: 0, doorbell: false });
    using belled = ShmRing.open(name, { spin: 0 });
    const signal = new AbortController().signal;
    // A parked handle without a doorbell is woken through its semaphore.
    const first = quiet.receive(ANY, signal);
    a.trySend(new Uint8Array([1]), 1, 0);
    assert.deepEqual([...(await first).data], [1]);
    // One with a doorbell gets it in the background at its first park.
    const second = belled.receive(ANY, signal);
    await until(
      () => belled.stat().users.find((user) => user.self)!.doorbell,
      "a doorbell for the parked handle",
    );
    a.trySend(new Uint8Array([2]), 1, 0);
    assert.deepEqual([...(await second).data], [2]);
    const users = new Map(a.stat().users.map((user) => [user.slot, user.doorbell]));
    assert.equal(users.get(quiet.info.slot), false);
    assert.equal(users.get(belled.info.slot), true);
    assert.equal(users.get(a.info.slot), false, "a handle that never parked has no doorbell");
    // A process that parks: its doorbell is used across processes.
    await using child = new DenoChild(fixture("shm_ring_child.ts"), ["consume", name, "1"]);
    await child.expect("ready");
    const other = () => a.stat().users.find((user) => !user.self && user.pid === child.process.pid);
    await until(() => other()?.doorbell === true, "the child's doorbell");
    a.trySend(makeMessage(0, 0, 100), 1, 0);
    assert.equal(await child.line(), "got 0 0");
  } finally {
    await a.unlink();
  }
});

for (const how of ["close", "open"]) {
  Deno.test(`a process that parked a receive with a long timeout signal exits at once (ring left ${how === "close" ? "closed" : "open"})`, async () => {
    const name = `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
    using a = ShmRing.open(name, { create: true });
    try {
      await using child = new DenoChild(fixture("shm_exit_child.ts"), [name, how]);
      await child.expect("receiving");
      // Its first park gives it a doorbell: then it is parked, with the signal's listener in place.
      await until(
        () => a.stat().users.some((user) => user.pid === child.process.pid && user.doorbell),
        "the child parked",
      );
      a.trySend(new Uint8Array([5]), 1, 0);
      assert.equal(await child.line(), "got 5");
      // A listener left on the signal would keep its 10-minute timer, and the process, alive.
      const { status } = await bounded(child.finish(), "the child's exit");
      assert.equal(status.code, 0);
    } finally {
      await a.unlink();
    }
  });
}
