/**
 * The Deno-side endpoints of the benchmark: this process talks to one
 * `echo_child.ts` over ipcbus `pipe:`, ipcbus `fifo:`, `Deno.Command` stdio,
 * or a Unix socket, and measures round trips and one-way throughput.
 *
 * Only the public API of ipcbus (`../mod.ts`) is used.
 *
 * @module
 */

import { bytes, type Channel, type ChildProcess, json, open, spawn } from "../mod.ts";
import type { RoundTripRun, ThroughputRun } from "./_c.ts";
import {
  BATCH,
  byobSource,
  CONSUMER,
  encodeFrame,
  FrameReader,
  kindOf,
  type KindTag,
  kindTags,
  LARGE,
  makePayload,
  readU32,
  T,
  u32s,
  writeAll,
} from "./_frames.ts";
import { summarize } from "./_stats.ts";

/** A running parent/child pair. */
export interface Endpoint {
  /**
   * One repetition of timed round trips of `size`-byte messages: `count`, or
   * fewer when `seconds` (> 0) have passed after at least 1000.
   */
  roundTrips(count: number, size: number, seconds?: number): Promise<RoundTripRun>;
  /** One repetition: `count` messages one way, until the consumer reports them all. */
  throughput(count: number, size: number): Promise<ThroughputRun>;
  /** Stops the child and releases everything (also unblocks pending operations). Idempotent. */
  close(): Promise<void>;
}

