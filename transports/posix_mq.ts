/**
 * The `posix-mq:` transport: a POSIX message queue (mq_open(3),
 * mq_send(3), mq_receive(3), mq_getattr(3), mq_unlink(3)).
 *
 * A POSIX queue is a named kernel object (`/orders`) holding at most
 * `maxMessages` messages of at most `messageSize` bytes each, both fixed when
 * it is created. Every message has a priority from 0 to 32767
 * (`MQ_PRIO_MAX` − 1): a receive takes the oldest message of the highest
 * priority, so messages come out highest priority first and in send order
 * within a priority. Any number of processes may send and receive at once;
 * each message goes to exactly one receiver. The queue outlives the processes
 * using it until `unlink()` (or a reboot).
 *
 * Addresses: `posix-mq:/orders`. A name is one slash followed by 1 to 255
 * bytes (UTF-8) containing no other slash, and is neither `/.` nor `/..`.
 * Options are not part of the address: a name containing `?` or `#` is
 * refused, so that `posix-mq:/orders?maxMessages=100` fails instead of
 * creating a queue called `orders?maxMessages=100`.
 *
 * Messages: with the `bytes` codec the payload is exactly the message the
 * kernel holds and the priority exactly its `msg_prio`, with no header, so
 * ipcbus interoperates with any program calling mq_send/mq_receive. A POSIX
 * queue carries no message type: `info.capabilities.types` and `.typeFilter`
 * are false, every received message has type 1, and a send with another
 * `type` or a receive with a type filter throws a `TypeError`.
 *
 * Sizes: `maxMessages` and `messageSize` apply when this open creates the
 * queue; without them the system defaults apply (`fs.mqueue.msg_default`,
 * `fs.mqueue.msgsize_default`: 10 messages of 8192 bytes unless changed).
 * Given when the queue already exists, they must match it, or the open fails
 * with `AlreadyExistsError` naming the queue's real sizes. The sizes actually
 * in force are read with mq_getattr after opening: `info.maxMessageSize` is
 * the queue's `mq_msgsize` (or the smaller `maxMessageSize` option), and a
 * larger message is refused with `MessageTooLargeError` before any system
 * call. The receive buffer is `mq_msgsize` bytes, allocated once.
 *
 * Limits: an unprivileged creator may ask for at most `fs.mqueue.msg_max`
 * messages (10 by default) of at most `fs.mqueue.msgsize_max` bytes (8192); a
 * process with `CAP_SYS_RESOURCE` (root) up to 65536 messages and 16 MiB. All
 * queues a user creates count against the user's `RLIMIT_MSGQUEUE` (819200
 * bytes by default, `ulimit -q`), each for `maxMessages × messageSize` plus
 * about 96 bytes of kernel bookkeeping per message, so with the default sizes
 * only about nine queues fit per user; and at most `fs.mqueue.queues_max`
 * queues (256) exist system-wide for unprivileged creators. Exceeding any of
 * them fails the open with an {@linkcode IpcError} naming the limit, its
 * value, and how to raise it.
 *
 * Waiting: the queue is opened non-blocking (on Linux a queue descriptor is a
 * file descriptor). A send or receive first makes the non-blocking call
 * synchronously. When the queue is full or empty it spins for a short,
 * adaptive budget (`spin`, µs; a full queue is probed with mq_getattr, which
 * is cheaper for the kernel than a failing mq_send). While the peer looks
 * busy it then naps: sleeps of 50–100 µs between turns of the event loop,
 * for up to 5 ms (send) or 1 ms (receive), retrying after each. Then it
 * parks on the poll helper thread (`poll(2)` works on queue descriptors:
 * readable when a message is queued, writable when there is room) and
 * retries when woken. The naps exist because waking a parked wait takes two
 * thread wake-ups (hundreds of µs on a small VM): when both ends of a busy
 * queue of ten messages park, each hand-off pays them, and throughput falls
 * by an order of magnitude. Naps make that rare; it still happens when the
 * machine has fewer free CPUs than busy threads (as it does to a C program
 * that spins). After three waits in a row that outlast the nap phase (an
 * idle peer) a wait parks at once; `spin: 0` disables spinning and napping
 * alike.
 *
 * ipcbus does not call mq_timedsend/mq_timedreceive, which would block a
 * thread for the whole wait: a timeout is an `AbortSignal.timeout(ms)`, and
 * an abort or `close()` settles a waiting send or receive promptly (within
 * one nap). An aborted send has sent nothing. `trySend` and `tryReceive`
 * never wait.
 *
 * Lifetime: `close()` closes this process's descriptor (mq_close); the queue
 * stays. `unlink()` removes the name (mq_unlink) at once; the queue itself
 * lives on until the last descriptor is closed, so processes that have it
 * open keep sending and receiving, and a new open of the name makes a new
 * queue. `unlink()` removes the name only while it still names the queue
 * this handle opened; otherwise (removed already, or removed and created
 * again by someone else) it rejects with `NotFoundError` and leaves the name
 * alone. Queues are never removed implicitly.
 *
 * Presence: names are chosen by the caller (a C program must find them), so
 * they carry no ipcbus prefix. Instead, like every ipcbus handle, an open
 * queue holds a presence record (`sync/presence.ts`, keyed by the address),
 * which tells tools whether a live process still uses it; `unlink()` drops
 * the record, and so does `close()` when a peer has removed the queue's name.
 *
 * Permissions: a channel opens the queue for reading and writing, which the
 * queue's mode must allow. A queue ipcbus creates gets exactly `mode`
 * (default `0o600`; the umask is undone with fchmod). Opening an existing
 * queue does not check its owner: a queue created by another user is used
 * if its mode allows (`info.owner` and `info.mode` report them; ask for
 * `exclusive` creation to be sure the queue is yours).
 *
 * @example Priorities: the most urgent first
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const name = `posix-mq:/ipcbus-doc-${crypto.randomUUID()}`;
 * await using queue = await open<string>(name, { create: true, exclusive: true });
 * await queue.send("routine", { priority: 0 });
 * await queue.send("urgent", { priority: 9 });
 * await queue.send("also routine", { priority: 0 });
 * const first = await queue.receiveMessage();
 * console.log(first.value, first.priority); // "urgent" 9
 * console.log(await queue.receive(), await queue.receive()); // "routine" "also routine"
 * await queue.unlink();
 * ```
 *
 * @module
 */

import {
  AlreadyExistsError,
  ChannelClosedError,
  errnoError,
  errnoName,
  IpcError,
  MessageTooLargeError,
  NotFoundError,
  PermissionDeniedError,
} from "../errors.ts";
import { napSync } from "../ffi/_delay.ts";
import { checkPosixName } from "../ffi/_posix_object.ts";
import { MQ_ATTR } from "../ffi/structs.ts";
import { MQ_PRIO_MAX, O, POLL, RLIMIT } from "../ffi/constants.ts";
import { cString } from "../ffi/cstring.ts";
import { readTextFile } from "../ffi/dir.ts";
import { closeFd, fchmodFd, type FileStat, fstatFd, lstatPath, openPath } from "../ffi/fd.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, type Libc, libc, need, strerror } from "../ffi/libc.ts";
import { waitFd } from "../ffi/poller.ts";
import { Presence } from "../sync/presence.ts";
import { reopenRemoved } from "./_reopen.ts";
import type {
  ReceivedFrame,
  ReceiveFilter,
  Transport,
  TransportInfo,
  TransportOptions,
} from "../transport.ts";
import { Spinner } from "./_stream.ts";
import { DEFAULT_SPIN_MICROS } from "./_stream_transport.ts";

