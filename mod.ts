/**
 * # ipcbus
 *
 * Typed messages between processes over Linux's own IPC mechanisms, all
 * reached through `Deno.dlopen` against libc, behind one {@linkcode Channel}
 * API. Transports so far: `pipe:` (anonymous pipes to a child started with
 * {@linkcode spawn}), `fifo:` (named pipes), `sysv-mq:` (System V message
 * queues, with receive by type), `posix-mq:` (POSIX message queues, with
 * priorities) and `file:` (a durable, replayable log in a mapped file).
 * System V semaphore sets and shared memory segments, POSIX named
 * semaphores and shared memory objects, fcntl record locks and mapped files
 * are available as primitives ({@linkcode SysvSemaphoreSet},
 * {@linkcode SysvSharedMemory}, {@linkcode NamedSemaphore},
 * {@linkcode PosixSharedMemory}, {@linkcode FileLock}, {@linkcode MappedFile}),
 * and request/reply over one typed queue as `channel.request()` /
 * `channel.serve()` with the {@linkcode rpc} codec.
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
export { bytes, bytesView, type Codec, json, type JsonCodec, text } from "./codec.ts";
export {
  AlreadyExistsError,
  ChannelClosedError,
  FrameError,
  IpcError,
  type IpcErrorOptions,
  type MessagesLost,
  MessagesLostError,
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
export {
  ftokKey,
  openSysvMessageQueue,
  SysvMessageQueue,
  type SysvMessageQueueInfo,
  type SysvMessageQueueOptions,
  type SysvMessageQueueStat,
} from "./transports/sysv_mq.ts";
export {
  RemoteError,
  request,
  type RequestContext,
  type RequestHandler,
  type RequestOptions,
  rpc,
  type RpcCodec,
  type RpcFailure,
  type RpcFrame,
  type RpcMalformed,
  type RpcReply,
  type RpcRequest,
  serve,
  type ServeOptions,
} from "./request_reply.ts";
export {
  SEMVMX,
  type SysvSemaphoreOperation,
  type SysvSemaphoreOpOptions,
  type SysvSemaphorePostOptions,
  SysvSemaphoreSet,
  type SysvSemaphoreSetOptions,
  type SysvSemaphoreSetStat,
  type SysvSemaphoreWaitOptions,
} from "./sync/sysv_semaphore_set.ts";
export {
  SysvSharedMemory,
  type SysvSharedMemoryOptions,
  type SysvSharedMemoryStat,
} from "./memory/sysv_shared_memory.ts";
export {
  Presence,
  PRESENCE_PREFIX,
  PresenceClaim,
  presenceName,
  type PresenceRecord,
  type PresenceState,
} from "./sync/presence.ts";
export {
  type IpcDirectory,
  type IpcDirectoryEntry,
  type IpcPathStat,
  listIpcDirectory,
  lstatIpcPath,
  readProcFile,
} from "./inspect.ts";
export {
  MAX_SEMAPHORE_NAME,
  NamedSemaphore,
  type NamedSemaphoreOptions,
  type NamedSemaphoreWaitOptions,
  SEM_VALUE_MAX,
} from "./sync/named_semaphore.ts";
export {
  MAX_SHARED_MEMORY_NAME,
  PosixSharedMemory,
  type PosixSharedMemoryOptions,
  type PosixSharedMemoryStat,
} from "./memory/posix_shared_memory.ts";
export {
  openPosixMessageQueue,
  PosixMessageQueue,
  type PosixMessageQueueInfo,
  type PosixMessageQueueOptions,
  type PosixMessageQueueStat,
} from "./transports/posix_mq.ts";
export {
  FileLock,
  type FileLockFdOptions,
  type FileLockKind,
  type FileLockOptions,
  HeldLock,
  type LockHolder,
  type LockOptions,
  type LockRange,
} from "./sync/file_lock.ts";
export {
  MappedFile,
  type MappedFileFlushOptions,
  type MappedFileOptions,
  type MappedFileSyncOptions,
  type MappedFileWaitOptions,
} from "./memory/mapped_file.ts";
export {
  type Durability,
  type LogLoss,
  type LogReaderInfo,
  type LogStart,
  MappedFileLog,
  type MappedFileLogInfo,
  type MappedFileLogOptions,
  type MappedFileLogStats,
  openMappedFileLog,
  type RecoveryReport,
} from "./transports/mapped_file_log.ts";
export { inspectShmRing, openShmRing, ShmRing } from "./transports/shm_ring.ts";
export type {
  ShmRingInfo,
  ShmRingMode,
  ShmRingOptions,
  ShmRingOverflow,
  ShmRingStat,
  ShmRingUser,
} from "./transports/shm_ring.ts";
