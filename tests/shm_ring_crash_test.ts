// The shm: ring when processes die: a lock holder killed mid-frame, a consumer killed
// holding the reader lock, a dead slot's locks taken over by its next owner, and SIGKILL at
// random points during heavy traffic (the figures are printed).
import assert from "node:assert/strict";
import { PosixSharedMemory } from "../memory/posix_shared_memory.ts";
import { ShmRing } from "../transports/shm_ring.ts";
import * as L from "../transports/_ring_layout.ts";
import { bounded, DenoChild, fixture, RUN, until } from "./_helpers.ts";
import { checkMessage, makeMessage } from "./fixtures/shm_ring_message.ts";

const CHILD = fixture("shm_ring_child.ts");
const ANY = { type: 0, except: false } as const;
/** Producers killed in the producer chaos run. */
const PRODUCER_KILLS = 20;
/** A producer is killed after printing 1 to this many "sent" lines (uniformly drawn). */
const MOST_SENT_LINES = 200;
/** A consumer is killed after the consumers printed 1 to this many "got" lines between them. */
const MOST_GOT_LINES = 3000;

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

/** The header of ring `name` as 32-bit words, through a mapping of its own (close it after). */
function mapHeader(name: string): { shm: PosixSharedMemory; header: Int32Array } {
  const shm = PosixSharedMemory.open(name);
  return { shm, header: new Int32Array(shm.view.buffer, shm.view.byteOffset, shm.view.byteLength >> 2) };
}

