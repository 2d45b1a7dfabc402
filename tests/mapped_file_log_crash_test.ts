// file: logs and SIGKILL. A writer process appends batches as fast as it can
// and reports each resolved send; the test kills it with SIGKILL at a random
// moment, then checks that every reported message is in the log, whole and in
// order, that no torn frame is visible, and that the append lock is free.
// Half the kills happen while this process has the log open (the next writer
// repairs a dead writer's half-done append), half while nobody has it open
// (the next opener runs the recovery). Prints kills / messages / lost / corrupt.
import assert from "node:assert/strict";
import { bytes, Channel, FrameError } from "../mod.ts";
import { FileLock } from "../sync/file_lock.ts";
import { MappedFileLog, MessagesLostError } from "../transports/mapped_file_log.ts";
import { bounded, DenoChild, fixture, leftovers, TempDir } from "./_helpers.ts";
import { padFor } from "./fixtures/file_log_pad.ts";

const KILLS = 30;

Deno.test(`SIGKILL loop: ${KILLS} writers killed mid-append lose nothing they reported, and leave no torn frame`, async () => {
  await using dir = await TempDir.make();
  const path = dir.file("crash.bus");
  (await MappedFileLog.open(path, { create: true, maxSize: 64 << 20 })).close();
  const decoder = new TextDecoder();
  let next = 0;
  let messages = 0;
  let lost = 0;
  let corrupt = 0;
  let repairedByWriters = 0;
  let repairedByOpeners = 0;
  for (let kill = 0; kill < KILLS; kill++) {
    const keepOpen = kill % 2 === 1;
    const durability = kill % 4 === 3 ? "sync" : "none";
    const observer = keepOpen ? await MappedFileLog.open(path) : null;
    let acknowledged = -1;
    {
      await using writer = new DenoChild(fixture("file_log_writer.ts"), [
        path,
        durability,
        `${kill}`,
        `${next}`,
      ]);
      await writer.expect("ready");
      const batches = 1 + Math.floor(Math.random() * 40);
      for (let n = 0; n < batches; n++) {
        const line = await bounded(writer.line(), "a batch report");
        acknowledged = Number(line.split(" ")[1]);
      }
      writer.process.kill("SIGKILL");
      const { status, rest } = await writer.finish();
      assert.equal(status.signal, "SIGKILL");
      for (const line of rest) if (line.startsWith("ok ")) acknowledged = Number(line.split(" ")[1]);
    }
    // The append lock is free again (the kernel dropped the dead writer's lock).
    {
      using lock = FileLock.open(path);
      using held = lock.tryLock({ start: 0, length: 1 });
      assert.ok(held, "the append lock is free after the kill");
    }
    const transport = await MappedFileLog.open(path, { reader: "checker" });
    if (transport.info.recovery.writerDied) repairedByOpeners++;
    using checker = new Channel<Uint8Array>(transport, { codec: bytes });
    let last = next - 1;
    for (;;) {
      let result;
      try {
        result = checker.tryReceive();
      } catch (error) {
        if (error instanceof FrameError) corrupt++;
        else if (error instanceof MessagesLostError) lost += error.lost ?? 1;
        else throw error;
        continue;
      }
      if (!result.ok) break;
      const { w, i, pad } = JSON.parse(decoder.decode(result.value));
      assert.equal(w, kill, "only this writer's messages are new");
      assert.equal(i, last + 1, "in order, none missing");
      assert.equal(pad, padFor(i), "whole");
      last = i;
      messages++;
    }
    if (last < acknowledged) lost += acknowledged - last;
    assert.ok(last >= acknowledged, `message ${acknowledged} was reported sent, the log ends at ${last}`);
    repairedByWriters = transport.stats().writerDeaths - repairedByOpeners;
    next = last + 1;
    observer?.close();
  }
  console.log(
    `kill loop: ${KILLS} kills, ${messages} messages, ${lost} lost, ${corrupt} corrupt; a writer died ` +
      `inside its critical section ${repairedByWriters + repairedByOpeners} times (repaired by the next ` +
      `writer ${repairedByWriters}, by the next opener ${repairedByOpeners})`,
  );
  assert.equal(lost, 0);
  assert.equal(corrupt, 0);
});

Deno.test("no temporary files are left behind", () => {
  assert.deepEqual(leftovers(), []);
});
