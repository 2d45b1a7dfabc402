// Regression tests: frames left partly written on a FIFO (a large trySend, a
// send aborted midway) are finished before anything else, in every writer
// mode, and the write lock of "locked" mode is held until then; a reader fed
// malformed bytes recovers when the bad writer has gone.
import assert from "node:assert/strict";
import { bytes, Channel, Fifo, FrameError } from "../mod.ts";
import { Presence } from "../sync/presence.ts";

/** Removes the FIFO and its presence record (the handles were closed first). */
async function removeFifo(path: string): Promise<void> {
  await Deno.remove(path);
  Presence.forget(`fifo:${path}`);
}

function fifoPath(): string {
  return `/tmp/ipcbus-test-${crypto.randomUUID()}.fifo`;
}

function payload(size: number, fill: number): Uint8Array {
  return new Uint8Array(size).fill(fill);
}

Deno.test("locked FIFO: a partly written trySend releases the lock once the frame is finished", async () => {
  const path = fifoPath();
  const reader = new Channel(Fifo.open(path, { create: true, writers: "locked" }), { codec: bytes });
  const a = new Channel(Fifo.open(path, { writers: "locked" }), { codec: bytes });
  const b = new Channel(Fifo.open(path, { writers: "locked" }), { codec: bytes });
  try {
    reader.tryReceive(); // open the read end so writers can connect
    assert.equal(a.trySend(payload(200_000, 1)), true);
    const first = await reader.receive({ signal: AbortSignal.timeout(5000) });
    assert.equal(first.length, 200_000);
    assert.ok(first.every((byte) => byte === 1));
    const second = reader.receive({ signal: AbortSignal.timeout(5000) });
    await b.send(payload(3, 2), { signal: AbortSignal.timeout(5000) });
    assert.deepEqual(await second, payload(3, 2));
  } finally {
    for (const channel of [a, b, reader]) channel.close();
    await removeFifo(path);
  }
});

Deno.test("locked FIFO: a send aborted mid-frame keeps the lock until the frame is whole", async () => {
  const path = fifoPath();
  const reader = new Channel(Fifo.open(path, { create: true, writers: "locked" }), { codec: bytes });
  const a = new Channel(Fifo.open(path, { writers: "locked" }), { codec: bytes });
  const b = new Channel(Fifo.open(path, { writers: "locked" }), { codec: bytes });
  try {
    reader.tryReceive();
    const big = payload(200_000, 7);
    const aborted = await a.send(big, { signal: AbortSignal.timeout(50) }).then(() => null, (e) => e);
    assert.ok(aborted instanceof DOMException && aborted.name === "TimeoutError", `got ${aborted}`);
    const sentByB = b.send(payload(3, 9), { signal: AbortSignal.timeout(5000) });
    const first = await reader.receive({ signal: AbortSignal.timeout(5000) });
    assert.equal(first.length, big.length, "the aborted frame is completed, not interleaved");
    assert.ok(first.every((byte) => byte === 7));
    await sentByB;
    assert.deepEqual(await reader.receive({ signal: AbortSignal.timeout(5000) }), payload(3, 9));
  } finally {
    for (const channel of [a, b, reader]) channel.close();
    await removeFifo(path);
  }
});

Deno.test("single-writer FIFO: a send aborted mid-frame is still finished in order", async () => {
  const path = fifoPath();
  const reader = new Channel(Fifo.open(path, { create: true, writers: "single" }), { codec: bytes });
  const writer = new Channel(Fifo.open(path, { writers: "single" }), { codec: bytes });
  try {
    reader.tryReceive();
    await assert.rejects(writer.send(payload(300_000, 4), { signal: AbortSignal.timeout(50) }));
    const next = writer.send(payload(10, 5));
    const first = await reader.receive({ signal: AbortSignal.timeout(5000) });
    assert.equal(first.length, 300_000);
    await next;
    assert.deepEqual(await reader.receive({ signal: AbortSignal.timeout(5000) }), payload(10, 5));
  } finally {
    writer.close();
    reader.close();
    await removeFifo(path);
  }
});

Deno.test("FIFO reader: malformed bytes fail one receive, then reading resumes with the next writer", async () => {
  const path = fifoPath();
  const reader = new Channel(Fifo.open(path, { create: true }), { codec: bytes });
  try {
    const bad = reader.receive({ signal: AbortSignal.timeout(5000) });
    const raw = Deno.openSync(path, { write: true });
    raw.writeSync(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    raw.close();
    await assert.rejects(bad, FrameError);
    const good = reader.receive({ signal: AbortSignal.timeout(5000) });
    const writer = new Channel(Fifo.open(path), { codec: bytes });
    try {
      await writer.send(payload(5, 3));
      assert.deepEqual(await good, payload(5, 3));
    } finally {
      writer.close();
    }
  } finally {
    reader.close();
    await removeFifo(path);
  }
});
