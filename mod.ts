/**
 * # ipcbus
 *
 * Typed messages between processes over Linux's own IPC mechanisms, all
 * reached through `Deno.dlopen` against libc, behind one {@linkcode Channel}
 * API. Transports so far: `pipe:` (anonymous pipes to a child started with
 * {@linkcode spawn}) and `fifo:` (named pipes).
 *
 * Permissions: `--allow-ffi`, plus `--allow-run` for {@linkcode spawn}.
 * Importing the module needs none: libc is loaded on first use.
 *
 * @example A parent and a child over `pipe:`
 * ```ts ignore
 * // parent.ts
 * import { spawn } from "@ipcbus/ipcbus";
 *
 * const { channel, child } = spawn<{ n: number }>(Deno.execPath(), {
 *   args: ["run", "--allow-ffi", new URL("./child.ts", import.meta.url).pathname],
 * });
 * await channel.send({ n: 20 });
 * console.log(await channel.receive()); // { n: 21 }
 * channel.close();
 * await child.status;
 *
 * // child.ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * using parent = await open<{ n: number }>("pipe:parent");
 * for await (const { n } of parent) await parent.send({ n: n + 1 });
 * ```
 *
 * @example Any number of writers into one FIFO
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.fifo`;
 * using reader = await open<string>(`fifo:${path}`, { create: true });
 * using writer = await open<string>(`fifo:${path}`);
 * const received = reader.receive({ signal: AbortSignal.timeout(1000) });
 * await writer.send("hello", { type: 2 });
 * console.log(await received); // "hello"
 * await reader.unlink();
 * ```
 *
 * @module
 */

export {
  Channel,
  type ChannelInfo,
  type ChannelOptions,
  type Message,
  type MessageTags,
  type ReceiveOptions,
  type ReceiveSelector,
  type SendOptions,
  type StandardSchemaResult,
  type StandardSchemaV1,
  type TryReceiveResult,
} from "./channel.ts";
export { bytes, type Codec, json, type JsonCodec, text } from "./codec.ts";
export {
  AlreadyExistsError,
  ChannelClosedError,
  FrameError,
  IpcError,
  type IpcErrorOptions,
  MessageTooLargeError,
  NotFoundError,
  PermissionDeniedError,
  ValidationError,
} from "./errors.ts";
export { open, type OpenOptions, registeredSchemes, registerTransport } from "./open.ts";
export { ChildProcess, type ExitStatus, spawn, type SpawnOptions, type SpawnResult } from "./spawn.ts";
export type {
  Capabilities,
  ReceivedFrame,
  ReceiveFilter,
  Transport,
  TransportFactory,
  TransportInfo,
  TransportOptions,
} from "./transport.ts";
export { Fifo, type FifoOptions, type FifoWriters } from "./transports/fifo.ts";
export { Pipe, type PipeOptions } from "./transports/pipe.ts";
