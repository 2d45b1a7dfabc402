// The shm: ring transport: opening, layout checks, queue and broadcast delivery, batches,
// waiting, unlink, liveness, and several processes at once.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  ChannelClosedError,
  FrameError,
  MessageTooLargeError,
  NotFoundError,
  PermissionDeniedError,
} from "../errors.ts";
import { bytes } from "../codec.ts";
import { Channel } from "../channel.ts";
import { open } from "../open.ts";
import { PosixSharedMemory } from "../memory/posix_shared_memory.ts";
import { SysvSemaphoreSet } from "../sync/sysv_semaphore_set.ts";
import { Presence } from "../sync/presence.ts";
import { inspectShmRing, ShmRing } from "../transports/shm_ring.ts";
import * as L from "../transports/_ring_layout.ts";
import { lstatPath, mkfifoPath, unlinkPath } from "../ffi/fd.ts";
import { bounded, DenoChild, fixture, RUN, until } from "./_helpers.ts";
import { checkMessage, makeMessage } from "./fixtures/shm_ring_message.ts";

const CHILD = fixture("shm_ring_child.ts");
const ANY = { type: 0, except: false } as const;
const made = new Set<string>();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A fresh ring name, unlinked by `cleanUp` if the test leaves it. */
function fresh(): string {
  const name = `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
  made.add(name);
  return name;
}

function cleanUp(): void {
  for (const name of made) {
    try {
      ShmRing.unlink(name);
    } catch {
      try {
        PosixSharedMemory.unlink(name); // not a ring (any more)
      } catch {
        // Unlinked by the test.
      }
    }
  }
  made.clear();
}

/** lstat of a ring's file under /dev/shm (Deno's file API wants --allow-all there). */
function shmFile(name: string): { size: number; permissions: number } | null {
  return lstatPath(`/dev/shm${name}`);
}

/** Names under /dev/shm (through ls: Deno's file API wants --allow-all there). */
async function listShm(): Promise<string[]> {
  const { stdout } = await new Deno.Command("ls", { args: ["/dev/shm"], stdout: "piped" }).output();
  return new TextDecoder().decode(stdout).split("\n").filter((line) => line !== "");
}

async function truncate(name: string, size: number): Promise<void> {
  const { success } = await new Deno.Command("truncate", { args: ["-s", String(size), `/dev/shm${name}`] })
    .output();
  assert.ok(success);
}

function never(): AbortSignal {
  return new AbortController().signal;
}

/** The header of ring `name` as 32-bit words, through a mapping of its own (close it after). */
function mapHeader(name: string): { shm: PosixSharedMemory; header: Int32Array } {
  const shm = PosixSharedMemory.open(name);
  return { shm, header: new Int32Array(shm.view.buffer, shm.view.byteOffset, shm.view.byteLength >> 2) };
}

/**
 * Whether the handle in `slot` is registered in a wait mask of the ring's header
 * (`L.DATA_MASK`: a receive parked for data; `L.SPACE_MASK`: a send parked for room). A
 * handle sets its bit just before it parks and clears it (or its waker does) when the wait
 * ends: the wait's observable state, read from shared memory.
 */
function inWaitMask(header: Int32Array, mask: number, slot: number): boolean {
  return (Atomics.load(header, (mask >> 2) + (slot >> 5)) & (1 << (slot & 31))) !== 0;
}

/** `n` turns of the event loop (timer tasks, each after the microtasks and I/O before it). */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("shm: open() carries typed messages in order between two handles", async () => {
  const name = fresh();
  try {
    await using producer = await open<{ n: number }>(`shm:${name}?capacity=64KiB`, {
      create: true,
      exclusive: true,
    });
    await using consumer = await open<{ n: number }>(`shm:${name}`);
    assert.equal(producer.info.scheme, "shm");
    assert.equal(producer.info.capacity, 65536);
    assert.equal(producer.info.maxMessageSize, 65536 / 2 - 16);
    assert.equal(producer.info.mode, "queue");
    assert.deepEqual(producer.info.capabilities, {
      types: true,
      typeFilter: false,
      priority: false,
      multiWriter: true,
      multiReader: true,
      persistent: true,
    });
    for (let n = 0; n < 100; n++) await producer.send({ n }, { type: 1 + (n % 7) });
    for (let n = 0; n < 100; n++) {
      const message = await consumer.receiveMessage();
      assert.deepEqual(message, { value: { n }, type: 1 + (n % 7), priority: 0 });
    }
    assert.deepEqual(consumer.tryReceive(), { ok: false, reason: "empty" });
    // The largest type is carried exactly.
    await producer.send({ n: -1 }, { type: 0xffff_ffff });
    assert.equal((await consumer.receiveMessage()).type, 0xffff_ffff);
    await producer.unlink();
  } finally {
    cleanUp();
  }
});

Deno.test("shm: creation, exclusivity, missing rings and malformed options fail clearly", async () => {
  const name = fresh();
  try {
    await assert.rejects(open(`shm:${name}`), (error) => {
      assert.ok(error instanceof NotFoundError);
      assert.match(error.message, /shm_open .* failed: ENOENT \(no ring has this name\).*create: true/);
      return true;
    });
    const ring = ShmRing.open(name, { create: true, exclusive: true, mode: 0o640 });
    assert.equal(ring.info.created, true);
    assert.equal(shmFile(name)?.permissions, 0o640);
    assert.throws(() => ShmRing.open(name, { create: true, exclusive: true }), AlreadyExistsError);
    const again = ShmRing.open(name, { create: true });
    assert.equal(again.info.created, false);
    assert.notEqual(again.info.slot, ring.info.slot);
    again.close();
    for (const bad of ["shm:orders", "shm:/a/b", "shm:/", `shm:/${"x".repeat(256)}`, "shm:/x?colour=red"]) {
      await assert.rejects(open(bad), TypeError, bad);
    }
    assert.throws(() => ShmRing.open(name, { exclusive: true }), TypeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, capacity: 1000 }), RangeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, capacity: "2GiB" }), RangeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, capacity: "lots" }), TypeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, overflow: "drop" }), TypeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, mode: "fanout" as never }), TypeError);
    assert.throws(() => ShmRing.open(fresh(), { create: true, spin: -1 }), RangeError);
    assert.throws(() => ShmRing.open(`${name}?capacity=8KiB`, { capacity: 4096 }), TypeError);
    // Nothing was left behind by the failed creations.
    for (const leftover of made) {
      if (leftover !== name) assert.equal(shmFile(leftover), null);
    }
    ring.close();
    await ring.unlink();
    await assert.rejects(ring.unlink(), NotFoundError);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: capacities round up to a power of two; an existing ring's settings are checked", () => {
  const name = fresh();
  try {
    using ring = ShmRing.open(name, { create: true, capacity: "5000", mode: "broadcast", overflow: "drop" });
    assert.equal(ring.info.capacity, 8192);
    assert.equal(ring.info.mode, "broadcast");
    assert.equal(ring.info.overflow, "drop");
    assert.equal(shmFile(name)?.size, L.dataOffset(64) + 8192);
    assert.throws(() => ShmRing.open(name, { capacity: 4096 }), /exists with capacity 8192; 4096/);
    assert.throws(() => ShmRing.open(name, { mode: "queue" }), /exists as a broadcast ring/);
    assert.throws(() => ShmRing.open(`shm:${name}?overflow=block`), /exists with overflow "drop"/);
    using same = ShmRing.open(`shm:${name}?capacity=8KiB&mode=broadcast`, { maxMessageSize: 100 });
    assert.equal(same.info.maxMessageSize, 100);
    assert.throws(() => same.trySend(new Uint8Array(101), 1, 0), MessageTooLargeError);
    ring.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: wrong magic, version or size is refused with a FrameError", async () => {
  const name = fresh();
  try {
    // Not a ring at all.
    using junk = PosixSharedMemory.open(name, { create: true, size: 16384 });
    junk.view.set(encoder.encode("definitely not a ring"));
    assert.throws(() => ShmRing.open(name), (error) => {
      assert.ok(error instanceof FrameError);
      assert.match(error.message, /wrong magic 64 65 66/);
      return true;
    });
    junk.close();
    assert.throws(() => ShmRing.unlink(name), FrameError); // not a ring: left alone
    PosixSharedMemory.unlink(name);

    // A ring of another version.
    ShmRing.open(name, { create: true, capacity: 4096 }).close();
    using shm = PosixSharedMemory.open(name);
    const h = new Int32Array(shm.view.buffer, shm.view.byteOffset, shm.view.byteLength >> 2);
    h[L.H_VERSION >> 2] = 2;
    assert.throws(() => ShmRing.open(name), /layout version is 2; this ipcbus speaks version 1/);
    h[L.H_VERSION >> 2] = 1;
    // A header that disagrees with the object's size.
    h[L.H_CAPACITY >> 2] = 8192;
    assert.throws(() => ShmRing.open(name), /size mismatch/);
    h[L.H_CAPACITY >> 2] = 4096;
    h[L.H_MAX_MESSAGE >> 2] = 4096;
    assert.throws(() => ShmRing.open(name), /more than half the capacity/);
    h[L.H_MAX_MESSAGE >> 2] = 4096 / 2 - 16;
    ShmRing.open(name).close(); // repaired: fine again
    shm.close();
    // The object grew behind the header's back.
    await truncate(name, L.dataOffset(64) + 8192);
    assert.throws(
      () => ShmRing.open(name),
      (error) => error instanceof FrameError && /size mismatch/.test(error.message),
    );
    await truncate(name, L.dataOffset(64) + 4096);
    ShmRing.unlink(name);

    // Created but never initialized (the creator died before writing the magic).
    PosixSharedMemory.open(name, { create: true, size: L.dataOffset(64) + 4096 }).close();
    assert.throws(() => ShmRing.open(name, { initTimeout: 20 }), /did not finish within 20 ms/);
    PosixSharedMemory.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: type filters and priorities are refused with a TypeError; the size limit holds", async () => {
  const name = fresh();
  try {
    await using channel = await open<string>(`shm:${name}`, { create: true, capacity: "4KiB" });
    assert.throws(() => channel.tryReceive({ type: 3 }), /cannot receive by type/);
    await assert.rejects(channel.send("x", { priority: 1 }), /does not support priorities/);
    await assert.rejects(channel.send("x".repeat(3000)), (error) => {
      assert.ok(error instanceof MessageTooLargeError);
      assert.equal(error.limit, 2048 - 16);
      assert.match(error.message, /at most half of the ring/);
      return true;
    });
    const ring = channel.unsafeTransport as ShmRing;
    assert.throws(() => ring.tryReceive({ type: 2, except: false }), TypeError);
    await channel.unlink();
  } finally {
    cleanUp();
  }
});

Deno.test("shm: frames of every size wrap around the ring intact", () => {
  const name = fresh();
  try {
    using a = ShmRing.open(name, { create: true, capacity: 4096 });
    using b = ShmRing.open(name);
    let x = 12345;
    const next = () => (x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const queue: Uint8Array[] = [];
    let sent = 0, received = 0;
    for (let round = 0; round < 20_000; round++) {
      if (next() < 0.55) {
        const message = makeMessage(1, sent, Math.floor(next() * next() * (a.info.maxMessageSize - 12)));
        if (a.trySend(message, 1 + (sent % 3), 0)) {
          queue.push(message);
          sent++;
        } else assert.ok(queue.length > 0, "full with nothing queued");
      } else {
        const frame = b.tryReceive(ANY);
        if (frame === null) {
          assert.equal(queue.length, 0);
          continue;
        }
        const expected = queue.shift()!;
        assert.equal(frame.type, 1 + (received % 3));
        assert.deepEqual(checkMessage(frame.data), { producer: 1, seq: received });
        assert.equal(frame.data.length, expected.length);
        received++;
      }
    }
    assert.ok(received > 1000, `only ${received} frames went round`);
    assert.equal(a.stat().messages, sent);
    a.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: batch hooks publish a prefix and take frames in order; a throwing sink keeps its frame", () => {
  const name = fresh();
  try {
    using a = ShmRing.open(name, { create: true, capacity: 4096 });
    using b = ShmRing.open(name);
    const frames = Array.from({ length: 100 }, (_, i) => makeMessage(7, i, 100));
    // 4096 bytes hold 32 frames of 128 bytes.
    assert.equal(a.trySendBatch(frames, 5, 0), 32);
    assert.equal(a.trySendBatch(frames, 5, 0), 0);
    const seen: number[] = [];
    assert.equal(
      b.tryReceiveBatch(ANY, 10, (frame) => seen.push((checkMessage(frame.data) as { seq: number }).seq)),
      10,
    );
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.throws(
      () =>
        b.tryReceiveBatch(ANY, 10, (frame) => {
          if ((checkMessage(frame.data) as { seq: number }).seq === 12) throw new Error("sink failed");
        }),
      /sink failed/,
    );
    // Frames 10, 11 and 12 were taken (12 counted although its sink threw).
    assert.equal((checkMessage(b.tryReceive(ANY)!.data) as { seq: number }).seq, 13);
    assert.throws(
      () => b.tryReceiveBatch(ANY, 5, () => b.tryReceive(ANY)),
      /may not receive from the same ring/,
    );
    // What is left, in one batch.
    const rest: number[] = [];
    b.tryReceiveBatch(ANY, 1000, (frame) => rest.push((checkMessage(frame.data) as { seq: number }).seq));
    assert.deepEqual(rest, Array.from({ length: 32 - 15 }, (_, i) => 15 + i));
    assert.equal(b.tryReceiveBatch(ANY, 10, () => {}), 0);
    assert.throws(() => a.trySendBatch([new Uint8Array(5000)], 1, 0), MessageTooLargeError);
    a.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: waits are woken, wait for room, and settle promptly on abort and close", async () => {
  const name = fresh();
  try {
    const a = ShmRing.open(name, { create: true, capacity: 4096, spin: 0 });
    const b = ShmRing.open(name, { spin: 0 });
    // Each step acts once the wait is parked, never after a guess: the handle's bit is in the
    // ring's wait mask, and its helper thread waits on its semaphore (GETNCNT).
    const { shm, header } = mapHeader(name);
    using _shm = shm;
    using semaphores = SysvSemaphoreSet.open({ id: a.info.semaphoreSet as number, initTimeout: 0 });
    const onSemaphore = (ring: ShmRing) => semaphores.waitingCount(ring.info.slot) > 0;
    const receiving = () => inWaitMask(header, L.DATA_MASK, b.info.slot) && onSemaphore(b);
    const sending = () => inWaitMask(header, L.SPACE_MASK, a.info.slot) && onSemaphore(a);
    // A receive parked on its semaphore is woken by a send.
    const pending = b.receive(ANY, never());
    await until(receiving, "the receive to park");
    assert.ok(a.trySend(encoder.encode("wake"), 1, 0));
    assert.equal(decoder.decode((await bounded(pending, "a woken receive")).data), "wake");
    // A send into a full ring waits for room.
    while (a.trySend(new Uint8Array(4), 1, 0)) { /* fill */ }
    const full = a.stat();
    let sent = false;
    const waiting = a.send(encoder.encode("last"), 1, 0, never())!.then(() => sent = true);
    await until(sending, "the send to park for room");
    // Not sent yet, and still parked. Nothing can make room until b receives, so a send that
    // ended now would be a bug; the turns of the event loop give such a wrong ending (it would
    // run in this process) its chance to show before we look, whatever the machine's speed.
    await turns(5);
    assert.equal(sent, false);
    assert.ok(inWaitMask(header, L.SPACE_MASK, a.info.slot), "the send is still parked for room");
    assert.equal(a.stat().messages, full.messages, "nothing was written meanwhile");
    assert.equal(a.stat().pendingBytes, full.pendingBytes);
    b.tryReceive(ANY);
    await bounded(waiting, "a send waiting for room");
    while (b.tryReceive(ANY)) { /* drain */ }
    // Abort.
    const controller = new AbortController();
    const aborted = b.receive(ANY, controller.signal);
    await until(receiving, "the receive to park before the abort");
    controller.abort(new Error("stop"));
    await assert.rejects(bounded(aborted, "an aborted receive", 1000), /stop/);
    assert.equal(
      inWaitMask(header, L.DATA_MASK, b.info.slot),
      false,
      "the aborted receive left the wait mask",
    );
    // close() settles a pending receive and later calls fail.
    const closing = b.receive(ANY, never());
    await until(receiving, "the receive to park before close()");
    b.close();
    await assert.rejects(bounded(closing, "a receive settled by close", 1000), ChannelClosedError);
    assert.throws(() => b.tryReceive(ANY), ChannelClosedError);
    assert.throws(() => b.trySend(new Uint8Array(1), 1, 0), ChannelClosedError);
    b.close();
    // The message sent meanwhile is still there for another handle.
    using c = ShmRing.open(name);
    assert.equal(c.tryReceive(ANY), null);
    a.trySend(encoder.encode("kept"), 1, 0);
    assert.equal(decoder.decode(c.tryReceive(ANY)!.data), "kept");
    a.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: unlink closes the ring for every handle once it is drained", async () => {
  const name = fresh();
  try {
    await using a = await open<string>(`shm:${name}`, { create: true, capacity: "4KiB" });
    await using b = await open<string>(`shm:${name}`);
    await using c = await open<string>(`shm:${name}`);
    const parked = c.receive(); // takes "one"
    await a.send("one");
    assert.equal(await bounded(parked, "c's receive"), "one");
    const pending = c.receive();
    await a.send("two");
    assert.equal(await bounded(pending, "c's second receive"), "two");
    await a.send("left");
    const waiting = c.receive();
    assert.equal(await waiting, "left");
    const last = c.receive();
    await a.unlink();
    await assert.rejects(bounded(last, "a receive settled by unlink", 2000), ChannelClosedError);
    await assert.rejects(b.send("late"), ChannelClosedError);
    assert.deepEqual(b.tryReceive(), { ok: false, reason: "closed" });
    assert.equal(shmFile(name), null);
    await assert.rejects(b.unlink(), NotFoundError);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: broadcast gives every subscriber every message; block waits for the slowest", async () => {
  const name = fresh();
  try {
    using publisher = ShmRing.open(name, {
      create: true,
      capacity: 4096,
      mode: "broadcast",
      subscribe: false,
    });
    using fast = ShmRing.open(name, { subscribe: true });
    using slow = ShmRing.open(name, { subscribe: true });
    assert.equal(fast.info.capabilities.multiReader, false);
    let sent = 0;
    while (publisher.trySend(makeMessage(1, sent, 100), 1, 0)) sent++;
    assert.equal(sent, 4096 / 128);
    // The fast subscriber drains; the slow one still holds the ring.
    for (let i = 0; i < sent; i++) {
      assert.deepEqual(checkMessage(fast.tryReceive(ANY)!.data), { producer: 1, seq: i });
    }
    assert.equal(fast.tryReceive(ANY), null);
    assert.equal(publisher.trySend(makeMessage(1, sent, 100), 1, 0), false);
    const blocked = publisher.send(makeMessage(1, sent, 100), 1, 0, never())!;
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(checkMessage(slow.tryReceive(ANY)!.data), { producer: 1, seq: i });
    }
    await bounded(blocked, "a publisher waiting for the slowest subscriber");
    const stat = publisher.stat();
    assert.deepEqual(
      stat.users.filter((u) => u.subscribed).map((u) => u.slot).sort(),
      [fast.info.slot, slow.info.slot].sort(),
    );
    // A subscriber that goes away no longer holds the ring back.
    slow.close();
    sent++;
    let more = 0;
    while (publisher.trySend(makeMessage(1, sent + more, 100), 1, 0)) more++;
    assert.ok(more >= 3, `only ${more} more`);
    for (let i = 0; i < more + 1; i++) {
      assert.deepEqual(checkMessage(fast.tryReceive(ANY)!.data), { producer: 1, seq: sent - 1 + i });
    }
    // A subscriber in another process, with a producer here.
    await using child = new DenoChild(CHILD, ["subscribe", name, "300"]);
    await child.expect("ready");
    for (let i = 0; i < 300; i++) {
      const message = makeMessage(2, i, i % 700);
      if (!publisher.trySend(message, 1, 0)) await publisher.send(message, 1, 0, never());
      while (fast.tryReceive(ANY)) { /* keep up */ }
    }
    assert.equal(await bounded(child.line(), "the subscriber's sum"), `sum ${(299 * 300) / 2} 0`);
    publisher.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: subscribe: true subscribes before open returns, even past a held writer lock; subscribe: false never receives", () => {
  const name = fresh();
  try {
    using publisher = ShmRing.open(name, { create: true, mode: "broadcast", subscribe: false });
    assert.throws(() => publisher.tryReceive(ANY), /subscribe: false \(send only\)/);
    // A writer lock left by a holder that names no slot: it is taken over (after HOLDER_CHECK_MS).
    const { shm, header } = mapHeader(name);
    try {
      Atomics.store(header, L.W_LOCK >> 2, (1 << L.TOKEN_SLOT_BITS) | 1000);
      using subscriber = ShmRing.open(name, { subscribe: true });
      assert.equal(Atomics.load(header, L.W_LOCK >> 2), 0, "the dead holder's lock is still there");
      assert.ok(subscriber.stat().users.find((user) => user.self)!.subscribed);
      // Sent after open returned, before any receive: it must be there.
      assert.equal(publisher.trySend(encoder.encode("first"), 1, 0), true);
      assert.equal(decoder.decode(subscriber.tryReceive(ANY)!.data), "first");
    } finally {
      shm.close();
    }
  } finally {
    cleanUp();
  }
});

Deno.test("shm: broadcast drop mode tells a subscriber exactly how many messages it missed", () => {
  const name = fresh();
  try {
    const reports: number[] = [];
    using publisher = ShmRing.open(name, {
      create: true,
      capacity: 4096,
      mode: "broadcast",
      overflow: "drop",
      subscribe: false,
    });
    using late = ShmRing.open(name, { subscribe: true, onMissed: (n) => reports.push(n) });
    // 100 messages of 128 bytes into a ring of 32: the first 68 (and some) are overwritten.
    for (let i = 0; i < 100; i++) assert.equal(publisher.trySend(makeMessage(1, i, 100), 1, 0), true);
    const got: number[] = [];
    for (let frame; (frame = late.tryReceive(ANY));) {
      got.push((checkMessage(frame.data) as { seq: number }).seq);
    }
    assert.equal(got.length + late.missed, 100);
    assert.deepEqual(reports, [late.missed]);
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => late.missed + i));
    assert.ok(got.length >= 30, `kept ${got.length}`);
    // Varying sizes, several laps behind, then caught up: every message is received or counted.
    let received = 0;
    let sent = 100;
    let x = 99;
    for (let round = 0; round < 2000; round++) {
      x = (x * 1103515245 + 12345) >>> 0;
      if (x % 3 !== 0) publisher.trySend(makeMessage(1, sent++, x % 1500), 1, 0);
      else {
        const frame = late.tryReceive(ANY);
        if (frame) {
          const checked = checkMessage(frame.data);
          assert.notEqual(typeof checked, "string", String(checked));
          received++;
        }
      }
    }
    while (late.tryReceive(ANY)) received++;
    assert.equal(got.length + received + late.missed, sent);
    assert.equal(reports.reduce((a, b) => a + b, 0), late.missed);
    publisher.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: stat and inspectShmRing tell live users; a killed user is not one", async () => {
  const name = fresh();
  try {
    using ring = ShmRing.open(name, { create: true, capacity: 4096 });
    await using child = new DenoChild(CHILD, ["open", name]);
    const line = await child.line();
    const slot = Number(line.split(" ")[1]);
    let seen = inspectShmRing(`shm:${name}`);
    assert.equal(seen.inUse, true);
    assert.deepEqual(seen.users.map((u) => u.slot).sort(), [ring.info.slot, slot].sort());
    assert.ok(seen.users.some((u) => u.pid === child.process.pid));
    assert.equal(ring.stat().users.find((u) => u.self)?.slot, ring.info.slot);
    child.process.kill("SIGKILL");
    await child.process.status;
    seen = inspectShmRing(name);
    assert.deepEqual(seen.users.map((u) => u.slot), [ring.info.slot]);
    ring.close();
    seen = inspectShmRing(name);
    assert.equal(seen.inUse, false);
    assert.deepEqual(seen.users, []);
    assert.throws(() => inspectShmRing(fresh()), NotFoundError);
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: two producer and two consumer processes: each message exactly once, in order per producer", async () => {
  const name = fresh();
  const perProducer = 3000;
  try {
    using ring = ShmRing.open(name, { create: true, capacity: "16KiB" });
    const consumers = [
      new DenoChild(CHILD, ["consume", name, "0"]),
      new DenoChild(CHILD, ["consume", name, "0"]),
    ];
    const producers: DenoChild[] = [];
    try {
      for (const consumer of consumers) await consumer.expect("ready");
      for (const id of [1, 2]) {
        producers.push(new DenoChild(CHILD, ["produce", name, String(id), String(perProducer), "600"]));
      }
      const lastSeq = new Map<string, number>();
      const counts = [0, 0, 0];
      let total = 0;
      let finished!: () => void;
      const allIn = new Promise<void>((resolve) => finished = resolve);
      for (const [which, consumer] of consumers.entries()) {
        (async () => {
          for (;;) {
            const got = await consumer.line().catch(() => "");
            if (got === "") return; // killed at the end
            assert.match(got, /^got /, got);
            const [, producer, seq] = got.split(" ");
            const key = `${which}:${producer}`;
            const previous = lastSeq.get(key) ?? -1;
            assert.ok(Number(seq) > previous, `consumer ${which} got ${producer}/${seq} after ${previous}`);
            lastSeq.set(key, Number(seq));
            counts[Number(producer)]++;
            if (++total === 2 * perProducer) finished();
          }
        })();
      }
      for (const producer of producers) {
        await producer.expect("ready");
        const { status } = await bounded(producer.finish(), "a producer");
        assert.equal(status.code, 0);
      }
      await bounded(allIn, "every message at the consumers");
      assert.deepEqual(counts.slice(1), [perProducer, perProducer]);
    } finally {
      for (const child of [...consumers, ...producers]) await child[Symbol.asyncDispose]();
    }
    ring.close();
    ShmRing.unlink(name);
  } finally {
    cleanUp();
  }
});

Deno.test("shm: a channel over ShmRing works with the bytes codec and for-await", async () => {
  const name = fresh();
  try {
    const producer = new Channel<Uint8Array>(ShmRing.open(name, { create: true, capacity: 4096 }), {
      codec: bytes,
    });
    const consumer = new Channel<Uint8Array>(ShmRing.open(name), { codec: bytes });
    const received: number[] = [];
    const loop = (async () => {
      for await (const message of consumer) received.push(message[0]);
    })();
    for (let i = 0; i < 200; i++) await producer.send(new Uint8Array([i, 1, 2, 3]));
    await until(() => received.length >= 200, "the for-await loop to receive 200 messages");
    consumer.close();
    await bounded(loop, "the for-await loop to end");
    assert.deepEqual(received, Array.from({ length: 200 }, (_, i) => i));
    await producer.unlink();
    producer.close();
  } finally {
    cleanUp();
  }
});

Deno.test("shm: the tests left nothing in /dev/shm", async () => {
  assert.deepEqual((await listShm()).filter((name) => name.includes(RUN)), []);
});

Deno.test("a ring whose name was removed by hand: the last close drops its presence record and semaphore set", () => {
  const name = fresh();
  const ring = ShmRing.open(name, { create: true, capacity: 4096 });
  const other = ShmRing.open(name);
  const semaphores = ring.info.semaphoreSet as number;
  const setExists = () => {
    try {
      SysvSemaphoreSet.open({ id: semaphores, initTimeout: 0 }).close();
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  };
  try {
    assert.equal(Presence.probe(`shm:${name}`), "live");
    PosixSharedMemory.unlink(name); // as `rm /dev/shm/...` would: the ring code is not told
    other.close();
    assert.ok(setExists(), "a user is left: the set stays");
    ring.close();
    assert.equal(Presence.probe(`shm:${name}`), "unknown");
    assert.equal(
      setExists(),
      false,
      "nobody can open the ring again: its semaphore set went with the last user",
    );
  } finally {
    ring.close();
    other.close();
    if (setExists()) SysvSemaphoreSet.open({ id: semaphores, initTimeout: 0 }).remove();
    cleanUp();
  }
});

Deno.test("trySendBatch stops after 256 KiB of payload; the rest goes in the next call", async () => {
  const name = fresh();
  const ring = ShmRing.open(name, { create: true, capacity: 4 << 20 });
  try {
    const big = new Uint8Array(64 * 1024);
    const frames = Array.from({ length: 10 }, () => big);
    assert.equal(ring.trySendBatch(frames, 1, 0), 4, "4 × 64 KiB reach 256 KiB");
    assert.equal(ring.trySendBatch(frames.slice(4), 1, 0), 4);
    assert.equal(ring.trySendBatch(frames.slice(8), 1, 0), 2);
    const small = Array.from({ length: 1000 }, () => new Uint8Array(64));
    assert.equal(ring.trySendBatch(small, 1, 0), 1000, "small messages are not held back");
    let taken = 0;
    while (ring.tryReceiveBatch(ANY, 10_000, () => taken++) > 0) { /* drain */ }
    assert.equal(taken, 1010);
  } finally {
    await ring.unlink();
    ring.close();
  }
});

Deno.test("a FIFO planted under a ring's name is refused at once, not waited on", async () => {
  const name = fresh();
  mkfifoPath(`/dev/shm${name}`, 0o600);
  try {
    // Without O_NONBLOCK, opening a FIFO blocks until a writer comes: these would hang.
    assert.throws(() => inspectShmRing(name), PermissionDeniedError);
    assert.throws(() => ShmRing.open(name), PermissionDeniedError);
    await assert.rejects(
      bounded(open(`shm:${name}`), "opening a planted FIFO", 10_000),
      PermissionDeniedError,
    );
  } finally {
    unlinkPath(`/dev/shm${name}`);
  }
});

Deno.test("unlink() of a ring whose name is gone or names another ring: its own set goes, the name stays", async () => {
  const setExists = (id: number) => {
    try {
      SysvSemaphoreSet.open({ id, initTimeout: 0 }).close();
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) return false;
      throw error;
    }
  };
  const name = fresh();
  const gone = ShmRing.open(name, { create: true, capacity: 4096 });
  const goneSet = gone.info.semaphoreSet as number;
  PosixSharedMemory.unlink(name); // removed by hand
  const other = ShmRing.open(name, { create: true, capacity: 4096 }); // and made anew by someone else
  const otherSet = other.info.semaphoreSet as number;
  try {
    await assert.rejects(
      gone.unlink(),
      (error: Error) => error instanceof NotFoundError && /another ring/.test(error.message),
    );
    assert.equal(setExists(goneSet), false, "the unlinked ring's own semaphore set was removed");
    assert.ok(setExists(otherSet), "the other ring's set is left alone");
    assert.ok(lstatPath(`/dev/shm${name}`), "the other ring's name is left alone");
    assert.equal(other.trySend(new Uint8Array(4), 1, 0), true, "the other ring still works");
    PosixSharedMemory.unlink(name);
    await assert.rejects(other.unlink(), NotFoundError); // name gone: rejects, set removed all the same
    assert.equal(setExists(otherSet), false);
  } finally {
    gone.close();
    other.close();
    cleanUp();
  }
});
