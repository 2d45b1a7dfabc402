// The doorbell of the shm: ring (ffi/_doorbell.ts): a parked handle is woken through a Unix
// socket its event loop reads, across processes and within one; stray bytes and unknown
// numbers are ignored; a bell that cannot be rung says so (the ring then posts the semaphore);
// nothing is left open once the last handle closes.
import assert from "node:assert/strict";
import {
  addBell,
  BELL_PREFIX,
  bellAddress,
  doorbellConnections,
  leaveDoorbell,
  MAX_ACCEPTED,
  MAX_PEERS,
  removeBell,
  ringBell,
  startDoorbell,
  useDoorbell,
} from "../ffi/_doorbell.ts";
import { SOCK } from "../ffi/constants.ts";
import { libc } from "../ffi/libc.ts";
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

/** A listening abstract socket named as doorbell `words` would be, made here through libc. */
function listenAs(words: Uint32Array): number {
  const fd = libc().socket(SOCK.AF_UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0);
  const at = bellAddress(words);
  assert.ok(fd >= 0 && libc().bind(fd, at, at.length) === 0 && libc().listen(fd, 8) === 0, "listen");
  return fd;
}

function ring(words: Uint32Array): boolean {
  return ringBell(words[0], words[1], words[2], words[3], 1);
}

Deno.test("connections to doorbells that went away are closed; live ones are kept", async () => {
  const net = await import("node:net");
  useDoorbell();
  const liveWords = crypto.getRandomValues(new Uint32Array(4));
  const connections: number[] = [];
  const server = net.createServer((socket) => {
    const index = connections.push(0) - 1;
    socket.on("data", (chunk: Uint8Array) => connections[index] += chunk.length);
  });
  try {
    (server as unknown as { listen(options: { fd: number }): void }).listen({ fd: listenAs(liveWords) });
    assert.ok(ring(liveWords));
    await until(() => connections[0] === 4, "the first ring");
    // Peers that exit (or close their last handle) do not tell: their connections must not pile up.
    const gone = 3 * MAX_PEERS;
    for (let i = 0; i < gone; i++) {
      const words = crypto.getRandomValues(new Uint32Array(4));
      const fd = listenAs(words);
      assert.ok(ring(words), "a ring into a listening socket's backlog");
      libc().close(fd);
    }
    const { peers } = doorbellConnections();
    assert.ok(peers < 20, `${peers} connections kept after ${gone} peers went away`);
    // The live peer's connection survived the sweeps: the next ring goes through it.
    assert.ok(ring(liveWords));
    await until(() => connections[0] === 8, "the second ring");
    assert.equal(connections.length, 1, "the live peer's connection was closed and made again");
  } finally {
    leaveDoorbell();
    server.close();
  }
  assert.equal(doorbellConnections().peers, 0);
});

Deno.test("a doorbell keeps at most MAX_ACCEPTED connections (the oldest go)", async () => {
  const limits = readProcFile("/proc/self/limits") ?? "";
  const open = Number(/Max open files\s+(\d+)/.exec(limits)?.[1] ?? 0);
  if (open < 3 * MAX_ACCEPTED) {
    console.log(`skipped: RLIMIT_NOFILE ${open} is below ${3 * MAX_ACCEPTED}`);
    return;
  }
  useDoorbell();
  const clients: number[] = [];
  try {
    const id = await startDoorbell();
    assert.ok(id, "no doorbell could be started here");
    const at = bellAddress(id);
    await until(() => doorbellConnections().accepted === 0, "the end of the doorbell's own probe");
    const total = MAX_ACCEPTED + 40;
    // Closed by the doorbell: reads as the end (0), where a kept connection has nothing to read.
    const byte = new Uint8Array(1);
    const ended = () => clients.filter((fd) => libc().read(fd, byte, 1n) === 0n);
    while (clients.length < total) {
      // In steps the listen backlog (128) holds, each accepted before the next.
      for (let i = 0; i < 64 && clients.length < total; i++) {
        const fd = libc().socket(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK | SOCK.CLOEXEC, 0);
        assert.equal(libc().connect(fd, at, at.length), 0, "connect");
        clients.push(fd);
      }
      if (clients.length <= MAX_ACCEPTED) {
        const expected = clients.length;
        await until(() => doorbellConnections().accepted === expected, `${expected} accepted connections`);
      } else {
        const over = clients.length - MAX_ACCEPTED;
        await until(() => ended().length === over, `${over} connections closed by the doorbell`);
      }
    }
    assert.deepEqual(ended(), clients.slice(0, total - MAX_ACCEPTED), "not the oldest connections went");
    assert.equal(doorbellConnections().accepted, MAX_ACCEPTED);
  } finally {
    for (const fd of clients) libc().close(fd);
    leaveDoorbell();
  }
  assert.equal(doorbellConnections().accepted, 0);
});
