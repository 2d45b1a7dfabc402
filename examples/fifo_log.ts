/**
 * Several writers, one reader, one FIFO. The reader makes a FIFO, starts
 * four writer processes (this same script with `writer` arguments), and
 * collects their log records until every writer has said it is done. With
 * the default `writers: "many"` each frame is a single atomic write, so
 * records from different processes never interleave.
 *
 * Run: `deno run --allow-ffi --allow-run examples/fifo_log.ts`
 *
 * @module
 */

import { open } from "../mod.ts";

/** Message type tags. */
const Kind = { Log: 1, Done: 2 } as const;

/** A log record. */
interface LogRecord {
  writer: number;
  seq: number;
  text: string;
}

const WRITERS = 4;
const RECORDS = 1_000;

if (Deno.args[0] === "writer") {
  // A writer process: `fifo_log.ts writer <path> <id>`.
  const [, path, id] = Deno.args;
  const writer = Number(id);
  using log = await open<LogRecord>(`fifo:${path}`);
  for (let seq = 0; seq < RECORDS; seq++) {
    await log.send({ writer, seq, text: `record ${seq} from writer ${writer}` }, { type: Kind.Log });
  }
  await log.send({ writer, seq: RECORDS, text: "done" }, { type: Kind.Done });
} else {
  const path = `/tmp/ipcbus-log-${crypto.randomUUID().slice(0, 8)}.fifo`;
  const log = await open<LogRecord>(`fifo:${path}`, { create: true, exclusive: true });
  const writers: Deno.ChildProcess[] = [];
  try {
    const script = new URL(import.meta.url).pathname;
    for (let id = 1; id <= WRITERS; id++) {
      writers.push(
        new Deno.Command(Deno.execPath(), { args: ["run", "--allow-ffi", script, "writer", path, `${id}`] })
          .spawn(),
      );
    }
    const next = new Map<number, number>(); // writer → next expected seq
    let done = 0;
    const started = performance.now();
    while (done < WRITERS) {
      const { value, type } = await log.receiveMessage({ signal: AbortSignal.timeout(10_000) });
      if (type === Kind.Done) {
        done++;
        continue;
      }
      const expected = next.get(value.writer) ?? 0;
      if (value.seq !== expected) {
        throw new Error(`writer ${value.writer}: got ${value.seq}, want ${expected}`);
      }
      next.set(value.writer, expected + 1);
    }
    const ms = performance.now() - started;
    for (const [writer, count] of [...next].sort(([a], [b]) => a - b)) {
      console.log(`writer ${writer}: ${count} records, in order`);
    }
    console.log(
      `${WRITERS * RECORDS} records from ${WRITERS} processes in ${ms.toFixed(0)} ms, none interleaved`,
    );
    for (const writer of writers) await writer.status;
  } finally {
    for (const writer of writers) {
      try {
        writer.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    log.close();
    await log.unlink();
  }
}
