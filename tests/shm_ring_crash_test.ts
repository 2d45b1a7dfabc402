// The shm: ring when processes die: a lock holder killed mid-frame, a consumer killed
// holding the reader lock, a dead slot's locks taken over by its next owner, and SIGKILL at
// random points during heavy traffic (the figures are printed).
import assert from "node:assert/strict";
import { ShmRing } from "../transports/shm_ring.ts";
import { bounded, DenoChild, fixture, RUN } from "./_helpers.ts";
import { checkMessage, makeMessage } from "./fixtures/shm_ring_message.ts";

const CHILD = fixture("shm_ring_child.ts");
const ANY = { type: 0, except: false } as const;
/** How long each random-kill run lasts, in ms. */
const CHAOS_MS = 6000;

function fresh(): string {
  return `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
}

function unlinkQuietly(name: string): void {
  try {
    ShmRing.unlink(name);
  } catch {
    // Gone already.
  }
}

function never(): AbortSignal {
  return new AbortController().signal;
}

function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function kill(child: DenoChild): Promise<void> {
  try {
    child.process.kill("SIGKILL");
  } catch {
    // Exited already.
  }
  await child.process.status;
}

Deno.test("shm: a producer killed holding the writer lock mid-frame exposes nothing and is taken over", async () => {
  const name = fresh();
  try {
    using a = ShmRing.open(name, { create: true, capacity: 4096 });
    using b = ShmRing.open(name);
    for (let i = 0; i < 3; i++) assert.ok(a.trySend(makeMessage(1, i, 20), 1, 0));
    await using holder = new DenoChild(CHILD, ["hold", name, "writer"]);
    await holder.expect("holding");
    // While it holds the lock, consumers see what was published, and never the torn frame.
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(checkMessage(b.tryReceive(ANY)!.data), { producer: 1, seq: i });
    }
    assert.equal(b.tryReceive(ANY), null);
    assert.equal(a.trySend(makeMessage(1, 3, 20), 1, 0), false, "the lock is held by a live process");
    await kill(holder);
    const started = performance.now();
    const sent = a.send(makeMessage(1, 3, 20), 1, 0, never());
    if (sent) await bounded(sent, "a send after the lock holder died", 5000);
    console.log(
      `shm: the writer lock of a killed producer was taken over in ${
        (performance.now() - started).toFixed(1)
      } ms`,
    );
    assert.equal(a.recoveries, 1);
    assert.deepEqual(checkMessage(b.tryReceive(ANY)!.data), { producer: 1, seq: 3 });
    assert.equal(b.tryReceive(ANY), null);
    assert.equal(a.stat().messages, 4, "the sequence counter is intact");
    a.close();
    ShmRing.unlink(name);
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("shm: a consumer killed holding the reader lock took nothing, and is taken over", async () => {
  const name = fresh();
  try {
    using a = ShmRing.open(name, { create: true, capacity: 4096 });
    using b = ShmRing.open(name);
    assert.ok(a.trySend(makeMessage(1, 0, 20), 1, 0));
    await using holder = new DenoChild(CHILD, ["hold", name, "reader"]);
    await holder.expect("holding");
    assert.equal(b.tryReceive(ANY), null, "the reader lock is held by a live process");
    // Producers are not held back by a consumer.
    assert.ok(a.trySend(makeMessage(1, 1, 20), 1, 0));
    await kill(holder);
    const frame = await bounded(b.receive(ANY, never()), "a receive after the consumer died", 5000);
    assert.deepEqual(checkMessage(frame.data), { producer: 1, seq: 0 });
    assert.deepEqual(checkMessage(b.tryReceive(ANY)!.data), { producer: 1, seq: 1 });
    assert.equal(b.recoveries, 1);
    a.close();
    ShmRing.unlink(name);
  } finally {
    unlinkQuietly(name);
  }
});

Deno.test("shm: the next owner of a dead process's slot releases the locks it held at once", async () => {
  const name = fresh();
  try {
    using a = ShmRing.open(name, { create: true, capacity: 4096 });
    await using holder = new DenoChild(CHILD, ["hold", name, "writer"]);
    await holder.expect("holding");
    await kill(holder);
    // The dead child had slot 1; the next open takes that slot and inherits its lock.
    using c = ShmRing.open(name);
    assert.equal(c.info.slot, 1);
    assert.equal(c.recoveries, 1);
    assert.ok(c.trySend(makeMessage(2, 0, 10), 1, 0));
    assert.deepEqual(checkMessage(a.tryReceive(ANY)!.data), { producer: 2, seq: 0 });
    a.close();
    ShmRing.unlink(name);
  } finally {
    unlinkQuietly(name);
  }
});

/** Tallies messages per producer. */
class Tally {
  readonly received = new Map<number, Uint8Array>(); // producer → count per seq
  readonly resolved = new Map<number, number>(); // producer → highest seq whose send resolved
  duplicated = 0;
  corrupted = 0;
  outOfOrder = 0;
  messages = 0;
  readonly #last = new Map<number, number>();

  take(data: Uint8Array, ordered: boolean): void {
    const checked = checkMessage(data);
    if (typeof checked === "string") {
      this.corrupted++;
      return;
    }
    const { producer, seq } = checked;
    let counts = this.received.get(producer);
    if (!counts) this.received.set(producer, counts = new Uint8Array(1 << 20));
    if (counts[seq]++ > 0) this.duplicated++;
    if (ordered && seq <= (this.#last.get(producer) ?? -1)) this.outOfOrder++;
    this.#last.set(producer, seq);
    this.messages++;
  }

  /** Resolved sends that never arrived. */
  lost(): number {
    let lost = 0;
    for (const [producer, high] of this.resolved) {
      const counts = this.received.get(producer);
      for (let seq = 0; seq <= high; seq++) if (!counts || counts[seq] === 0) lost++;
    }
    return lost;
  }
}

/** Follows a producer child's "sent <seq>" lines. */
function follow(child: DenoChild, id: number, tally: Tally): Promise<void> {
  return (async () => {
    for (;;) {
      const line = await child.line().catch(() => "");
      if (line.startsWith("sent ")) tally.resolved.set(id, Number(line.slice(5)));
      else if (line === "" || line === "done") return;
    }
  })();
}

Deno.test("shm: producers SIGKILLed at random points: every resolved send arrives exactly once", async () => {
  const name = fresh();
  const tally = new Tally();
  const children = new Set<DenoChild>();
  let kills = 0;
  let nextId = 1;
  try {
    using ring = ShmRing.open(name, { create: true, capacity: "16KiB" });
    const start = async () => {
      const id = nextId++;
      const child = new DenoChild(CHILD, ["produce", name, String(id), "0", "1500", String(id * 7919)]);
      children.add(child);
      const following = follow(child, id, tally);
      await child.expect("ready").catch(() => {});
      return { child, following };
    };
    let stop = false;
    // The consumer: this process, in batches and single receives.
    const consuming = (async () => {
      let rounds = 0;
      while (!stop) {
        const taken = ring.tryReceiveBatch(ANY, 64, (frame) => tally.take(frame.data, true));
        if (taken === 0) {
          const controller = new AbortController();
          const timer = setTimeout(() => controller.abort(), 50);
          try {
            tally.take((await ring.receive(ANY, controller.signal)).data, true);
          } catch {
            // Timed out: look at `stop` again.
          } finally {
            clearTimeout(timer);
          }
        }
        if (++rounds % 16 === 0) await turn();
      }
    })();
    const ends = Date.now() + CHAOS_MS;
    const running = [await start(), await start(), await start()];
    while (Date.now() < ends) {
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 150));
      const victim = Math.floor(Math.random() * running.length);
      const { child, following } = running[victim];
      await kill(child);
      await following;
      children.delete(child);
      kills++;
      running[victim] = await start();
    }
    for (const { child, following } of running) {
      await kill(child);
      await following;
    }
    // Drain what is left.
    await new Promise((resolve) => setTimeout(resolve, 50));
    stop = true;
    await consuming;
    for (let frame; (frame = ring.tryReceive(ANY));) tally.take(frame.data, true);
    const lost = tally.lost();
    console.log(
      `shm chaos (producers): kills ${kills}, messages ${tally.messages}, lost ${lost}, ` +
        `duplicated ${tally.duplicated}, corrupted ${tally.corrupted}, out of order ${tally.outOfOrder}`,
    );
    assert.ok(kills >= 5, `only ${kills} kills`);
    assert.ok(tally.messages > 1000, `only ${tally.messages} messages`);
    assert.equal(lost, 0);
    assert.equal(tally.duplicated, 0);
    assert.equal(tally.corrupted, 0);
    assert.equal(tally.outOfOrder, 0);
    ring.close();
    ShmRing.unlink(name);
  } finally {
    for (const child of children) await child[Symbol.asyncDispose]();
    unlinkQuietly(name);
  }
});

Deno.test("shm: consumers SIGKILLed at random points never wedge producers; nothing is duplicated", async () => {
  const name = fresh();
  const perProducer = 10_000;
  const tally = new Tally();
  const children = new Set<DenoChild>();
  let kills = 0;
  try {
    using ring = ShmRing.open(name, { create: true, capacity: "8KiB" });
    const startConsumer = async () => {
      const child = new DenoChild(CHILD, ["consume", name, "0"]);
      children.add(child);
      await child.expect("ready").catch(() => {});
      const reading = (async () => {
        for (;;) {
          const line = await child.line().catch(() => "");
          if (line === "") return;
          const [word, producer, seq] = line.split(" ");
          if (word === "bad") tally.corrupted++;
          else tally.take(makeMessage(Number(producer), Number(seq), 0), false);
        }
      })();
      return { child, reading };
    };
    const consumers = [await startConsumer(), await startConsumer()];
    const producers = [1, 2].map((id) => {
      const child = new DenoChild(CHILD, [
        "produce",
        name,
        String(id),
        String(perProducer),
        "900",
        String(id),
      ]);
      children.add(child);
      return { child, following: follow(child, id, tally) };
    });
    const finished = Promise.all(producers.map(({ following }) => following));
    let done = false;
    finished.then(() => done = true);
    const deadline = Date.now() + 40_000;
    while (!done && Date.now() < deadline) {
      await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, 30 + Math.random() * 200))]);
      if (done) break;
      const victim = Math.floor(Math.random() * consumers.length);
      await kill(consumers[victim].child);
      await consumers[victim].reading;
      kills++;
      consumers[victim] = await startConsumer();
    }
    assert.ok(done, "the producers were wedged");
    for (const { child } of producers) assert.equal((await child.process.status).code, 0);
    // Let the live consumers take the rest, then stop them and take what they left.
    const settle = Date.now() + 5000;
    while (ring.stat().pendingBytes !== 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 20));
    for (const { child, reading } of consumers) {
      await kill(child);
      await reading;
    }
    for (let frame; (frame = ring.tryReceive(ANY));) tally.take(frame.data, false);
    const lost = tally.lost();
    console.log(
      `shm chaos (consumers): kills ${kills}, messages ${tally.messages}, lost ${lost} ` +
        `(taken by a consumer killed before it printed; at most one per kill), duplicated ${tally.duplicated}, ` +
        `corrupted ${tally.corrupted}`,
    );
    assert.ok(kills >= 3, `only ${kills} kills`);
    assert.equal(tally.duplicated, 0);
    assert.equal(tally.corrupted, 0);
    assert.ok(lost <= kills, `lost ${lost} with ${kills} kills`);
    assert.equal(tally.messages + lost, 2 * perProducer);
    ring.close();
    ShmRing.unlink(name);
  } finally {
    for (const child of children) await child[Symbol.asyncDispose]();
    unlinkQuietly(name);
  }
});
