// Random bytes scribbled over live shm: rings: every operation succeeds, finds nothing, or
// fails with FrameError (ChannelClosedError when the "unlinked" flag was hit); never a crash,
// a hang or an allocation beyond the ring's own limit. The scribbling runs in a child under a
// watchdog, so that a hang or a crash fails this test instead of stopping the run.
import assert from "node:assert/strict";
import { removeSemaphores, unlinkObject } from "../ffi/_ring_sys.ts";
import { ShmRing } from "../transports/shm_ring.ts";
import { fixture, RUN, runDeno } from "./_helpers.ts";

Deno.test("shm: random bytes scribbled over live rings give FrameError, never a crash or a hang", async () => {
  const prefix = `/ipcbus-test-${RUN}-scribble`;
  const episodes = 240;
  let stderr = "";
  try {
    const result = await runDeno(
      fixture("shm_ring_scribbler.ts"),
      [prefix, String(episodes), String(Date.now() % 1_000_000)],
      ["--allow-ffi"],
      undefined,
      AbortSignal.timeout(45_000),
    );
    stderr = result.stderr;
    assert.equal(result.signal, null, `the scribbler died of ${result.signal}: ${result.stderr}`);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    console.log(
      `shm scribble: ${report.episodes} rings, ${report.operations} operations: ` +
        `${report.outcomes.ok} ok, ${report.outcomes.empty} empty/full, ${report.outcomes.frameError} FrameError, ` +
        `${report.outcomes.closed} closed; largest frame ${report.maxLength} B; rss ${
          Math.round(report.rss / 2 ** 20)
        } MiB`,
    );
    assert.deepEqual(report.unexpected, []);
    assert.ok(report.outcomes.frameError > 0, "no scribble was ever detected");
    assert.ok(report.outcomes.ok > 0);
    // Ring limits: 8 KiB rings take at most 4080-byte frames.
    assert.ok(report.maxLength <= 4080, `a frame of ${report.maxLength} bytes`);
  } finally {
    // A scribbler that died leaves its last ring: remove it by what it said.
    for (const [, name, semid] of stderr.matchAll(/^ring (\S+) (\d+)$/gm)) {
      try {
        ShmRing.unlink(name);
      } catch {
        unlinkObject(name);
        removeSemaphores(Number(semid));
      }
    }
  }
});
