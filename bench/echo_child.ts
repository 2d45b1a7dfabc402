/**
 * The benchmark's child process (the Deno side): echoes `ECHO` frames and
 * counts `DATA` frames, answering `DONE`, over one of
 *
 * - `pipe bytes|json [--spin=µs]`: ipcbus `pipe:parent` (started by ipcbus `spawn()`)
 * - `fifo DOWN UP [--spin=µs]`: ipcbus `fifo:` channels, reading DOWN and writing UP
 * - `sysv DOWN UP [--spin=µs]`: ipcbus `sysv-mq:` queues (addresses), reading DOWN and writing UP
 * - `posix DOWN UP [--spin=µs]`: ipcbus `posix-mq:` queues (addresses), reading DOWN and writing UP;
 *   the priority carries the message type (see `_frames.ts`)
 * - `stdio`: plain `Deno.stdin` / `Deno.stdout` (started by `Deno.Command`)
 * - `unix PATH`: a plain Deno Unix socket connection to PATH
 *
 * Protocol and frame format: see `_frames.ts`. Exits at end of stream, on
 * `QUIT`, or when the ipcbus channel is closed by the parent.
 *
 * @module
 */

import { bytes, bytesView, type Channel, ChannelClosedError, json, open } from "../mod.ts";
import {
  BATCH,
  CONSUMER,
  encodeFrame,
  FrameReader,
  kindOf,
  type KindTag,
  kindTags,
  readU32,
  T,
  u32s,
  writeAll,
} from "./_frames.ts";

type Received = { value: unknown; type: number; priority: number };

async function serveChannel(
  rx: Channel<unknown>,
  tx: Channel<unknown>,
  codec: "bytes" | "json",
  tag: KindTag = "type",
) {
  const echo = kindTags(tag, T.ECHO);
  const done = kindTags(tag, T.DONE);
  let target = 0;
  let count = 0;
  let batched = false; // CONSUMER.BATCH: receiveBatch, else one receiveMessage per message
  for (;;) {
    let messages: Received[];
    try {
      messages = batched ? await rx.receiveBatch(BATCH) : [await rx.receiveMessage()];
    } catch (error) {
      if (error instanceof ChannelClosedError) return;
      throw error;
    }
    for (const message of messages) {
      switch (kindOf(tag, message)) {
        case T.ECHO:
          await tx.send(message.value, echo);
          break;
        case T.BEGIN: {
          const value = message.value as Uint8Array;
          target = readU32(value, 0);
          batched = readU32(value, 4) === CONSUMER.BATCH;
          count = 0;
          break;
        }
        case T.DATA:
          if (++count === target) {
            batched = false;
            await tx.send(codec === "bytes" ? u32s(count) : count, done);
          }
          break;
        case T.QUIT:
          return;
        default:
          throw new Error(`unexpected message type ${message.type} (priority ${message.priority})`);
      }
    }
  }
}

async function serveRaw(reader: FrameReader, write: (bytes: Uint8Array) => Promise<number>) {
  let target = 0;
  let count = 0;
  for (;;) {
    const frame = reader.tryNext() ?? await reader.next();
    if (frame === null) return;
    switch (frame.type) {
      case T.ECHO:
        await writeAll(write, frame.frame);
        break;
      case T.BEGIN:
        target = readU32(frame.payload, 0);
        count = 0;
        break;
      case T.DATA:
        if (++count === target) await writeAll(write, encodeFrame(T.DONE, u32s(count)));
        break;
      case T.QUIT:
        return;
      default:
        throw new Error(`unexpected frame type ${frame.type}`);
    }
  }
}

/** Exits when the parent closes (or loses) our stdin. */
function exitWhenStdinEnds(): void {
  (async () => {
    const buffer = new Uint8Array(16);
    while (await Deno.stdin.read(buffer) !== null);
    Deno.exit(0);
  })();
}

const spinArg = Deno.args.find((arg) => arg.startsWith("--spin="));
const spin = spinArg === undefined ? undefined : Number(spinArg.slice("--spin=".length));
const [mode, ...rest] = Deno.args.filter((arg) => arg !== spinArg);
switch (mode) {
  case "pipe": {
    const codec = rest[0] === "json" ? "json" : "bytes";
    using parent = await open<unknown>("pipe:parent", {
      codec: (codec === "json" ? json : bytesView) as never,
      spin,
    });
    await serveChannel(parent, parent, codec);
    break;
  }
  case "fifo": {
    // A FIFO reader never sees the end of the stream (it waits for the next
    // writer), so the parent also holds our stdin: its end means the parent is gone.
    exitWhenStdinEnds();
    const [down, up] = rest;
    const options = { codec: bytesView as never, writers: "single", spin };
    using rx = await open<unknown>(`fifo:${down}`, options);
    using tx = await open<unknown>(`fifo:${up}`, options);
    await serveChannel(rx, tx, "bytes");
    break;
  }
  case "sysv":
  case "posix": {
    // The parent removes a System V queue when done (our receive then ends);
    // removing a POSIX queue's name does not end a receive, so there the parent
    // sends QUIT. Its end of our stdin covers a parent that died first.
    exitWhenStdinEnds();
    const [down, up] = rest;
    using rx = await open<unknown>(down, { codec: bytesView as never, spin });
    using tx = await open<unknown>(up, { codec: bytes as never, spin });
    await serveChannel(rx, tx, "bytes", mode === "posix" ? "priority" : undefined);
    break;
  }
  case "stdio":
    await serveRaw(new FrameReader((buffer) => Deno.stdin.read(buffer)), (b) => Deno.stdout.write(b));
    break;
  case "unix": {
    using conn = await Deno.connect({ transport: "unix", path: rest[0] });
    await serveRaw(new FrameReader((buffer) => conn.read(buffer)), (b) => conn.write(b));
    break;
  }
  default:
    console.error(`echo_child.ts: unknown mode "${mode}" (pipe, fifo, sysv, posix, stdio or unix)`);
    Deno.exit(2);
}
