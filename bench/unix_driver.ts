/**
 * Runs the Unix-socket baseline in a process of its own: Deno Unix sockets
 * need `--allow-net`, which `deno task bench` does not grant, so bench.ts
 * starts this script with it. It listens, starts `echo_child.ts unix`, prints
 * `ready`, then answers each command line on stdin
 * (`{"op":"rt"|"tp","count":N,"size":S,"seconds":T}`) with one JSON result line, timed
 * here. Exits at the end of stdin.
 *
 * @module
 */

import { unixSocketHere } from "./_endpoints.ts";

const encoder = new TextEncoder();
const say = (line: string) => Deno.stdout.write(encoder.encode(line + "\n"));

const endpoint = await unixSocketHere(Deno.args[0]);
try {
  await say("ready");
  let buffered = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      const { op, count, size, seconds } = JSON.parse(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
      try {
        const result = op === "rt"
          ? await endpoint.roundTrips(count, size, seconds)
          : await endpoint.throughput(count, size);
        await say(JSON.stringify(result));
      } catch (error) {
        await say(JSON.stringify({ error: String(error) }));
      }
    }
  }
} finally {
  await endpoint.close();
}
