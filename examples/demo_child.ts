/**
 * The demo's child process, started by `examples/demo.ts` with ipcbus
 * `spawn()`. It answers on `pipe:parent`, on two FIFOs, and on every further
 * pair of addresses it is given (System V queues, POSIX queues, ...), until
 * the parent closes the pipe.
 *
 * Usage (by demo.ts):
 * `deno run --allow-ffi demo_child.ts [<fifo-in> <fifo-out> [<in-address> <out-address>]...]`
 *
 * @module
 */

import { type Channel, ChannelClosedError, open } from "../mod.ts";
import { type DemoMessage, Kind, kindOf, tagsOf } from "./demo_protocol.ts";

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
    switch (kindOf(input, message)) {
      case Kind.Ping:
        await output.send(message.value, tagsOf(output, Kind.Pong));
        break;
      case Kind.Data:
        received++;
        break;
      case Kind.Flush:
        await output.send({ received }, tagsOf(output, Kind.Flushed));
        received = 0;
        break;
      default:
        throw new Error(`demo child: unexpected message type ${message.type}`);
    }
  }
}

const [fifoIn, fifoOut, ...pairs] = Deno.args;
using parent = await open<DemoMessage>("pipe:parent");
using fromParent = fifoIn ? await open<DemoMessage>(`fifo:${fifoIn}`) : undefined;
using toParent = fifoOut ? await open<DemoMessage>(`fifo:${fifoOut}`) : undefined;
// Every further pair of addresses: messages come in on the first, answers go out on the second.
const others: Channel<DemoMessage>[] = [];
for (const address of pairs) others.push(await open<DemoMessage>(address));

const fifoService = fromParent && toParent ? serve(fromParent, toParent) : Promise.resolve();
const otherServices: Promise<void>[] = [];
for (let i = 0; i + 1 < others.length; i += 2) otherServices.push(serve(others[i], others[i + 1]));
await parent.send({ pid: Deno.pid }, tagsOf(parent, Kind.Ready));
await serve(parent, parent);
// The parent closed the pipe: stop the FIFO service too (its pending receive
// settles with ChannelClosedError) and exit.
fromParent?.close();
toParent?.close();
for (const channel of others) channel.close();
await Promise.all([fifoService, ...otherServices]);