/** Options of {@linkcode PosixMessageQueue.open}. */
export interface PosixMessageQueueOptions {
  /** Create the queue when no queue has the name (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the queue exists. */
  exclusive?: boolean;
  /** Permission bits of a created queue (default `0o600`; the umask does not apply). */
  mode?: number;
  /**
   * Capacity in messages of a created queue (`mq_maxmsg`); default
   * `fs.mqueue.msg_default`. Given for an existing queue, it must match.
   */
  maxMessages?: number;
  /**
   * Largest message of a created queue in bytes (`mq_msgsize`); default
   * `fs.mqueue.msgsize_default`. Given for an existing queue, it must match.
   */
  messageSize?: number;
  /**
   * Largest payload this end sends, in bytes; lowered to the queue's
   * `mq_msgsize`. Received messages are not limited by it.
   */
  maxMessageSize?: number;
  /** µs to spin on the non-blocking call before napping and parking (default 100; 0 disables both). */
  spin?: number;
}

/** What {@linkcode PosixMessageQueue.info} describes: the common fields and the queue's identity. */
export interface PosixMessageQueueInfo extends TransportInfo {
  /** Why `maxMessageSize` is what it is, and how to change it. */
  maxMessageSizeReason: string;
  /** The queue's name, such as `"/orders"`. */
  name: string;
  /** The queue's capacity in messages (`mq_maxmsg`). */
  maxMessages: number;
  /** The queue's largest message in bytes (`mq_msgsize`). */
  messageSize: number;
  /** Whether this open created the queue. */
  created: boolean;
  /** The owner's uid when opened. */
  owner: number;
  /** The permission bits when opened. */
  mode: number;
}

/** What {@linkcode PosixMessageQueue.stat} reports (mq_getattr). */
export interface PosixMessageQueueStat {
  /** Capacity in messages (`mq_maxmsg`). */
  maxMessages: number;
  /** Largest message in bytes (`mq_msgsize`). */
  messageSize: number;
  /** Messages on the queue now (`mq_curmsgs`). */
  messages: number;
  /** This descriptor's flags (`mq_flags`: `O_NONBLOCK`, always set by ipcbus). */
  flags: number;
}

const SCHEME = "posix-mq";
/** Longest name after the slash, in bytes (NAME_MAX). */
const NAME_MAX = 255;
/** What a queue name is checked for (the same rule as other POSIX IPC names). */
const QUEUE_NAME = { what: `${SCHEME} queue`, max: NAME_MAX, reason: "NAME_MAX", noun: "queue" } as const;
/** What a process with CAP_SYS_RESOURCE may ask for (HARD_MSGMAX, HARD_MSGSIZEMAX). */
const HARD_MSGMAX = 65536;
const HARD_MSGSIZEMAX = 16 * 1024 * 1024;
/** The kernel's defaults when /proc/sys/fs/mqueue cannot be read. */
const KERNEL_DEFAULTS = { msg_default: 10, msgsize_default: 8192, msg_max: 10, msgsize_max: 8192 } as const;
/**
 * Kernel bookkeeping charged to RLIMIT_MSGQUEUE per message slot: a
 * `struct msg_msg` and a `struct posix_msg_tree_node`, 48 bytes each on
 * 64-bit Linux (an estimate: the sizes are the kernel's business).
 */
const OVERHEAD_PER_MESSAGE = 96;
/** Indexes of `struct mq_attr`'s fields among its 64-bit words. */
const MQ_WORD = {
  mq_flags: MQ_ATTR.mq_flags / 8,
  mq_maxmsg: MQ_ATTR.mq_maxmsg / 8,
  mq_msgsize: MQ_ATTR.mq_msgsize / 8,
  mq_curmsgs: MQ_ATTR.mq_curmsgs / 8,
} as const;
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;
/**
 * How long a waiting send naps between turns of the event loop before it
 * parks, in ms (a full queue: a receiver is expected to make room soon).
 */
const SEND_NAP_PHASE_MS = 5;
/** The same for a waiting receive, shorter: a receiver often waits for an idle peer. */
const RECEIVE_NAP_PHASE_MS = 1;
/** One nap, in ms (the kernel's timer slack makes it 50–100 µs). */
const NAP_MS = 0.01;
/** After this many waits in a row that outlasted the nap phase (an idle peer), park at once. */
const NAP_IDLE_LIMIT = 3;

/**
 * Whether a wait should nap before it parks: yes while the peer looks
 * active (recent waits ended within the nap phase), no after
 * {@linkcode NAP_IDLE_LIMIT} longer ones in a row, until one is short again;
 * never with a spin budget of 0.
 */
class Napper {
  /** The nap phase, in ms (0: never nap). */
  readonly phase: number;
  #idle = 0;

  /** @param phase The nap phase in ms; 0 disables napping. */
  constructor(phase: number) {
    this.phase = phase;
  }

  /** Whether to nap on this wait. */
  get active(): boolean {
    return this.phase > 0 && this.#idle < NAP_IDLE_LIMIT;
  }

  /** Reports how long the wait took, from its first nap (or its park) to its end, in ms. */
  waited(ms: number): void {
    this.#idle = ms <= this.phase ? 0 : Math.min(NAP_IDLE_LIMIT, this.#idle + 1);
  }
}

type MqSymbols = {
  mq_open: NonNullable<Libc["mq_open"]>;
  mq_close: NonNullable<Libc["mq_close"]>;
  mq_unlink: NonNullable<Libc["mq_unlink"]>;
  mq_send: NonNullable<Libc["mq_send"]>;
  mq_receive: NonNullable<Libc["mq_receive"]>;
  mq_getattr: NonNullable<Libc["mq_getattr"]>;
};

let symbols: MqSymbols | undefined;

/** The mq_* symbols, or a clear error when the C library lacks them. */
function mq(): MqSymbols {
  return symbols ??= {
    mq_open: need("mq_open"),
    mq_close: need("mq_close"),
    mq_unlink: need("mq_unlink"),
    mq_send: need("mq_send"),
    mq_receive: need("mq_receive"),
    mq_getattr: need("mq_getattr"),
  };
}

/** A scratch `struct mq_attr` for mq_getattr and mq_open. */
const attrWords = new BigInt64Array(MQ_ATTR.size / 8);
const attrBytes = new Uint8Array(attrWords.buffer);
/**
 * The same, as 32-bit halves: reading a `BigInt64Array` allocates, and the
 * counts fit 32 bits (at most 65536), so the low halves (little-endian) are
 * read on the spinning path.
 */
const attrInts = new Int32Array(attrWords.buffer);
const EMPTY = new Uint8Array(0);

