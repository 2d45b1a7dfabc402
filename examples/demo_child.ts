/**
 * The demo's child process, started by `examples/demo.ts` with ipcbus
 * `spawn()`. It answers on `pipe:parent`, on two FIFOs and on two System V
 * queues when given their addresses, until the parent closes the pipe.
 *
 * Usage (by demo.ts):
 * `deno run --allow-ffi demo_child.ts [<fifo-in> <fifo-out> [<sysv-mq-in> <sysv-mq-out>]]`
 *
 * @module
 */

import { type Channel, ChannelClosedError, open } from "../mod.ts";
import { type DemoMessage, Kind } from "./demo_protocol.ts";

/** Answers `Ping` with `Pong`, counts `Data`, answers `Flush` with `Flushed`. */
async function serve(input: Channel<DemoMessage>, output: Channel<DemoMessage>): Promise<void> {
  let received = 0;
  for (;;) {
    let message;
    try {
      message = await input.receiveMessage();
    } catch (error) {
      if (error instanceof ChannelClosedError) return; // the parent is done
      throw error;
    }
    switch (message.type) {
      case Kind.Ping:
        await output.send(message.value, { type: Kind.Pong });
        break;
      case Kind.Data:
        received++;
        break;
      case Kind.Flush:
        await output.send({ received }, { type: Kind.Flushed });
        received = 0;
        break;
      default:
        throw new Error(`demo child: unexpected message type ${message.type}`);
    }
  }
}

const [fifoIn, fifoOut, queueIn, queueOut] = Deno.args;
using parent = await open<DemoMessage>("pipe:parent");
using fromParent = fifoIn ? await open<DemoMessage>(`fifo:${fifoIn}`) : undefined;
using toParent = fifoOut ? await open<DemoMessage>(`fifo:${fifoOut}`) : undefined;
using queueFromParent = queueIn ? await open<DemoMessage>(queueIn) : undefined;
using queueToParent = queueOut ? await open<DemoMessage>(queueOut) : undefined;

const fifoService = fromParent && toParent ? serve(fromParent, toParent) : Promise.resolve();
const queueService = queueFromParent && queueToParent
  ? serve(queueFromParent, queueToParent)
  : Promise.resolve();
await parent.send({ pid: Deno.pid }, { type: Kind.Ready });
await serve(parent, parent);
// The parent closed the pipe: stop the FIFO service too (its pending receive
// settles with ChannelClosedError) and exit.
fromParent?.close();
toParent?.close();
queueFromParent?.close();
queueToParent?.close();
await Promise.all([fifoService, queueService]);