const CHILD = new URL("./echo_child.ts", import.meta.url).pathname;
const DRIVER = new URL("./unix_driver.ts", import.meta.url).pathname;
const CHILD_FLAGS = ["run", "--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];

/** Round trips a time-boxed repetition makes at least (the C program uses the same). */
const MIN_ROUND_TRIPS = 1000;

/** A JSON value that encodes to 64 bytes, for the json-codec round trip. */
export const JSON_64 = { id: 123456, item: "widget", qty: 3, price: 12.5, tags: ["ab", "cd"] } as const;

async function settleChild(status: Promise<unknown>, kill: () => void, ms = 2000): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), ms));
  try {
    if (await Promise.race([status.then(() => "exited" as const), timeout]) === "timeout") {
      kill();
      await status;
    }
  } catch {
    // Already gone.
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Round trips and throughput over ipcbus channels (`rx` and `tx` are the
 * same channel for `pipe:`).
 */
class ChannelEndpoint implements Endpoint {
  readonly #tx: Channel<unknown>;
  readonly #rx: Channel<unknown>;
  readonly #codec: "bytes" | "json";
  readonly #fast: boolean;
  readonly #stop: () => Promise<void>;
  readonly #tag: KindTag;
  #closed: Promise<void> | undefined;

  constructor(
    tx: Channel<unknown>,
    rx: Channel<unknown>,
    codec: "bytes" | "json",
    fast: boolean,
    stop: () => Promise<void>,
    tag: KindTag = "type",
  ) {
    this.#tx = tx;
    this.#rx = rx;
    this.#codec = codec;
    this.#fast = fast;
    this.#stop = stop;
    this.#tag = tag;
  }

  async roundTrips(count: number, size: number, seconds = 0): Promise<RoundTripRun> {
    const tx = this.#tx;
    const rx = this.#rx;
    const value = this.#codec === "json" ? JSON_64 : makePayload(size);
    const echo = kindTags(this.#tag, T.ECHO);
    const samples = new Float64Array(count);
    const end = performance.now() + seconds * 1000;
    let i = 0;
    while (i < count) {
      const t0 = performance.now();
      await tx.send(value, echo);
      const reply = await rx.receiveMessage();
      const t1 = performance.now();
      samples[i++] = (t1 - t0) * 1000;
      if (kindOf(this.#tag, reply) !== T.ECHO) throw new Error(`expected an echo, got type ${reply.type}`);
      if (seconds > 0 && i >= MIN_ROUND_TRIPS && t1 >= end) break;
    }
    return summarize(samples.subarray(0, i));
  }

  async throughput(count: number, size: number): Promise<ThroughputRun> {
    if (this.#codec !== "bytes") throw new Error("throughput is measured with the bytes codec");
    const tx = this.#tx;
    const payload = makePayload(size);
    const data = kindTags(this.#tag, T.DATA);
    // The fast path drains small messages in batches; large ones one receive at a time, each lent
    // without a copy by the child's `bytesView` codec (a fresh 64 KiB buffer per message costs more
    // than moving it).
    const consumer = this.#fast && size < LARGE ? CONSUMER.BATCH : CONSUMER.AWAIT_RECEIVE;
    await tx.send(u32s(count, consumer), kindTags(this.#tag, T.BEGIN));
    const batch: Uint8Array[] = new Array(BATCH).fill(payload);
    const t0 = performance.now();
    if (this.#fast) {
      for (let sent = 0; sent < count; sent += BATCH) {
        await tx.sendBatch(count - sent >= BATCH ? batch : batch.slice(0, count - sent), data);
      }
    } else {
      for (let i = 0; i < count; i++) await tx.send(payload, data);
    }
    const done = await this.#rx.receiveMessage();
    const seconds = (performance.now() - t0) / 1000;
    if (kindOf(this.#tag, done) !== T.DONE || readU32(done.value as Uint8Array) !== count) {
      throw new Error(`expected DONE ${count}, got type ${done.type}`);
    }
    return { seconds, count };
  }

  close(): Promise<void> {
    return this.#closed ??= this.#stop();
  }
}

/**
 * ipcbus `pipe:`: `spawn()` on `echo_child.ts pipe <codec>`.
 *
 * @param codec The codec both sides use.
 * @param fast Throughput with `sendBatch`/`receiveBatch`, or one plain `await` per message.
 * @param spin The `spin` option of both ends (undefined: the library's default).
 * @returns The endpoint.
 */
export function ipcbusPipe(codec: "bytes" | "json", fast: boolean, spin?: number): Endpoint {
  const { channel, child } = spawn<unknown>(Deno.execPath(), {
    args: [...CHILD_FLAGS, CHILD, "pipe", codec, ...spinArgs(spin)],
    codec: (codec === "json" ? json : bytes) as never,
    spin,
  });
  return new ChannelEndpoint(channel, channel, codec, fast, async () => {
    channel.close(); // the child sees the end of the stream and exits
    await settleChild(child.status, () => killQuietly(child));
  });
}

function spinArgs(spin: number | undefined): string[] {
  return spin === undefined ? [] : [`--spin=${spin}`];
}

/** `echo_child.ts MODE DOWN UP`, started with `Deno.Command`. */
function spawnQueueChild(mode: "fifo" | "sysv" | "posix", down: string, up: string, spin?: number) {
  return new Deno.Command(Deno.execPath(), {
    args: [...CHILD_FLAGS, CHILD, mode, down, up, ...spinArgs(spin)],
    stdin: "piped", // never written: the child exits when it closes (when this process dies)
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
}

/** Asks a child that outlives the end of its queue (a FIFO or POSIX queue reader) to quit. */
async function sendQuit(tx: Channel<unknown>, tags: { type?: number; priority?: number }): Promise<void> {
  try {
    if (!tx.trySend(new Uint8Array(0), tags)) {
      await tx.send(new Uint8Array(0), { ...tags, signal: AbortSignal.timeout(500) });
    }
  } catch {
    // The child is gone or stuck: it is killed afterwards.
  }
}

function killQuietly(child: ChildProcess | Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // Already exited.
  }
}

/**
 * ipcbus `fifo:`: two FIFOs in `dir` (down: this process to the child, up:
 * back), `writers: "single"`, the child started with `Deno.Command`.
 *
 * @param dir A private temporary directory.
 * @param spin The `spin` option of both ends (undefined: the library's default).
 * @returns The endpoint.
 */
export async function ipcbusFifo(dir: string, spin?: number): Promise<Endpoint> {
  const id = crypto.randomUUID();
  const down = `${dir}/down-${id}.fifo`;
  const up = `${dir}/up-${id}.fifo`;
  const options = { create: true, exclusive: true, codec: bytes as never, writers: "single", spin };
  const tx = await open<unknown>(`fifo:${down}`, options);
  let rx: Channel<unknown> | undefined;
  let child: Deno.ChildProcess | undefined;
  try {
    rx = await open<unknown>(`fifo:${up}`, options);
    child = spawnQueueChild("fifo", down, up, spin);
  } catch (error) {
    rx?.close();
    tx.close();
    await Promise.allSettled([tx.unlink(), rx?.unlink()]);
    throw error;
  }
  const [r, c] = [rx, child];
  return new ChannelEndpoint(tx, r, "bytes", true, async () => {
    // A FIFO reader outlives its writers, so ask the child to quit.
    await sendQuit(tx, kindTags("type", T.QUIT));
    tx.close();
    r.close();
    await c.stdin.close().catch(() => {});
    await settleChild(c.status, () => killQuietly(c));
    await Promise.allSettled([tx.unlink(), r.unlink()]);
  });
}

/**
 * ipcbus `sysv-mq:`: two private System V queues (one each way), served by
 * `echo_child.ts sysv <down> <up>` started with `Deno.Command`.
 *
 * @param spin The `spin` option of both ends (undefined: the library's default).
 * @returns The endpoint.
 */
export async function ipcbusSysv(spin?: number): Promise<Endpoint> {
  const options = { create: true, codec: bytes as never, spin };
  const tx = await open<unknown>("sysv-mq:private", options);
  let rx: Channel<unknown> | undefined;
  let child: Deno.ChildProcess | undefined;
  try {
    rx = await open<unknown>("sysv-mq:private", options);
    child = spawnQueueChild("sysv", tx.info.address, rx.info.address, spin);
  } catch (error) {
    await Promise.allSettled([tx.unlink(), rx?.unlink()]);
    tx.close();
    rx?.close();
    throw error;
  }
  const [r, c] = [rx, child];
  return new ChannelEndpoint(tx, r, "bytes", true, async () => {
    // Removing the queues settles the child's pending receive: it exits.
    await Promise.allSettled([tx.unlink(), r.unlink()]);
    tx.close();
    r.close();
    await c.stdin.close().catch(() => {});
    await settleChild(c.status, () => killQuietly(c));
  });
}

/**
 * ipcbus `posix-mq:`: two POSIX queues with the system's default sizes (one
 * each way, random names), served by `echo_child.ts posix <down> <up>`
 * started with `Deno.Command`. A POSIX queue has no types: the message's
 * priority says what it is (see `_frames.ts`).
 *
 * @param spin The `spin` option of both ends (undefined: the library's default).
 * @returns The endpoint.
 */
export async function ipcbusPosix(spin?: number): Promise<Endpoint> {
  const name = `/ipcbus-bench-${crypto.randomUUID().slice(0, 8)}`;
  const options = { create: true, exclusive: true, codec: bytes as never, spin };
  const tx = await open<unknown>(`posix-mq:${name}-down`, options);
  let rx: Channel<unknown> | undefined;
  let child: Deno.ChildProcess | undefined;
  try {
    rx = await open<unknown>(`posix-mq:${name}-up`, options);
    child = spawnQueueChild("posix", tx.info.address, rx.info.address, spin);
  } catch (error) {
    tx.close();
    rx?.close();
    await Promise.allSettled([tx.unlink(), rx?.unlink()]);
    throw error;
  }
  const [r, c] = [rx, child];
  return new ChannelEndpoint(tx, r, "bytes", true, async () => {
    // Removing a POSIX queue's name does not wake its waiters: ask the child to quit.
    await sendQuit(tx, kindTags("priority", T.QUIT));
    tx.close();
    r.close();
    await c.stdin.close().catch(() => {});
    await settleChild(c.status, () => killQuietly(c));
    await Promise.allSettled([tx.unlink(), r.unlink()]);
  }, "priority");
}

/** Plain frames over a byte stream (stdio or a socket). */
class RawEndpoint implements Endpoint {
  readonly #write: (bytes: Uint8Array) => Promise<number>;
  readonly #reader: FrameReader;
  readonly #stop: () => Promise<void>;
  #closed: Promise<void> | undefined;

  constructor(write: (bytes: Uint8Array) => Promise<number>, reader: FrameReader, stop: () => Promise<void>) {
    this.#write = write;
    this.#reader = reader;
    this.#stop = stop;
  }

  async roundTrips(count: number, size: number, seconds = 0): Promise<RoundTripRun> {
    const frame = encodeFrame(T.ECHO, makePayload(size));
    const samples = new Float64Array(count);
    const end = performance.now() + seconds * 1000;
    let i = 0;
    while (i < count) {
      const t0 = performance.now();
      await writeAll(this.#write, frame);
      const reply = await this.#reader.next();
      const t1 = performance.now();
      samples[i++] = (t1 - t0) * 1000;
      if (reply?.type !== T.ECHO) throw new Error(`expected an echo, got ${reply ? reply.type : "end"}`);
      if (seconds > 0 && i >= MIN_ROUND_TRIPS && t1 >= end) break;
    }
    return summarize(samples.subarray(0, i));
  }

  async throughput(count: number, size: number): Promise<ThroughputRun> {
    const frame = encodeFrame(T.DATA, makePayload(size));
    await writeAll(this.#write, encodeFrame(T.BEGIN, u32s(count)));
    const t0 = performance.now();
    for (let i = 0; i < count; i++) await writeAll(this.#write, frame);
    const done = await this.#reader.next();
    const seconds = (performance.now() - t0) / 1000;
    if (done?.type !== T.DONE || readU32(done.payload) !== count) throw new Error("expected DONE");
    return { seconds, count };
  }

  close(): Promise<void> {
    return this.#closed ??= this.#stop();
  }
}

/**
 * `Deno.Command` with piped stdin and stdout: what a Deno user reaches for first.
 *
 * @returns The endpoint.
 */
export function denoStdio(): Endpoint {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...CHILD_FLAGS, CHILD, "stdio"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const source = byobSource(child.stdout);
  const write = async (bytes: Uint8Array) => {
    await writer.write(bytes);
    return bytes.length;
  };
  return new RawEndpoint(write, new FrameReader(source.read), async () => {
    // End of stream: the child exits. Not awaited first: a write stuck on a
    // dead child would keep close() from settling until the child is killed.
    const closing = writer.close().catch(() => {});
    await settleChild(child.status, () => killQuietly(child));
    await closing;
    source.release();
    await child.stdout.cancel().catch(() => {});
  });
}

/**
 * A Unix stream socket in this process: it listens in `dir`, a child connects.
 * Needs `--allow-net`, which `deno task bench` does not grant: the benchmark
 * runs this in `unix_driver.ts` (see {@linkcode denoUnixSocket}).
 *
 * @param dir A private temporary directory.
 * @returns The endpoint.
 */
export async function unixSocketHere(dir: string): Promise<Endpoint> {
  const path = `${dir}/sock-${crypto.randomUUID()}`;
  const listener = Deno.listen({ transport: "unix", path });
  let child: Deno.ChildProcess | undefined;
  let conn: Deno.UnixConn;
  try {
    child = new Deno.Command(Deno.execPath(), {
      args: [...CHILD_FLAGS, "--allow-net", CHILD, "unix", path],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const c = child;
    conn = await Promise.race([
      listener.accept(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("the unix-socket child did not connect in 30 s")), 30_000);
      }),
      c.status.then(() => Promise.reject(new Error("the unix-socket child exited before connecting"))),
    ]).finally(() => clearTimeout(timer));
  } catch (error) {
    if (child) await settleChild(child.status, () => killQuietly(child!), 0);
    await Deno.remove(path).catch(() => {});
    throw error;
  } finally {
    listener.close();
  }
  const c = child;
  const reader = new FrameReader((buffer) => conn.read(buffer));
  return new RawEndpoint((bytes) => conn.write(bytes), reader, async () => {
    try {
      conn.close(); // end of stream: the child exits
    } catch {
      // Already closed.
    }
    await settleChild(c.status, () => killQuietly(c));
    await Deno.remove(path).catch(() => {});
  });
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
}

/**
 * A Deno Unix socket between two child processes: `unix_driver.ts` listens,
 * starts `echo_child.ts unix` and measures on request; this process only
 * sends it commands (outside the timed part) and reads its results. Both get
 * `--allow-net`, which Unix sockets need and the bench task does not grant.
 *
 * @param dir A private temporary directory.
 * @returns The endpoint.
 */
export async function denoUnixSocket(dir: string): Promise<Endpoint> {
  const driver = new Deno.Command(Deno.execPath(), {
    args: [...CHILD_FLAGS, "--allow-net", "--allow-run", DRIVER, dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = driver.stdin.getWriter();
  const replies = lines(driver.stdout);
  const next = async () => {
    const { value, done } = await replies.next();
    if (done) throw new Error("the unix-socket driver exited");
    return value;
  };
  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      const closing = writer.close().catch(() => {}); // end of commands: the driver exits
      await settleChild(driver.status, () => killQuietly(driver), 5000);
      await closing;
      await replies.return(undefined).catch(() => {});
    })();
  try {
    if (await next() !== "ready") throw new Error("the unix-socket driver did not start");
  } catch (error) {
    await close();
    throw error;
  }
  const ask = async <R>(
    command: { op: "rt" | "tp"; count: number; size: number; seconds?: number },
  ): Promise<R> => {
    await writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
    const reply = JSON.parse(await next());
    if (reply.error) throw new Error(`unix-socket driver: ${reply.error}`);
    return reply as R;
  };
  return {
    roundTrips: (count, size, seconds) => ask<RoundTripRun>({ op: "rt", count, size, seconds }),
    throughput: (count, size) => ask<ThroughputRun>({ op: "tp", count, size }),
    close,
  };
}
