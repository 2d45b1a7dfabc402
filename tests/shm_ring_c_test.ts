// The shm: ring layout is spoken by C: bench/c/shmring.c (built here with cc) produces into
// and consumes from rings that ipcbus made, alone and next to an ipcbus producer.
import assert from "node:assert/strict";
import { ShmRing } from "../transports/shm_ring.ts";
import { bounded, hasCc, RUN, TempDir } from "./_helpers.ts";
import { checkMessage, makeMessage } from "./fixtures/shm_ring_message.ts";

const SOURCE = new URL("../bench/c/shmring.c", import.meta.url).pathname;
const ANY = { type: 0, except: false } as const;

async function build(dir: string): Promise<string> {
  const binary = `${dir}/shmring`;
  const { success, stderr } = await new Deno.Command("cc", {
    args: ["-O2", "-Wall", "-o", binary, SOURCE],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  return binary;
}

function fresh(): string {
  return `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
}

Deno.test({
  name: "shm: a C peer produces into and consumes from rings that ipcbus made",
  ignore: !hasCc,
  async fn() {
    await using dir = await TempDir.make();
    const binary = await build(dir.path);
    const name = fresh();
    const ring = ShmRing.open(name, { create: true, exclusive: true, capacity: "16KiB" });
    try {
      // C → ipcbus, with an ipcbus producer writing into the same ring at the same time.
      const c = new Deno.Command(binary, { args: ["produce", name, "5000", "300", "9"], stdout: "piped" })
        .spawn();
      const here = ShmRing.open(name);
      const next = { 1: 0, 9: 0 } as Record<number, number>;
      let mine = 0;
      while (next[1] + next[9] < 10_000) {
        if (mine < 5000 && here.trySend(makeMessage(1, mine, mine % 500), 1, 0)) mine++;
        const frame = ring.tryReceive(ANY) ?? (mine < 5000 ? null : await bounded(
          ring.receive(ANY, AbortSignal.timeout(20_000)),
          "a message from the C producer",
        ));
        if (frame === null) continue;
        const checked = checkMessage(frame.data);
        assert.notEqual(typeof checked, "string", String(checked));
        const { producer, seq } = checked as { producer: number; seq: number };
        assert.equal(frame.type, producer === 9 ? 3 : 1);
        assert.equal(seq, next[producer], `producer ${producer}: ${seq} after ${next[producer] - 1}`);
        next[producer]++;
      }
      const output = await c.output();
      assert.equal(output.code, 0);
      assert.equal(new TextDecoder().decode(output.stdout).trim(), "done");
      here.close();

      // ipcbus → C.
      const consumer = new Deno.Command(binary, { args: ["consume", name, "3000"], stdout: "piped" }).spawn();
      for (let seq = 0; seq < 3000; seq++) {
        const message = makeMessage(4, seq, (seq * 37) % 2000);
        if (!ring.trySend(message, 2, 0)) await ring.send(message, 2, 0, AbortSignal.timeout(20_000));
      }
      const result = await bounded(consumer.output(), "the C consumer");
      assert.equal(new TextDecoder().decode(result.stdout).trim(), `ok 3000 ${(2999 * 3000) / 2}`);
      assert.equal(result.code, 0);
      assert.equal(ring.stat().pendingBytes, 0);
      await ring.unlink();
    } finally {
      ring.close();
      try {
        ShmRing.unlink(name);
      } catch {
        // Unlinked above.
      }
    }
  },
});
