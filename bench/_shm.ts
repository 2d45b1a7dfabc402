/**
 * The `shm:` rows of the benchmark (used by bench.ts):
 *
 * - {@linkcode ipcbusShm}: ipcbus `shm:` between this process and a child
 *   (this file run as `_shm.ts child echo ...`), two rings (there and back),
 *   `bytes` codec: round trips with `send`/`receiveMessage`; one-way
 *   throughput with `sendBatch` of 256 here and `receiveBatch` in the child.
 * - {@linkcode ipcbusShmFanIn}: N child producers (`_shm.ts child produce`)
 *   each `sendBatch`ing its share into one queue ring, this process taking
 *   them all with `receiveBatch` (throughput only). Started by a message on a
 *   broadcast ring, so every producer starts at once.
 * - {@linkcode workerPostMessage}: a `Worker` echoing `postMessage`, what a
 *   Deno program uses between threads.
 * - {@linkcode shmC}: bench/c/shmring.c, the same ring in C (same layout,
 *   locks, wait masks and semaphores), blocking or spinning like ipcbus, with
 *   1 to 4 producer processes.
 *
 * Only the public API of ipcbus (`../mod.ts`) is used.
 *
 * @module
 */

import { bytes, bytesView, type Channel, open } from "../mod.ts";
import { type RoundTripRun, runningC, type ThroughputRun } from "./_c.ts";
import type { Endpoint } from "./_endpoints.ts";
import { BATCH, LARGE, makePayload, readU32, T, u32s } from "./_frames.ts";
import { summarize } from "./_stats.ts";

const SELF = new URL(import.meta.url).pathname;
const CHILD_FLAGS = ["run", "--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];
const MIN_ROUND_TRIPS = 1000;
/** Every ring of the benchmark holds 1 MiB, like the C program's. */
const CAPACITY = "1MiB";
/** Sizes of the benchmark's metrics. */
const SIZE = { rt: 64, tp64: 64, tp64k: 64 * 1024 } as const;
type MetricId = keyof typeof SIZE;
/** Frame types of the polled round trip (beside bench/_frames.ts's): the echo child polls until POLL_END. */
const POLL = 6;
const POLL_END = 7;
/** A polling child that hears nothing for this long gives up (its parent is gone). */
const POLL_IDLE_MS = 10_000;

function ringName(what: string): string {
  return `/ipcbus-bench-${what}-${crypto.randomUUID().slice(0, 8)}`;
}

function spinArgs(spin: number | undefined): string[] {
  return spin === undefined ? [] : [String(spin)];
}

async function settle(child: Deno.ChildProcess, ms = 2000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), ms));
  try {
    if (await Promise.race([child.status.then(() => "exited" as const), timeout]) === "timeout") {
      child.kill("SIGKILL");
      await child.status;
    }
  } catch {
    // Gone already.
  } finally {
    clearTimeout(timer);
  }
}

async function unlinkAll(channels: (Channel<unknown> | undefined)[]): Promise<void> {
  for (const channel of channels) {
    if (!channel) continue;
    await channel.unlink().catch(() => {});
    channel.close();
  }
}

const ANY = { type: 0, except: false } as const;

/**
 * ipcbus `shm:`: two rings and a child serving them.
 *
 * @param spin The `spin` option of both ends (undefined: the library's default; 0: block at once).
 * @param variant `raw`: throughput through the transport itself (`channel.unsafeTransport`:
 *   `trySendBatch` and `tryReceiveBatch`, no codec, no copy into a fresh buffer per message) instead of
 *   the channel. `poll`: round trips with `trySend` and `tryReceive` polled in a busy loop on both
 *   sides (no promise, no spin budget): the floor of a JavaScript round trip over the ring.
 *   `doorbell: false`: both ends wake each other through the semaphores only.
 * @returns The endpoint.
 */
