/**
 * The `sysv-mq:` transport: a System V message queue (msgget(2),
 * msgsnd(2), msgrcv(2), msgctl(2)).
 *
 * A System V queue is a kernel object that outlives the processes using it,
 * carries a `type` (a C `long`, 1 or more) with every message and lets each
 * receiver choose what it takes by type, so one queue can route work to
 * several processes. Any number of processes may send and receive at once;
 * each message goes to exactly one receiver.
 *
 * Addresses:
 *
 * | address | queue |
 * |---|---|
 * | `sysv-mq:0x1a2b`, `sysv-mq:6699` | the queue with that key (hex or decimal, 1 to 0xffffffff) |
 * | `sysv-mq:/path/to/file?proj=7` | the key `ftok(path, 7)` (the file must exist; `proj` is 1–255, default 1) |
 * | `sysv-mq:private` | a new queue with no key (`IPC_PRIVATE`), always created |
 * | `sysv-mq:id/123` | the existing queue with id 123, e.g. a private queue handed to a child |
 *
 * A private queue has no key, so other processes reach it by its id: its
 * `info.address` is the `sysv-mq:id/<id>` form, ready to hand to a child.
 * Key 0 is `IPC_PRIVATE` and only reachable as `sysv-mq:private`.
 *
 * Messages: with the `bytes` codec the payload is exactly the `mtext` of the
 * C `struct msgbuf` and the message type its `mtype`, with no header, so
 * ipcbus interoperates with any program calling msgsnd/msgrcv. Receive
 * filters follow msgrcv(2): `type: 0` the first message of any type, `t > 0`
 * the first of type `t`, `t < 0` the first of the lowest type ≤ |t|, and
 * `{ type: t, except: true }` the first whose type is not `t` (`MSG_EXCEPT`).
 *
 * Limits: a message may be at most `kernel.msgmax` bytes (8192 by default)
 * and at most the queue's `msg_qbytes` (its capacity in bytes,
 * `kernel.msgmnb` = 16384 by default); `info.maxMessageSize` is the smaller,
 * read when the queue is opened, and `info.maxMessageSizeReason` says which
 * limit it is and how to raise it. Larger messages are refused before any
 * system call with `MessageTooLargeError`. A received message is never
 * truncated: if a peer sent a larger one (the limits were raised since),
 * the receive buffer grows, bounded by the queue's limits at that moment.
 *
 * Waiting: receiving and sending try the non-blocking call first, then spin
 * for a short, adaptive budget (`spin`, µs). A receive then parks a helper
 * thread in a blocking msgrcv probe that wakes it when a matching message
 * arrives (see `ffi/sysv_waiter.ts`). The kernel offers no way to wait for
 * room in a full queue, so a waiting `send` polls: for 5 ms with naps of
 * 50–100 µs between turns of the event loop (a nap holds the loop like a
 * spin does, but leaves the CPU to the receivers), then on timers backing
 * off to 5 ms. An `AbortSignal` or `close()` settles either at once, and
 * an aborted send has sent nothing.
 *
 * Zero-length messages: a receive whose wait is cancelled leaves its probe
 * parked in the kernel; a zero-length message the probe then takes is put
 * back on the queue, at its tail (so its position changes).
 *
 * Lifetime: `close()` only ends this process's use (a queue has no
 * descriptor). `unlink()` removes the queue (`IPC_RMID`): every receive and
 * send waiting on it, in any process, settles with `ChannelClosedError`.
 * Queues are never removed implicitly, private ones included.
 *
 * Permissions: opening by key or path needs read and write permission on the
 * queue (a channel does both), checked by the kernel at open; opening by id
 * checks read permission at open and write permission at the first send.
 * `mode` (default `0o600`) is applied exactly; System V ignores the umask.
 *
 * @example Two processes' view of one queue, in one process
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const key = `sysv-mq:0x${(1 + Math.floor(Math.random() * 0x7ffffffe)).toString(16)}`;
 * await using server = await open<string>(key, { create: true, exclusive: true });
 * await using client = await open<string>(key);
 * await client.send("order 1", { type: 2 });
 * await client.send("hello", { type: 1 });
 * console.log(await server.receive({ type: 1 })); // "hello"
 * const order = await server.receiveMessage();
 * console.log(order.value, order.type); // "order 1" 2
 * await server.unlink();
 * ```
 *
 * @module
 */

import { HelperErrno } from "../ffi/_helper_thread.ts";
import {
  ChannelClosedError,
  errnoError,
  FrameError,
  type IpcError,
  MessageTooLargeError,
  NotFoundError,
  PermissionDeniedError,
} from "../errors.ts";
import { delay, napSync } from "../ffi/_delay.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, lastError, type Libc, libc, strerror } from "../ffi/libc.ts";
import {
  decodeIpcPerm,
  DEFAULT_FTOK_PROJECT,
  ftokKey,
  getSysvObject,
  IPC,
  keyHex,
  MSG,
  MSQID_DS,
} from "../ffi/sysv.ts";
import { onDetachedMessage, waitForMessage } from "../ffi/sysv_waiter.ts";
import type {
  ReceivedFrame,
  ReceiveFilter,
  Transport,
  TransportInfo,
  TransportOptions,
} from "../transport.ts";
import { Presence } from "../sync/presence.ts";
import { reopenRemoved } from "./_reopen.ts";
import { Spinner } from "./_stream.ts";
import { DEFAULT_SPIN_MICROS } from "./_stream_transport.ts";

export { ftokKey } from "../ffi/sysv.ts";

