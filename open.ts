/**
 * `open()`: addresses (URLs) to channels, and the registry of transports.
 *
 * @module
 */

import { Channel, type ChannelOptions } from "./channel.ts";
import type { TransportFactory } from "./transport.ts";
import { type FifoOptions, openFifo } from "./transports/fifo.ts";
import { type MappedFileLogOptions, openMappedFileLog } from "./transports/mapped_file_log.ts";
import { openPipe, type PipeOptions } from "./transports/pipe.ts";
import { openPosixMessageQueue, type PosixMessageQueueOptions } from "./transports/posix_mq.ts";
import { openShmRing, type ShmRingOptions } from "./transports/shm_ring.ts";
import { openSysvMessageQueue, type SysvMessageQueueOptions } from "./transports/sysv_mq.ts";

/** Options of {@linkcode open}: the channel's, the common ones, and any transport's own. */
export interface OpenOptions<T> extends ChannelOptions<T> {
  /** Create the object when it does not exist. */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /**
   * Permission bits for a created object (default `0o600`). `shm:` also
   * takes its delivery mode here, `"queue"` or `"broadcast"` (permission
   * bits then go in `permissions`).
   */
  mode?: number | "queue" | "broadcast";
  /** Largest payload, where the transport lets you choose. */
  maxMessageSize?: number;
  /**
   * Transport-specific options (see each transport). A built-in scheme
   * refuses a name it does not take with a `TypeError` listing those it
   * does; a registered transport's factory decides for itself.
   */
  [option: string]: unknown;
}

// The option names each built-in scheme takes, checked against its options type by the compiler.
type Names<O> = Record<keyof O, true>;
const CHANNEL_OPTIONS = { codec: true, schema: true } satisfies Names<ChannelOptions<unknown>>;
const OPENING = { create: true, exclusive: true, mode: true, maxMessageSize: true, spin: true } as const;
const PIPE = { maxMessageSize: true, spin: true } satisfies Names<PipeOptions>;
const FIFO = { ...OPENING, writers: true } satisfies Names<FifoOptions>;
const SYSV_MQ = { ...OPENING } satisfies Names<SysvMessageQueueOptions>;
const POSIX_MQ = { ...OPENING, maxMessages: true, messageSize: true } satisfies Names<
  PosixMessageQueueOptions
>;
const SHM = {
  ...OPENING,
  permissions: true,
  capacity: true,
  overflow: true,
  users: true,
  subscribe: true,
  reserve: true,
  onMissed: true,
  initTimeout: true,
  doorbell: true,
} satisfies Names<ShmRingOptions>;
const FILE = {
  ...OPENING,
  maxSize: true,
  durability: true,
  syncInterval: true,
  reader: true,
  from: true,
  ack: true,
  onLoss: true,
  verify: true,
  allowOtherOwner: true,
  signal: true,
} satisfies Names<MappedFileLogOptions>;
const KNOWN_OPTIONS: ReadonlyMap<string, Readonly<Record<string, true>>> = new Map<
  string,
  Record<string, true>
>(
  [["pipe", PIPE], ["fifo", FIFO], ["sysv-mq", SYSV_MQ], ["posix-mq", POSIX_MQ], ["shm", SHM], [
    "file",
    FILE,
  ]],
);

/** Refuses an option a built-in scheme does not know (a misspelt one would be ignored otherwise). */
function checkOptionNames(scheme: string, options: object): void {
  const known = KNOWN_OPTIONS.get(scheme);
  if (known === undefined) return; // a registered transport: its factory decides
  for (const name of Object.keys(options)) {
    if (Object.hasOwn(known, name) || Object.hasOwn(CHANNEL_OPTIONS, name)) continue;
    throw new TypeError(
      `${scheme}: unknown option "${name}"; ${scheme}: takes ${
        [...Object.keys(CHANNEL_OPTIONS), ...Object.keys(known)].join(", ")
      }`,
    );
  }
}

const registry = new Map<string, TransportFactory>([
  ["pipe", openPipe],
  ["fifo", openFifo],
  ["sysv-mq", openSysvMessageQueue],
  ["posix-mq", openPosixMessageQueue],
  ["shm", openShmRing],
  ["file", openMappedFileLog],
]);

/**
 * Makes a scheme available to {@linkcode open}.
 *
 * @param scheme The scheme, without the colon (`"tcp"`): lower-case letters,
 *   digits, `+`, `-`, `.`, starting with a letter.
 * @param factory Builds a transport from an address and the options.
 * @throws {TypeError} For a malformed scheme or one that is already registered.
 *
 * @example
 * ```ts
 * import { registerTransport } from "@ipcbus/ipcbus";
 * import { Pipe } from "@ipcbus/ipcbus/pipe";
 *
 * registerTransport("loopback", () => Pipe.pair()[0]);
 * ```
 */
export function registerTransport(scheme: string, factory: TransportFactory): void {
  if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) {
    throw new TypeError(
      `scheme must be lower-case letters, digits, "+", "-" or "." starting with a letter, got "${scheme}"`,
    );
  }
  if (registry.has(scheme)) throw new TypeError(`a transport is already registered for "${scheme}:"`);
  if (typeof factory !== "function") throw new TypeError("factory must be a function");
  registry.set(scheme, factory);
}

/**
 * The schemes {@linkcode open} understands now.
 *
 * @returns Scheme names without the colon.
 */
export function registeredSchemes(): string[] {
  return [...registry.keys()];
}

/**
 * Opens a channel by address, such as `"fifo:/run/user/1000/app.fifo"` or
 * `"pipe:parent"`.
 *
 * @typeParam T The type of the values carried.
 * @param address `scheme:rest`, as a string or URL.
 * @param options `create`, `exclusive`, `mode`, `codec`, `schema`, and the transport's own.
 * @returns The open channel.
 * @throws {TypeError} For an unknown scheme, a malformed address, or an option the scheme does not
 *   take (built-in schemes; a misspelt option is refused rather than ignored).
 * @throws {NotFoundError} When the object does not exist and `create` is not set.
 * @throws {AlreadyExistsError} With `exclusive` when it exists.
 * @throws {PermissionDeniedError} When the object may not be used.
 *
 * @example Opening a FIFO
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.fifo`;
 * using channel = await open<string>(`fifo:${path}`, { create: true, exclusive: true });
 * console.log(channel.info.scheme); // "fifo"
 * await channel.unlink();
 * ```
 */
export async function open<T = unknown>(
  address: string | URL,
  options: OpenOptions<T> = {},
): Promise<Channel<T>> {
  // A URL object is percent-encoded ("%20"); a string is taken literally.
  const text = address instanceof URL ? decodeURI(address.href) : address;
  const colon = text.indexOf(":");
  const scheme = colon > 0 ? text.slice(0, colon) : "";
  const factory = registry.get(scheme);
  if (!factory) {
    throw new TypeError(
      `no transport for "${text}": known schemes are ${[...registry.keys()].map((s) => `${s}:`).join(", ")}`,
    );
  }
  checkOptionNames(scheme, options);
  const transport = await factory(text, options);
  return new Channel<T>(transport, options);
}