/** Whether the handle in `slot` is registered in a wait mask of the ring (parked). */
function inWaitMask(header: Int32Array, mask: number, slot: number): boolean {
  return (Atomics.load(header, (mask >> 2) + (slot >> 5)) & (1 << (slot & 31))) !== 0;
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

/**
 * Counts events; `reach(n)` resolves once `n` were counted, or once `end()` says no more
 * will come (so a child that died on its own never leaves a test waiting).
 */
class Count {
  value = 0;
  #ended = false;
  #wanted = Infinity;
  #resolve: (() => void) | undefined;

  add(): void {
    if (++this.value >= this.#wanted) this.#settle();
  }

  end(): void {
    this.#ended = true;
    this.#settle();
  }

  reach(n: number): Promise<void> {
    if (this.value >= n || this.#ended) return Promise.resolve();
    this.#wanted = n;
    return new Promise((resolve) => this.#resolve = resolve);
  }

  #settle(): void {
    this.#wanted = Infinity;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.();
  }
}

/** A producer child, followed: its "ready" line, and its "sent <seq>" lines counted. */
interface Followed {
  child: DenoChild;
  /** Resolves at "ready" (or when the child's output ends). */
  ready: Promise<void>;
  /** "sent" lines read so far. */
  sent: Count;
  /** Resolves when the child's output ended (or it printed "done"). */
  following: Promise<void>;
}

/** Follows a producer child's lines: "sent <seq>" goes into the tally (every seq up to it resolved). */
function follow(child: DenoChild, id: number, tally: Tally): Followed {
  const sent = new Count();
  let ready!: () => void;
  const readySeen = new Promise<void>((resolve) => ready = resolve);
  const following = (async () => {
    try {
      for (;;) {
        const line = await child.line().catch(() => "");
        if (line === "ready") ready();
        else if (line.startsWith("sent ")) {
          tally.resolved.set(id, Number(line.slice(5)));
          sent.add();
        } else if (line === "" || line === "done") return;
      }
    } finally {
      ready();
      sent.end();
    }
  })();
  return { child, ready: readySeen, sent, following };
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
      const followed = follow(child, id, tally);
      await bounded(followed.ready, "a producer's ready line");
      return followed;
    };
    // The consumer: this process, in batches and single receives, until `stopping` aborts.
    const stopping = new AbortController();
    const consuming = (async () => {
      let rounds = 0;
      while (!stopping.signal.aborted) {
        const taken = ring.tryReceiveBatch(ANY, 64, (frame) => tally.take(frame.data, true));
        if (taken === 0) {
          try {
            tally.take((await ring.receive(ANY, stopping.signal)).data, true);
          } catch (error) {
            if (!stopping.signal.aborted) throw error;
          }
        }
        if (++rounds % 16 === 0) await turn();
      }
    })();
    // A victim dies after a random number of its own "sent" lines: it is in the middle of its
    // traffic then, at a point in its send loop that nothing here chooses (it goes on sending
    // while its line travels to us). Where the SIGKILL lands is the random part the test is
    // about; no outcome depends on when it lands, so no timing is assumed.
    const running = [await start(), await start(), await start()];
    while (kills < PRODUCER_KILLS) {
      const victim = Math.floor(Math.random() * running.length);
      const { child, sent, following } = running[victim];
      const lines = 1 + Math.floor(Math.random() * MOST_SENT_LINES);
      await bounded(Promise.race([sent.reach(sent.value + lines), consuming]), "a producer's sent lines");
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
    // Every producer is dead and its lines read: stop the consumer and take what is left.
    stopping.abort();
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
    const { shm, header } = mapHeader(name);
    using _shm = shm;
    // "got" lines of all consumers, and who printed the last one.
    const got = new Count();
    let lastGot: DenoChild | undefined;
    const startConsumer = async () => {
      const child = new DenoChild(CHILD, ["consume", name, "0"]);
      children.add(child);
      await bounded(child.expect("ready"), "a consumer's ready line");
      const reading = (async () => {
        for (;;) {
          const line = await child.line().catch(() => "");
          if (line === "") return;
          const [word, producer, seq] = line.split(" ");
          if (word === "bad") tally.corrupted++;
          else tally.take(makeMessage(Number(producer), Number(seq), 0), false);
          lastGot = child;
          got.add();
        }
      })();
      return { child, reading };
    };
    const consumers = [await startConsumer(), await startConsumer()];
    const producers = [1, 2].map((id) => {
      const { child, following } = follow(
        new DenoChild(CHILD, ["produce", name, String(id), String(perProducer), "900", String(id)]),
        id,
        tally,
      );
      children.add(child);
      return { child, following };
    });
    const finished = Promise.all(producers.map(({ following }) => following));
    let done = false;
    finished.then(() => done = true);
    // The victim is the consumer that printed the n-th "got" line since the last kill (n drawn at
    // random): one in the middle of its traffic, killed at a point of its receive loop that
    // nothing here chooses. The run ends when the producers are done; were they wedged, the
    // "got" lines would stop and the bounded wait would say so.
    while (!done) {
      const lines = 1 + Math.floor(Math.random() * MOST_GOT_LINES);
      await bounded(
        Promise.race([finished, got.reach(got.value + lines)]),
        'more "got" lines (were the producers wedged?)',
      );
      if (done) break;
      const victim = consumers.findIndex(({ child }) => child === lastGot);
      if (victim < 0) continue; // its line came from a consumer killed already: draw again
      await kill(consumers[victim].child);
      await consumers[victim].reading;
      kills++;
      consumers[victim] = await startConsumer();
    }
    assert.ok(done, "the producers were wedged");
    for (const { child } of producers) assert.equal((await child.process.status).code, 0);
    // Let the live consumers take the rest, then stop them. Nothing is pending once every frame
    // was taken; a consumer parked for data (its bit in the ring's wait mask) has printed every
    // message it took (it prints each before it receives again), so killing it then loses
    // nothing that a kill above did not already count.
    await until(() => ring.stat().pendingBytes === 0, "the live consumers to take what is left");
    const slots = consumers.map(({ child }) =>
      ring.stat().users.find((user) => user.pid === child.process.pid)!.slot
    );
    await until(
      () => ring.stat().pendingBytes === 0 && slots.every((slot) => inWaitMask(header, L.DATA_MASK, slot)),
      "the live consumers to park with nothing left",
    );
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