/**
 * One process's use of a POSIX message queue.
 *
 * @example A producer and a consumer over one queue, in one process
 * ```ts
 * import { bytes, Channel } from "@ipcbus/ipcbus";
 * import { PosixMessageQueue } from "@ipcbus/ipcbus/posix-mq";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * const queue = PosixMessageQueue.open(name, { create: true, maxMessages: 4, messageSize: 128 });
 * console.log(queue.info.maxMessages, queue.info.messageSize); // 4 128
 * using channel = new Channel(queue, { codec: bytes });
 * channel.trySend(new Uint8Array([1, 2, 3]), { priority: 5 });
 * console.log(queue.stat().messages); // 1
 * console.log(channel.tryReceive()); // { ok: true, value: Uint8Array(3) [ 1, 2, 3 ], type: 1, priority: 5 }
 * await channel.unlink();
 * ```
 */
export class PosixMessageQueue implements Transport {
  /** Description: capabilities, limits, and `name`, `maxMessages`, `messageSize`, `created`, `owner`, `mode`. */
  readonly info: PosixMessageQueueInfo;
  readonly #fd: number;
  readonly #name: string;
  readonly #cName: Uint8Array<ArrayBuffer>;
  readonly #identity: FileStat;
  readonly #closer = new AbortController();
  readonly #receiveSpinner: Spinner;
  readonly #sendSpinner: Spinner;
  readonly #receiveNapper: Napper;
  readonly #sendNapper: Napper;
  /** The spin budget in ms (for the spins between naps). */
  readonly #spinMs: number;
  readonly #send: MqSymbols["mq_send"];
  readonly #receive: MqSymbols["mq_receive"];
  readonly #getattr: MqSymbols["mq_getattr"];
  #closed = false;
  #lastSignal: AbortSignal | undefined;
  #lastBoth: AbortSignal | undefined;
  readonly #presence: Presence | null;

  // Receive buffer: exactly mq_msgsize bytes, and the priority cell.
  readonly #buffer: Uint8Array<ArrayBuffer>;
  readonly #capacity: bigint;
  readonly #priority = new Uint32Array(1);
  readonly #priorityBytes = new Uint8Array(this.#priority.buffer);
  #data: Uint8Array<ArrayBuffer>;
  /** The one frame object handed to tryReceiveBatch's sink. */
  readonly #batchFrame: ReceivedFrame = { data: EMPTY, type: 1, priority: 0 };

  /** The last mq_send found the queue full (and none has succeeded since). */
  #full = false;
  // The size argument of the last send, as a bigint (made once per size).
  #sendLength = -1;
  #sendLengthBig = 0n;
  // The message of the send now spinning (read by #resend).
  #retryData: Uint8Array = EMPTY;
  #retryPriority = 0;

  private constructor(
    fd: number,
    name: string,
    cName: Uint8Array<ArrayBuffer>,
    created: boolean,
    identity: FileStat,
    attributes: { maxMessages: number; messageSize: number },
    userLimit: number | undefined,
    spin: number,
  ) {
    this.#fd = fd;
    this.#name = name;
    this.#cName = cName;
    this.#identity = identity;
    this.#receiveSpinner = new Spinner(spin);
    this.#sendSpinner = new Spinner(spin);
    this.#spinMs = spin / 1000;
    this.#receiveNapper = new Napper(spin > 0 ? RECEIVE_NAP_PHASE_MS : 0);
    this.#sendNapper = new Napper(spin > 0 ? SEND_NAP_PHASE_MS : 0);
    const { mq_send, mq_receive, mq_getattr } = mq();
    this.#send = mq_send;
    this.#receive = mq_receive;
    this.#getattr = mq_getattr;
    const { maxMessages, messageSize } = attributes;
    const maxMessageSize = Math.min(messageSize, userLimit ?? messageSize);
    const reason = userLimit !== undefined && userLimit < messageSize
      ? `${SCHEME}: the maxMessageSize option is ${userLimit} bytes`
      : `${SCHEME}: the message size mq_msgsize of ${name} is ${messageSize} bytes, fixed when the queue ` +
        `was created; to send larger messages, unlink it and create it with a larger messageSize ` +
        `(up to fs.mqueue.msgsize_max for an unprivileged creator, 16 MiB with CAP_SYS_RESOURCE)`;
    this.info = {
      scheme: SCHEME,
      address: `${SCHEME}:${name}`,
      capabilities: {
        types: false,
        typeFilter: false,
        priority: true,
        multiWriter: true,
        multiReader: true,
        persistent: true,
      },
      maxMessageSize,
      maxType: 1,
      maxPriority: MQ_PRIO_MAX - 1,
      maxMessageSizeReason: reason,
      name,
      maxMessages,
      messageSize,
      created,
      owner: identity.uid,
      mode: identity.permissions & 0o777,
    };
    this.#buffer = new Uint8Array(messageSize);
    this.#capacity = BigInt(messageSize);
    this.#data = this.#buffer.subarray(0, 0);
    this.#presence = Presence.hold(this.info.address, { mode: identity.permissions & 0o666 });
  }

