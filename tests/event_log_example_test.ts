// examples/event_log.ts runs end to end as a user would run it (a writer and
// two named reader processes over one file: log, one reader killed and
// restarted), and leaves no log file behind.
import assert from "node:assert/strict";
import { runDeno } from "./_helpers.ts";

const root = new URL("../", import.meta.url).pathname;

function logFiles(): Set<string> {
  return new Set(
    [...Deno.readDirSync("/tmp")].map((entry) => entry.name).filter((name) =>
      /^\.?ipcbus-events-/.test(name)
    ),
  );
}

Deno.test("examples/event_log.ts: the restarted named reader resumes exactly after its last event", async () => {
  const before = logFiles();
  const { code, stdout: out, stderr } = await runDeno(`${root}examples/event_log.ts`, [], [
    "--allow-ffi",
    "--allow-run",
  ]);
  assert.equal(code, 0, `event_log.ts failed:\n${out}\n${stderr}`);
  assert.match(out, /^writer: appended 2000 events in \d+ ms, then an end marker$/m);
  assert.match(out, /^billing: events 1 to 2000, total 99900\.0$/m);
  assert.match(out, /^audit \(run 1\): events 1 to 700; now waiting to be killed$/m);
  assert.match(out, /^audit \(run 2\): events 701 to 2000, total 64835\.0$/m);
  assert.match(out, /^audit: 2000 events over two runs, none missed, none twice$/m);
  const left = [...logFiles()].filter((name) => !before.has(name));
  assert.deepEqual(left, [], "event_log.ts left its log file behind");
});
