/**
 * `deno task demo`: start a child process and exchange typed messages with it
 * over every ipcbus transport, then print round-trip latency and throughput.
 *
 * Run: `deno run --allow-ffi --allow-run --allow-read examples/demo.ts`
 *
 * @module
 */

import { type Channel, type ChildProcess, open, spawn } from "../mod.ts";
import { type DemoMessage, Kind, kindOf, type PayloadOf, type Probe, tagsOf } from "./demo_protocol.ts";

const ROUND_TRIPS = 2_000;
const WARM_UP = 200;
const BURST = 20_000;
const BODY = "x".repeat(40); // a ~64-byte JSON message

/** One row of the results table. */
interface Row {
  transport: string;
  messages: number;
  p50: number;
  p99: number;
  throughput: number;
}

/** Receives the next message and checks that it has the expected type tag. */
async function expect<K extends Kind>(channel: Channel<DemoMessage>, kind: K): Promise<PayloadOf[K]> {
  const message = await channel.receiveMessage({ signal: AbortSignal.timeout(10_000) });
  const got = kindOf(channel, message);
  if (got !== kind) throw new Error(`expected message kind ${kind}, got ${got}`);
  return message.value as PayloadOf[K];
}

/** Sends a message whose payload matches its type tag. */
function post<K extends Kind>(channel: Channel<DemoMessage>, kind: K, payload: PayloadOf[K]): Promise<void> {
  return channel.send(payload, tagsOf(channel, kind));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/** Ping-pong for latency, then a one-way burst for throughput. */
async function measure(
  transport: string,
  out: Channel<DemoMessage>,
  back: Channel<DemoMessage>,
): Promise<Row> {
  const times: number[] = [];
  for (let seq = 0; seq < WARM_UP + ROUND_TRIPS; seq++) {
    const start = performance.now();
    await post(out, Kind.Ping, { seq, body: BODY });
    const pong: Probe = await expect(back, Kind.Pong);
    const elapsed = (performance.now() - start) * 1000;
    if (pong.seq !== seq) throw new Error(`${transport}: pong ${pong.seq} answered ping ${seq}`);
    if (seq >= WARM_UP) times.push(elapsed);
  }
  times.sort((a, b) => a - b);

  const start = performance.now();
  for (let seq = 0; seq < BURST; seq++) await post(out, Kind.Data, { seq, body: BODY });
  await post(out, Kind.Flush, null);
  const { received } = await expect(back, Kind.Flushed);
  const seconds = (performance.now() - start) / 1000;
  if (received !== BURST) throw new Error(`${transport}: the child got ${received} of ${BURST} messages`);

  return {
    transport,
    messages: 2 * (WARM_UP + ROUND_TRIPS) + BURST + 2,
    p50: percentile(times, 0.5),
    p99: percentile(times, 0.99),
    throughput: BURST / seconds,
  };
}

/** A directory for the FIFOs: `$XDG_RUNTIME_DIR` when readable without a prompt, else `/tmp`. */
function fifoDirectory(): string {
  const env = Deno.permissions.querySync({ name: "env", variable: "XDG_RUNTIME_DIR" });
  return (env.state === "granted" ? Deno.env.get("XDG_RUNTIME_DIR") : undefined) || "/tmp";
}

function printTable(rows: Row[]): void {
  const header = ["transport", "messages", "round trip p50 (µs)", "p99 (µs)", "one-way msgs/s"];
  const cells = rows.map((row) => [
    row.transport,
    row.messages.toLocaleString("en-US"),
    row.p50.toFixed(1),
    row.p99.toFixed(1),
    Math.round(row.throughput).toLocaleString("en-US"),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...cells.map((cell) => cell[i].length)));
  const line = (cell: string[]) =>
    cell.map((text, i) => (i === 0 ? text.padEnd(widths[i]) : text.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((width) => "-".repeat(width)).join("  "));
  for (const cell of cells) console.log(line(cell));
}

const directory = fifoDirectory();
const name = `ipcbus-demo-${crypto.randomUUID().slice(0, 8)}`;
const toChildPath = `${directory}/${name}-down.fifo`;
const fromChildPath = `${directory}/${name}-up.fifo`;
const made: Channel<DemoMessage>[] = [];
let child: ChildProcess | undefined;
let pipe: Channel<DemoMessage> | undefined;

try {
  // The FIFOs exist before the child starts; each is removed in `finally`.
  made.push(await open<DemoMessage>(`fifo:${toChildPath}`, { create: true, exclusive: true }));
  made.push(await open<DemoMessage>(`fifo:${fromChildPath}`, { create: true, exclusive: true }));
  // Two private System V queues, one each way; the child opens them by id.
  made.push(await open<DemoMessage>("sysv-mq:private", { create: true }));
  made.push(await open<DemoMessage>("sysv-mq:private", { create: true }));
  // Two POSIX queues, one each way (they carry no types: priorities say what a message is).
  made.push(await open<DemoMessage>(`posix-mq:/${name}-down`, { create: true, exclusive: true }));
  made.push(await open<DemoMessage>(`posix-mq:/${name}-up`, { create: true, exclusive: true }));
  // Two file: logs, one each way (mapped files: the child reads one from its start and appends to the other).
  const log = { create: true, exclusive: true, maxSize: 16 << 20 };
  const fileToChild = await open<DemoMessage>(`file:${directory}/${name}-down.bus`, log);
  made.push(fileToChild);
  const fileFromChild = await open<DemoMessage>(`file:${directory}/${name}-up.bus`, log);
  made.push(fileFromChild);
  // Two shm: rings, one each way (shared memory: a send is a copy and an atomic store).
  const shmToChild = await open<DemoMessage>(`shm:/${name}-down`, { create: true, exclusive: true });
  made.push(shmToChild);
  const shmFromChild = await open<DemoMessage>(`shm:/${name}-up`, { create: true, exclusive: true });
  made.push(shmFromChild);
  const [toChild, fromChild, queueToChild, queueFromChild, posixToChild, posixFromChild] = made;

  const childScript = new URL("./demo_child.ts", import.meta.url).pathname;
  ({ channel: pipe, child } = spawn<DemoMessage>(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      childScript,
      toChildPath,
      fromChildPath,
      queueToChild.info.address,
      queueFromChild.info.address,
      posixToChild.info.address,
      posixFromChild.info.address,
      fileToChild.info.address,
      fileFromChild.info.address,
      shmToChild.info.address,
      shmFromChild.info.address,
    ],
  }));
  const { pid } = await expect(pipe, Kind.Ready);
  console.log(
    `ipcbus demo: child ${pid} is ready; ${ROUND_TRIPS} round trips and ${BURST} one-way ` +
      `messages of ~64 bytes per transport\n`,
  );

  const rows = [
    await measure("pipe: (spawn)", pipe, pipe),
    await measure("fifo: (two FIFOs)", toChild, fromChild),
    await measure("sysv-mq: (two queues)", queueToChild, queueFromChild),
    await measure("posix-mq: (two queues)", posixToChild, posixFromChild),
    await measure("file: (two logs)", fileToChild, fileFromChild),
    await measure("shm: (two rings)", shmToChild, shmFromChild),
  ];
  printTable(rows);

  // Closing the pipe tells the child to finish; it exits by itself.
  pipe.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    child.status,
    new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 5_000)),
  ]).finally(() => clearTimeout(timer));
  if (status === undefined) throw new Error("the child did not exit within 5 s");
  if (!status.success) throw new Error(`the child failed with exit code ${status.code}`);
} finally {
  pipe?.close();
  await child?.[Symbol.asyncDispose](); // kills it if it still runs, and reaps it
  for (const channel of made) {
    channel.close();
    await channel.unlink().catch((error) =>
      console.error(`could not remove ${channel.info.address}:`, error)
    );
  }
}