export async function ipcbusShm(
  spin?: number,
  { raw = false, poll = false, doorbell = true }: { raw?: boolean; poll?: boolean; doorbell?: boolean } = {},
): Promise<Endpoint> {
  const down = ringName("down");
  const up = ringName("up");
  const options = {
    create: true,
    exclusive: true,
    codec: bytes as never,
    capacity: CAPACITY,
    spin,
    doorbell,
  };
  const tx = await open<unknown>(`shm:${down}`, options);
  let rx: Channel<unknown> | undefined;
  let child: Deno.ChildProcess | undefined;
  try {
    rx = await open<unknown>(`shm:${up}`, options);
    child = new Deno.Command(Deno.execPath(), {
      args: [...CHILD_FLAGS, SELF, "child", "echo", down, up, String(spin ?? "default"), String(doorbell)],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const ready = await rx.receiveMessage({ signal: AbortSignal.timeout(30_000) });
    if (ready.type !== T.DONE) throw new Error(`the shm child said ${ready.type}, not ready`);
  } catch (error) {
    child?.kill("SIGKILL");
    await unlinkAll([tx, rx]);
    throw error;
  }
  const [back, c] = [rx, child];
  let closed: Promise<void> | undefined;
  const endpoint: Endpoint = {
    async roundTrips(count: number, size: number, seconds = 0): Promise<RoundTripRun> {
      const payload = makePayload(size);
      const echo = { type: T.ECHO };
      const samples = new Float64Array(count);
      const end = performance.now() + seconds * 1000;
      let i = 0;
      if (poll) {
        await tx.send(new Uint8Array(0), { type: POLL });
        try {
          while (i < count) {
            const t0 = performance.now();
            while (!tx.trySend(payload, echo)) { /* full: poll */ }
            let reply;
            do reply = back.tryReceive(); while (!reply.ok && reply.reason === "empty");
            const t1 = performance.now();
            samples[i++] = (t1 - t0) * 1000;
            if (!reply.ok || reply.type !== T.ECHO) throw new Error("expected an echo");
            if (seconds > 0 && i >= MIN_ROUND_TRIPS && t1 >= end) break;
          }
        } finally {
          await tx.send(new Uint8Array(0), { type: POLL_END });
        }
        return summarize(samples.subarray(0, i));
      }
      while (i < count) {
        const t0 = performance.now();
        await tx.send(payload, echo);
        const reply = await back.receiveMessage();
        const t1 = performance.now();
        samples[i++] = (t1 - t0) * 1000;
        if (reply.type !== T.ECHO) throw new Error(`expected an echo, got type ${reply.type}`);
        if (seconds > 0 && i >= MIN_ROUND_TRIPS && t1 >= end) break;
      }
      return summarize(samples.subarray(0, i));
    },
    async throughput(count: number, size: number): Promise<ThroughputRun> {
      const payload = makePayload(size);
      const batch: Uint8Array[] = new Array(BATCH).fill(payload);
      const data = { type: T.DATA };
      // Consumer: 1 the transport itself; 2 one receive at a time, lent without a copy (bytesView),
      // for large messages; 0 receiveBatch.
      await tx.send(u32s(count, raw ? 1 : size >= LARGE ? 2 : 0), { type: T.BEGIN });
      const t0 = performance.now();
      if (raw) {
        const transport = tx.unsafeTransport;
        const signal = new AbortController().signal;
        for (let sent = 0; sent < count;) {
          const n = transport.trySendBatch!(
            count - sent >= BATCH ? batch : batch.slice(0, count - sent),
            T.DATA,
            0,
          );
          if (n > 0) sent += n;
          else {
            await transport.send(payload, T.DATA, 0, signal);
            sent++;
          }
        }
      } else {
        for (let sent = 0; sent < count; sent += BATCH) {
          await tx.sendBatch(count - sent >= BATCH ? batch : batch.slice(0, count - sent), data);
        }
      }
      const done = await back.receiveMessage();
      const seconds = (performance.now() - t0) / 1000;
      if (done.type !== T.DONE || readU32(done.value as Uint8Array) !== count) {
        throw new Error("expected DONE");
      }
      return { seconds, count };
    },
    close(): Promise<void> {
      return closed ??= (async () => {
        await tx.send(new Uint8Array(0), { type: T.QUIT, signal: AbortSignal.timeout(1000) }).catch(() => {});
        await settle(c);
        await unlinkAll([tx, back]);
      })();
    },
  };
  // Warm both processes' JIT up, outside any timing (the C program warms up too):
  // the --quick runs are too short for it otherwise.
  try {
    await endpoint.roundTrips(2000, 64);
    await endpoint.throughput(300_000, 64);
    await endpoint.throughput(2000, 64 * 1024);
  } catch (error) {
    await endpoint.close();
    throw error;
  }
  return endpoint;
}

/**
 * ipcbus `shm:` fan-in: `producers` child processes into one queue ring.
 *
 * @param producers How many producer processes (1 to 16).
 * @param spin The `spin` option (undefined: the library's default).
 * @returns The endpoint (throughput only).
 */
export async function ipcbusShmFanIn(producers: number, spin?: number): Promise<Endpoint> {
  const dataName = ringName("fan");
  const controlName = ringName("go");
  const rx = await open<unknown>(`shm:${dataName}`, {
    create: true,
    exclusive: true,
    codec: bytes as never,
    capacity: CAPACITY,
    spin,
  });
  let control: Channel<unknown> | undefined;
  const children: Deno.ChildProcess[] = [];
  try {
    control = await open<unknown>(`shm:${controlName}`, {
      create: true,
      exclusive: true,
      codec: bytes as never,
      capacity: "4KiB",
      mode: "broadcast",
      subscribe: false,
    });
    for (let index = 0; index < producers; index++) {
      children.push(
        new Deno.Command(Deno.execPath(), {
          args: [
            ...CHILD_FLAGS,
            SELF,
            "child",
            "produce",
            dataName,
            controlName,
            String(index),
            ...spinArgs(spin),
          ],
          stdin: "null",
          stdout: "inherit",
          stderr: "inherit",
        }).spawn(),
      );
    }
    for (let ready = 0; ready < producers;) {
      const message = await rx.receiveMessage({ signal: AbortSignal.timeout(30_000) });
      if (message.type === T.DONE) ready++;
    }
  } catch (error) {
    for (const child of children) child.kill("SIGKILL");
    await unlinkAll([rx, control]);
    throw error;
  }
  const go = control;
  let closed: Promise<void> | undefined;
  const endpoint: Endpoint = {
    roundTrips(): Promise<RoundTripRun> {
      return Promise.reject(new Error("fan-in measures throughput only"));
    },
    async throughput(count: number, size: number): Promise<ThroughputRun> {
      const t0 = performance.now();
      await go.send(u32s(count, producers, size), { type: T.BEGIN });
      let got = 0;
      while (got < count) got += (await rx.receiveBatch(BATCH)).length;
      return { seconds: (performance.now() - t0) / 1000, count };
    },
    close(): Promise<void> {
      return closed ??= (async () => {
        await go.send(new Uint8Array(0), { type: T.QUIT, signal: AbortSignal.timeout(1000) }).catch(() => {});
        await Promise.all(children.map((child) => settle(child)));
        await unlinkAll([rx, go]);
      })();
    },
  };
  try {
    await endpoint.throughput(300_000, 64); // warm-up, as above
  } catch (error) {
    await endpoint.close();
    throw error;
  }
  return endpoint;
}

// -- Worker postMessage ----------------------------------------------------------------

const WORKER_SOURCE = `
let expected = 0, got = 0;
self.onmessage = (event) => {
  const data = event.data;
  if (data.begin !== undefined) { expected = data.begin; got = 0; return; }
  if (data.echo) { self.postMessage(data); return; }
  if (++got === expected) self.postMessage({ done: got });
};
`;

/**
 * A `Worker` (another thread of this process) answering `postMessage`:
 * structured-clone copies both ways.
 *
 * @returns The endpoint.
 */
export function workerPostMessage(): Endpoint {
  const worker = new Worker(`data:application/javascript,${encodeURIComponent(WORKER_SOURCE)}`, {
    type: "module",
  });
  let reply: ((data: unknown) => void) | undefined;
  worker.onmessage = (event) => reply?.(event.data);
  const next = () => new Promise<unknown>((resolve) => reply = resolve);
  return {
    async roundTrips(count: number, size: number, seconds = 0): Promise<RoundTripRun> {
      const message = { echo: true, payload: makePayload(size) };
      const samples = new Float64Array(count);
      const end = performance.now() + seconds * 1000;
      let i = 0;
      while (i < count) {
        const t0 = performance.now();
        const answered = next();
        worker.postMessage(message);
        await answered;
        const t1 = performance.now();
        samples[i++] = (t1 - t0) * 1000;
        if (seconds > 0 && i >= MIN_ROUND_TRIPS && t1 >= end) break;
      }
      return summarize(samples.subarray(0, i));
    },
    async throughput(count: number, size: number): Promise<ThroughputRun> {
      const message = { payload: makePayload(size) };
      worker.postMessage({ begin: count });
      const done = next();
      const t0 = performance.now();
      for (let i = 0; i < count; i++) worker.postMessage(message);
      await done;
      return { seconds: (performance.now() - t0) / 1000, count };
    },
    close(): Promise<void> {
      worker.terminate();
      return Promise.resolve();
    },
  };
}

// -- the C ring ----------------------------------------------------------------------------

let built: Promise<{ binary: string } | { reason: string }> | undefined;

async function buildShmC(dir: string): Promise<{ binary: string } | { reason: string }> {
  const source = new URL("./c/shmring.c", import.meta.url).pathname;
  const candidates = [Deno.env.get("CC"), "cc", "gcc", "clang"].filter((c): c is string => !!c);
  for (const compiler of candidates) {
    try {
      const binary = `${dir}/shmring`;
      const out = await new Deno.Command(compiler, { args: ["-O2", "-o", binary, source], stderr: "piped" })
        .output();
      if (out.success) return { binary };
      return { reason: `${compiler} -O2 ${source} failed:\n${new TextDecoder().decode(out.stderr).trim()}` };
    } catch {
      // The next compiler.
    }
  }
  return { reason: `no C compiler found (tried ${candidates.join(", ")})` };
}

/** Thrown when the C rows cannot run; bench.ts reports it as "skipped". */
export class ShmSkip extends Error {}

/**
 * The C ring as a benchmark runner.
 *
 * @param dir A private temporary directory (the binary is built there once).
 * @param spinMicros The spin budget before parking (0: block at once).
 * @param producers Producer processes for throughput (1 to 4).
 * @param timeoutMs Time limit of one invocation.
 * @returns A runner: `runs(metric, count, reps, seconds)` and `close()`.
 * @throws {ShmSkip} Without a C compiler.
 */
export async function shmC(
  dir: string,
  spinMicros: number,
  producers: number,
  timeoutMs: number,
): Promise<{
  runs(
    metric: MetricId,
    count: number,
    reps: number,
    seconds: number,
  ): Promise<(RoundTripRun | ThroughputRun)[]>;
  close(): Promise<void>;
}> {
  const result = await (built ??= buildShmC(dir));
  if ("reason" in result) throw new ShmSkip(result.reason);
  const { binary } = result;
  return {
    async runs(metric, count, reps, seconds) {
      const child = new Deno.Command(binary, {
        args: [
          metric === "rt" ? "rt" : "tp",
          String(SIZE[metric]),
          String(count),
          String(reps),
          String(seconds),
          String(producers),
        ],
        env: { IPCBENCH_SPIN_US: String(spinMicros) },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      runningC.add(child);
      const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs * (reps + 1));
      try {
        const output = await child.output();
        if (!output.success) {
          throw new Error(
            `shmring failed (${output.signal ?? output.code}): ${
              new TextDecoder().decode(output.stderr).trim()
            }`,
          );
        }
        const runs = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) =>
          JSON.parse(line)
        );
        if (runs.length !== reps) throw new Error(`shmring printed ${runs.length} results, expected ${reps}`);
        return runs;
      } finally {
        clearTimeout(timer);
        runningC.delete(child);
      }
    },
    close: () => Promise.resolve(),
  };
}

// -- the children ----------------------------------------------------------------------------

async function echoChild(
  down: string,
  up: string,
  spin: number | undefined,
  doorbell: boolean,
): Promise<void> {
  const options = { codec: bytesView as never, spin, doorbell };
  using rx = await open<Uint8Array>(`shm:${down}`, options);
  using tx = await open<Uint8Array>(`shm:${up}`, options);
  await tx.send(new Uint8Array(0), { type: T.DONE }); // ready
  for (;;) {
    const message = await rx.receiveMessage();
    if (message.type === T.ECHO) await tx.send(message.value, { type: T.ECHO });
    else if (message.type === POLL) pollEchoes(rx, tx);
    else if (message.type === T.BEGIN) {
      const count = readU32(message.value);
      let got = 0;
      if (readU32(message.value, 4) === 1) {
        const transport = rx.unsafeTransport;
        const signal = new AbortController().signal;
        let bytes = 0;
        const sink = (frame: { data: Uint8Array }) => bytes += frame.data.length;
        while (got < count) {
          const n = transport.tryReceiveBatch!(ANY, BATCH, sink);
          if (n > 0) got += n;
          else {
            await transport.receive(ANY, signal);
            got++;
          }
        }
      } else if (readU32(message.value, 4) === 2) {
        for (; got < count; got++) await rx.receive();
      } else {
        while (got < count) got += (await rx.receiveBatch(BATCH)).length;
      }
      await tx.send(u32s(count), { type: T.DONE });
    } else if (message.type === T.QUIT) return;
  }
}

/** Echoes with `tryReceive` and `trySend` polled in a busy loop, until POLL_END. */
function pollEchoes(rx: Channel<Uint8Array>, tx: Channel<Uint8Array>): void {
  const echo = { type: T.ECHO };
  let since = performance.now();
  for (let misses = 0;;) {
    const message = rx.tryReceive();
    if (!message.ok) {
      if (message.reason === "closed") return;
      // Look at the clock now and then only: a parent that died leaves nobody to send POLL_END.
      if ((++misses & 0xfffff) === 0 && performance.now() - since > POLL_IDLE_MS) return;
      continue;
    }
    if (message.type === POLL_END) return;
    while (!tx.trySend(message.value, echo)) { /* full: poll */ }
    since = performance.now();
  }
}

async function producerChild(
  data: string,
  control: string,
  index: number,
  spin: number | undefined,
): Promise<void> {
  using go = await open<Uint8Array>(`shm:${control}`, { codec: bytes as never, subscribe: true, spin });
  using tx = await open<Uint8Array>(`shm:${data}`, { codec: bytes as never, spin });
  await tx.send(new Uint8Array(0), { type: T.DONE }); // ready (subscribed)
  for (;;) {
    const message = await go.receiveMessage();
    if (message.type === T.QUIT) return;
    const [count, producers, size] = [0, 4, 8].map((offset) => readU32(message.value, offset));
    const share = Math.floor(count / producers) + (index < count % producers ? 1 : 0);
    const payload = makePayload(size);
    const batch: Uint8Array[] = new Array(BATCH).fill(payload);
    for (let sent = 0; sent < share; sent += BATCH) {
      await tx.sendBatch(share - sent >= BATCH ? batch : batch.slice(0, share - sent), { type: T.DATA });
    }
  }
}

if (import.meta.main && Deno.args[0] === "child") {
  const [, role, a, b, c, d] = Deno.args;
  if (role === "echo") await echoChild(a, b, c === "default" ? undefined : Number(c), d !== "false");
  else if (role === "produce") await producerChild(a, b, Number(c), d === undefined ? undefined : Number(d));
  else throw new Error(`unknown role ${role}`);
}
