/**
 * A POSIX message queue delivers the most urgent message first: a producer
 * process sends jobs of mixed priorities, and the consumer takes them highest
 * priority first, in send order within a priority.
 *
 *   deno task example:priority-queue
 *
 * The consumer creates a small queue (`posix-mq:/ipcbus-example-…`, 10
 * messages of at most 1 KiB) and starts the producer (this same file, with a
 * role argument), which opens the queue by name, sends nine jobs and exits.
 * The consumer then drains the queue and prints the order it got. The queue
 * is removed at the end, even on failure.
 *
 * @module
 */

import { open } from "../mod.ts";

interface Job {
  id: number;
  task: string;
}

/** What the producer sends, in this order: [priority, task]. */
const JOBS: readonly (readonly [number, string])[] = [
  [0, "rebuild search index"],
  [5, "send invoice"],
  [0, "compress old logs"],
  [9, "reset password"],
  [5, "send receipt"],
  [1, "refresh thumbnails"],
  [9, "unlock account"],
  [0, "nightly report"],
  [5, "ship order"],
];

const LABEL: Record<number, string> = { 0: "background", 1: "low", 5: "normal", 9: "urgent" };

async function producer(address: string): Promise<void> {
  using queue = await open<Job>(address);
  for (const [index, [priority, task]] of JOBS.entries()) {
    await queue.send({ id: index + 1, task }, { priority });
    console.log(`  producer ${Deno.pid}: sent job ${index + 1} (${task}) with priority ${priority}`);
  }
}

async function consumer(): Promise<void> {
  const address = `posix-mq:/ipcbus-example-${crypto.randomUUID().slice(0, 8)}`;
  await using queue = await open<Job>(address, {
    create: true,
    exclusive: true,
    maxMessages: 10, // fs.mqueue.msg_max is 10 by default: the most an unprivileged process may ask for
    messageSize: 1024,
  });
  try {
    console.log(
      `consumer: made ${address} (${queue.info.maxMessages} messages of at most ${queue.info.messageSize} bytes)`,
    );
    const producerProcess = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", import.meta.filename!, "producer", address],
      stdin: "null",
    }).spawn();
    const status = await producerProcess.status;
    if (!status.success) throw new Error(`the producer failed with exit code ${status.code}`);

    console.log(`consumer: the producer is done; ${JOBS.length} jobs wait; taking them:`);
    for (let i = 0; i < JOBS.length; i++) {
      const { value: job, priority } = await queue.receiveMessage({ signal: AbortSignal.timeout(10_000) });
      console.log(
        `  priority ${String(priority).padStart(2)} (${
          LABEL[priority].padEnd(10)
        })  job ${job.id}  ${job.task}`,
      );
    }
  } finally {
    await queue.unlink();
    console.log(`consumer: removed ${address}`);
  }
}

if (Deno.args[0] === "producer") await producer(Deno.args[1]);
else await consumer();