/** Options of {@linkcode SysvMessageQueue.open}. */
export interface SysvMessageQueueOptions {
  /** Create the queue when no queue has the key (default false). Private queues are always created. */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when a queue has the key. */
  exclusive?: boolean;
  /** Permission bits of a created queue (default `0o600`; the umask does not apply). */
  mode?: number;
  /**
   * Largest payload this end sends, in bytes; lowered to the kernel's limits
   * (`kernel.msgmax`, the queue's `msg_qbytes`). Received messages are not
   * limited by it: a larger one from a peer is received whole.
   */
  maxMessageSize?: number;
  /** µs to spin on the non-blocking call before parking (default 100; 0 disables). */
  spin?: number;
}

/** What {@linkcode SysvMessageQueue.info} describes: the common fields and the queue's identity. */
export interface SysvMessageQueueInfo extends TransportInfo {
  /** Why `maxMessageSize` is what it is (kernel.msgmax, the queue's msg_qbytes, or the option), and how to raise it. */
  maxMessageSizeReason: string;
  /** The queue id (`sysv-mq:id/<id>` reaches it from any process). */
  id: number;
  /** The key, as an unsigned 32-bit number (0 for a private queue). */
  key: number;
  /** Whether this open created the queue. */
  created: boolean;
  /** The owner's uid when opened. */
  owner: number;
  /** The permission bits when opened. */
  mode: number;
}

/** What {@linkcode SysvMessageQueue.stat} reports (msgctl `IPC_STAT`, as `ipcs -q -i` shows it). */
export interface SysvMessageQueueStat {
  /** The queue id. */
  id: number;
  /** The key (0 for a private queue), as an unsigned 32-bit number. */
  key: number;
  /** Messages on the queue (`msg_qnum`). */
  messages: number;
  /** Bytes of payload on the queue (`__msg_cbytes`). */
  bytes: number;
  /** The queue's capacity in bytes (`msg_qbytes`). */
  maxBytes: number;
  /** Process that sent last (`msg_lspid`; 0 when none has). */
  lastSendPid: number;
  /** Process that received last (`msg_lrpid`; 0 when none has). */
  lastReceivePid: number;
  /** Time of the last send (`msg_stime`), or null. */
  lastSendTime: Date | null;
  /** Time of the last receive (`msg_rtime`), or null. */
  lastReceiveTime: Date | null;
  /** Time of creation or the last `IPC_SET` (`msg_ctime`). */
  changeTime: Date;
  /** Owner (`uid`, `gid`), who may change or remove the queue. */
  owner: { uid: number; gid: number };
  /** Creator (`cuid`, `cgid`). */
  creator: { uid: number; gid: number };
  /** Permission bits (`mode & 0o777`). */
  mode: number;
}

/** The queue an address names. */
type Target =
  | { kind: "key"; key: number }
  | { kind: "ftok"; path: string; project: number }
  | { kind: "private" }
  | { kind: "id"; id: number };

const SCHEME = "sysv-mq";
const ADDRESS_FORMS = `${SCHEME}:0x1a2b, ${SCHEME}:6699, ${SCHEME}:/path/to/file?proj=7, ` +
  `${SCHEME}:private or ${SCHEME}:id/<id>`;

/** Offset of `msgmax` in `struct msginfo` (msgctl `IPC_INFO`). */
const MSGINFO_MSGMAX = 8;
/** Offset of `msgmnb` in `struct msginfo`. */
const MSGINFO_MSGMNB = 12;
/** The receive buffer starts at most this large and grows for larger messages. */
const INITIAL_BUFFER_LIMIT = 64 * 1024;
/** µs between two attempts of a send spinning on a full queue (each failed msgsnd takes the queue's lock). */
const SEND_SPIN_GAP_US = 2;
/** How long a waiting send naps between turns of the event loop before it uses timers, in ms. */
const SEND_NAP_PHASE_MS = 5;
/** One nap, in ms (the kernel's timer slack makes it 50–100 µs). */
const SEND_NAP_MS = 0.01;
/** The longest pause between attempts of a send waiting on timers, in ms. */
const MAX_SEND_PAUSE_MS = 5;
const TWO_32 = 2 ** 32;

/** A scratch `struct msqid_ds` (also big enough for `struct msginfo`). */
const statBuffer = new Uint8Array(MSQID_DS.size);
const statView = new DataView(statBuffer.buffer);

/**
 * One process's use of a System V message queue.
 *
 * @example A private queue shared with a child by id
 * ```ts
 * import { Channel, bytes } from "@ipcbus/ipcbus";
 * import { SysvMessageQueue } from "@ipcbus/ipcbus/sysv-mq";
 *
 * const queue = SysvMessageQueue.open("private");
 * console.log(queue.info.address.startsWith("sysv-mq:id/")); // true: give this to the child
 * using channel = new Channel(queue, { codec: bytes });
 * channel.trySend(new Uint8Array([1, 2, 3]), { type: 9 });
 * console.log(queue.stat().messages); // 1
 * await channel.unlink();
 * ```
 */
export class SysvMessageQueue implements Transport {
  /** Description: capabilities, limits, and `id`, `key`, `mode`, `owner`, `created`. */
  readonly info: SysvMessageQueueInfo;
  readonly #id: number;
  readonly #name: string;
  readonly #closer = new AbortController();
  readonly #receiveSpinner: Spinner;
  readonly #sendSpinner: Spinner;
  // Looked up once: they run on every message.
  readonly #msgsnd: Libc["msgsnd"];
  readonly #msgrcv: Libc["msgrcv"];
  #closed = false;
  // The caller's signal combined with close(), made once per caller's signal.
  #lastSignal: AbortSignal | undefined;
  #lastBoth: AbortSignal | undefined;
  /** The filter of the receive now spinning (read by #retake). */
  #spinFilter: ReceiveFilter = { type: 0, except: false };

