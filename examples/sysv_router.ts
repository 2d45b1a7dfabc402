/**
 * One System V message queue, several worker processes, each taking only
 * the message types it handles: the queue routes by type.
 *
 *   deno task example:sysv-router
 *
 * The router makes a private queue and starts three workers (this same file,
 * with a role argument) that open it by id. It sends 12 jobs of mixed types;
 * each worker receives with `{ type: itsType }`, so the kernel hands it only
 * its own. Results come back on the same queue with type 100, which only the
 * router asks for. The queue is removed at the end, even on failure.
 *
 * @module
 */

import { open } from "../mod.ts";

/** Job kinds are message types: each worker asks the kernel for one of them. */
const Kind = { email: 1, sms: 2, push: 3 } as const;
type KindName = keyof typeof Kind;
/** Results travel back with this type, which no worker asks for. */
const RESULT = 100;

interface Job {
  id: number;
  to: string;
}
interface Result {
  id: number;
  kind: KindName;
  worker: number;
}
type Message = Job | Result | "stop";

async function worker(address: string, kind: KindName): Promise<void> {
  using queue = await open<Message>(address);
  console.log(`  worker ${Deno.pid} takes type ${Kind[kind]} (${kind})`);
  for (;;) {
    const job = await queue.receive({ type: Kind[kind] });
    if (job === "stop") return;
    const { id } = job as Job;
    await queue.send({ id, kind, worker: Deno.pid }, { type: RESULT });
  }
}

async function router(): Promise<void> {
  await using queue = await open<Message>("sysv-mq:private", { create: true });
  const address = queue.info.address; // "sysv-mq:id/<id>": how the workers find it
  const children: Deno.ChildProcess[] = [];
  try {
    console.log(`router: queue ${address}`);
    for (const kind of Object.keys(Kind) as KindName[]) {
      children.push(
        new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-ffi", import.meta.filename!, "worker", address, kind],
          stdin: "null",
        }).spawn(),
      );
    }
    const kinds = Object.keys(Kind) as KindName[];
    const jobs = Array.from({ length: 12 }, (_, id) => ({ id, kind: kinds[(id * 7) % 3] }));
    for (const { id, kind } of jobs) {
      await queue.send({ id, to: `user${id}@example.com` }, { type: Kind[kind] });
    }
    console.log(`router: sent ${jobs.length} jobs; results:`);
    for (let i = 0; i < jobs.length; i++) {
      const result = await queue.receive({ type: RESULT, signal: AbortSignal.timeout(10_000) }) as Result;
      console.log(
        `  job ${String(result.id).padStart(2)}  ${result.kind.padEnd(5)}  handled by ${result.worker}`,
      );
    }
    for (const kind of kinds) await queue.send("stop", { type: Kind[kind] });
    for (const child of children) await child.status;
    console.log("router: all workers stopped");
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
    await queue.unlink();
  }
}

if (Deno.args[0] === "worker") await worker(Deno.args[1], Deno.args[2] as KindName);
else await router();
