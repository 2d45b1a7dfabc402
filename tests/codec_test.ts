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