  // Receive buffer: 8-byte mtype, then mtext. Views made once, remade on growth.
  #receive: Uint8Array<ArrayBuffer>;
  #receiveWords: Uint32Array<ArrayBuffer>;
  #receiveCapacity: bigint;
  #data: Uint8Array<ArrayBuffer>;
  #filterType = 0;
  #filterTypeBig = 0n;

  // Send buffer: the same layout.
  #send: Uint8Array<ArrayBuffer>;
  #sendWords: Uint32Array<ArrayBuffer>;
  #sendLength = -1;
  #sendLengthBig = 0n;
  /** Failed `trySend` calls in a row (see trySend). */
  #fullTries = 0;
  readonly #presence: Presence | null;

  private constructor(
    id: number,
    address: string,
    key: number,
    created: boolean,
    limits: Limits,
    userLimit: number | undefined,
    spin: number,
  ) {
    this.#id = id;
    this.#name = address.startsWith(`${SCHEME}:id/`) ? address : `${address} (queue id ${id})`;
    this.#receiveSpinner = new Spinner(spin);
    this.#sendSpinner = new Spinner(spin);
    ({ msgsnd: this.#msgsnd, msgrcv: this.#msgrcv } = libc());
    const kernelLimit = Math.min(limits.msgmax, limits.qbytes);
    const maxMessageSize = Math.min(kernelLimit, userLimit ?? kernelLimit);
    let reason: string;
    if (userLimit !== undefined && userLimit < kernelLimit) {
      reason = `${SCHEME}: the maxMessageSize option is ${userLimit} bytes`;
    } else if (limits.msgmax <= limits.qbytes) {
      reason = `${SCHEME}: the kernel's per-message limit kernel.msgmax is ${limits.msgmax} bytes; ` +
        `root can raise it with sysctl kernel.msgmax=<bytes> (a message must also fit the queue's ` +
        `capacity msg_qbytes, now ${limits.qbytes}), then reopen the queue`;
    } else {
      reason = `${SCHEME}: the queue's capacity msg_qbytes is ${limits.qbytes} bytes; its owner can raise ` +
        `it with msgctl(IPC_SET) up to kernel.msgmnb (${limits.msgmnb}), root beyond ` +
        `(sysctl kernel.msgmnb=<bytes> sets the default for new queues), then reopen the queue`;
    }
    this.info = {
      scheme: SCHEME,
      address,
      capabilities: {
        types: true,
        typeFilter: true,
        priority: false,
        multiWriter: true,
        multiReader: true,
        persistent: true,
      },
      maxMessageSize,
      maxType: Number.MAX_SAFE_INTEGER,
      maxPriority: 0,
      maxMessageSizeReason: reason,
      id,
      key,
      created,
      owner: limits.perm.uid,
      mode: limits.perm.mode,
    };
    const receiveSize = 8 + Math.min(kernelLimit, INITIAL_BUFFER_LIMIT);
    this.#receive = new Uint8Array(receiveSize);
    this.#receiveWords = new Uint32Array(this.#receive.buffer, 0, 2);
    this.#receiveCapacity = BigInt(receiveSize - 8);
    this.#data = this.#receive.subarray(8, 8);
    this.#send = new Uint8Array(8 + Math.min(maxMessageSize, INITIAL_BUFFER_LIMIT));
    this.#sendWords = new Uint32Array(this.#send.buffer, 0, 2);
    // The id names this very queue (a queue made again under the same key gets another id).
    this.#presence = Presence.hold(`${SCHEME}:id/${id}`, { mode: limits.perm.mode & 0o666 });
  }

  /**
   * Opens (and with `create`, makes) a queue.
   *
   * @param address A key (a number), or an address with or without the
   *   `sysv-mq:` prefix: `"0x1a2b"`, `"6699"`, `"/path?proj=7"`,
   *   `"private"`, `"id/123"`.
   * @param options Creation, mode, size and spin options.
   * @returns The transport.
   * @throws {TypeError} For a malformed address or an option that does not fit it.
   * @throws {RangeError} For an out-of-range `mode`, `maxMessageSize` or `proj`.
   * @throws {NotFoundError} When no queue has the key (without `create`), the
   *   id, or the ftok path does not exist.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when a queue has the key.
   * @throws {PermissionDeniedError} When this user may not read and write the queue.
   *
   * @example Creating a queue by key
   * ```ts
   * import { SysvMessageQueue } from "@ipcbus/ipcbus/sysv-mq";
   *
   * const key = 1 + Math.floor(Math.random() * 0x7ffffffe);
   * const queue = SysvMessageQueue.open(key, { create: true, exclusive: true, mode: 0o640 });
   * console.log(queue.info.mode.toString(8)); // "640"
   * await queue.unlink();
   * ```
   */
  static open(address: string | number, options: SysvMessageQueueOptions = {}): SysvMessageQueue {
    const target = parseTarget(address);
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
      throw new RangeError(`${SCHEME}: mode must be permission bits from 0 to 0o777, got ${mode}`);
    }
    const userLimit = options.maxMessageSize;
    if (userLimit !== undefined && (!Number.isSafeInteger(userLimit) || userLimit < 0)) {
      throw new RangeError(`${SCHEME}: maxMessageSize must be a non-negative integer, got ${userLimit}`);
    }
    const spin = options.spin ?? DEFAULT_SPIN_MICROS;
    if (typeof spin !== "number" || !(spin >= 0)) {
      throw new RangeError(`${SCHEME}: spin must be a non-negative number of µs, got ${spin}`);
    }
    if (target.kind === "id" && options.create) {
      throw new TypeError(
        `${SCHEME}: an id names an existing queue; create needs a key, a path or "private"`,
      );
    }

    let key = 0;
    const given = typeof address === "number"
      ? `${SCHEME}:0x${address.toString(16)}`
      : address.startsWith(`${SCHEME}:`)
      ? address
      : `${SCHEME}:${address}`;
    let id: number;
    let created = false;
    switch (target.kind) {
      case "id":
        id = target.id;
        break;
      case "private":
        id = msgget(0, IPC.CREAT | mode, "private queue");
        created = true;
        break;
      case "ftok":
      case "key": {
        key = target.kind === "key" ? target.key : ftokOrNotFound(target.path, target.project);
        const what = describeKey(key, target);
        ({ id, created } = getSysvObject(
          { key: key | 0, label: what },
          options,
          mode,
          // Read and write, as a channel does both: a refusal comes here rather than at the first use.
          0o600,
          libc().msgget,
          (failed, code) => getFailure(failed, code, what),
        ));
        break;
      }
    }
    const canonical = target.kind === "private" ? `${SCHEME}:id/${id}` : given;
    const limits = readLimits(id, canonical, target.kind === "id");
    if (target.kind === "id") key = limits.perm.key >>> 0;
    const queue = new SysvMessageQueue(id, canonical, key >>> 0, created, limits, userLimit, spin);
    if (queue.#presence?.contended && !queue.#exists()) {
      queue.close();
      return reopenRemoved(canonical, () => SysvMessageQueue.open(address, options));
    }
    return queue;
  }

  /**
   * Reads the queue's state (msgctl `IPC_STAT`).
   *
   * @returns Counts, limits, last sender and receiver, times, owner and mode.
   * @throws {ChannelClosedError} When the transport was closed or the queue removed.
   * @throws {PermissionDeniedError} When this user may not read the queue.
   *
   * @example Counting queued messages
   * ```ts
   * import { SysvMessageQueue } from "@ipcbus/ipcbus/sysv-mq";
   *
   * const queue = SysvMessageQueue.open("private");
   * queue.trySend(new TextEncoder().encode("hi"), 3, 0);
   * const { messages, bytes, lastSendPid } = queue.stat();
   * console.log(messages, bytes, lastSendPid === Deno.pid); // 1 2 true
   * await queue.unlink();
   * ```
   */
  stat(): SysvMessageQueueStat {
    this.#checkOpen();
    this.#statRaw("msgctl");
    return decodeStat(this.#id);
  }

  /** Fills statBuffer with IPC_STAT; throws the mapped error. */
  #statRaw(syscall: string): void {
    if (libc().msgctl(this.#id, IPC.STAT, statBuffer) === 0) return;
    throw this.#error(errno(), syscall);
  }

  /** Whether the queue still exists (by msgctl's return value, not errno). */
  #exists(): boolean {
    return libc().msgctl(this.#id, IPC.STAT, statBuffer) === 0;
  }

  #checkOpen(): void {
    if (this.#closed) throw new ChannelClosedError(`${this.#name} is closed`);
  }

  /** Maps an errno of an operation on the open queue. */
  #error(code: number, syscall: string): IpcError {
    if (code === E.EIDRM || code === E.EINVAL) {
      return new ChannelClosedError(`${this.#name} was removed`, { errno: code, syscall });
    }
    if (code === E.EACCES || code === E.EPERM) {
      return denied(this.#id, `${SCHEME}: ${syscall} on ${this.#name} was refused`, syscall, code);
    }
    return failure(code, syscall, this.#name);
  }

  // -- receiving ------------------------------------------------------------

  /**
   * Takes a message without waiting.
   *
   * @param filter The msgrcv type filter (`type` 0 for any) and `except`.
   * @returns The frame (its `data` is valid until the next receive), or null when none matches.
   * @throws {ChannelClosedError} When the transport was closed or the queue removed.
   * @throws {RangeError} For `except` with a negative type (msgrcv ignores `MSG_EXCEPT` then).
   * @throws {FrameError} When a peer's message is larger than the queue's limits, or its type is beyond 2^53.
   */
  tryReceive(filter: ReceiveFilter): ReceivedFrame | null {
    this.#checkOpen();
    const type = filter.type;
    if (type !== this.#filterType) this.#setFilter(type);
    let flags = IPC.NOWAIT;
    if (filter.except) {
      if (type <= 0) throw new RangeError(`${SCHEME}: except needs a positive type, got ${type}`);
      flags |= MSG.EXCEPT;
    }
    return this.#take(flags);
  }

  #setFilter(type: number): void {
    this.#filterType = type;
    this.#filterTypeBig = BigInt(type);
  }

  #take(flags: number): ReceivedFrame | null {
    const msgrcv = this.#msgrcv;
    for (let grown = 0, odd = 0;;) {
      const n = Number(msgrcv(this.#id, this.#receive, this.#receiveCapacity, this.#filterTypeBig, flags));
      if (n >= 0) return this.#frame(n);
      const code = errno();
      if (code === E.ENOMSG) return null;
      if (code === E.EINTR) continue;
      if (code === E.E2BIG) {
        this.#grow(++grown);
        continue;
      }
      // errno is read after the call returned, and rarely (while V8 installs
      // optimized code, say) something in between overwrites it: retry an
      // unexpected error before believing it.
      if (++odd < BELIEVE_ERRNO_AFTER) continue;
      throw this.#error(code, "msgrcv");
    }
  }

  #frame(length: number): ReceivedFrame {
    const words = this.#receiveWords;
    const high = words[1];
    const type = words[0] + high * TWO_32;
    if (high > 0x1f_ffff) {
      const exact = (BigInt(high) << 32n) | BigInt(words[0]);
      throw new FrameError(
        `${SCHEME}: a message of type ${exact} was taken from ${this.#name}; ` +
          `types beyond Number.MAX_SAFE_INTEGER cannot be reported exactly, so it was dropped`,
      );
    }
    // Same-sized messages share one view (the data is only valid until the next receive).
    let data = this.#data;
    if (data.length !== length) data = this.#data = this.#receive.subarray(8, 8 + length);
    return { data, type, priority: 0 };
  }

  /**
   * A matching message is larger than the receive buffer (a peer sent it
   * after the limits were raised). Grows the buffer to fit any message now on
   * the queue (at most `__msg_cbytes`), bounded by the queue's current
   * limits; never truncates.
   */
  #grow(attempt: number): void {
    this.#statRaw("msgctl");
    const queued = Number(statView.getBigUint64(MSQID_DS.msg_cbytes, true));
    const qbytes = Number(statView.getBigUint64(MSQID_DS.msg_qbytes, true));
    const msgmax = readMsgInfo().msgmax;
    const bound = Math.max(qbytes, msgmax);
    const capacity = this.#receive.length - 8;
    const wanted = Math.min(queued, bound);
    if (wanted <= capacity) {
      // Taken meanwhile by another receiver, or larger than the queue's
      // limits now (they were lowered after it was sent).
      if (queued <= capacity && attempt < 8) return;
      throw new FrameError(
        `${SCHEME}: a message on ${this.#name} is larger than ${capacity} bytes, the most this receiver ` +
          `accepts now (msg_qbytes ${qbytes}, kernel.msgmax ${msgmax}; they were lowered after it was ` +
          `sent); it was left on the queue`,
      );
    }
    const size = Math.max(wanted, Math.min(capacity * 2, bound));
    this.#receive = new Uint8Array(8 + size);
    this.#receiveWords = new Uint32Array(this.#receive.buffer, 0, 2);
    this.#data = this.#receive.subarray(8, 8);
    this.#receiveCapacity = BigInt(size);
  }

  /**
   * Takes a message, waiting for one that matches the filter.
   *
   * @param filter The msgrcv type filter and `except`.
   * @param signal Aborting it rejects with `signal.reason`.
   * @returns The frame (its `data` is valid until the next receive): itself when taken without
   *   parking (at once or within the spin), else a promise of it.
   * @throws {ChannelClosedError} When the transport is closed or the queue removed, also while waiting.
   */
  receive(filter: ReceiveFilter, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame> {
    try {
      let frame = this.tryReceive(filter);
      if (!frame) {
        this.#spinFilter = filter;
        frame = this.#receiveSpinner.spin(this.#retake) ?? null;
      }
      if (frame) return frame;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#receiveSlowly(filter, signal);
  }

  readonly #retake = (): ReceivedFrame | undefined => this.tryReceive(this.#spinFilter) ?? undefined;

  /** The caller's signal combined with close(), made once per caller's signal. */
  #both(signal: AbortSignal): AbortSignal {
    if (signal !== this.#lastSignal) {
      this.#lastSignal = signal;
      this.#lastBoth = AbortSignal.any([signal, this.#closer.signal]);
    }
    return this.#lastBoth!;
  }

  async #receiveSlowly(filter: ReceiveFilter, signal: AbortSignal): Promise<ReceivedFrame> {
    const both = this.#both(signal);
    const flags = filter.except ? MSG.EXCEPT : 0;
    const type = this.#filterTypeBig; // set for this filter by the tryReceive before
    for (let odd = 0;;) {
      let outcome;
      try {
        outcome = await waitForMessage(this.#id, type, flags, both);
      } catch (error) {
        if (error instanceof HelperErrno) {
          // Believe an error only when the queue's state confirms it (errno may be stale, see #take).
          if (++odd < BELIEVE_ERRNO_AFTER && this.#exists()) continue;
          throw this.#error(error.errno, "msgrcv");
        }
        if (signal.aborted) throw signal.reason;
        if (this.#closed) throw new ChannelClosedError(`${this.#name} is closed`);
        throw error;
      }
      if (outcome.kind === "taken") {
        // The probe took a zero-length message: it is ours.
        this.#receiveSpinner.woke();
        this.#receiveWords[0] = Number(outcome.type & 0xffff_ffffn);
        this.#receiveWords[1] = Number(outcome.type >> 32n);
        return this.#frame(0);
      }
      const frame = this.tryReceive(filter);
      if (frame) {
        this.#receiveSpinner.woke();
        return frame;
      }
      // Another receiver was faster: wait again.
    }
  }

  // -- sending --------------------------------------------------------------

  /** Copies the message into the send buffer (growing it) and sets the size argument. */
  #prepare(data: Uint8Array, type: number): void {
    const length = data.length;
    if (length > this.info.maxMessageSize) {
      // The channel checks this first; a caller using the transport directly may not have.
      throw new MessageTooLargeError(length, this.info.maxMessageSize, this.info.maxMessageSizeReason);
    }
    if (this.#send.length < 8 + length) {
      this.#send = new Uint8Array(
        8 + Math.max(length, Math.min(2 * (this.#send.length - 8), this.info.maxMessageSize)),
      );
      this.#sendWords = new Uint32Array(this.#send.buffer, 0, 2);
    }
    const words = this.#sendWords;
    words[0] = type >>> 0;
    words[1] = (type / TWO_32) >>> 0;
    this.#send.set(data, 8);
    if (length !== this.#sendLength) {
      this.#sendLength = length;
      this.#sendLengthBig = BigInt(length);
    }
  }

  /** One msgsnd from `buffer`: true when sent, false when the queue is full. */
  #attempt(buffer: Uint8Array, length: bigint): boolean {
    const msgsnd = this.#msgsnd;
    for (let odd = 0;;) {
      if (msgsnd(this.#id, buffer, length, IPC.NOWAIT) === 0) return true;
      const code = errno();
      if (code === E.EAGAIN) return false;
      if (code === E.EINTR) continue;
      if (++odd < BELIEVE_ERRNO_AFTER) continue; // see #take
      if (code === E.EINVAL) throw this.#invalidSend(Number(length));
      throw this.#error(code, "msgsnd");
    }
  }

  /**
   * After `EAGAIN`: fails a message that can never fit, because the queue's
   * capacity was lowered below its size since the queue was opened.
   */
  #checkRoom(length: number): void {
    this.#statRaw("msgctl");
    const qbytes = Number(statView.getBigUint64(MSQID_DS.msg_qbytes, true));
    if (length > qbytes) {
      throw new MessageTooLargeError(
        length,
        qbytes,
        `${SCHEME}: the capacity msg_qbytes of ${this.#name} was lowered to ${qbytes} bytes after it was opened`,
      );
    }
  }

  /** After `EINVAL` from msgsnd: the queue was removed, or kernel.msgmax lowered below the size. */
  #invalidSend(length: number): IpcError | MessageTooLargeError {
    if (!this.#exists()) return this.#error(E.EINVAL, "msgsnd");
    const msgmax = readMsgInfo().msgmax;
    if (length > msgmax) {
      return new MessageTooLargeError(
        length,
        msgmax,
        `${SCHEME}: kernel.msgmax was lowered to ${msgmax} bytes after ${this.#name} was opened`,
      );
    }
    return failure(E.EINVAL, "msgsnd", this.#name);
  }

  /**
   * Sends without waiting.
   *
   * @param data The payload (at most `info.maxMessageSize` bytes).
   * @param type The message type, 1 to `Number.MAX_SAFE_INTEGER`.
   * @param _priority Unused (System V queues have no priorities).
   * @returns False when the queue is full (nothing was sent).
   * @throws {ChannelClosedError} When the transport was closed or the queue removed.
   * @throws {PermissionDeniedError} When this user may not write to the queue.
   * @throws {MessageTooLargeError} When the queue is full and its capacity (`msg_qbytes`) was lowered
   *   below the message's size since it was opened: checked on the first failed try in a row, then on
   *   every 64th.
   */
  trySend(data: Uint8Array, type: number, _priority: number): boolean {
    this.#checkOpen();
    this.#prepare(data, type);
    if (this.#attempt(this.#send, this.#sendLengthBig)) {
      this.#fullTries = 0;
      return true;
    }
    // Whether it can ever fit (msg_qbytes lowered since the queue was opened) costs a system call: a
    // caller polling a full queue pays it on the first failure and then on every 64th only.
    if ((this.#fullTries++ & 63) === 0) this.#checkRoom(data.length);
    return false;
  }

  /**
   * Sends, waiting for room when the queue is full.
   *
   * @param data The payload.
   * @param type The message type.
   * @param _priority Unused.
   * @param signal Aborting it rejects with `signal.reason`; nothing is sent then.
   * @returns `undefined` when sent at once, else a promise settling when sent.
   * @throws {ChannelClosedError} When the transport is closed or the queue removed, also while waiting.
   */
  send(data: Uint8Array, type: number, _priority: number, signal: AbortSignal): Promise<void> | undefined {
    this.#checkOpen();
    this.#prepare(data, type);
    const buffer = this.#send;
    const length = this.#sendLengthBig;
    if (this.#attempt(buffer, length)) return undefined;
    // Full. Spin a little, with gaps: a receiver is likely making room, and
    // back-to-back failing msgsnd calls would contend for the queue's lock.
    if (this.#sendSpinner.spin(this.#resend)) return undefined;
    this.#checkRoom(data.length);
    // Keep a copy: the send buffer is shared with later calls.
    return this.#sendSlowly(buffer.slice(0, 8 + data.length), length, signal);
  }

  /** One more msgsnd of the prepared message, or a gap (for the send spin). */
  readonly #resend = (): true | undefined =>
    this.#attempt(this.#send, this.#sendLengthBig) || gap(SEND_SPIN_GAP_US);

  /**
   * Waits for room by polling: the kernel cannot wake a non-blocking sender.
   * First short naps between turns of the event loop (each blocks the loop
   * for 50–100 µs, like a spin, but leaves the CPU to the receiver), then
   * timers backing off to {@linkcode MAX_SEND_PAUSE_MS}.
   */
  async #sendSlowly(buffer: Uint8Array, length: bigint, signal: AbortSignal): Promise<void> {
    const both = this.#both(signal);
    const start = performance.now();
    let pause = 0;
    for (;;) {
      try {
        if (performance.now() - start < SEND_NAP_PHASE_MS) {
          await nextTurn(both);
          napSync(SEND_NAP_MS);
          both.throwIfAborted();
        } else {
          pause = Math.min(MAX_SEND_PAUSE_MS, pause * 2 || 1);
          await delay(pause, both);
          this.#checkRoom(buffer.length - 8);
        }
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        throw new ChannelClosedError(`${this.#name} is closed`, { cause: error });
      }
      this.#checkOpen();
      if (this.#attempt(buffer, length)) {
        this.#sendSpinner.woke();
        return;
      }
    }
  }

  // -- lifetime -------------------------------------------------------------

  /** Ends this process's use of the queue (it stays until `unlink()`); waiting calls settle. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#presence?.release();
    // The queue removed by someone else (ipcrm, a C peer) while we had it:
    // drop its presence record, which nobody can use any more.
    if (this.#presence && !this.#exists()) {
      Presence.forget(`${SCHEME}:id/${this.#id}`);
    }
    this.#closer.abort(new ChannelClosedError(`${this.#name} is closed`));
  }

  /**
   * Removes the queue (msgctl `IPC_RMID`): queued messages are lost, and
   * every process's waiting receives and sends settle with
   * `ChannelClosedError`. Works after `close()` too.
   *
   * @returns Settles once removed.
   * @throws {NotFoundError} When the queue was removed already.
   * @throws {PermissionDeniedError} When this user is neither its owner nor its creator (nor root).
   */
  unlink(): Promise<void> {
    if (libc().msgctl(this.#id, IPC.RMID, null) === 0) {
      Presence.forget(`${SCHEME}:id/${this.#id}`);
      return Promise.resolve();
    }
    const code = errno();
    if (code === E.EINVAL || code === E.EIDRM) {
      return Promise.reject(
        new NotFoundError(`${SCHEME}: ${this.#name} was removed already`, { errno: code, syscall: "msgctl" }),
      );
    }
    if (code === E.EPERM) {
      return Promise.reject(
        denied(
          this.#id,
          `${SCHEME}: only the owner, the creator or root may remove ${this.#name}`,
          "msgctl",
          code,
        ),
      );
    }
    return Promise.reject(failure(code, "msgctl", `IPC_RMID ${this.#name}`));
  }
}

// -- helpers ----------------------------------------------------------------

interface Limits {
  msgmax: number;
  msgmnb: number;
  qbytes: number;
  perm: ReturnType<typeof decodeIpcPerm>;
}

function parseTarget(address: string | number): Target {
  if (typeof address === "number") {
    if (!Number.isInteger(address) || address < 1 || address > 0xffff_ffff) {
      throw new TypeError(
        `${SCHEME}: a key must be an integer from 1 to 0xffffffff (0 is IPC_PRIVATE: use "private"), got ${address}`,
      );
    }
    return { kind: "key", key: address };
  }
  if (typeof address !== "string") throw new TypeError(`${SCHEME}: the address must be a string or a number`);
  const rest = address.startsWith(`${SCHEME}:`) ? address.slice(SCHEME.length + 1) : address;
  const bad = (why: string) =>
    new TypeError(`${SCHEME}: bad address "${address}": ${why}; expected ${ADDRESS_FORMS}`);
  if (rest === "private") return { kind: "private" };
  let match = /^id\/(\d{1,10})$/.exec(rest);
  if (match) {
    const id = Number(match[1]);
    if (id > 0x7fff_ffff) throw bad("a queue id is at most 2147483647");
    return { kind: "id", id };
  }
  match = /^(?:0[xX]([0-9a-fA-F]{1,8})|(\d{1,10}))$/.exec(rest);
  if (match) {
    const key = match[1] !== undefined ? parseInt(match[1], 16) : Number(match[2]);
    if (key === 0) throw bad(`key 0 is IPC_PRIVATE; use ${SCHEME}:private for a new private queue`);
    if (key > 0xffff_ffff) throw bad("a key is at most 0xffffffff");
    return { kind: "key", key };
  }
  if (rest.startsWith("/")) {
    const question = rest.indexOf("?");
    const path = question < 0 ? rest : rest.slice(0, question);
    let project = DEFAULT_FTOK_PROJECT;
    if (question >= 0) {
      const query = rest.slice(question + 1);
      const parsed = /^proj=(?:0[xX]([0-9a-fA-F]{1,2})|(\d{1,3}))$/.exec(query);
      if (!parsed) throw bad(`the only parameter of an ftok address is proj=<1..255>, got "?${query}"`);
      project = parsed[1] !== undefined ? parseInt(parsed[1], 16) : Number(parsed[2]);
      if (project < 1 || project > 255) throw bad(`proj must be from 1 to 255, got ${project}`);
    }
    if (path.includes("\0")) throw bad("the path contains a NUL character");
    return { kind: "ftok", path, project };
  }
  if (rest === "") throw bad("nothing after the scheme");
  if (/^-\d+$/.test(rest)) throw bad("keys are written unsigned; write a negative key_t in hex");
  throw bad("not a key, a path, private or id/<id>");
}

function describeKey(key: number, target: Target): string {
  const hex = `key ${keyHex(key)}`;
  return target.kind === "ftok" ? `${hex} (ftok("${target.path}", ${target.project}))` : hex;
}

function ftokOrNotFound(path: string, project: number): number {
  try {
    return ftokKey(path, project);
  } catch (error) {
    if (error instanceof NotFoundError) {
      throw new NotFoundError(
        `${SCHEME}: ftok needs an existing file, and ${path} does not exist (create the file first)`,
        { errno: error.errno, syscall: "ftok", cause: error },
      );
    }
    throw error;
  }
}

/** The error for a failed msgget by key (`what` names the key). */
function getFailure(key: number, code: number, what: string): IpcError {
  if (code === E.ENOENT) {
    return new NotFoundError(
      `${SCHEME}: no queue has ${what} (open with { create: true } to make it)`,
      { errno: code, syscall: "msgget" },
    );
  }
  if (code === E.EACCES) {
    const peek = libc().msgget(key, 0);
    return denied(peek >= 0 ? peek : -1, `${SCHEME}: this process may not read and write ${what}`, "msgget");
  }
  return failure(code, "msgget", what);
}

function msgget(key: number, flags: number, what: string): number {
  const id = libc().msgget(key, flags);
  if (id < 0) throw lastError("msgget", `${SCHEME} ${what}`);
  return id;
}

function failure(code: number, syscall: string, detail: string): IpcError {
  return errnoError(code, syscall, `${SCHEME} ${detail}`, strerror(code));
}

/** `struct msginfo` (msgctl `IPC_INFO`): the system-wide limits. */
function readMsgInfo(): { msgmax: number; msgmnb: number } {
  const info = new Uint8Array(MSQID_DS.size);
  if (libc().msgctl(0, IPC.INFO, info) < 0) throw lastError("msgctl", "IPC_INFO");
  const view = new DataView(info.buffer);
  return { msgmax: view.getInt32(MSGINFO_MSGMAX, true), msgmnb: view.getInt32(MSGINFO_MSGMNB, true) };
}

/** Limits and permissions of an opened queue (IPC_STAT), for the constructor. */
function readLimits(id: number, address: string, byId: boolean): Limits {
  const { msgctl } = libc();
  if (msgctl(id, IPC.STAT, statBuffer) !== 0) {
    const code = errno();
    if (code === E.EINVAL || code === E.EIDRM) {
      throw new NotFoundError(
        byId
          ? `${SCHEME}: no queue has id ${id} (${address})`
          : `${SCHEME}: ${address} was removed while opening`,
        { errno: code, syscall: "msgctl" },
      );
    }
    if (code === E.EACCES) {
      throw denied(id, `${SCHEME}: this process may not read ${address}`, "msgctl", code);
    }
    throw failure(code, "msgctl", `IPC_STAT ${address}`);
  }
  const qbytes = Number(statView.getBigUint64(MSQID_DS.msg_qbytes, true));
  const perm = decodeIpcPerm(statView);
  return { ...readMsgInfo(), qbytes, perm };
}

function decodeStat(id: number): SysvMessageQueueStat {
  const view = statView;
  const perm = decodeIpcPerm(view);
  const time = (offset: number) => {
    const seconds = Number(view.getBigInt64(offset, true));
    return seconds === 0 ? null : new Date(seconds * 1000);
  };
  return {
    id,
    key: perm.key >>> 0,
    messages: Number(view.getBigUint64(MSQID_DS.msg_qnum, true)),
    bytes: Number(view.getBigUint64(MSQID_DS.msg_cbytes, true)),
    maxBytes: Number(view.getBigUint64(MSQID_DS.msg_qbytes, true)),
    lastSendPid: view.getInt32(MSQID_DS.msg_lspid, true),
    lastReceivePid: view.getInt32(MSQID_DS.msg_lrpid, true),
    lastSendTime: time(MSQID_DS.msg_stime),
    lastReceiveTime: time(MSQID_DS.msg_rtime),
    changeTime: new Date(Number(view.getBigInt64(MSQID_DS.msg_ctime, true)) * 1000),
    owner: { uid: perm.uid, gid: perm.gid },
    creator: { uid: perm.cuid, gid: perm.cgid },
    mode: perm.mode,
  };
}

/**
 * A PermissionDeniedError naming the queue's owner and mode, read with
 * `MSG_STAT_ANY` (no read permission needed; Linux 4.17 and later).
 */
function denied(id: number, what: string, syscall: string, code: number = E.EACCES): PermissionDeniedError {
  const euid = libc().geteuid();
  let owner = "";
  if (id >= 0) {
    const buffer = new Uint8Array(MSQID_DS.size);
    if (libc().msgctl(id, MSG.STAT_ANY, buffer) === id) {
      const perm = decodeIpcPerm(new DataView(buffer.buffer));
      owner = `: the queue belongs to uid ${perm.uid} gid ${perm.gid} (creator uid ${perm.cuid}) with mode ` +
        `0o${perm.mode.toString(8).padStart(3, "0")}`;
    }
  }
  return new PermissionDeniedError(`${what}${owner}; this process runs as uid ${euid}`, {
    errno: code,
    syscall,
  });
}

/** Busy-waits `micros` µs; returns undefined (for `Spinner.spin`). */
function gap(micros: number): undefined {
  const end = performance.now() + micros / 1000;
  while (performance.now() < end) { /* wait */ }
  return undefined;
}

function nextTurn(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve) => setImmediate(resolve));
}

// A zero-length message taken by a probe whose receive was cancelled goes
// back on its queue (at the tail). A full queue is retried with backoff for
// a while; a removed queue needs nothing.
const PUT_BACK_TRIES = 40;
onDetachedMessage((qid, type) => putBack(qid, type, 0));

function putBack(qid: number, type: bigint, tries: number): void {
  const message = new BigInt64Array([type]);
  const bytes = new Uint8Array(message.buffer);
  for (;;) {
    if (libc().msgsnd(qid, bytes, 0n, IPC.NOWAIT) === 0) return;
    const code = errno();
    if (code === E.EINTR) continue;
    if (code === E.EAGAIN && tries < PUT_BACK_TRIES) {
      setTimeout(() => putBack(qid, type, tries + 1), Math.min(MAX_SEND_PAUSE_MS * 10, 1 + tries * 5));
    }
    return;
  }
}

/**
 * Factory for `sysv-mq:` addresses (registered with `open()`).
 *
 * @param address `sysv-mq:0x1a2b`, `sysv-mq:6699`, `sysv-mq:/path?proj=7`,
 *   `sysv-mq:private` or `sysv-mq:id/<id>`.
 * @param options The options given to `open()` ({@linkcode SysvMessageQueueOptions}).
 * @returns The transport.
 * @throws {TypeError} For a malformed address.
 * @throws {NotFoundError} When the queue does not exist and `create` is not set.
 * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
 * @throws {PermissionDeniedError} When this user may not use the queue.
 *
 * @example
 * ```ts
 * import { openSysvMessageQueue } from "@ipcbus/ipcbus/sysv-mq";
 *
 * const queue = openSysvMessageQueue("sysv-mq:private", { mode: 0o600 });
 * console.log(queue.info.scheme); // "sysv-mq"
 * await queue.unlink();
 * ```
 */
export function openSysvMessageQueue(address: string, options: TransportOptions): SysvMessageQueue {
  if (!address.startsWith(`${SCHEME}:`)) {
    throw new TypeError(`${SCHEME}: expected an address starting with "${SCHEME}:", got "${address}"`);
  }
  return SysvMessageQueue.open(address, options as SysvMessageQueueOptions);
}
