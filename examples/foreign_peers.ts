/**
 * ipcbus talking to programs in other languages that implement the wire
 * format of `docs/wire-format.md`: `peers/echo.c` (built with `cc` when it is
 * installed) and `peers/echo.py` (when `python3` is installed). Each peer
 * answers once over `pipe:` (started with `spawn()`) and once over two FIFOs.
 *
 * Run: `deno run --allow-ffi --allow-run --allow-write examples/foreign_peers.ts`
 * (`--allow-write` is for the temporary directory holding the compiled C peer.)
 *
 * @module
 */

import { open, spawn } from "../mod.ts";

/** What the example sends; the Python peer adds `echoedBy`. */
interface Greeting {
  text: string;
  echoedBy?: string;
}

const GREETING = 7; // a message type tag of our choosing

/** Whether `command --version` runs. */
async function available(command: string): Promise<boolean> {
  try {
    return (await new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

async function overPipe(command: string, args: string[]): Promise<Greeting> {
  const { channel, child } = spawn<Greeting>(command, { args });
  try {
    await channel.send({ text: "hello over pipe:" }, { type: GREETING });
    const reply = await channel.receiveMessage({ signal: AbortSignal.timeout(5_000) });
    if (reply.type !== GREETING) throw new Error(`expected type ${GREETING}, got ${reply.type}`);
    return reply.value;
  } finally {
    channel.close(); // the peer sees the end of the stream and exits
    await child[Symbol.asyncDispose]();
  }
}

async function overFifos(command: string, args: string[]): Promise<Greeting> {
  const base = `/tmp/ipcbus-peer-${crypto.randomUUID().slice(0, 8)}`;
  const toPeer = await open<Greeting>(`fifo:${base}-down.fifo`, { create: true, exclusive: true });
  const fromPeer = await open<Greeting>(`fifo:${base}-up.fifo`, { create: true, exclusive: true }).catch(
    async (error) => {
      toPeer.close();
      await toPeer.unlink();
      throw error;
    },
  );
  const peer = new Deno.Command(command, { args: [...args, `${base}-down.fifo`, `${base}-up.fifo`] }).spawn();
  try {
    await toPeer.send({ text: "hello over fifo:" }, { type: GREETING, signal: AbortSignal.timeout(5_000) });
    const reply = await fromPeer.receiveMessage({ signal: AbortSignal.timeout(5_000) });
    if (reply.type !== GREETING) throw new Error(`expected type ${GREETING}, got ${reply.type}`);
    return reply.value;
  } finally {
    toPeer.close(); // the peer reads the end of the stream and exits
    fromPeer.close();
    try {
      peer.kill("SIGKILL");
    } catch { /* it has exited */ }
    await peer.status;
    await toPeer.unlink();
    await fromPeer.unlink();
  }
}

const peers: { name: string; command: string; args: string[] }[] = [];
const directory = await Deno.makeTempDir({ prefix: "ipcbus-peers-" });
try {
  if (await available("cc")) {
    const binary = `${directory}/echo`;
    const source = new URL("./peers/echo.c", import.meta.url).pathname;
    const built = await new Deno.Command("cc", { args: ["-O2", "-o", binary, source] }).output();
    if (!built.success) throw new Error(`cc failed:\n${new TextDecoder().decode(built.stderr)}`);
    peers.push({ name: "C", command: binary, args: [] });
  } else console.log("cc not found: skipping the C peer");
  if (await available("python3")) {
    peers.push({
      name: "Python",
      command: "python3",
      args: [new URL("./peers/echo.py", import.meta.url).pathname],
    });
  } else console.log("python3 not found: skipping the Python peer");

  for (const { name, command, args } of peers) {
    console.log(`${name.padEnd(6)} pipe: ->`, await overPipe(command, args));
    console.log(`${name.padEnd(6)} fifo: ->`, await overFifos(command, args));
  }
} finally {
  await Deno.remove(directory, { recursive: true });
}
