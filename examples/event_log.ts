/**
 * A durable event log shared by three processes: a writer appends order
 * events to a `file:` log while two named readers consume them, each at its
 * own pace. The "audit" reader is killed (SIGKILL) midway and started again:
 * it resumes right after the last event it was handed, so over its two runs
 * it sees every event exactly once. The log file outlives them all; the
 * example removes it at the end.
 *
 * Run: `deno task example:event-log`
 * (`deno run --allow-ffi --allow-run examples/event_log.ts`)
 *
 * @module
 */

import { open } from "../mod.ts";

/** One order event. */
interface OrderEvent {
  id: number;
  amount: number;
}

/** Message types. */
const Type = { Order: 1, End: 2 } as const;

const EVENTS = 2_000;
/** The first audit run stops reading after this many events, and is killed. */
const AUDIT_FIRST_RUN = 700;

const script = new URL(import.meta.url).pathname;
const [role, path, name] = Deno.args;

function amountOf(id: number): number {
  return (id * 7919) % 1000 / 10;
}

if (role === "writer") {
  // `batch`: every append is synced to disk within 100 ms.
  using log = await open<OrderEvent | null>(`file:${path}`, { durability: "batch" });
  const started = performance.now();
  for (let id = 1; id <= EVENTS; id++) await log.send({ id, amount: amountOf(id) }, { type: Type.Order });
  await log.send(null, { type: Type.End });
  console.log(
    `writer: appended ${EVENTS} events in ${(performance.now() - started).toFixed(0)} ms, then an end marker`,
  );
} else if (role === "reader") {
  // A named reader: its position is kept in the log file, acknowledged as each event is handed over.
  using log = await open<OrderEvent | null>(`file:${path}`, { reader: name });
  const firstRun = Deno.args[3] === "first";
  let first = 0;
  let last = 0;
  let total = 0;
  for (;;) {
    const { value, type } = await log.receiveMessage({ signal: AbortSignal.timeout(30_000) });
    if (type === Type.End) break;
    const event = value as OrderEvent;
    if (last !== 0 && event.id !== last + 1) throw new Error(`${name}: event ${event.id} after ${last}`);
    first ||= event.id;
    last = event.id;
    total += event.amount;
    if (firstRun && event.id === AUDIT_FIRST_RUN) {
      console.log(`${name} (run 1): events ${first} to ${last}; now waiting to be killed`);
      await new Promise(() => {}); // the parent kills this process here
    }
  }
  console.log(
    `${name}${Deno.args[3] ? " (run 2)" : ""}: events ${first} to ${last}, total ${total.toFixed(1)}`,
  );
} else {
  const directory = "/tmp";
  const logPath = `${directory}/ipcbus-events-${crypto.randomUUID().slice(0, 8)}.bus`;
  const log = await open<OrderEvent | null>(`file:${logPath}`, {
    create: true,
    exclusive: true,
    maxSize: 4 << 20,
  });
  const run = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", script, ...args],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
  const children: Deno.ChildProcess[] = [];
  try {
    // The readers start first and wait for events; the writer appends while they read.
    const billing = run("reader", logPath, "billing");
    const audit = run("reader", logPath, "audit", "first");
    const writer = run("writer", logPath);
    children.push(billing, audit, writer);

    // Kill the first audit run as soon as it says it has handled its share.
    const auditLines = audit.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("waiting to be killed")) {
      const { value, done } = await auditLines.read();
      if (done) throw new Error("the first audit run ended early");
      said += value;
    }
    console.log(said.trim());
    audit.kill("SIGKILL");
    await audit.status;
    console.log("audit: killed (SIGKILL); starting it again");
    const restarted = run("reader", logPath, "audit", "second");
    children.push(restarted);

    let resumed = "";
    for (const child of [writer, billing, restarted]) {
      const { success, stdout } = await child.output();
      const line = new TextDecoder().decode(stdout).trim();
      console.log(line);
      if (!success) throw new Error("a child failed");
      if (child === restarted) resumed = line;
    }
    // The second run began right after the last event the first was handed, and read to the end.
    if (!resumed.includes(`events ${AUDIT_FIRST_RUN + 1} to ${EVENTS},`)) {
      throw new Error(`the restarted audit reader did not resume at event ${AUDIT_FIRST_RUN + 1}`);
    }
    console.log(`audit: ${EVENTS} events over two runs, none missed, none twice`);
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }
    log.close();
    await log.unlink();
  }
}
