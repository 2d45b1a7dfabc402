/**
 * Request/reply over one System V message queue: a server and several client
 * processes, the classic pattern (requests with type 1, each reply with the
 * type that identifies its client).
 *
 *   deno task example:sysv-rpc
 *
 * Both sides open the queue with the `rpc()` codec; `channel.request()`
 * sends and awaits the matching reply, `channel.serve()` answers. A request
 * the handler rejects reaches its client as a `RemoteError`. The queue is
 * removed at the end, even on failure.
 *
 * @module
 */

import { open, RemoteError, rpc } from "../mod.ts";

interface Quote {
  symbol: string;
  quantity: number;
}

const PRICES: Record<string, number> = { ACME: 12.5, GLOBEX: 3.25, INITECH: 99 };

async function client(address: string, name: string): Promise<void> {
  using queue = await open(address, { codec: rpc<Quote, number>() });
  for (const symbol of ["ACME", "GLOBEX", "UMBRELLA"]) {
    try {
      const total = await queue.request({ symbol, quantity: 3 }, { timeout: 5000 });
      console.log(`  client ${name}: 3 × ${symbol} = ${total}`);
    } catch (error) {
      if (!(error instanceof RemoteError)) throw error;
      console.log(`  client ${name}: ${symbol} refused: ${error.remoteMessage}`);
    }
  }
}

async function server(): Promise<void> {
  await using queue = await open("sysv-mq:private", { create: true, codec: rpc<Quote, number>() });
  const address = queue.info.address;
  const stop = new AbortController();
  const serving = queue.serve(({ symbol, quantity }) => {
    const price = PRICES[symbol];
    if (price === undefined) throw new Error(`unknown symbol ${symbol}`);
    return price * quantity;
  }, { signal: stop.signal });
  const clients: Deno.ChildProcess[] = [];
  try {
    console.log(`server: serving on ${address}`);
    for (const name of ["a", "b", "c"]) {
      clients.push(
        new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-ffi", import.meta.filename!, "client", address, name],
          stdin: "null",
        }).spawn(),
      );
    }
    const statuses = await Promise.all(clients.map((child) => child.status));
    console.log(`server: ${statuses.filter((s) => s.success).length} of ${clients.length} clients done`);
  } finally {
    for (const child of clients) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
    stop.abort();
    await serving;
    await queue.unlink();
  }
}

if (Deno.args[0] === "client") await client(Deno.args[1], Deno.args[2]);
else await server();
