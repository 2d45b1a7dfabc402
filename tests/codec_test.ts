// The codecs on their own: bytes' pooled copies.
import assert from "node:assert/strict";
import { bytes } from "../mod.ts";

Deno.test("bytes.decode returns copies the caller owns, small ones from a shared pool", () => {
  const source = new Uint8Array(600).map((_, i) => i & 0xff);
  const seen: Uint8Array[] = [];
  for (const length of [0, 1, 7, 8, 64, 511, 512, 513, 600]) {
    const copy = bytes.decode(source.subarray(0, length));
    assert.equal(copy.length, length);
    assert.deepEqual(copy, source.subarray(0, length));
    assert.equal(copy.byteOffset % 8, 0, "copies stay 8-byte aligned");
    if (length > 512) {
      assert.equal(copy.buffer.byteLength, length, "large messages get a buffer of their own");
    }
    seen.push(copy);
  }
  // Writing into one copy changes neither the source nor any other copy.
  for (const copy of seen) copy.fill(0xee);
  assert.equal(source[5], 5);
  const again = bytes.decode(source.subarray(0, 64));
  assert.deepEqual(again, source.subarray(0, 64));
  for (const copy of seen) assert.ok(copy.every((b) => b === 0xee));
});

Deno.test("bytes.decode: many small messages span several pool chunks without overlap", () => {
  const copies: Uint8Array[] = [];
  for (let i = 0; i < 2000; i++) copies.push(bytes.decode(new Uint8Array(100).fill(i & 0xff)));
  copies.forEach((copy, i) => assert.ok(copy.every((b) => b === (i & 0xff)), `copy ${i} intact`));
});

Deno.test("bytes.encode refuses what is not a Uint8Array", () => {
  assert.throws(() => bytes.encode([1, 2] as unknown as Uint8Array), TypeError);
});

Deno.test("bytesView: a receive lends the transport's buffer until the next receive; batches and schemas copy", async () => {
  const { bytesView, Channel, Pipe } = await import("../mod.ts");
  const [a, b] = Pipe.pair();
  using tx = new Channel(a, { codec: bytesView });
  using rx = new Channel(b, { codec: bytesView });
  assert.equal(rx.info.codec, "bytes-view");
  await tx.send(new Uint8Array([1, 2, 3]));
  await tx.send(new Uint8Array([4, 5, 6]));
  const first = await rx.receive({ signal: AbortSignal.timeout(5000) });
  assert.deepEqual([...first], [1, 2, 3]);
  const second = await rx.receive({ signal: AbortSignal.timeout(5000) });
  assert.deepEqual([...second], [4, 5, 6]);
  // Batches return many messages at once: each is a copy of its own.
  await tx.sendBatch([new Uint8Array([7]), new Uint8Array([8]), new Uint8Array(1000).fill(9)]);
  const batch = await rx.receiveBatch(10, { signal: AbortSignal.timeout(5000) });
  assert.deepEqual(batch.map((m) => m.value[0]), [7, 8, 9]);
  assert.equal(batch[2].value.length, 1000);
  assert.ok(batch[2].value.every((byte) => byte === 9));
  // With a schema (which may look at the value later), receive decodes a copy too.
  const schema = {
    "~standard": {
      version: 1 as const,
      vendor: "tests",
      validate: (value: unknown) => Promise.resolve({ value: value as Uint8Array }),
    },
  };
  const [c, d] = Pipe.pair();
  using tx2 = new Channel(c, { codec: bytesView });
  using rx2 = new Channel(d, { codec: bytesView, schema });
  await tx2.sendBatch([new Uint8Array([1]), new Uint8Array([2])]);
  const one = await rx2.receive({ signal: AbortSignal.timeout(5000) });
  const two = await rx2.receive({ signal: AbortSignal.timeout(5000) });
  assert.deepEqual([one[0], two[0]], [1, 2]);
});
