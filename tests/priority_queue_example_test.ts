// examples/priority_queue.ts runs end to end as a user would run it (a
// producer process and a consumer over a real POSIX queue): the jobs come out
// highest priority first, in send order within a priority, and the queue is
// removed at the end.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;

const raw = Deno.dlopen("libc.so.6", {
  mq_open: { parameters: ["buffer", "i32", "u32", "buffer"], result: "i32" },
  mq_close: { parameters: ["i32"], result: "i32" },
}).symbols;

/** Whether a POSIX queue has this name now. */
function queueExists(name: string): boolean {
  const fd = raw.mq_open(new TextEncoder().encode(name + "\0"), 0o4000, 0, null); // O_RDONLY | O_NONBLOCK
  if (fd < 0) return false;
  raw.mq_close(fd);
  return true;
}

Deno.test("examples/priority_queue.ts: the consumer gets the jobs by priority, FIFO within one, and removes the queue", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-run", `${root}examples/priority_queue.ts`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const { success, stdout, stderr } = await child.output();
    const out = new TextDecoder().decode(stdout);
    assert.ok(success, `priority_queue.ts failed:\n${out}\n${new TextDecoder().decode(stderr)}`);
    const name = /made posix-mq:(\/ipcbus-example-[0-9a-f]+)/.exec(out)?.[1];
    assert.ok(name, `no queue name in:\n${out}`);
    assert.equal(queueExists(name), false, `${name} was left behind`);
    assert.match(out, new RegExp(`removed posix-mq:${name}`));

    const sent = [...out.matchAll(/sent job (\d+) \(.*\) with priority (\d+)/g)].map(([, id, priority]) => ({
      id: Number(id),
      priority: Number(priority),
    }));
    assert.equal(sent.length, 9);
    const received = [...out.matchAll(/priority\s+(\d+) \(\w+\s*\)\s+job (\d+)/g)].map((
      [, priority, id],
    ) => ({
      id: Number(id),
      priority: Number(priority),
    }));
    // The expected order: by priority, highest first; a stable sort keeps send order within one.
    const expected = [...sent].sort((a, b) => b.priority - a.priority);
    assert.deepEqual(received, expected);
  } finally {
    clearTimeout(timer);
  }
});