  /**
   * Opens (and with `create`, makes) a queue.
   *
   * @param address The name, with or without the `posix-mq:` prefix: `"/orders"`.
   * @param options Creation, mode, sizes and spin.
   * @returns The transport.
   * @throws {TypeError} For a malformed name.
   * @throws {RangeError} For an out-of-range `mode`, `maxMessages`, `messageSize`,
   *   `maxMessageSize` or `spin`.
   * @throws {NotFoundError} When no queue has the name (without `create`).
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the queue exists, or when
   *   `maxMessages`/`messageSize` were given and the existing queue has other sizes.
   * @throws {PermissionDeniedError} When this user may not read and write the queue.
   * @throws {IpcError} When a limit is exceeded (`fs.mqueue.msg_max`, `fs.mqueue.msgsize_max`,
   *   `RLIMIT_MSGQUEUE`, `fs.mqueue.queues_max`); the message says which and how to raise it.
   *
   * @example Creating a small queue
   * ```ts
   * import { PosixMessageQueue } from "@ipcbus/ipcbus/posix-mq";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * const queue = PosixMessageQueue.open(name, { create: true, exclusive: true, mode: 0o640, maxMessages: 2 });
   * console.log(queue.info.mode.toString(8), queue.info.maxMessages); // "640" 2
   * queue.close();
   * await queue.unlink();
   * ```
   */
  static open(address: string, options: PosixMessageQueueOptions = {}): PosixMessageQueue {
    const name = parseName(address);
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`${SCHEME}: mode must be permission bits from 0 to 0o777, got ${mode}`);
    }
    const maxMessages = checkSize(options.maxMessages, "maxMessages", HARD_MSGMAX);
    const messageSize = checkSize(options.messageSize, "messageSize", HARD_MSGSIZEMAX);
    const userLimit = options.maxMessageSize;
    if (userLimit !== undefined && (!Number.isSafeInteger(userLimit) || userLimit < 0)) {
      throw new RangeError(`${SCHEME}: maxMessageSize must be a non-negative integer, got ${userLimit}`);
    }
    const spin = options.spin ?? DEFAULT_SPIN_MICROS;
    if (typeof spin !== "number" || !(spin >= 0)) {
      throw new RangeError(`${SCHEME}: spin must be a non-negative number of µs, got ${spin}`);
    }
    const cName = cString(name, "queue name");
    const [fd, created] = openQueue(name, cName, mode, maxMessages, messageSize, options);
    let queue: PosixMessageQueue;
    try {
      const identity = fstatFd(fd);
      if (created && (identity.permissions & 0o777) !== mode) {
        // mq_open applied the umask; give the queue exactly the mode asked for.
        fchmodFd(fd, mode);
        identity.permissions = mode;
      }
      const attributes = getAttributes(fd, name);
      if (
        (maxMessages !== undefined && maxMessages !== attributes.maxMessages) ||
        (messageSize !== undefined && messageSize !== attributes.messageSize)
      ) {
        throw new AlreadyExistsError(
          `${SCHEME}: ${name} exists already with maxMessages ${attributes.maxMessages} and messageSize ` +
            `${attributes.messageSize}, not the ${describeSizes(maxMessages, messageSize)} asked for ` +
            `(sizes are fixed at creation: open it without them, or unlink it and create it again)`,
          { errno: E.EEXIST, syscall: "mq_open" },
        );
      }
      queue = new PosixMessageQueue(fd, name, cName, created, identity, attributes, userLimit, spin);
    } catch (error) {
      mq().mq_close(fd);
      if (created) mq().mq_unlink(cName); // made here for nothing: leave no queue behind
      throw error;
    }
    // Unknown (the name cannot be opened to look, say for a user who may only write) counts as ours.
    const state = queue.#presence?.contended ? queue.#nameState() : "ours";
    if (state === "missing" || state === "other") {
      queue.close();
      return reopenRemoved(queue.info.address, () => PosixMessageQueue.open(address, options));
    }
    return queue;
  }

  /**
   * Removes a queue's name without opening it (mq_unlink(3)), which needs
   * no read or write permission on the queue: only ownership (or root).
   * Processes that have the queue open keep using it; the name can be
   * created anew at once. Its presence record goes too.
   *
   * @param address `posix-mq:/name` or `/name`.
   * @throws {TypeError} For a bad name.
   * @throws {NotFoundError} When no queue has the name.
   * @throws {PermissionDeniedError} When this user may not remove it (the message names its owner).
   *
   * @example Remove a queue left behind
   * ```ts
   * import { PosixMessageQueue } from "@ipcbus/ipcbus/posix-mq";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * PosixMessageQueue.open(name, { create: true }).close();
   * PosixMessageQueue.unlink(name);
   * ```
   */
  static unlink(address: string): void {
    const name = parseName(address);
    if (mq().mq_unlink(cString(name, "queue name")) === 0) {
      Presence.forget(`${SCHEME}:${name}`);
      return;
    }
    const code = errno();
    if (code === E.ENOENT) {
      Presence.forget(`${SCHEME}:${name}`);
      throw new NotFoundError(`mq_unlink ${name} failed: no queue has this name`, {
        errno: code,
        syscall: "mq_unlink",
      });
    }
    if (code === E.EACCES || code === E.EPERM) {
      throw new PermissionDeniedError(
        `${SCHEME}: only the owner of ${name} or root may remove it; this process runs as uid ` +
          `${libc().geteuid()}${ownerOf(name)}`,
        { errno: code, syscall: "mq_unlink" },
      );
    }
    throw errnoError(code, "mq_unlink", `${SCHEME} ${name}`, strerror(code));
  }

  /**
   * Reads the queue's attributes (mq_getattr).
   *
   * @returns Capacity, message size, messages queued now, and this descriptor's flags.
   * @throws {ChannelClosedError} When the transport was closed.
   *
   * @example Counting queued messages
   * ```ts
   * import { PosixMessageQueue } from "@ipcbus/ipcbus/posix-mq";
   *
   * const queue = PosixMessageQueue.open(`/ipcbus-doc-${crypto.randomUUID()}`, { create: true });
   * queue.trySend(new TextEncoder().encode("hi"), 1, 3);
   * const { messages, maxMessages } = queue.stat();
   * console.log(messages, maxMessages === queue.info.maxMessages); // 1 true
   * queue.close();
   * await queue.unlink();
   * ```
   */
  stat(): PosixMessageQueueStat {
    this.#checkOpen();
    if (this.#getattr(this.#fd, attrBytes) !== 0) throw this.#error(errno(), "mq_getattr");
    return {
      maxMessages: Number(attrWords[MQ_WORD.mq_maxmsg]),
      messageSize: Number(attrWords[MQ_WORD.mq_msgsize]),
      messages: Number(attrWords[MQ_WORD.mq_curmsgs]),
      flags: Number(attrWords[MQ_WORD.mq_flags]),
    };
  }

  #checkOpen(): void {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
  }

  /** Maps an errno of an operation on the open queue. */
  #error(code: number, syscall: string): IpcError {
    if (code === E.EBADF) {
      return new ChannelClosedError(`${this.info.address}: its descriptor was closed`, {
        errno: code,
        syscall,
      });
    }
    return errnoError(code, syscall, `${SCHEME} ${this.#name}`, strerror(code));
  }

  /** The caller's signal combined with close(), made once per caller's signal. */
  #both(signal: AbortSignal): AbortSignal {
    if (signal !== this.#lastSignal) {
      this.#lastSignal = signal;
      this.#lastBoth = AbortSignal.any([signal, this.#closer.signal]);
    }
    return this.#lastBoth!;
  }

  /** What a failed wait rejects with: the caller's reason, or ChannelClosedError after close(). */
  #stopped(signal: AbortSignal, error: unknown): unknown {
    if (signal.aborted) return signal.reason;
    if (this.#closed) return new ChannelClosedError(`${this.info.address} is closed`, { cause: error });
    return error;
  }

  // -- receiving ------------------------------------------------------------

  /**
   * Takes the oldest message of the highest priority, without waiting.
   *
   * @param filter Must select any type (`type` 0, not `except`): POSIX queues have no types.
   * @returns The frame (its `data` is valid until the next receive), or null when the queue is empty.
   * @throws {ChannelClosedError} When the transport was closed.
   * @throws {TypeError} For a type filter.
   */
  tryReceive(filter: ReceiveFilter): ReceivedFrame | null {
    this.#checkOpen();
    if (filter.type !== 0 || filter.except) noTypeFilter();
    return this.#take();
  }

  #take(): ReceivedFrame | null {
    const n = this.#takeRaw();
    return n < 0 ? null : { data: this.#view(n), type: 1, priority: this.#priority[0] };
  }

  /** One mq_receive into the buffer: the length, or -1 when the queue is empty. */
  #takeRaw(): number {
    for (let odd = 0;;) {
      const n = Number(this.#receive(this.#fd, this.#buffer, this.#capacity, this.#priorityBytes));
      if (n >= 0) return n;
      const code = errno();
      if (code === E.EAGAIN) return -1;
      if (code === E.EINTR) continue;
      // errno is read after the call returned, and rarely something in
      // between overwrites it: retry an unexpected error before believing it.
      if (++odd < BELIEVE_ERRNO_AFTER) continue;
      throw this.#error(code, "mq_receive");
    }
  }

  /** The first `length` bytes of the buffer; same-sized messages share one view. */
  #view(length: number): Uint8Array {
    let data = this.#data;
    if (data.length !== length) data = this.#data = this.#buffer.subarray(0, length);
    return data;
  }

  /**
   * Takes up to `max` messages without waiting, highest priority first,
   * handing each to `sink`.
   *
   * @param filter Must select any type (`type` 0, not `except`).
   * @param max The most messages to take.
   * @param sink Gets each frame; the frame and its `data` are valid only during the call.
   * @returns How many frames were handed to `sink`.
   * @throws {ChannelClosedError} When the transport was closed.
   * @throws {TypeError} For a type filter.
   */
  tryReceiveBatch(filter: ReceiveFilter, max: number, sink: (frame: ReceivedFrame) => void): number {
    this.#checkOpen();
    if (filter.type !== 0 || filter.except) noTypeFilter();
    const frame = this.#batchFrame;
    let taken = 0;
    while (taken < max) {
      let n: number;
      try {
        n = this.#takeRaw();
      } catch (error) {
        if (taken > 0) return taken; // reported by the next call
        throw error;
      }
      if (n < 0) break;
      frame.data = this.#view(n);
      frame.priority = this.#priority[0];
      taken++;
      sink(frame);
    }
    return taken;
  }

  readonly #retake = (): ReceivedFrame | undefined => {
    this.#checkOpen();
    return this.#take() ?? undefined;
  };

  /**
   * Takes the oldest message of the highest priority, waiting for one.
   *
   * @param filter Must select any type (`type` 0, not `except`).
   * @param signal Aborting it rejects with `signal.reason`.
   * @returns The frame (its `data` is valid until the next receive): itself when taken without
   *   parking (at once or within the spin), else a promise of it.
   * @throws {ChannelClosedError} When the transport is closed, also while waiting.
   * @throws {TypeError} For a type filter.
   */
  receive(filter: ReceiveFilter, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame> {
    try {
      const frame = this.tryReceive(filter) ?? this.#receiveSpinner.spin(this.#retake);
      if (frame) return frame;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#receiveSlowly(signal);
  }

  async #receiveSlowly(signal: AbortSignal): Promise<ReceivedFrame> {
    const both = this.#both(signal);
    const start = performance.now();
    const napper = this.#receiveNapper;
    const napped = napper.active ? await this.#napPhase(napper.phase, this.#retake, both, signal) : undefined;
    if (napped) return this.#received(napped, start);
    for (;;) {
      try {
        await waitFd(this.#fd, POLL.IN, both);
      } catch (error) {
        throw this.#stopped(signal, error);
      }
      this.#checkOpen();
      const frame = this.#take();
      if (frame) return this.#received(frame, start);
      // Another receiver was faster: wait again.
    }
  }

  #received(frame: ReceivedFrame, start: number): ReceivedFrame {
    this.#receiveSpinner.woke();
    this.#receiveNapper.waited(performance.now() - start);
    return frame;
  }

  /**
   * Naps between turns of the event loop for up to `phase` ms, retrying
   * `attempt` after each nap, and spinning on it for the spin budget before
   * the next. A nap holds the event loop for 50–100 µs (more on a loaded
   * machine), as a spin would, but leaves the CPU to the peer; and it needs
   * no helper thread to end. Parking instead would, and when both ends of a
   * busy queue park, every hand-off pays two thread wake-ups (hundreds of µs
   * on a small VM). The spin after each nap matters as much: a nap outlasts
   * the spin budget, so a sender and a receiver that only napped could fall
   * into lockstep, each napping while the other has work for it; spinning
   * after waking makes their awake windows overlap, and the pair falls back
   * into step.
   *
   * @returns The attempt's result, or undefined when the phase ended without one.
   */
  async #napPhase<R>(
    phase: number,
    attempt: () => R | undefined,
    both: AbortSignal,
    signal: AbortSignal,
  ): Promise<R | undefined> {
    const end = performance.now() + phase;
    const spin = this.#spinMs;
    do {
      await new Promise<void>((resolve) => setImmediate(resolve));
      napSync(NAP_MS);
      if (both.aborted) throw this.#stopped(signal, both.reason);
      const woke = performance.now();
      do {
        const result = attempt();
        if (result !== undefined) return result;
      } while (performance.now() - woke < spin);
    } while (performance.now() < end);
    return undefined;
  }

  // -- sending --------------------------------------------------------------

  /** Checks what the channel checks too, for callers using the transport directly. */
  #check(data: Uint8Array, type: number, priority: number): void {
    this.#checkOpen();
    if (type !== 1) {
      throw new TypeError(
        `${SCHEME}: this transport does not carry message types (capabilities.types is false); got type ${type}`,
      );
    }
    if (!(priority >= 0 && priority < MQ_PRIO_MAX) || !Number.isInteger(priority)) {
      throw new RangeError(
        `${SCHEME}: priority must be an integer from 0 to ${
          MQ_PRIO_MAX - 1
        } (MQ_PRIO_MAX − 1), got ${priority}`,
      );
    }
    if (data.length > this.info.maxMessageSize) {
      throw new MessageTooLargeError(data.length, this.info.maxMessageSize, this.info.maxMessageSizeReason);
    }
  }

  /** Whether the queue has room now (mq_getattr; errors are left to the mq_send that follows). */
  #hasRoom(): boolean {
    if (this.#getattr(this.#fd, attrBytes) !== 0) return true;
    return attrInts[2 * MQ_WORD.mq_curmsgs] < attrInts[2 * MQ_WORD.mq_maxmsg];
  }

  /**
   * One mq_send, unless the last one found the queue full and mq_getattr
   * says it still is (cheaper than the failing mq_send; see `send`).
   */
  #trySend(data: Uint8Array, priority: number): boolean {
    return (!this.#full || this.#hasRoom()) && this.#attempt(data, priority);
  }

  /** One mq_send: true when sent, false when the queue is full. */
  #attempt(data: Uint8Array, priority: number): boolean {
    const length = data.length;
    if (length !== this.#sendLength) {
      this.#sendLength = length;
      this.#sendLengthBig = BigInt(length);
    }
    for (let odd = 0;;) {
      if (this.#send(this.#fd, data, this.#sendLengthBig, priority) === 0) {
        this.#full = false;
        return true;
      }
      const code = errno();
      if (code === E.EAGAIN) {
        this.#full = true;
        return false;
      }
      if (code === E.EINTR) continue;
      if (++odd < BELIEVE_ERRNO_AFTER) continue; // see #take
      if (code === E.EMSGSIZE) {
        throw new MessageTooLargeError(length, this.info.messageSize, this.info.maxMessageSizeReason);
      }
      throw this.#error(code, "mq_send");
    }
  }

  /**
   * Sends without waiting.
   *
   * @param data The payload (at most `info.maxMessageSize` bytes).
   * @param type Must be 1: POSIX queues carry no type.
   * @param priority 0 to 32767; higher priorities are received first.
   * @returns False when the queue is full (nothing was sent).
   * @throws {ChannelClosedError} When the transport was closed.
   * @throws {TypeError} For a type other than 1.
   * @throws {RangeError} For a priority out of range.
   * @throws {MessageTooLargeError} For a payload over `info.maxMessageSize`.
   */
  trySend(data: Uint8Array, type: number, priority: number): boolean {
    this.#check(data, type, priority);
    return this.#trySend(data, priority);
  }

  /**
   * Sends a prefix of `frames` without waiting, all with the same priority
   * (one mq_send each).
   *
   * @param frames The payloads, each at most `info.maxMessageSize` bytes.
   * @param type Must be 1.
   * @param priority 0 to 32767.
   * @returns How many frames (from the first) were sent; 0 when the queue is full.
   * @throws {ChannelClosedError} When the transport was closed.
   * @throws {TypeError} For a type other than 1.
   * @throws {RangeError} For a priority out of range.
   * @throws {MessageTooLargeError} When the first frame is too large (later ones end the batch before them).
   */
  trySendBatch(frames: readonly Uint8Array[], type: number, priority: number): number {
    if (frames.length === 0) {
      this.#checkOpen();
      return 0;
    }
    this.#check(frames[0], type, priority);
    const limit = this.info.maxMessageSize;
    let sent = 0;
    for (; sent < frames.length; sent++) {
      const data = frames[sent];
      try {
        if (data.length > limit) {
          throw new MessageTooLargeError(data.length, limit, this.info.maxMessageSizeReason);
        }
        if (!this.#trySend(data, priority)) break;
      } catch (error) {
        if (sent > 0) return sent; // reported by the next call
        throw error;
      }
    }
    return sent;
  }

  /**
   * Sends, waiting for room when the queue is full.
   *
   * @param data The payload.
   * @param type Must be 1.
   * @param priority 0 to 32767.
   * @param signal Aborting it rejects with `signal.reason`; nothing is sent then.
   * @returns `undefined` when sent at once, else a promise settling when sent.
   * @throws {ChannelClosedError} When the transport is closed, also while waiting.
   */
  send(data: Uint8Array, type: number, priority: number, signal: AbortSignal): Promise<void> | undefined {
    this.#check(data, type, priority);
    if (this.#trySend(data, priority)) return undefined;
    // Full. Spin on mq_getattr until there is room: a failing mq_send costs
    // the kernel an allocation and a copy of the message (0.6 µs for 64 B,
    // 1.5 µs for 8 KiB here) while holding up the receivers; mq_getattr
    // only reads the count (0.2 µs).
    this.#retryData = data;
    this.#retryPriority = priority;
    try {
      if (this.#sendSpinner.spin(this.#resend)) return undefined;
    } finally {
      this.#retryData = EMPTY; // do not keep the caller's buffer
    }
    // Keep a copy: the caller may reuse its buffer while this send waits.
    return this.#sendSlowly(data.slice(), priority, signal);
  }

  /** One more send of the message now spinning, once mq_getattr shows room (for the send spin). */
  readonly #resend = (): true | undefined =>
    (this.#hasRoom() && this.#attempt(this.#retryData, this.#retryPriority)) || undefined;

  async #sendSlowly(data: Uint8Array, priority: number, signal: AbortSignal): Promise<void> {
    const both = this.#both(signal);
    const start = performance.now();
    const retry = () => {
      this.#checkOpen();
      return (this.#hasRoom() && this.#attempt(data, priority)) || undefined;
    };
    const napper = this.#sendNapper;
    if (!(napper.active && await this.#napPhase(napper.phase, retry, both, signal))) {
      for (;;) {
        try {
          await waitFd(this.#fd, POLL.OUT, both);
        } catch (error) {
          throw this.#stopped(signal, error);
        }
        this.#checkOpen();
        if (this.#attempt(data, priority)) break;
        // Another sender filled the room: wait again.
      }
    }
    this.#sendSpinner.woke();
    napper.waited(performance.now() - start);
  }

  // -- lifetime -------------------------------------------------------------

  /**
   * Closes this process's descriptor (mq_close); the queue stays until
   * `unlink()`. Waiting sends and receives settle with `ChannelClosedError`.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort(new ChannelClosedError(`${this.info.address} is closed`));
    mq().mq_close(this.#fd);
    this.#presence?.release();
    // The name removed by someone else (a peer's mq_unlink) while we had the
    // queue: drop its presence record, which nobody can use any more.
    if (this.#presence && this.#nameState() === "missing") Presence.forget(this.info.address);
  }

  /** Whether the name still names the queue this handle opened. */
  #nameState(): "ours" | "missing" | "other" | "unknown" {
    const { mq_open, mq_close } = mq();
    const probe = mq_open(this.#cName, O.RDONLY | O.NONBLOCK | O.CLOEXEC, 0, null);
    if (probe < 0) return errno() === E.ENOENT ? "missing" : "unknown";
    try {
      const now = fstatFd(probe);
      return now.dev === this.#identity.dev && now.ino === this.#identity.ino ? "ours" : "other";
    } finally {
      mq_close(probe);
    }
  }

  /**
   * Removes the queue's name (mq_unlink). The queue itself goes when its last
   * descriptor, in any process, is closed: until then those who have it open
   * go on using it. Works after `close()` too.
   *
   * @returns Settles once the name is removed.
   * @throws {NotFoundError} When the name was removed already, or names
   *   another queue now (it is then left alone).
   * @throws {PermissionDeniedError} When this user is neither the queue's owner nor root.
   */
  unlink(): Promise<void> {
    try {
      this.#unlink();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #unlink(): void {
    // The name must still be ours: it may have been removed and made again.
    const state = this.#nameState();
    if (state === "other") {
      throw new NotFoundError(
        `${SCHEME}: ${this.#name} names another queue now (the one opened here was removed, and the name ` +
          `made again); it was left alone`,
        { errno: E.ENOENT, syscall: "mq_unlink" },
      );
    }
    if (state === "missing") {
      Presence.forget(this.info.address);
      throw removedAlready(this.#name);
    }
    // "unknown" (no read permission, no descriptor left): mq_unlink decides.
    if (mq().mq_unlink(this.#cName) === 0) {
      Presence.forget(this.info.address);
      return;
    }
    const code = errno();
    if (code === E.ENOENT) {
      Presence.forget(this.info.address);
      throw removedAlready(this.#name);
    }
    if (code === E.EACCES || code === E.EPERM) {
      throw new PermissionDeniedError(
        `${SCHEME}: only the owner of ${this.#name} (uid ${this.#identity.uid}) or root may remove it; ` +
          `this process runs as uid ${libc().geteuid()}`,
        { errno: code, syscall: "mq_unlink" },
      );
    }
    throw errnoError(code, "mq_unlink", `${SCHEME} ${this.#name}`, strerror(code));
  }
}

// -- helpers ----------------------------------------------------------------

function noTypeFilter(): never {
  throw new TypeError(
    `${SCHEME}: this transport cannot receive by type (capabilities.typeFilter is false); ` +
      `POSIX queues order messages by priority only`,
  );
}

function removedAlready(name: string): NotFoundError {
  return new NotFoundError(`${SCHEME}: ${name} was removed already`, {
    errno: E.ENOENT,
    syscall: "mq_unlink",
  });
}

/** The queue name of an address, validated. */
function parseName(address: string): string {
  if (typeof address !== "string") throw new TypeError(`${SCHEME}: the address must be a string`);
  const name = address.startsWith(`${SCHEME}:`) ? address.slice(SCHEME.length + 1) : address;
  const bad = (why: string) =>
    `${SCHEME}: bad queue name "${name}" in "${address}": ${why}; expected ${SCHEME}:/orders`;
  checkPosixName(name, QUEUE_NAME, bad);
  if (/[?#]/.test(name)) {
    throw new TypeError(
      bad("? and # are not allowed (sizes and modes are options of open(), not part of the address)"),
    );
  }
  return name;
}

function checkSize(value: number | undefined, what: string, hard: number): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${SCHEME}: ${what} must be a positive integer, got ${value}`);
  }
  if (value > hard) {
    throw new RangeError(
      `${SCHEME}: ${what} can be at most ${hard} on Linux (even with CAP_SYS_RESOURCE), got ${value}`,
    );
  }
  return value;
}

function describeSizes(maxMessages: number | undefined, messageSize: number | undefined): string {
  return [
    maxMessages === undefined ? "" : `maxMessages ${maxMessages}`,
    messageSize === undefined ? "" : `messageSize ${messageSize}`,
  ].filter(Boolean).join(" and ");
}

/**
 * mq_open: creates the queue (exclusively, to know whether this call made
 * it) or opens it, for reading and writing, non-blocking.
 *
 * @returns The descriptor, and whether it was created.
 */
function openQueue(
  name: string,
  cName: Uint8Array,
  mode: number,
  maxMessages: number | undefined,
  messageSize: number | undefined,
  options: PosixMessageQueueOptions,
): [number, boolean] {
  const { mq_open } = mq();
  const flags = O.RDWR | O.NONBLOCK | O.CLOEXEC;
  let attributes: Uint8Array | null = null;
  let sizes = { maxMessages: 0, messageSize: 0 };
  if (options.create) {
    sizes = creationSizes(maxMessages, messageSize);
    if (maxMessages !== undefined || messageSize !== undefined) {
      attributes = new Uint8Array(MQ_ATTR.size);
      const words = new BigInt64Array(attributes.buffer);
      words[MQ_WORD.mq_maxmsg] = BigInt(sizes.maxMessages);
      words[MQ_WORD.mq_msgsize] = BigInt(sizes.messageSize);
    }
  }
  // A queue removed between the two calls is created on the next round.
  for (let round = 0;; round++) {
    if (options.create) {
      const made = mq_open(cName, flags | O.CREAT | O.EXCL, mode, attributes);
      if (made >= 0) return [made, true];
      const code = errno();
      if (code === E.EINTR) continue;
      if (code !== E.EEXIST || options.exclusive) {
        throw openFailure(code, name, { creating: true, explicit: attributes !== null, ...sizes });
      }
    }
    const found = mq_open(cName, flags, 0, null);
    if (found >= 0) return [found, false];
    const code = errno();
    if (code === E.EINTR) continue;
    if (code === E.ENOENT) {
      if (options.create && round < 3) continue;
      throw new NotFoundError(
        `${SCHEME}: no queue is named ${name} (open with { create: true } to make it)`,
        { errno: code, syscall: "mq_open" },
      );
    }
    throw openFailure(code, name, { creating: false, explicit: false, ...sizes });
  }
}

/** The sizes a created queue gets: those given, the others from the system's defaults. */
function creationSizes(
  maxMessages: number | undefined,
  messageSize: number | undefined,
): { maxMessages: number; messageSize: number } {
  const limits = mqueueLimits();
  // Without attributes the kernel caps its defaults at the maxima.
  const defaultCount = Math.min(
    limits.msg_default ?? KERNEL_DEFAULTS.msg_default,
    limits.msg_max ?? KERNEL_DEFAULTS.msg_max,
  );
  const defaultSize = Math.min(
    limits.msgsize_default ?? KERNEL_DEFAULTS.msgsize_default,
    limits.msgsize_max ?? KERNEL_DEFAULTS.msgsize_max,
  );
  return { maxMessages: maxMessages ?? defaultCount, messageSize: messageSize ?? defaultSize };
}

/** mq_getattr of a fresh descriptor. */
function getAttributes(fd: number, name: string): { maxMessages: number; messageSize: number } {
  if (mq().mq_getattr(fd, attrBytes) !== 0) {
    const code = errno();
    throw errnoError(code, "mq_getattr", `${SCHEME} ${name}`, strerror(code));
  }
  return {
    maxMessages: Number(attrWords[MQ_WORD.mq_maxmsg]),
    messageSize: Number(attrWords[MQ_WORD.mq_msgsize]),
  };
}

/** The error for a failed mq_open, explaining the limit that bit. */
function openFailure(
  code: number,
  name: string,
  attempt: { creating: boolean; explicit: boolean; maxMessages: number; messageSize: number },
): IpcError {
  const options = { errno: code, syscall: "mq_open" };
  const failed = `${SCHEME}: mq_open ${name} failed: ${errnoName(code)} (${strerror(code)})`;
  switch (code) {
    case E.EEXIST:
      return new AlreadyExistsError(`${failed}: the queue exists (exclusive was asked for)`, options);
    case E.EACCES:
    case E.EPERM:
      return new PermissionDeniedError(
        `${failed}: this process may not read and write ${name}${ownerOf(name)}; ` +
          `it runs as uid ${libc().geteuid()}`,
        options,
      );
    case E.EINVAL:
      if (attempt.creating && attempt.explicit) {
        return new IpcError(`${failed}: ${explainSizes(attempt.maxMessages, attempt.messageSize)}`, options);
      }
      return new IpcError(failed, options);
    case E.EMFILE:
      return new IpcError(`${failed}: ${explainEmfile(attempt)}`, options);
    case E.ENFILE:
      return new IpcError(
        `${failed}: the system-wide limit on open files (fs.file-max) is reached; root raises it with ` +
          `sysctl fs.file-max=<n>`,
        options,
      );
    case E.ENOSPC: {
      const max = mqueueLimits().queues_max;
      return new IpcError(
        `${failed}: the system-wide limit on POSIX queues fs.mqueue.queues_max${
          max === undefined ? "" : ` (${max})`
        } is reached (it binds processes without CAP_SYS_RESOURCE); root raises it with ` +
          `sysctl fs.mqueue.queues_max=<n>, or unlink queues no longer used (ls /dev/mqueue)`,
        options,
      );
    }
    case E.ENOSYS:
      return new IpcError(
        `${failed}: this kernel has no POSIX message queues (CONFIG_POSIX_MQUEUE is off)`,
        options,
      );
    default:
      return errnoError(code, "mq_open", `${SCHEME} ${name}`, strerror(code));
  }
}

/** Why the kernel refused the sizes (EINVAL): msg_max / msgsize_max, or the hard limits. */
function explainSizes(maxMessages: number, messageSize: number): string {
  const limits = mqueueLimits();
  const show = (value: number | undefined) => value === undefined ? "" : ` (${value} here)`;
  const over: string[] = [];
  if (limits.msg_max === undefined || maxMessages > limits.msg_max) {
    over.push(`maxMessages ${maxMessages} against fs.mqueue.msg_max${show(limits.msg_max)}`);
  }
  if (limits.msgsize_max === undefined || messageSize > limits.msgsize_max) {
    over.push(`messageSize ${messageSize} against fs.mqueue.msgsize_max${show(limits.msgsize_max)}`);
  }
  return `the sizes asked for are over the limits (${over.join("; ")}). A process without ` +
    `CAP_SYS_RESOURCE may create queues of at most fs.mqueue.msg_max messages of at most ` +
    `fs.mqueue.msgsize_max bytes; one with it (root, unless a container withholds the capability) up to ${HARD_MSGMAX} messages and ${HARD_MSGSIZEMAX} ` +
    `bytes. Ask for less, or have root raise them with sysctl fs.mqueue.msg_max=<n> and ` +
    `sysctl fs.mqueue.msgsize_max=<bytes>`;
}

/** EMFILE: the user's RLIMIT_MSGQUEUE (when creating), or this process's descriptor limit. */
function explainEmfile(attempt: { creating: boolean; maxMessages: number; messageSize: number }): string {
  const nofile = rlimit(RLIMIT.NOFILE);
  const descriptors = `this process has as many descriptors open as RLIMIT_NOFILE allows` +
    `${nofile ? ` (${formatLimit(nofile.soft)}; ulimit -n)` : " (ulimit -n)"}`;
  if (!attempt.creating || descriptorsExhausted()) return descriptors;
  const { maxMessages, messageSize } = attempt;
  const needed = queueBytes(maxMessages, messageSize);
  const limit = rlimit(RLIMIT.MSGQUEUE);
  const defaults = creationSizes(undefined, undefined);
  const perDefault = queueBytes(defaults.maxMessages, defaults.messageSize);
  const soft = limit?.soft;
  const fit = soft !== undefined && soft !== RLIM_INFINITY
    ? Math.floor(Number(soft) / perDefault)
    : undefined;
  const hard = limit && limit.hard !== limit.soft ? ` (the hard limit is ${formatLimit(limit.hard)})` : "";
  const bounded = soft !== undefined && soft !== RLIM_INFINITY;
  const why = bounded && needed > Number(soft)
    ? `this queue alone (${maxMessages} × ${messageSize} bytes, about ${needed} bytes) needs more than that`
    : `this queue (${maxMessages} × ${messageSize} bytes, about ${needed} bytes) does not fit beside the ` +
      `queues this user has already (a queue counts from its creation until it is unlinked and closed everywhere)`;
  return `the user's limit on POSIX queue memory RLIMIT_MSGQUEUE` +
    `${soft === undefined ? "" : ` is ${formatLimit(soft)} bytes`}, and ${why}. A queue counts ` +
    `maxMessages × messageSize plus about ${OVERHEAD_PER_MESSAGE} bytes of kernel bookkeeping per message` +
    `${
      fit === undefined
        ? ""
        : fit === 0
        ? `, so not even one queue of the default sizes (${defaults.maxMessages} × ${defaults.messageSize} ` +
          `bytes) fits`
        : `, so with the default sizes (${defaults.maxMessages} × ${defaults.messageSize} bytes) about ` +
          `${fit} queues fit per user`
    }. Raise the limit with ulimit -q <bytes> before starting the process${hard} (or prlimit --msgqueue, ` +
    `LimitMSGQUEUE= in a systemd unit, "msgqueue" in /etc/security/limits.conf), unlink queues no ` +
    `longer used (ls /dev/mqueue), or create smaller queues (maxMessages, messageSize)`;
}

/** What a queue of these sizes counts against RLIMIT_MSGQUEUE (an estimate of the kernel's formula). */
function queueBytes(maxMessages: number, messageSize: number): number {
  return maxMessages * messageSize + maxMessages * OVERHEAD_PER_MESSAGE;
}

/** Whether this process cannot open any descriptor (EMFILE is then about RLIMIT_NOFILE). */
function descriptorsExhausted(): boolean {
  try {
    closeFd(openPath("/dev/null", O.RDONLY));
    return false;
  } catch (error) {
    return error instanceof IpcError && error.code === "EMFILE";
  }
}

function formatLimit(value: bigint): string {
  return value === RLIM_INFINITY ? "unlimited" : String(value);
}

/** getrlimit(2), or undefined when it fails. */
function rlimit(resource: number): { soft: bigint; hard: bigint } | undefined {
  const cell = new BigUint64Array(2);
  if (libc().getrlimit(resource, new Uint8Array(cell.buffer)) !== 0) return undefined;
  return { soft: cell[0], hard: cell[1] };
}

/** The owner and mode of a queue as /dev/mqueue shows them (when mounted), for error messages. */
function ownerOf(name: string): string {
  try {
    const stat = lstatPath(`/dev/mqueue${name}`);
    if (stat === null) return "";
    return `: the queue belongs to uid ${stat.uid} gid ${stat.gid} with mode 0o${
      (stat.permissions & 0o777).toString(8).padStart(3, "0")
    }`;
  } catch {
    return "";
  }
}

/** The /proc/sys/fs/mqueue settings that can be read; each is undefined when it cannot. */
function mqueueLimits(): {
  msg_max?: number;
  msgsize_max?: number;
  msg_default?: number;
  msgsize_default?: number;
  queues_max?: number;
} {
  return {
    msg_max: readSetting("msg_max"),
    msgsize_max: readSetting("msgsize_max"),
    msg_default: readSetting("msg_default"),
    msgsize_default: readSetting("msgsize_default"),
    queues_max: readSetting("queues_max"),
  };
}

/**
 * One /proc/sys/fs/mqueue setting, read through libc (Deno's file API would
 * want `--allow-all` for /proc); undefined when it cannot be read.
 */
function readSetting(setting: string): number | undefined {
  let text: string | null;
  try {
    text = readTextFile(`/proc/sys/fs/mqueue/${setting}`);
  } catch {
    return undefined;
  }
  const value = text === null ? NaN : Number(text.trim());
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * Factory for `posix-mq:` addresses (registered with `open()`).
 *
 * @param address `posix-mq:/name`.
 * @param options The options given to `open()` ({@linkcode PosixMessageQueueOptions}).
 * @returns The transport.
 * @throws {TypeError} For a malformed address.
 * @throws {NotFoundError} When the queue does not exist and `create` is not set.
 * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
 * @throws {PermissionDeniedError} When this user may not use the queue.
 *
 * @example
 * ```ts
 * import { openPosixMessageQueue } from "@ipcbus/ipcbus/posix-mq";
 *
 * const queue = openPosixMessageQueue(`posix-mq:/ipcbus-doc-${crypto.randomUUID()}`, { create: true });
 * console.log(queue.info.scheme); // "posix-mq"
 * queue.close();
 * await queue.unlink();
 * ```
 */
export function openPosixMessageQueue(address: string, options: TransportOptions): PosixMessageQueue {
  if (!address.startsWith(`${SCHEME}:`)) {
    throw new TypeError(`${SCHEME}: expected an address starting with "${SCHEME}:", got "${address}"`);
  }
  return PosixMessageQueue.open(address, options as PosixMessageQueueOptions);
}
