// ffi/_delay.ts: an aborted wait leaves nothing that keeps the process alive.
import assert from "node:assert/strict";
import { bounded, DenoChild, fixture } from "./_helpers.ts";

for (const how of ["delay", "abortable"]) {
  Deno.test(`an aborted ${how} does not keep a combined signal's long timeout (and the process) alive`, async () => {
    await using child = new DenoChild(fixture("abort_exit_child.ts"), [how], []);
    assert.equal(await child.line(), "aborted");
    // With a `once` listener Deno kept the 10-minute timer of the combined signal alive (Deno 2.9).
    const { status } = await bounded(child.finish(), "the child's exit");
    assert.equal(status.code, 0);
  });
}
