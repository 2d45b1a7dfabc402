// The System V examples run end to end as a user would run them (separate
// processes over real kernel queues), and leave no queue behind.
import assert from "node:assert/strict";
import { runDeno } from "./_helpers.ts";

const root = new URL("../", import.meta.url).pathname;

async function queueIds(): Promise<Set<string>> {
  const { stdout } = await new Deno.Command("cat", { args: ["/proc/sysvipc/msg"], stdout: "piped" }).output();
  const lines = new TextDecoder().decode(stdout).trim().split("\n").slice(1);
  return new Set(lines.map((line) => line.trim().split(/\s+/)[1]).filter(Boolean));
}

async function runExample(file: string): Promise<string> {
  const { code, signal, stdout: out, stderr } = await runDeno(
    `${root}examples/${file}`,
    [],
    ["--allow-ffi", "--allow-run"],
    undefined,
    AbortSignal.timeout(30_000),
  );
  assert.ok(code === 0 && signal === null, `${file} failed:\n${out}\n${stderr}`);
  // Other test files make and remove queues meanwhile (the suite runs files in parallel), so a diff of
  // the whole table flakes: judge the queue each example announces (each makes exactly one).
  const announced = [...out.matchAll(/sysv-mq:id\/(\d+)/g)].map((match) => match[1]);
  assert.ok(announced.length > 0, `${file} printed no queue address`);
  const after = await queueIds();
  const left = announced.filter((id) => after.has(id));
  assert.deepEqual(left, [], `${file} left System V queues behind`);
  return out;
}

Deno.test("examples/sysv_router.ts: each worker gets only its own types", async () => {
  const out = await runExample("sysv_router.ts");
  const handled = [...out.matchAll(/job\s+(\d+)\s+(\w+)\s+handled by (\d+)/g)];
  assert.equal(handled.length, 12);
  const workerOf = new Map<string, string>();
  for (const [, , kind, worker] of handled) {
    assert.equal(workerOf.get(kind) ?? worker, worker, `${kind} jobs went to more than one worker`);
    workerOf.set(kind, worker);
  }
  assert.equal(new Set(workerOf.values()).size, 3);
  assert.match(out, /all workers stopped/);
});

Deno.test("examples/sysv_rpc.ts: three client processes get their replies and the remote errors", async () => {
  const out = await runExample("sysv_rpc.ts");
  for (const client of ["a", "b", "c"]) {
    assert.match(out, new RegExp(`client ${client}: 3 × ACME = 37\\.5`));
    assert.match(out, new RegExp(`client ${client}: 3 × GLOBEX = 9\\.75`));
    assert.match(out, new RegExp(`client ${client}: UMBRELLA refused: Error: unknown symbol UMBRELLA`));
  }
  assert.match(out, /3 of 3 clients done/);
});
