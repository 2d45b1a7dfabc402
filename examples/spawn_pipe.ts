/**
 * A parent and a child over `pipe:`. The parent starts `pipe_child.ts` with
 * ipcbus `spawn()`, asks it to add up some numbers, and prints the answers.
 *
 * Run: `deno run --allow-ffi --allow-run examples/spawn_pipe.ts`
 *
 * @module
 */

import { spawn } from "../mod.ts";
import { Op, type Request, type Response } from "./pipe_protocol.ts";

const child = new URL("./pipe_child.ts", import.meta.url).pathname;
const { channel, child: process } = spawn<Request | Response>(Deno.execPath(), {
  args: ["run", "--allow-ffi", child],
});
try {
  for (const numbers of [[1, 2, 3], [40, 2], []]) {
    await channel.send({ numbers } satisfies Request, { type: Op.Sum });
    const { result } = await channel.receive({ signal: AbortSignal.timeout(5_000) }) as Response;
    console.log(`sum(${numbers.join(", ")}) = ${result}`);
  }
  await channel.send({ numbers: [] } satisfies Request, { type: Op.Quit });
  console.log("child exited:", await process.status);
} finally {
  channel.close();
  await process[Symbol.asyncDispose](); // kills the child if it still runs
}
