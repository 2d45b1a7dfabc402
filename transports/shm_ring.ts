/**
 * The `shm:` transport: a ring of variable-size frames in a POSIX shared
 * memory object (shm_open(3) + mmap(2)), guarded by atomics, with a System
 * V semaphore set (one semaphore per process using the ring) to wake parked
 * processes. ipcbus's fast path: once the ring is open, sending is a copy
 * into shared memory plus a few atomic operations, and receiving a copy out
 * of it; no system call and no FFI call per message. Semaphores are only
 * touched to put an idle side to sleep and to wake it.
 *
 * Addresses: `shm:/orders`, with optional parameters
 * `shm:/orders?capacity=1MiB&mode=broadcast&overflow=drop` (the options of
 * the same names win when both are given and agree; disagreeing is a
 * `TypeError`).
 *
 * Delivery:
 *
 * - **queue** (default): any number of producers and consumers; each
 *   message goes to exactly one consumer; messages of one producer arrive
 *   in the order it sent them (all producers share one order).
 * - **broadcast** (`mode: "broadcast"`): every subscriber gets every message
 *   sent after it subscribed. A process subscribes at its first receive (or
 *   at open with `subscribe: true`); a process that only sends never holds
 *   the ring back. With `overflow: "block"` (the default) producers wait for
 *   the slowest live subscriber, so nothing is lost; with `overflow: "drop"`
 *   producers never wait, and a subscriber that fell a whole ring behind
 *   skips to the oldest message still there and is told exactly how many it
 *   missed (`onMissed`, {@linkcode ShmRing.missed}).
 *
 * Type filters are not supported (`capabilities.typeFilter` is false);
 * types are carried (1 to 2^32 − 1), priorities are not.
 *
 * Crash safety: producers serialize on a writer lock (a word taken with
 * compare-and-swap), queue consumers on a reader lock. A frame becomes
 * visible only when the write position moves past it, so a producer killed
 * mid-frame exposes nothing; a consumer moves the read position only after
 * copying the frame out, so a consumer killed mid-receive took nothing.
 * Every process owns a slot holding an open-file-description lock on one
 * byte of the object, which the kernel drops when the process dies: a lock
 * held by a dead process is taken over by the next process that needs it
 * within about {@linkcode HOLDER_CHECK_MS} ms of trying. `docs/shm-ring.md`
 * specifies the layout and the recovery rules; {@linkcode inspectShmRing}
 * tells from outside whether anyone still uses a ring.
 *
 * Hostile peers: every position, length and offset read from the segment
 * is read once and bounds-checked; a scribbled header or frame is a
 * `FrameError`, never a crash, a hang or an allocation beyond the ring's
 * size. Any process with write permission can still shrink the object
 * (`ftruncate`), which kills mappers with SIGBUS: give write permission
 * only to programs you trust.
 *
 * @example A queue between two handles (two processes would do the same)
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const address = `shm:/ipcbus-doc-${crypto.randomUUID()}?capacity=64KiB`;
 * await using producer = await open<{ id: number }>(address, { create: true, exclusive: true });
 * await using consumer = await open<{ id: number }>(address);
 * await producer.send({ id: 1 });
 * console.log(await consumer.receive()); // { id: 1 }
 * await producer.unlink();
 * ```
 *
 * @module
 */

import { ChannelClosedError, errnoError, FrameError, IpcError, MessageTooLargeError } from "../errors.ts";
import { delay, napSync } from "../ffi/_delay.ts";
import {
  backingPath,
  checkPosixName,
  openSharedMemoryObject as openObject,
  sizeSharedMemory,
} from "../ffi/_posix_object.ts";
import {
  createSemaphores,
  lockBytes,
  lockedByte,
  postSemaphore,
  removeSemaphores,
  resetSemaphore,
  semaphoreCount,
  unlinkObject,
} from "../ffi/_ring_sys.ts";
import { SemaphoreWaiter, type WaitOutcome } from "../ffi/_ring_waiter.ts";
import {
  addBell,
  leaveDoorbell,
  removeBell,
  ringBell,
  startDoorbell,
  useDoorbell,
} from "../ffi/_doorbell.ts";
import { E, libc, strerror } from "../ffi/libc.ts";
import { closeFd, type FileStat, fstatFd, lstatPath } from "../ffi/fd.ts";
import { Mapping } from "../ffi/mmap.ts";
import { Presence } from "../sync/presence.ts";
import { reopenRemoved } from "./_reopen.ts";
import type {
  ReceivedFrame,
  ReceiveFilter,
  Transport,
  TransportInfo,
  TransportOptions,
} from "../transport.ts";
import * as L from "./_ring_layout.ts";
import { Spinner } from "./_stream.ts";
import { DEFAULT_SPIN_MICROS } from "./_stream_transport.ts";

/** Default ring capacity: 1 MiB. */
export const DEFAULT_CAPACITY = 1 << 20;
/** Default number of user slots (processes that may have the ring open at once). */
export const DEFAULT_USERS = 64;
/** A lock held this long (ms) by the same holder is checked: a dead or stale holder loses it. */
export const HOLDER_CHECK_MS = 10;
/** A parked wait re-checks the ring at least this often (ms), for lost wake-ups and dead peers. */
export const PARK_MS = 100;
/** How long (µs) a non-waiting call spins on a contended lock before it reports "not now". */
export const LOCK_SPIN_MICROS = 20;
/** When the ring's semaphore set was removed by hand, parked waits poll this often (ms). */
const POLL_MS = 2;

/** How messages are delivered. */
export type ShmRingMode = "queue" | "broadcast";
/** What producers do when a broadcast subscriber is a whole ring behind. */
export type ShmRingOverflow = "block" | "drop";

/** Options of {@linkcode ShmRing.open}. */
export interface ShmRingOptions {
  /** Create the ring when the name is free (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when the name is taken. */
  exclusive?: boolean;
  /**
   * A number: the permission bits of a created ring (default `0o600`,
   * applied exactly). A string: the delivery mode, `"queue"` (default) or
   * `"broadcast"` (then give the permission bits as `permissions`).
   */
  mode?: number | ShmRingMode;
  /** Permission bits of a created ring, when `mode` names the delivery mode. */
  permissions?: number;
  /**
   * Ring bytes: a number or a string such as `"64KiB"`, `"1MiB"`; rounded up
   * to a power of two, 4 KiB to 1 GiB (default 1 MiB). When opening an
   * existing ring it must match (or be omitted).
   */
  capacity?: number | string;
  /** Broadcast: `"block"` (default: nothing is lost) or `"drop"` (producers never wait). */
  overflow?: ShmRingOverflow;
  /**
   * Largest payload this end sends. A created ring's limit is
   * `capacity / 2 − 16` and cannot be raised; this only lowers it.
   */
  maxMessageSize?: number;
  /** When creating: how many processes may have the ring open at once (32 to 1024, default 64). */
  users?: number;
  /**
   * Broadcast: `true` subscribes at open (every message sent after `open`
   * returns is received; open waits up to `initTimeout`, at least 1 s, for
   * a producer holding the writer lock); `false` never (send only: a
   * receive throws `TypeError`); default: at the first receive.
   */
  subscribe?: boolean;
  /** µs to spin before parking (default 100; 0 disables). */
  spin?: number;
  /** When creating: allocate the memory now (default true), so a full /dev/shm fails here, not with SIGBUS. */
  reserve?: boolean;
  /** Broadcast with `overflow: "drop"`: called with the number of messages skipped, each time some are. */
  onMissed?: (missed: number) => void;
  /** ms to wait for a ring being created by another process to be ready (default 1000). */
  initTimeout?: number;
  /**
   * Wake and be woken through a Unix socket in the abstract namespace
   * (default true): waking a parked receive or send of this handle then
   * costs one thread wake-up instead of two (a parked round trip took
   * 105–107 µs instead of 127–132 µs on the project's test machine). False:
   * only through the ring's semaphores, opening no socket (what C peers do;
   * see docs/shm-ring.md, "Doorbells").
   */
  doorbell?: boolean;
}

/** What {@linkcode ShmRing.info} describes. */
export interface ShmRingInfo extends TransportInfo {
  /** Why `maxMessageSize` is what it is. */
  maxMessageSizeReason: string;
  /** The shared memory name (`"/orders"`). */
  name: string;
  /** Ring bytes. */
  capacity: number;
  /** Delivery mode. */
  mode: ShmRingMode;
  /** Broadcast overflow policy (`"block"` for queues, where it is what happens). */
  overflow: ShmRingOverflow;
  /** User slots. */
  users: number;
  /** This handle's slot. */
  slot: number;
  /** Whether this open created the ring. */
  created: boolean;
  /** The id of the ring's System V semaphore set (`ipcs -s -i <id>`). */
  semaphoreSet: number;
}

/** One process using a ring, as {@linkcode ShmRing.stat} and {@linkcode inspectShmRing} report it. */
export interface ShmRingUser {
  /** Its slot. */
  slot: number;
  /** The process id it recorded (informational: liveness comes from its lock, not from the id). */
  pid: number;
  /** Whether it is this handle. */
  self: boolean;
  /** Whether it is a broadcast subscriber. */
  subscribed: boolean;
  /** Broadcast subscribers: bytes of committed frames it has not read yet. */
  lag: number;
  /** Whether its parked waits are woken through its process's doorbell socket (else its semaphore only). */
  doorbell: boolean;
}

/** A ring's state. */
export interface ShmRingStat {
  /** The shared memory name. */
  name: string;
  /** Ring bytes. */
  capacity: number;
  /** Largest payload. */
  maxMessageSize: number;
  /** Delivery mode. */
  mode: ShmRingMode;
  /** Overflow policy. */
  overflow: ShmRingOverflow;
  /** User slots. */
  slots: number;
  /** Messages committed since creation (the next message's sequence number). */
  messages: number;
  /** Queue: bytes of frames not yet taken. Broadcast: 0. */
  pendingBytes: number;
  /** Live users (processes holding a slot lock). */
  users: ShmRingUser[];
  /** Whether any live process has the ring open (apart from the asking handle itself). */
  inUse: boolean;
  /** Whether the ring was unlinked (closed for everyone). */
  removed: boolean;
  /** The id of its System V semaphore set. */
  semaphoreSet: number;
}

const SCHEME = "shm";
const NAME_RULE = {
  what: "shm: ring",
  max: 255,
  reason: "glibc stores /name as /dev/shm/name and a file name has at most 255 bytes",
} as const;

// Int32 indices of the header fields.
const iVERSION = L.H_VERSION >> 2;
const iFLAGS = L.H_FLAGS >> 2;
const iW_LOCK = L.W_LOCK >> 2;
const iW_WRITE = L.W_WRITE >> 2;
const iW_SEQ_LO = L.W_SEQ_LO >> 2;
const iW_SEQ_HI = L.W_SEQ_HI >> 2;
const iW_LAST = L.W_LAST >> 2;
const iW_TAIL = L.W_TAIL >> 2;
const iW_SPACE_WAITERS = L.W_SPACE_WAITERS >> 2;
const iR_LOCK = L.R_LOCK >> 2;
const iR_READ = L.R_READ >> 2;
const iR_DATA_WAITERS = L.R_DATA_WAITERS >> 2;
const iDATA_MASK = L.DATA_MASK >> 2;
const iSPACE_MASK = L.SPACE_MASK >> 2;
const iSUB_MASK = L.SUB_MASK >> 2;

const TWO_32 = 2 ** 32;
/** Results of the internal non-waiting attempts. */
const SENT = 1;
const FULL = 0;
const BUSY = -1;
const EMPTY = 0;
/** Payloads up to this many bytes are copied out word by word (no view allocated). */
const WORD_COPY_LIMIT = 256;
/**
 * One `trySendBatch` places frames until this many payload bytes (then
 * publishes and returns): a consumer copying large messages out works
 * alongside the producer copying the next ones in, instead of waiting for a
 * whole ring's worth. Measured with 64 KiB messages: +41% through `Channel`
 * (copying out), −19% for a consumer that copies nothing; small messages
 * (256 × 64 B per batch) never reach it.
 */
const BATCH_BYTES = 256 * 1024;
const EMPTY_BYTES = new Uint8Array(0);

/**
 * One process's handle on a shared-memory ring.
 *
 * @example Broadcast: every subscriber gets every message
 * ```ts
 * import { ShmRing } from "@ipcbus/ipcbus/shm-ring";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * using publisher = ShmRing.open(name, { create: true, mode: "broadcast", subscribe: false });
 * using a = ShmRing.open(name, { subscribe: true });
 * using b = ShmRing.open(name, { subscribe: true });
 * publisher.trySend(new TextEncoder().encode("tick"), 1, 0);
 * const text = (r: ShmRing) => new TextDecoder().decode(r.tryReceive({ type: 0, except: false })!.data);
 * console.log(text(a), text(b)); // "tick" "tick"
 * await publisher.unlink();
 * ```
 */
export class ShmRing implements Transport {
  /** Description: capabilities, limits, and the ring's name, capacity, mode and slot. */
  readonly info: ShmRingInfo;

  readonly #name: string;
  readonly #fd: number;
  /** The shared memory object's device and inode (to tell whether its name still refers to it). */
  readonly #identity: { dev: bigint; ino: bigint };
  readonly #presence: Presence | null;
  readonly #mapping: Mapping;
  readonly #h: Int32Array<ArrayBuffer>;
  readonly #u8: Uint8Array<ArrayBuffer>;
  readonly #base: number;
  readonly #cap: number;
  readonly #mask: number;
  readonly #max: number;
  readonly #sendMax: number;
  readonly #slots: number;
  readonly #maskWords: number;
  readonly #slot: number;
  readonly #slotI: number;
  /** Int32 indices of this slot's cursor and flags words. */
  readonly #cursorI: number;
  readonly #flagsI: number;
  readonly #bitWord: number;
  readonly #bit: number;
  readonly #token: number;
  readonly #broadcast: boolean;
  readonly #drop: boolean;
  readonly #semid: number;
  /** Whether this handle removed the semaphore set (unlink, or the last close of an orphaned ring). */
  #semaphoresRemoved = false;
  readonly #geometry: Geometry;
  /** The semaphore set was removed behind the ring's back: parked waits poll instead. */
  #polling = false;
  #waiter: SemaphoreWaiter | undefined;
  /** Whether this handle uses the process's doorbell (`doorbell` option). */
  readonly #doorbell: boolean;
  /** This handle's doorbell number: 0 none yet, −1 asked for (or none to be had). */
  #bell = 0;
  #lastSignal: AbortSignal | undefined;
  #lastBoth: AbortSignal | undefined;
  readonly #closer = new AbortController();
  readonly #receiveSpinner: Spinner;
  readonly #sendSpinner: Spinner;
  readonly #onMissed: ((missed: number) => void) | undefined;
  #closed = false;
  #released = false;
  /** Parked waits and running batches: the mapping stays until they are done. */
  #pins = 0;
  #inSink = false;

  // Producer state (valid while holding the writer lock).
  #limit = 0; // the position up to which this producer may write (validated against write on use)
  #w = 0;
  #seqLo = 0;
  #seqHi = 0;
  #last = 0;
  #blocker = -1; // broadcast block: the subscriber holding producers back
  #retryData: Uint8Array = EMPTY_BYTES; // send: the payload being spun on
  #retryType = 0;

  // Consumer state.
  #writeCache = 0;
  #subscribed = false;
  /** Broadcast `subscribe: false`: this handle never receives. */
  readonly #sendOnly: boolean;
  #cursor = 0; // broadcast: this subscriber's position
  #expectLo = 0; // broadcast: the sequence number of the next message
  #expectHi = 0;
  #missed = 0;
  #scratch: Uint8Array<ArrayBuffer>;
  /** The length and type of the frame `#frameAt` last checked. */
  #frameLength = 0;
  #frameType = 0;
  /** The frame object handed to batch sinks (reused: valid only during the call). */
  readonly #lent: ReceivedFrame = { data: new Uint8Array(0), type: 1, priority: 0 };
  #scratchWords: Int32Array<ArrayBuffer>;
  #view: Uint8Array<ArrayBuffer>;

  // Lock suspicion: [writer, reader] → the holder seen, and since when.
  readonly #suspectValue = [0, 0];
  readonly #suspectSince = [0, 0];
  #steals = 0;

  private constructor(
    name: string,
    fd: number,
    mapping: Mapping,
    geometry: Geometry,
    slot: number,
    token: number,
    created: boolean,
    permissions: number,
    sendMax: number,
    options: ShmRingOptions,
  ) {
    this.#name = name;
    this.#fd = fd;
    const { dev, ino } = fstatFd(fd);
    this.#identity = { dev, ino };
    this.#mapping = mapping;
    const buffer = mapping.buffer;
    this.#h = new Int32Array(buffer);
    this.#u8 = new Uint8Array(buffer);
    // Read once and checked (validate): never re-read from the segment.
    this.#base = geometry.base;
    this.#cap = geometry.capacity;
    this.#mask = this.#cap - 1;
    this.#max = geometry.max;
    this.#slots = geometry.slots;
    this.#maskWords = this.#slots >> 5;
    this.#broadcast = geometry.broadcast;
    this.#drop = geometry.drop;
    this.#slot = slot;
    this.#slotI = (L.SLOT_TABLE + slot * L.SLOT_SIZE) >> 2;
    this.#cursorI = this.#slotI + (L.S_CURSOR >> 2);
    this.#flagsI = this.#slotI + (L.S_FLAGS >> 2);
    this.#bitWord = slot >> 5;
    this.#bit = 1 << (slot & 31);
    this.#token = token;
    this.#sendMax = sendMax;
    this.#onMissed = options.onMissed;
    const spin = options.spin ?? DEFAULT_SPIN_MICROS;
    this.#receiveSpinner = new Spinner(spin);
    this.#sendSpinner = new Spinner(spin);
    this.#semid = geometry.semid;
    this.#geometry = geometry;
    this.#doorbell = options.doorbell ?? true;
    this.#sendOnly = this.#broadcast && options.subscribe === false;
    const initial = Math.min(this.#max, 64 * 1024);
    this.#scratch = new Uint8Array(roundUp16(initial));
    this.#scratchWords = new Int32Array(this.#scratch.buffer);
    this.#view = this.#scratch.subarray(0, 0);
    const reason = sendMax < this.#max
      ? `${SCHEME}: the maxMessageSize option is ${sendMax} bytes`
      : `${SCHEME}: a frame may take at most half of the ring (capacity ${this.#cap} bytes, ` +
        `16-byte frame header); create the ring with a larger capacity for larger messages`;
    this.info = {
      scheme: SCHEME,
      address: `${SCHEME}:${name}`,
      capabilities: {
        types: true,
        typeFilter: false,
        priority: false,
        multiWriter: true,
        multiReader: !this.#broadcast,
        persistent: true,
      },
      maxMessageSize: sendMax,
      maxType: 0xffff_ffff,
      maxPriority: 0,
      maxMessageSizeReason: reason,
      name,
      capacity: this.#cap,
      mode: this.#broadcast ? "broadcast" : "queue",
      overflow: this.#drop ? "drop" : "block",
      users: this.#slots,
      slot,
      created,
      semaphoreSet: geometry.semid,
    };
    // Presence, as every ipcbus transport records it, for `ipcbus ls`/`gc` (the slot locks answer
    // the same question from inside the ring: see inspectShmRing).
    this.#presence = Presence.hold(`${SCHEME}:${name}`, { mode: permissions & 0o666 });
    if (this.#doorbell) useDoorbell();
  }

  /**
   * Opens (and with `create`, makes) a ring.
   *
   * @param address The name (`"/orders"`), or a `shm:` address with parameters
   *   (`"shm:/orders?capacity=1MiB&mode=broadcast"`).
   * @param options Creation, capacity, delivery mode, overflow, spin and subscription options.
   * @returns The handle.
   * @throws {TypeError} For a malformed address or option, or options that disagree with the existing ring.
   * @throws {RangeError} For an out-of-range capacity, users, maxMessageSize or spin.
   * @throws {NotFoundError} When no ring has the name and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when the name is taken.
   * @throws {PermissionDeniedError} When this user may not read and write it, or it is not a regular object.
   * @throws {FrameError} When the object is not an ipcbus ring of this version (wrong magic, version or
   *   size) or its creator did not finish within `initTimeout`.
   * @throws {IpcError} When every slot is taken (`users`), or /dev/shm is full.
   *
   * @example Creating a ring with a capacity
   * ```ts
   * import { ShmRing } from "@ipcbus/ipcbus/shm-ring";
   *
   * const ring = ShmRing.open(`shm:/ipcbus-doc-${crypto.randomUUID()}?capacity=64KiB`, { create: true });
   * console.log(ring.info.capacity, ring.info.maxMessageSize); // 65536 32752
   * await ring.unlink();
   * ring.close();
   * ```
   */
  static open(address: string, options: ShmRingOptions = {}): ShmRing {
    const parsed = parseAddress(address, options);
    const { name, create, exclusive, permissions, capacity, mode, overflow, users } = parsed;
    const label = `${SCHEME} ring ${name}`;
    let opened;
    try {
      opened = openObject(name, { create, exclusive, mode: permissions });
    } catch (error) {
      throw explainOpen(error as IpcError, name);
    }
    const { fd, created } = opened;
    let mapping: Mapping | undefined;
    let semid = -1;
    let ring: ShmRing | undefined;
    try {
      let geometry: Geometry;
      if (created) {
        const size = L.dataOffset(users) + capacity;
        sizeSharedMemory(fd, size, label, {
          reserve: options.reserve ?? true,
          orElse: "choose a smaller capacity",
        });
        mapping = Mapping.map(fd, size, { label });
        semid = createSemaphores(users, permissions, label);
        geometry = {
          base: L.dataOffset(users),
          capacity,
          max: capacity / 2 - L.FRAME_HEADER,
          slots: users,
          broadcast: mode === "broadcast",
          drop: overflow === "drop",
          semid,
        };
        initialize(mapping, geometry);
      } else {
        const size = awaitSize(fd, name, parsed.initTimeout);
        mapping = Mapping.map(fd, size, { label });
        awaitMagic(mapping, name, parsed.initTimeout);
        geometry = validate(mapping, name, size);
        checkSemaphores(geometry, name);
        checkAgainst(geometry, name, parsed);
      }
      const wanted = options.maxMessageSize;
      if (wanted !== undefined && (!Number.isSafeInteger(wanted) || wanted < 0)) {
        throw new RangeError(`${SCHEME}: maxMessageSize must be a non-negative integer, got ${wanted}`);
      }
      const sendMax = Math.min(geometry.max, wanted ?? geometry.max);
      const [slot, token] = claimSlot(mapping, fd, name, geometry);
      const objectMode = opened.stat.permissions; // a created object's stat carries the mode asked for
      ring = new ShmRing(name, fd, mapping, geometry, slot, token, created, objectMode, sendMax, options);
      ring.#adopt();
      if (ring.#presence?.contended && ring.#removedMeanwhile()) {
        // Removed (by gc) while we opened it: none of it is ours to clean up (outside this try).
        ring.close();
        ring = undefined;
      } else {
        if (ring.#broadcast && options.subscribe === true) ring.#subscribeAtOpen(parsed.initTimeout);
        return ring;
      }
    } catch (error) {
      if (ring !== undefined) ring.close(); // also releases its slot and presence
      else {
        mapping?.unmap();
        closeFd(fd);
      }
      if (created) {
        unlinkObject(name);
        if (ring !== undefined) Presence.forget(`${SCHEME}:${name}`);
        if (semid >= 0) removeSemaphores(semid);
      }
      throw error;
    }
    return reopenRemoved(`${SCHEME}:${name}`, () => ShmRing.open(address, options));
  }

  /**
   * Removes a ring by name without joining it, as {@linkcode ShmRing.unlink}
   * does: marks it unlinked (its users' waits settle), removes its semaphore
   * set and its name. An object that is not an ipcbus ring is left alone.
   *
   * @param address The ring's name (`"/orders"`) or `shm:` address.
   * @throws {NotFoundError} When no object has the name.
   * @throws {PermissionDeniedError} When this user may not remove it.
   * @throws {FrameError} When it is not an ipcbus ring (nothing is removed).
   *
   * @example Remove a ring left behind
   * ```ts
   * import { ShmRing } from "@ipcbus/ipcbus/shm-ring";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * ShmRing.open(name, { create: true }).close();
   * ShmRing.unlink(name);
   * ```
   */
  static unlink(address: string): void {
    const name = nameOf(address);
    let opened;
    try {
      opened = openObject(name, { create: false, exclusive: false, mode: 0 });
    } catch (error) {
      throw explainOpen(error as IpcError, name);
    }
    const { fd } = opened;
    let semid = -1;
    try {
      const size = awaitSize(fd, name, 0);
      const mapping = Mapping.map(fd, size, { label: `${SCHEME} ring ${name}` });
      try {
        awaitMagic(mapping, name, 0);
        const geometry = validate(mapping, name, size);
        Atomics.or(new Int32Array(mapping.buffer), iFLAGS, L.REMOVED);
        if (semaphoreCount(geometry.semid) === geometry.slots) semid = geometry.semid;
      } finally {
        mapping.unmap();
      }
    } finally {
      closeFd(fd);
    }
    const code = unlinkObject(name);
    if (code !== 0) throw explainUnlink(code, name);
    Presence.forget(`${SCHEME}:${name}`);
    if (semid >= 0) removeSemaphores(semid);
  }

  /** Broadcast with `overflow: "drop"`: messages this subscriber skipped because it fell behind. */
  get missed(): number {
    return this.#missed;
  }

  /** How many times this handle took over a lock from a dead (or stale) holder. */
  get recoveries(): number {
    return this.#steals;
  }

  // -- sending ------------------------------------------------------------------

  /**
   * Sends without waiting.
   *
   * @param data The payload (at most `info.maxMessageSize` bytes).
   * @param type The message type, 1 to 2^32 − 1.
   * @param _priority Unused (no priorities).
   * @returns False when there is no room now, or another producer holds the ring for longer than a
   *   brief spin (nothing was sent).
   * @throws {ChannelClosedError} When this handle was closed or the ring unlinked.
   * @throws {MessageTooLargeError} When `data` is over `info.maxMessageSize`.
   * @throws {FrameError} When the ring's shared state is corrupt.
   */
  trySend(data: Uint8Array, type: number, _priority: number): boolean {
    this.#checkOpen();
    this.#checkSize(data.length);
    return this.#put(data, type) === SENT;
  }

  /**
   * Sends, waiting for room.
   *
   * @param data The payload.
   * @param type The message type.
   * @param _priority Unused.
   * @param signal Aborting it rejects with `signal.reason`; nothing was sent then.
   * @returns `undefined` when sent at once, else a promise settling when sent.
   * @throws {ChannelClosedError} When this handle is closed or the ring unlinked, also while waiting.
   */
  send(data: Uint8Array, type: number, _priority: number, signal: AbortSignal): Promise<void> | undefined {
    this.#checkOpen();
    this.#checkSize(data.length);
    const first = this.#put(data, type);
    if (first === SENT) return undefined;
    // Spin on a read-only look at the ring, and take the lock only when there is room: retrying
    // the locked attempt would keep pulling the read position's cache line from the consumers.
    this.#retryData = data;
    this.#retryType = type;
    try {
      if (this.#sendSpinner.spin(this.#retryPut)) return undefined;
    } finally {
      this.#retryData = EMPTY_BYTES; // do not keep the caller's buffer
    }
    return this.#sendSlowly(data.slice(), type, signal);
  }

  /**
   * Sends a prefix of `frames` without waiting, under one lock: the write
   * position is published and consumers are woken once for the lot. It
   * stops once 256 KiB of payload are placed (large messages then flow
   * while the consumer copies them out): call again for the rest.
   *
   * @param frames The payloads.
   * @param type Their type.
   * @param _priority Unused.
   * @returns How many were sent (from the first): fewer than all when the ring is full or 256 KiB
   *   were placed; 0 when there is no room now.
   * @throws {ChannelClosedError} When this handle was closed or the ring unlinked.
   * @throws {MessageTooLargeError} When a payload is over `info.maxMessageSize`.
   */
  trySendBatch(frames: readonly Uint8Array[], type: number, _priority: number): number {
    this.#checkOpen();
    for (let i = 0; i < frames.length; i++) this.#checkSize(frames[i].length);
    if (frames.length === 0) return 0;
    const h = this.#h;
    if (!this.#lock(iW_LOCK)) return 0;
    let sent = 0;
    try {
      this.#begin();
      for (let bytes = 0; sent < frames.length && bytes < BATCH_BYTES; sent++) {
        const frame = frames[sent];
        if (!this.#place(frame, type)) break;
        bytes += frame.length;
      }
      if (sent > 0) this.#publish();
    } finally {
      Atomics.store(h, iW_LOCK, 0);
    }
    if (sent > 0 && Atomics.load(h, iR_DATA_WAITERS) !== 0) this.#wake(iDATA_MASK, iR_DATA_WAITERS, true);
    return sent;
  }

  /** The spin attempt of `send` (made once): puts `#retryData` when there is room. */
  readonly #retryPut = (): true | undefined =>
    (this.#hasRoom(this.#retryData.length) && this.#put(this.#retryData, this.#retryType) === SENT) ||
    undefined;

  #checkSize(length: number): void {
    if (length > this.#sendMax) {
      throw new MessageTooLargeError(length, this.#sendMax, this.info.maxMessageSizeReason);
    }
  }

  /** One frame under the writer lock: SENT, FULL or BUSY. */
  #put(data: Uint8Array, type: number): number {
    const h = this.#h;
    if (!this.#lock(iW_LOCK)) return BUSY;
    let sent: boolean;
    try {
      this.#begin();
      sent = this.#place(data, type);
      if (sent) this.#publish();
    } finally {
      Atomics.store(h, iW_LOCK, 0);
    }
    if (!sent) return FULL;
    if (Atomics.load(h, iR_DATA_WAITERS) !== 0) this.#wake(iDATA_MASK, iR_DATA_WAITERS, this.#broadcast);
    return SENT;
  }

  /** Reads the producer state from the header (under the writer lock). */
  #begin(): void {
    const h = this.#h;
    if ((h[iFLAGS] & L.REMOVED) !== 0) throw this.#removedError();
    // Plain loads: taking the lock (an atomic read-modify-write) ordered them.
    const w = h[iW_WRITE];
    if ((w & 15) !== 0) throw this.#corrupt(`the write position ${w >>> 0} is not a multiple of 16`);
    this.#w = w;
    this.#seqLo = h[iW_SEQ_LO];
    this.#seqHi = h[iW_SEQ_HI];
  }

  /** Writes one frame at the local write position; false when there is no room. */
  #place(data: Uint8Array, type: number): boolean {
    const cap = this.#cap;
    const length = data.length;
    const size = L.frameSize(length);
    let w = this.#w;
    let offset = w & this.#mask;
    const contiguous = cap - offset;
    const need = size <= contiguous ? size : contiguous + size;
    if (!this.#room(w, need)) return false;
    const h = this.#h;
    if (size > contiguous) {
      // Pad to the end of the ring; the frame starts over at offset 0.
      const p = (this.#base + offset) >> 2;
      h[p] = contiguous - L.FRAME_HEADER;
      h[p + 1] = L.PAD_TYPE;
      h[p + 2] = 0;
      h[p + 3] = 0;
      w = (w + contiguous) | 0;
      offset = 0;
    }
    const at = this.#base + offset;
    const i = at >> 2;
    h[i] = length;
    h[i + 1] = type | 0;
    h[i + 2] = this.#seqLo;
    h[i + 3] = this.#seqHi;
    if (length !== 0) this.#u8.set(data, at + L.FRAME_HEADER);
    this.#last = w;
    this.#w = (w + size) | 0;
    const lo = (this.#seqLo + 1) | 0;
    this.#seqLo = lo;
    if (lo === 0) this.#seqHi = (this.#seqHi + 1) | 0;
    return true;
  }

  /** Makes the frames written since `#begin` visible (order matters for crash recovery). */
  #publish(): void {
    const h = this.#h;
    h[iW_LAST] = this.#last;
    Atomics.store(h, iW_WRITE, this.#w);
    h[iW_SEQ_LO] = this.#seqLo;
    h[iW_SEQ_HI] = this.#seqHi;
  }

  /** Whether `need` bytes from position `w` are free (refreshing the limit when it may be stale). */
  #room(w: number, need: number): boolean {
    const cap = this.#cap;
    let room = (this.#limit - w) >>> 0;
    if (room <= cap && room >= need) return true;
    const h = this.#h;
    if (this.#drop) {
      this.#evict(w, need);
      return true;
    }
    if (this.#broadcast) {
      this.#limit = (w - this.#maxLag(w) + cap) | 0;
    } else {
      const r = Atomics.load(h, iR_READ);
      const used = (w - r) >>> 0;
      if (used > cap || (r & 15) !== 0) {
        throw this.#corrupt(
          `the read position ${r >>> 0} is not within a ring behind the write position ${w >>> 0}`,
        );
      }
      this.#limit = (r + cap) | 0;
    }
    room = (this.#limit - w) >>> 0;
    return room >= need;
  }

  /** Broadcast block: the largest lag of a subscriber (0 without any); notes which one. */
  #maxLag(w: number): number {
    const h = this.#h;
    const cap = this.#cap;
    let worst = 0;
    this.#blocker = -1;
    for (let word = 0; word < this.#maskWords; word++) {
      let bits = Atomics.load(h, iSUB_MASK + word);
      while (bits !== 0) {
        const low = bits & -bits;
        bits ^= low;
        const slot = (word << 5) + (31 - Math.clz32(low));
        const c = Atomics.load(h, (L.SLOT_TABLE + slot * L.SLOT_SIZE + L.S_CURSOR) >> 2);
        const lag = (w - c) >>> 0;
        // A cursor outside the ring is a subscriber that fell behind anyway
        // (or scribbled): it finds out itself and skips ahead.
        if (lag > cap || lag <= worst) continue;
        worst = lag;
        this.#blocker = slot;
      }
    }
    return worst;
  }

  /** Broadcast drop: moves the tail past old frames until `need` bytes from `w` are free. */
  #evict(w: number, need: number): void {
    const h = this.#h;
    const cap = this.#cap;
    let tail = Atomics.load(h, iW_TAIL);
    let used = (w - tail) >>> 0;
    if (used > cap || (tail & 15) !== 0) {
      throw this.#corrupt(`the tail ${tail >>> 0} is not within a ring behind the write position ${w >>> 0}`);
    }
    const start = tail;
    while (cap - used < need) {
      const offset = tail & this.#mask;
      const p = (this.#base + offset) >> 2;
      const length = h[p] >>> 0;
      const size = length > cap ? cap + 16 : L.frameSize(length);
      if (size > used || offset + size > cap) {
        throw this.#corrupt(`a frame of ${length} bytes at position ${tail >>> 0} does not fit the ring`);
      }
      tail = (tail + size) | 0;
      used -= size;
    }
    if (tail !== start) Atomics.store(h, iW_TAIL, tail);
    this.#limit = (tail + cap) | 0;
  }

  async #sendSlowly(data: Uint8Array, type: number, signal: AbortSignal): Promise<void> {
    const size = data.length;
    const ready = () => this.#hasRoom(size);
    let busy = 0;
    let disagree = 0;
    for (;;) {
      this.#checkOpen();
      const result = this.#put(data, type);
      if (result === SENT) {
        this.#sendSpinner.woke();
        return;
      }
      if (result === BUSY) {
        await this.#backoff(busy++, signal);
        continue;
      }
      busy = 0;
      if (ready()) {
        // No room for the put, room by the probe: see #receiveSlowly (yield after a few).
        if (++disagree > 2) await this.#backoff(disagree, signal);
        continue;
      }
      disagree = 0;
      const parked = await this.#park(iSPACE_MASK, iW_SPACE_WAITERS, ready, signal);
      if (!parked && this.#broadcast) this.#dropDeadSubscribers();
    }
  }

  /** Readiness probe of a waiting send: is there room now (approximately; the send re-checks)? */
  #hasRoom(length: number): boolean {
    const h = this.#h;
    if ((h[iFLAGS] & L.REMOVED) !== 0) return true;
    const w = Atomics.load(h, iW_WRITE);
    const size = L.frameSize(length);
    const contiguous = this.#cap - (w & this.#mask);
    const need = size <= contiguous ? size : contiguous + size;
    const lag = this.#broadcast ? this.#maxLag(w) : (w - Atomics.load(h, iR_READ)) >>> 0;
    return lag > this.#cap || this.#cap - lag >= need;
  }

  /**
   * Broadcast block: a producer held back for a whole park by a subscriber
   * checks whether that subscriber is still alive, and drops it if not.
   */
  #dropDeadSubscribers(): void {
    const h = this.#h;
    if (!this.#lock(iW_LOCK)) return;
    try {
      this.#maxLag(Atomics.load(h, iW_WRITE));
      const slot = this.#blocker;
      if (slot < 0 || slot === this.#slot) return;
      if (lockedByte(this.#fd, L.slotLockByte(slot), 1) >= 0) return;
      Atomics.and(h, iSUB_MASK + (slot >> 5), ~(1 << (slot & 31)));
      Atomics.and(h, (L.SLOT_TABLE + slot * L.SLOT_SIZE + L.S_FLAGS) >> 2, ~L.SUBSCRIBED);
      this.#steals++;
    } finally {
      Atomics.store(h, iW_LOCK, 0);
    }
  }

  // -- receiving ----------------------------------------------------------------

  /**
   * Takes a frame without waiting.
   *
   * @param filter Must be `{ type: 0, except: false }` (no type filters).
   * @returns The frame (its `data` is valid until the next receive), or null when none is available
   *   now (or another consumer holds the ring for longer than a brief spin).
   * @throws {TypeError} For a type filter.
   * @throws {ChannelClosedError} When this handle was closed, or the ring unlinked and drained.
   * @throws {FrameError} When the ring's shared state or a frame is corrupt.
   */
  tryReceive(filter: ReceiveFilter): ReceivedFrame | null {
    this.#checkOpen();
    this.#checkFilter(filter);
    this.#checkSink();
    const got = this.#take(null, 1);
    return typeof got === "number" ? null : got;
  }

  /**
   * Takes a frame, waiting for one.
   *
   * @param filter Must be `{ type: 0, except: false }`.
   * @param signal Aborting it rejects with `signal.reason`; nothing was taken then.
   * @returns The frame (its `data` is valid until the next receive): itself when taken without
   *   parking (at once or within the spin), else a promise of it.
   * @throws {ChannelClosedError} When this handle is closed, or the ring unlinked and drained, also
   *   while waiting.
   */
  receive(filter: ReceiveFilter, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame> {
    try {
      this.#checkOpen();
      this.#checkFilter(filter);
      this.#checkSink();
      const first = this.#take(null, 1);
      if (typeof first !== "number") return first;
      const spun = this.#receiveSpinner.spin(this.#retryTake);
      if (spun) return spun;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#receiveSlowly(signal);
  }

  /**
   * Takes up to `max` frames without waiting, under one lock: the read
   * position is published and producers are woken once for the lot. Each
   * frame's `data` is a view (into the ring, or for small payloads a scratch
   * buffer), valid only during the `sink` call. If `sink` throws, that frame
   * counts as taken, nothing more is taken, and the error propagates.
   *
   * @param filter Must be `{ type: 0, except: false }`.
   * @param max Most frames to take.
   * @param sink Called with each frame, in order.
   * @returns How many frames were handed to `sink`.
   * @throws {ChannelClosedError} When this handle was closed, or the ring unlinked and drained.
   * @throws {TypeError} For a type filter, or when `sink` receives from this handle again.
   */
  tryReceiveBatch(filter: ReceiveFilter, max: number, sink: (frame: ReceivedFrame) => void): number {
    this.#checkOpen();
    this.#checkFilter(filter);
    this.#checkSink();
    if (!(max >= 1)) return 0;
    const got = this.#take(sink, Math.floor(max));
    return typeof got === "number" ? Math.max(0, got) : 1;
  }

  /** The spin attempt of `receive` (made once). */
  readonly #retryTake = (): ReceivedFrame | undefined => {
    const got = this.#take(null, 1);
    return typeof got === "number" ? undefined : got;
  };

  #checkSink(): void {
    if (this.#inSink) throw new TypeError(`${SCHEME}: a batch sink may not receive from the same ring`);
  }

  #checkFilter(filter: ReceiveFilter): void {
    if (filter.type !== 0 || filter.except) {
      throw new TypeError(
        `${SCHEME}: this transport cannot receive by type (capabilities.typeFilter is false)`,
      );
    }
  }

  /**
   * Takes frames: one into the scratch buffer (sink null; returns the frame),
   * or up to `max` handed to `sink` (returns how many). EMPTY (0) or BUSY.
   */
  #take(sink: ((frame: ReceivedFrame) => void) | null, max: number): ReceivedFrame | number {
    if (this.#broadcast) return this.#takeBroadcast(sink, max);
    const h = this.#h;
    // Without the lock: nothing there is the common case of a poll (the
    // write position is re-read only when the cached one says so).
    const seen = Atomics.load(h, iR_READ);
    if (seen === this.#writeCache && seen === (this.#writeCache = Atomics.load(h, iW_WRITE))) {
      return this.#empty();
    }
    if (!this.#lock(iR_LOCK)) return BUSY;
    let r = h[iR_READ];
    const start = r;
    let taken = 0;
    let frame: ReceivedFrame | null = null;
    let left = 0;
    // A sink may close this handle: the mapping stays until the batch is done.
    this.#pins++;
    this.#inSink = sink !== null;
    try {
      if ((r & 15) !== 0) throw this.#corrupt(`the read position ${r >>> 0} is not a multiple of 16`);
      let avail = this.#available(r);
      const lent = this.#lent;
      while (avail !== 0 && taken < max) {
        const at = this.#base + (r & this.#mask);
        const size = this.#frameAt(at, avail);
        r = (r + size) | 0;
        avail -= size;
        const type = this.#frameType;
        if (type === L.PAD_TYPE) continue;
        taken++;
        const length = this.#frameLength;
        if (sink === null) {
          frame = { data: this.#copyOut(at + L.FRAME_HEADER, length), type: type >>> 0, priority: 0 };
          break;
        }
        // Valid only during the sink call: small payloads are copied into the
        // scratch buffer (no allocation), large ones lent straight from the
        // ring (producers cannot overwrite them before the read position moves).
        lent.data = length <= WORD_COPY_LIMIT
          ? this.#copyOut(at + L.FRAME_HEADER, length)
          : this.#u8.subarray(at + L.FRAME_HEADER, at + L.FRAME_HEADER + length);
        lent.type = type >>> 0;
        sink(lent);
        if (this.#closed) break;
      }
      left = avail;
    } finally {
      this.#inSink = false;
      this.#pins--;
      if (r !== start) Atomics.store(h, iR_READ, r);
      Atomics.store(h, iR_LOCK, 0);
      if (this.#closed && this.#pins === 0) this.#release();
    }
    if (this.#released) return taken;
    if (r !== start && Atomics.load(h, iW_SPACE_WAITERS) !== 0) {
      this.#wake(iSPACE_MASK, iW_SPACE_WAITERS, true);
    }
    if (left !== 0 && Atomics.load(h, iR_DATA_WAITERS) !== 0) this.#wake(iDATA_MASK, iR_DATA_WAITERS, false);
    if (frame !== null) return frame;
    return taken === 0 ? this.#empty() : taken;
  }

  /** Bytes of committed frames from `r` (reloading the write position when the cached one says none). */
  #available(r: number): number {
    let avail = (this.#writeCache - r) >>> 0;
    if (avail === 0 || avail > this.#cap) {
      this.#writeCache = Atomics.load(this.#h, iW_WRITE);
      avail = (this.#writeCache - r) >>> 0;
      if (avail > this.#cap || (avail & 15) !== 0) {
        throw this.#corrupt(
          `the write position ${this.#writeCache >>> 0} is not within a ring ahead of the read position ${
            r >>> 0
          }`,
        );
      }
    }
    return avail;
  }

  /**
   * Validates the frame at byte `at` of the segment, with `avail` committed bytes from it; returns its size.
   * Its length and type, read once, are left in `#frameLength` and `#frameType`: callers use those, never
   * re-read the header (a peer may change it after the check).
   */
  #frameAt(at: number, avail: number): number {
    const h = this.#h;
    const i = at >> 2;
    const length = h[i] >>> 0;
    const type = h[i + 1];
    this.#frameLength = length;
    this.#frameType = type;
    const offset = at - this.#base;
    const limit = type === L.PAD_TYPE ? this.#cap : this.#max;
    if (length > limit) {
      throw this.#corrupt(
        `a ${type === L.PAD_TYPE ? "padding " : ""}frame at offset ${offset} claims ${length} bytes ` +
          `(the limit is ${limit})`,
      );
    }
    const size = L.frameSize(length);
    if (size > avail || offset + size > this.#cap) {
      throw this.#corrupt(
        `a frame at offset ${offset} of ${size} bytes goes beyond the ${avail} committed bytes or the ring's end`,
      );
    }
    return size;
  }

  /** Copies a payload into the scratch buffer; returns a view of it. */
  #copyOut(at: number, length: number): Uint8Array {
    if (length > this.#scratch.length) this.#grow(length);
    if (length <= WORD_COPY_LIMIT) {
      const words = this.#scratchWords;
      const h = this.#h;
      const first = at >> 2;
      const count = (length + 3) >> 2;
      for (let k = 0; k < count; k++) words[k] = h[first + k];
    } else {
      this.#scratch.set(this.#u8.subarray(at, at + length));
    }
    let view = this.#view;
    if (view.length !== length) view = this.#view = this.#scratch.subarray(0, length);
    return view;
  }

  #grow(length: number): void {
    const size = roundUp16(Math.max(length, Math.min(this.#scratch.length * 2, this.#max)));
    this.#scratch = new Uint8Array(size);
    this.#scratchWords = new Int32Array(this.#scratch.buffer);
    this.#view = this.#scratch.subarray(0, 0);
  }

  /** Nothing to take: EMPTY, or ChannelClosedError when the ring was unlinked. */
  #empty(): number {
    if ((this.#h[iFLAGS] & L.REMOVED) !== 0) throw this.#removedError();
    return EMPTY;
  }

  /** Broadcast: takes frames at this subscriber's cursor. */
  #takeBroadcast(sink: ((frame: ReceivedFrame) => void) | null, max: number): ReceivedFrame | number {
    if (!this.#subscribed) {
      if (this.#sendOnly) {
        throw new TypeError(
          `${SCHEME}: ${this.#name} was opened with subscribe: false (send only); open another handle to receive`,
        );
      }
      if (!this.#subscribeNow()) return BUSY;
    }
    const h = this.#h;
    if ((Atomics.load(h, this.#flagsI) & L.SUBSCRIBED) === 0) {
      // A producer judged this subscriber dead: what was sent since is gone.
      if (!this.#resync()) return BUSY;
    }
    let taken = 0;
    let c = this.#cursor;
    const start = c;
    let frame: ReceivedFrame | null = null;
    // A sink may close this handle: the mapping stays until the batch is done. The cursor is
    // published once, at the end (as a queue's read position is), not after every message.
    this.#pins++;
    this.#inSink = sink !== null;
    try {
      for (let round = 0; taken < max; round++) {
        let avail = (this.#writeCache - c) >>> 0;
        if (avail === 0 || avail > this.#cap) {
          this.#writeCache = Atomics.load(h, iW_WRITE);
          avail = (this.#writeCache - c) >>> 0;
        }
        if (avail === 0) break;
        if (avail > this.#cap || (avail & 15) !== 0) {
          if (!this.#drop) {
            throw this.#corrupt(
              `the write position ${this.#writeCache >>> 0} is not within a ring ahead of ` +
                `this subscriber's position ${c >>> 0}`,
            );
          }
          if (!this.#skipFrom(c, round)) break;
          c = this.#cursor;
          continue;
        }
        const at = this.#base + (c & this.#mask);
        const i = at >> 2;
        let size: number;
        let type: number;
        let length: number;
        let seqOk = true;
        try {
          size = this.#frameAt(at, avail);
          type = this.#frameType >>> 0;
          length = this.#frameLength;
          if (this.#drop && type !== L.PAD_TYPE) {
            seqOk = h[i + 2] === this.#expectLo && h[i + 3] === this.#expectHi;
          }
        } catch (error) {
          if (!this.#drop || !this.#overrun(c)) throw error;
          if (!this.#skipFrom(c, round)) break;
          c = this.#cursor;
          continue;
        }
        if (!seqOk) {
          if (!this.#skipFrom(c, round)) break;
          c = this.#cursor;
          continue;
        }
        if (type === L.PAD_TYPE) {
          c = (c + size) | 0;
          if (this.#drop && this.#overrun(c - size)) {
            if (!this.#skipFrom(c - size, round)) break;
            c = this.#cursor;
          }
          continue;
        }
        // Drop mode copies even for a sink: producers may overwrite the ring under a view. Small
        // payloads are copied too, as in a queue (no view allocated per message).
        const data = sink === null || this.#drop || length <= WORD_COPY_LIMIT
          ? this.#copyOut(at + L.FRAME_HEADER, length)
          : this.#u8.subarray(at + L.FRAME_HEADER, at + L.FRAME_HEADER + length);
        if (this.#drop && this.#overrun(c)) {
          // Overwritten while copying: skip ahead instead.
          if (!this.#skipFrom(c, round)) break;
          c = this.#cursor;
          continue;
        }
        const seqLo = h[i + 2];
        const seqHi = h[i + 3];
        c = (c + size) | 0;
        this.#cursor = c;
        this.#expectLo = (seqLo + 1) | 0;
        this.#expectHi = this.#expectLo === 0 ? (seqHi + 1) | 0 : seqHi;
        taken++;
        if (sink === null) {
          frame = { data, type, priority: 0 };
          break;
        }
        const lent = this.#lent;
        lent.data = data;
        lent.type = type;
        sink(lent); // if it throws, this frame counts as taken (the cursor is past it)
        if (this.#closed) break;
      }
    } finally {
      this.#inSink = false;
      this.#pins--;
      if (this.#cursor !== start || c !== start) {
        this.#cursor = c;
        Atomics.store(h, this.#cursorI, c);
      }
      if (this.#closed && this.#pins === 0) this.#release();
    }
    if (this.#released) return taken;
    if (c !== start && !this.#drop && Atomics.load(h, iW_SPACE_WAITERS) !== 0) {
      this.#wake(iSPACE_MASK, iW_SPACE_WAITERS, true);
    }
    if (frame !== null) return frame;
    return taken === 0 ? this.#empty() : taken;
  }

  /**
   * Broadcast: this subscriber lost its place at `position`: resyncs from there (see `#resync`). False when
   * the batch should stop (the lock is busy, or `round` says it has resynced too often already).
   */
  #skipFrom(position: number, round: number): boolean {
    this.#cursor = position;
    return this.#resync() && round <= 8;
  }

  /** Drop mode: whether the frame at position `c` is (being) overwritten: the tail has passed it. */
  #overrun(c: number): boolean {
    return ((Atomics.load(this.#h, iW_TAIL) - c) | 0) > 0;
  }

  /**
   * `subscribe: true`: subscribes before `open` returns, waiting (up to `ms`, at least 1 s) while a
   * producer holds the writer lock; a dead holder's lock is taken over on the way.
   */
  #subscribeAtOpen(ms: number): void {
    const deadline = performance.now() + Math.max(ms, 1000);
    for (let attempt = 0; !this.#subscribeNow(); attempt++) {
      if (performance.now() >= deadline) {
        throw new IpcError(
          `${SCHEME}: could not subscribe to ${this.#name} at open: its writer lock stayed busy for ` +
            `${Math.max(ms, 1000)} ms`,
          { errno: E.EBUSY, syscall: "open" },
        );
      }
      if (attempt > 0) napSync(1);
    }
  }

  /** Subscribes at the current write position (under the writer lock); false when the lock is busy. */
  #subscribeNow(): boolean {
    const h = this.#h;
    if (!this.#lock(iW_LOCK)) return false;
    try {
      const w = Atomics.load(h, iW_WRITE);
      this.#cursor = w;
      this.#writeCache = w;
      this.#expectLo = h[iW_SEQ_LO];
      this.#expectHi = h[iW_SEQ_HI];
      Atomics.store(h, this.#cursorI, w);
      Atomics.or(h, this.#flagsI, L.SUBSCRIBED);
      Atomics.or(h, iSUB_MASK + this.#bitWord, this.#bit);
      this.#subscribed = true;
    } finally {
      Atomics.store(h, iW_LOCK, 0);
    }
    return true;
  }

  /**
   * Broadcast: this subscriber lost its place (overrun in drop mode, or
   * dropped by a producer). Under the writer lock, moves to the oldest
   * frame still there (drop) or to the write position, and reports the
   * messages skipped. False when the lock is busy.
   */
  #resync(): boolean {
    const h = this.#h;
    if (!this.#lock(iW_LOCK)) return false;
    let missed = 0;
    try {
      const w = Atomics.load(h, iW_WRITE);
      let position = w;
      let seqLo = h[iW_SEQ_LO];
      let seqHi = h[iW_SEQ_HI];
      if (this.#drop) {
        // The oldest intact frame: the tail, past padding.
        let t = Atomics.load(h, iW_TAIL);
        let avail = (w - t) >>> 0;
        if (avail > this.#cap || (t & 15) !== 0) {
          throw this.#corrupt(`the tail ${t >>> 0} is not within the ring`);
        }
        // A position between the tail and the write position is still intact: keep it.
        const c = this.#cursor;
        if ((((c - t) | 0) >= 0) && (((w - c) | 0) >= 0) && (c & 15) === 0 && this.#seqAt(c, w)) {
          t = c;
          avail = (w - t) >>> 0;
        }
        for (let hop = 0; avail !== 0 && hop < 4; hop++) {
          const at = this.#base + (t & this.#mask);
          const size = this.#frameAt(at, avail);
          if (this.#frameType !== L.PAD_TYPE) {
            seqLo = h[(at >> 2) + 2];
            seqHi = h[(at >> 2) + 3];
            break;
          }
          t = (t + size) | 0;
          avail -= size;
        }
        position = t;
      }
      missed = (seqHi - this.#expectHi) * TWO_32 + ((seqLo >>> 0) - (this.#expectLo >>> 0));
      if (!(missed > 0)) missed = 0;
      this.#cursor = position;
      this.#writeCache = w;
      this.#expectLo = seqLo;
      this.#expectHi = seqHi;
      Atomics.store(h, this.#cursorI, position);
      Atomics.or(h, this.#flagsI, L.SUBSCRIBED);
      Atomics.or(h, iSUB_MASK + this.#bitWord, this.#bit);
    } finally {
      Atomics.store(h, iW_LOCK, 0);
    }
    if (missed > 0) {
      this.#missed += missed;
      this.#onMissed?.(missed);
    }
    return true;
  }

  /** Drop mode, under the writer lock: whether position c holds the frame this subscriber expects. */
  #seqAt(c: number, w: number): boolean {
    if (c === w) return true;
    const i = (this.#base + (c & this.#mask)) >> 2;
    const h = this.#h;
    return h[i + 2] === this.#expectLo && h[i + 3] === this.#expectHi && h[i + 1] !== L.PAD_TYPE;
  }

  async #receiveSlowly(signal: AbortSignal): Promise<ReceivedFrame> {
    let busy = 0;
    let disagree = 0;
    for (;;) {
      this.#checkOpen();
      const got = this.#take(null, 1);
      if (typeof got !== "number") {
        this.#receiveSpinner.woke();
        return got;
      }
      if (got === BUSY) {
        await this.#backoff(busy++, signal);
        continue;
      }
      busy = 0;
      if (this.#hasData()) {
        // The take found nothing, the probe says there is something: a producer racing us (look
        // again), or positions a peer scribbled. Parking would return at once, every time, in
        // microtasks only: no timer (no abort, no timeout) could ever run. Yield after a few.
        if (++disagree > 2) await this.#backoff(disagree, signal);
        continue;
      }
      disagree = 0;
      await this.#park(iDATA_MASK, iR_DATA_WAITERS, this.#dataReady, signal);
    }
  }

  readonly #dataReady = (): boolean => this.#hasData();

  /** Readiness probe of a waiting receive. */
  #hasData(): boolean {
    const h = this.#h;
    if ((h[iFLAGS] & L.REMOVED) !== 0) return true;
    const w = Atomics.load(h, iW_WRITE);
    return w !== (this.#broadcast ? this.#cursor : Atomics.load(h, iR_READ));
  }

  // -- locks, waking, parking -------------------------------------------------------

  /** Takes a lock word, spinning briefly on contention; false when it stays busy. */
  #lock(index: number): boolean {
    const h = this.#h;
    const token = this.#token;
    let seen = Atomics.compareExchange(h, index, 0, token);
    if (seen === 0) return true;
    const deadline = performance.now() + LOCK_SPIN_MICROS / 1000;
    for (let i = 1;; i++) {
      seen = Atomics.compareExchange(h, index, 0, token);
      if (seen === 0) return true;
      if ((i & 15) === 0 && performance.now() > deadline) break;
    }
    return this.#suspect(index, seen);
  }

  /**
   * The lock stayed busy. When the same holder has held it for
   * {@linkcode HOLDER_CHECK_MS} ms, checks it: a holder that is dead (its
   * slot lock is gone), stale (its slot has a new owner) or impossible loses
   * the lock to this handle, which repairs what it may have left half done.
   */
  #suspect(index: number, seen: number): boolean {
    const which = index === iW_LOCK ? 0 : 1;
    const now = performance.now();
    if (this.#suspectValue[which] !== seen) {
      this.#suspectValue[which] = seen;
      this.#suspectSince[which] = now;
      return false;
    }
    if (now - this.#suspectSince[which] < HOLDER_CHECK_MS) return false;
    this.#suspectSince[which] = now;
    if (!this.#holderGone(seen)) return false;
    if (Atomics.compareExchange(this.#h, index, seen, this.#token) !== seen) return false;
    this.#steals++;
    if (index === iW_LOCK) {
      try {
        this.#recoverWriter();
      } catch (error) {
        Atomics.store(this.#h, index, 0);
        throw error;
      }
    }
    return true;
  }

  /** Whether the holder named by a lock token can no longer release it. */
  #holderGone(token: number): boolean {
    const slotPlus = token & ((1 << L.TOKEN_SLOT_BITS) - 1);
    if (slotPlus === 0 || slotPlus > this.#slots) return true;
    const slot = slotPlus - 1;
    if (slot === this.#slot) return true; // ours, but this handle is not inside a critical section
    const gen = (token >>> L.TOKEN_SLOT_BITS) & L.GEN_MASK;
    const slotGen = Atomics.load(this.#h, (L.SLOT_TABLE + slot * L.SLOT_SIZE + L.S_GEN) >> 2) & L.GEN_MASK;
    if (gen !== slotGen) return true;
    return lockedByte(this.#fd, L.slotLockByte(slot), 1) < 0;
  }

  /**
   * After taking the writer lock from a dead holder: the frames it did not
   * publish are simply overwritten later; only the sequence counter may lag
   * behind the last frame it published (it dies between the two stores).
   */
  #recoverWriter(): void {
    const h = this.#h;
    const w = Atomics.load(h, iW_WRITE);
    if ((w & 15) !== 0) throw this.#corrupt(`the write position ${w >>> 0} is not a multiple of 16`);
    const last = h[iW_LAST];
    const distance = (w - last) >>> 0;
    if (distance === 0 || distance > this.#cap / 2) return;
    const i = (this.#base + (last & this.#mask)) >> 2;
    const length = h[i] >>> 0;
    if (h[i + 1] === L.PAD_TYPE || length > this.#max || L.frameSize(length) !== distance) return;
    const lo = (h[i + 2] + 1) | 0;
    const hi = lo === 0 ? (h[i + 3] + 1) | 0 : h[i + 3];
    // Only ever move the counter forward.
    const current = (h[iW_SEQ_HI] >>> 0) * TWO_32 + (h[iW_SEQ_LO] >>> 0);
    if ((hi >>> 0) * TWO_32 + (lo >>> 0) > current) {
      h[iW_SEQ_LO] = lo;
      h[iW_SEQ_HI] = hi;
    }
  }

  /** Posts the semaphores of the slots registered in a mask (all of them, or the first). */
  #wake(mask: number, counter: number, all: boolean): void {
    const h = this.#h;
    for (let word = 0; word < this.#maskWords; word++) {
      let bits = Atomics.load(h, mask + word);
      while (bits !== 0) {
        const low = bits & -bits;
        bits ^= low;
        const old = Atomics.and(h, mask + word, ~low);
        if ((old & low) === 0) continue;
        Atomics.sub(h, counter, 1);
        const slot = (word << 5) + (31 - Math.clz32(low));
        if (!this.#doorbell || !this.#ring(slot)) postSemaphore(this.#semid, slot);
        if (!all) return;
      }
    }
  }

  /**
   * Rings the doorbell of `slot`'s owner, if it has one of its own
   * generation. Read after its wait bit was cleared, number first: an owner
   * writes the number last and a new owner clears it first, so a nonzero
   * number comes with its owner's id and generation (docs/shm-ring.md,
   * "Doorbells"); a zero one, maybe of a doorbell still being set up, means
   * the semaphore, which a parked handle always waits on.
   *
   * @returns False when there is none, or it cannot be rung (then post the semaphore).
   */
  #ring(slot: number): boolean {
    const h = this.#h;
    const base = (L.SLOT_TABLE + slot * L.SLOT_SIZE) >> 2;
    const bell = Atomics.load(h, base + (L.S_BELL >> 2));
    if (
      bell === 0 || Atomics.load(h, base + (L.S_BELL_GEN >> 2)) !== Atomics.load(h, base + (L.S_GEN >> 2))
    ) {
      return false;
    }
    const id = base + (L.S_BELL_ID >> 2);
    return ringBell(
      Atomics.load(h, id),
      Atomics.load(h, id + 1),
      Atomics.load(h, id + 2),
      Atomics.load(h, id + 3),
      bell >>> 0,
    );
  }

  /** Gets this handle a bell (once, in the background: the waits until then use the semaphore only). */
  #askForBell(): void {
    this.#bell = -1;
    startDoorbell().then((id) => {
      if (id === null || this.#closed || this.#waiter === undefined) return;
      const h = this.#h;
      const slotI = this.#slotI;
      const bell = addBell(this.#waiter.ring);
      this.#bell = bell;
      const idI = slotI + (L.S_BELL_ID >> 2);
      for (let k = 0; k < 4; k++) Atomics.store(h, idI + k, id[k]);
      Atomics.store(h, slotI + (L.S_BELL_GEN >> 2), Atomics.load(h, slotI + (L.S_GEN >> 2)));
      Atomics.store(h, slotI + (L.S_BELL >> 2), bell);
    }, () => {
      // No doorbell then: the semaphore wakes this handle, as it does until the doorbell is up.
    });
  }

  /**
   * Registers in a wait mask, re-checks, and parks on this slot's semaphore
   * (and doorbell) for at most {@linkcode PARK_MS} ms.
   *
   * @returns True when woken (or ready), false when the park timed out.
   */
  async #park(mask: number, counter: number, ready: () => boolean, signal: AbortSignal): Promise<boolean> {
    const h = this.#h;
    const word = mask + this.#bitWord;
    const bit = this.#bit;
    Atomics.add(h, counter, 1);
    Atomics.or(h, word, bit);
    this.#pins++;
    try {
      if (ready()) return true;
      const both = signal === this.#lastSignal ? this.#lastBoth! : this.#combine(signal);
      let outcome: WaitOutcome;
      try {
        if (this.#polling) {
          await delay(POLL_MS, both);
          return false;
        }
        const semid = this.#semid, slot = this.#slot;
        this.#waiter ??= new SemaphoreWaiter(semid, slot, () => postSemaphore(semid, slot), PARK_MS);
        if (this.#bell === 0 && this.#doorbell) this.#askForBell();
        outcome = await this.#waiter.wait(both);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (this.#closed) throw this.#closedError();
        throw error;
      }
      if (outcome === "failed") {
        // The set was removed: by unlink() (then the ring says so), or by hand.
        if ((h[iFLAGS] & L.REMOVED) !== 0) throw this.#removedError();
        this.#polling = true;
        return false;
      }
      return outcome === "woken";
    } finally {
      this.#pins--;
      // Deregister, unless a waker did (it then also took us off the count)
      // or close() did (the slot may belong to another process by now).
      if (!this.#closed && (Atomics.and(h, word, ~bit) & bit) !== 0) Atomics.sub(h, counter, 1);
      if (this.#closed && this.#pins === 0) this.#release();
    }
  }

  /** The caller's signal combined with close(), made once per signal (AbortSignal.any costs µs). */
  #combine(signal: AbortSignal): AbortSignal {
    this.#lastSignal = signal;
    return this.#lastBoth = AbortSignal.any([signal, this.#closer.signal]);
  }

  /** Waits a little while a lock is busy: turns of the event loop, then timers up to 5 ms. */
  async #backoff(round: number, signal: AbortSignal): Promise<void> {
    const both = signal === this.#lastSignal ? this.#lastBoth! : this.#combine(signal);
    try {
      if (round < 4) await nextTurn(both);
      else await delay(Math.min(5, 1 << Math.min(round - 4, 3)), both);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (this.#closed) throw this.#closedError();
      throw error;
    }
  }

  // -- state and lifetime ---------------------------------------------------------------

  /** After opening: clears what a dead previous owner of this slot left. */
  #adopt(): void {
    const h = this.#h;
    for (const index of [iW_LOCK, iR_LOCK]) {
      const value = Atomics.load(h, index);
      if (value === 0 || (value & ((1 << L.TOKEN_SLOT_BITS) - 1)) !== this.#slot + 1) continue;
      // Held by this slot's previous owner, now dead: recover and release.
      if (Atomics.compareExchange(h, index, value, this.#token) !== value) continue;
      this.#steals++;
      try {
        if (index === iW_LOCK) this.#recoverWriter();
      } finally {
        Atomics.store(h, index, 0);
      }
    }
  }

  /**
   * Reads the ring's state: counts, settings and the processes using it
   * (one fcntl per slot to check liveness).
   *
   * @returns The state.
   * @throws {ChannelClosedError} After `close()`.
   *
   * @example Who uses the ring
   * ```ts
   * import { ShmRing } from "@ipcbus/ipcbus/shm-ring";
   *
   * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
   * using a = ShmRing.open(name, { create: true });
   * using b = ShmRing.open(name);
   * b.trySend(new Uint8Array(10), 1, 0);
   * const stat = a.stat();
   * console.log(stat.users.length, stat.inUse, stat.pendingBytes); // 2 true 32
   * await a.unlink();
   * ```
   */
  stat(): ShmRingStat {
    this.#checkOpen();
    return describe(this.#h, this.#geometry, this.#name, this.#fd, this.#slot);
  }

  #checkOpen(): void {
    if (this.#closed) throw this.#closedError();
  }

  #closedError(): ChannelClosedError {
    return new ChannelClosedError(`${SCHEME}:${this.#name} is closed`);
  }

  #removedError(): ChannelClosedError {
    return new ChannelClosedError(`${SCHEME}:${this.#name} was unlinked`, { errno: E.EIDRM });
  }

  #corrupt(what: string): FrameError {
    return new FrameError(`${SCHEME}:${this.#name}: the ring's shared state is corrupt: ${what}`);
  }

  /**
   * Ends this process's use of the ring: waiting calls settle with
   * `ChannelClosedError`, a subscription ends, the slot is freed (its lock
   * goes with the descriptor). The memory is unmapped once no helper thread
   * waits on it any more (within one wait slice). Idempotent. The ring stays
   * until `unlink()`.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const h = this.#h;
    const slotI = this.#slotI;
    if (this.#subscribed) {
      Atomics.and(h, iSUB_MASK + this.#bitWord, ~this.#bit);
      Atomics.and(h, this.#flagsI, ~L.SUBSCRIBED);
      if (Atomics.load(h, iW_SPACE_WAITERS) !== 0) this.#wake(iSPACE_MASK, iW_SPACE_WAITERS, true);
    }
    // Leave the wait masks before the slot can pass to another process.
    if ((Atomics.and(h, iDATA_MASK + this.#bitWord, ~this.#bit) & this.#bit) !== 0) {
      Atomics.sub(h, iR_DATA_WAITERS, 1);
    }
    if ((Atomics.and(h, iSPACE_MASK + this.#bitWord, ~this.#bit) & this.#bit) !== 0) {
      Atomics.sub(h, iW_SPACE_WAITERS, 1);
    }
    if (this.#bell > 0) {
      Atomics.store(h, slotI + (L.S_BELL >> 2), 0);
      removeBell(this.#bell);
    }
    if (this.#doorbell) leaveDoorbell();
    Atomics.store(h, slotI + (L.S_STATE >> 2), 0);
    this.#closer.abort(this.#closedError());
    this.#waiter?.stop();
    // The ring's name removed (or made anew) by someone else while we had it, and no other process
    // using it: nobody can open it again, so its System V semaphore set would be left for good.
    // (Unknown, when the name cannot be looked at, counts as ours: the set is removed only when sure.)
    const named = this.#lookUpName();
    const ours = this.#isOurs(named);
    const orphaned = !ours && (h[iFLAGS] & L.REMOVED) === 0 &&
      !describe(h, this.#geometry, this.#name, this.#fd, this.#slot).inUse;
    closeFd(this.#fd);
    this.#presence?.release();
    // Its presence record goes too, which nobody can use any more (as the other transports do).
    if (this.#presence && named === null) Presence.forget(`${SCHEME}:${this.#name}`);
    if (orphaned) this.#removeSemaphores();
    if (this.#pins === 0) this.#release();
  }

  /** Whether the ring was unlinked, or its name removed or given to another object. */
  #removedMeanwhile(): boolean {
    return (this.#h[iFLAGS] & L.REMOVED) !== 0 || !this.#isOurs(this.#lookUpName());
  }

  /** Whether what `#lookUpName` found is this ring (unknown counts as ours: nothing is removed then). */
  #isOurs(named: FileStat | null | undefined): boolean {
    return named === undefined ||
      (named !== null && named.dev === this.#identity.dev && named.ino === this.#identity.ino);
  }

  /**
   * What the ring's name refers to now: its backing file's stat, null when there is no such name,
   * undefined when it cannot be told.
   */
  #lookUpName(): FileStat | null | undefined {
    const path = backingPath(this.#name, "");
    try {
      return lstatPath(path);
    } catch {
      return undefined;
    }
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#mapping.unmap();
  }

  /**
   * Removes the ring for everyone: marks it unlinked (every process's
   * waiting sends settle with `ChannelClosedError`; receives do once the
   * frames left are taken), wakes every waiter, and removes the name
   * (shm_unlink). Works after `close()` too (then only the name goes).
   *
   * @returns Settles once removed.
   * @throws {NotFoundError} When the name was removed already.
   * @throws {PermissionDeniedError} When this user may not remove it.
   */
  unlink(): Promise<void> {
    if (!this.#released) {
      const h = this.#h;
      Atomics.or(h, iFLAGS, L.REMOVED);
      this.#wake(iDATA_MASK, iR_DATA_WAITERS, true);
      this.#wake(iSPACE_MASK, iW_SPACE_WAITERS, true);
    }
    // The name may be gone (removed by hand) or name another ring now: this ring is removed all the
    // same, but only a name that is still its own is unlinked.
    const named = this.#lookUpName();
    const ours = this.#isOurs(named);
    const code = ours ? unlinkObject(this.#name) : E.ENOENT;
    if (code === 0 || code === E.ENOENT) Presence.forget(`${SCHEME}:${this.#name}`);
    // Waits on the set, in every process, end with EIDRM (and then see the flag).
    this.#removeSemaphores();
    if (code === 0) return Promise.resolve();
    const error = explainUnlink(code, this.#name);
    if (named) error.message = `${SCHEME}: ${this.#name} names another ring now; it was left alone`;
    return Promise.reject(error);
  }

  /** Removes the ring's semaphore set, once (its id could be another set's afterwards). */
  #removeSemaphores(): void {
    if (this.#semaphoresRemoved) return;
    this.#semaphoresRemoved = true;
    removeSemaphores(this.#semid);
  }

  /** Same as {@linkcode ShmRing.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// -- opening ----------------------------------------------------------------------

interface Parsed {
  name: string;
  create: boolean;
  exclusive: boolean;
  permissions: number;
  capacity: number;
  capacityGiven: boolean;
  mode: ShmRingMode;
  modeGiven: boolean;
  overflow: ShmRingOverflow;
  overflowGiven: boolean;
  users: number;
  initTimeout: number;
}

function parseAddress(address: string, options: ShmRingOptions): Parsed {
  if (typeof address !== "string") throw new TypeError(`${SCHEME}: the address must be a string`);
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${SCHEME}: options must be an object`);
  }
  const rest = address.startsWith(`${SCHEME}:`) ? address.slice(SCHEME.length + 1) : address;
  const question = rest.indexOf("?");
  const name = question < 0 ? rest : rest.slice(0, question);
  checkPosixName(name, NAME_RULE);
  const query: Record<string, string> = {};
  if (question >= 0) {
    for (const part of rest.slice(question + 1).split("&")) {
      if (part === "") continue;
      const eq = part.indexOf("=");
      const key = eq < 0 ? part : part.slice(0, eq);
      if (!["capacity", "mode", "overflow", "users"].includes(key) || eq < 0) {
        throw new TypeError(
          `${SCHEME}: bad address "${address}": the parameters are capacity=<bytes>, mode=queue|broadcast, ` +
            `overflow=block|drop and users=<n>, got "${part}"`,
        );
      }
      query[key] = decodeURIComponent(part.slice(eq + 1));
    }
  }
  const pick = <V>(
    key: string,
    fromOption: V | undefined,
    fromQuery: V | undefined,
    same: (a: V, b: V) => boolean,
  ) => {
    if (fromOption !== undefined && fromQuery !== undefined && !same(fromOption, fromQuery)) {
      throw new TypeError(
        `${SCHEME}: the address says ${key}=${String(fromQuery)} but the options say ${String(fromOption)}`,
      );
    }
    return fromOption ?? fromQuery;
  };
  let permissions = options.permissions;
  let modeOption: ShmRingMode | undefined;
  if (typeof options.mode === "number") {
    if (permissions !== undefined && permissions !== options.mode) {
      throw new TypeError(`${SCHEME}: mode (${options.mode}) and permissions (${permissions}) disagree`);
    }
    permissions = options.mode;
  } else if (options.mode !== undefined) modeOption = checkMode(options.mode);
  permissions ??= 0o600;
  if (!Number.isInteger(permissions) || permissions < 0 || permissions > 0o777) {
    throw new RangeError(`${SCHEME}: permissions must be bits from 0 to 0o777, got ${permissions}`);
  }
  const modeQuery = query.mode === undefined ? undefined : checkMode(query.mode);
  const mode = pick("mode", modeOption, modeQuery, (a, b) => a === b);
  const overflowOption = options.overflow === undefined ? undefined : checkOverflow(options.overflow);
  const overflowQuery = query.overflow === undefined ? undefined : checkOverflow(query.overflow);
  const overflow = pick("overflow", overflowOption, overflowQuery, (a, b) => a === b);
  if (overflow !== undefined && (mode === "queue" || (mode === undefined && options.create))) {
    throw new TypeError(`${SCHEME}: overflow applies to broadcast rings; add mode: "broadcast"`);
  }
  const capacityOption = options.capacity === undefined ? undefined : parseCapacity(options.capacity);
  const capacityQuery = query.capacity === undefined ? undefined : parseCapacity(query.capacity);
  const capacity = pick("capacity", capacityOption, capacityQuery, (a, b) => a === b);
  const usersOption = options.users;
  const usersQuery = query.users === undefined ? undefined : Number(query.users);
  const users = pick("users", usersOption, usersQuery, (a, b) => a === b) ?? DEFAULT_USERS;
  if (!Number.isInteger(users) || users < 1 || users > L.MAX_SLOTS) {
    throw new RangeError(`${SCHEME}: users must be an integer from 1 to ${L.MAX_SLOTS}, got ${users}`);
  }
  const spin = options.spin;
  if (spin !== undefined && (typeof spin !== "number" || !(spin >= 0))) {
    throw new RangeError(`${SCHEME}: spin must be a non-negative number of µs, got ${spin}`);
  }
  const initTimeout = options.initTimeout ?? 1000;
  if (typeof initTimeout !== "number" || !(initTimeout >= 0) || initTimeout > 60_000) {
    throw new RangeError(`${SCHEME}: initTimeout must be from 0 to 60000 ms, got ${initTimeout}`);
  }
  if (options.subscribe !== undefined && typeof options.subscribe !== "boolean") {
    throw new TypeError(`${SCHEME}: subscribe must be a boolean`);
  }
  if (options.doorbell !== undefined && typeof options.doorbell !== "boolean") {
    throw new TypeError(`${SCHEME}: doorbell must be a boolean`);
  }
  if (options.onMissed !== undefined && typeof options.onMissed !== "function") {
    throw new TypeError(`${SCHEME}: onMissed must be a function`);
  }
  const create = options.create ?? false;
  const exclusive = options.exclusive ?? false;
  if (exclusive && !create) throw new TypeError(`${SCHEME}: exclusive needs create: true`);
  return {
    name,
    create,
    exclusive,
    permissions,
    capacity: capacity ?? DEFAULT_CAPACITY,
    capacityGiven: capacity !== undefined,
    mode: mode ?? "queue",
    modeGiven: mode !== undefined,
    overflow: overflow ?? "block",
    overflowGiven: overflow !== undefined,
    users: Math.max(L.MIN_SLOTS, Math.ceil(users / 32) * 32),
    initTimeout,
  };
}

function checkMode(value: unknown): ShmRingMode {
  if (value === "queue" || value === "broadcast") return value;
  throw new TypeError(
    `${SCHEME}: mode must be "queue", "broadcast" or permission bits, got ${String(value)}`,
  );
}

function checkOverflow(value: unknown): ShmRingOverflow {
  if (value === "block" || value === "drop") return value;
  throw new TypeError(`${SCHEME}: overflow must be "block" or "drop", got ${String(value)}`);
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * A capacity in bytes from a number or a string such as `"64KiB"`, rounded
 * up to a power of two.
 *
 * @param value The capacity.
 * @returns Bytes.
 * @throws {RangeError} Outside 4 KiB to 1 GiB.
 * @throws {TypeError} For a malformed string.
 */
function parseCapacity(value: number | string): number {
  let bytes: number;
  if (typeof value === "number") bytes = value;
  else if (typeof value === "string") {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
    const unit = match ? UNITS[match[2].toLowerCase()] : undefined;
    if (!match || unit === undefined) {
      throw new TypeError(
        `${SCHEME}: capacity must be bytes or a size such as "64KiB" or "1MiB", got "${value}"`,
      );
    }
    bytes = Math.ceil(Number(match[1]) * unit);
  } else throw new TypeError(`${SCHEME}: capacity must be a number or a string such as "1MiB"`);
  if (!Number.isFinite(bytes) || bytes < L.MIN_CAPACITY || bytes > L.MAX_CAPACITY) {
    throw new RangeError(`${SCHEME}: capacity must be from 4 KiB to 1 GiB, got ${String(value)}`);
  }
  return 2 ** Math.ceil(Math.log2(bytes));
}

function explainOpen(error: IpcError, name: string): Error {
  if (error.code === "ENOENT") {
    error.message =
      `shm_open ${name} failed: ENOENT (no ring has this name); open with { create: true } to make one`;
  }
  return error;
}

function explainUnlink(code: number, name: string): IpcError {
  const error = errnoError(code, "shm_unlink", `${SCHEME} ring ${name}`, strerror(code));
  if (code === E.ENOENT) error.message = `shm_unlink ${name} failed: the ring's name was already removed`;
  return error;
}

/** Waits (briefly, blocking) for a size set by the creator; returns the size. */
function awaitSize(fd: number, name: string, timeout: number): number {
  const deadline = performance.now() + timeout;
  for (;;) {
    const size = fstatFd(fd).size;
    if (size !== 0) {
      const min = L.dataOffset(L.MIN_SLOTS) + L.MIN_CAPACITY;
      const max = L.dataOffset(L.MAX_SLOTS) + L.MAX_CAPACITY;
      if (size < min || size > max) {
        throw new FrameError(
          `${SCHEME}:${name} is not an ipcbus ring: its size ${size} is outside ${min} to ${max} bytes`,
        );
      }
      return size;
    }
    if (performance.now() >= deadline) {
      throw new FrameError(
        `${SCHEME}:${name} has 0 bytes: its creator did not size it within ${timeout} ms (it may have died ` +
          `between shm_open and ftruncate; unlink the name and create it again)`,
      );
    }
    napSync(1);
  }
}

/** Waits (briefly, blocking) for a creator to finish: the magic is written last. */
function awaitMagic(mapping: Mapping, name: string, timeout: number): void {
  const h = new Int32Array(mapping.buffer);
  const deadline = performance.now() + timeout;
  for (;;) {
    const word0 = Atomics.load(h, 0);
    if (word0 === L.MAGIC_WORD0 && h[1] === L.MAGIC_WORD1) return;
    const blank = word0 === 0 && h[1] === 0;
    if (!blank) {
      const bytes = [...new Uint8Array(mapping.buffer, 0, 8)].map((b) => b.toString(16).padStart(2, "0"))
        .join(" ");
      throw new FrameError(
        `${SCHEME}:${name} is not an ipcbus ring: wrong magic ${bytes} (expected "IPCBRING")`,
      );
    }
    if (performance.now() >= deadline) {
      throw new FrameError(
        `${SCHEME}:${name} is not an ipcbus ring, or its creator did not finish within ${timeout} ms ` +
          `(no magic; it may have died while creating it: unlink the name and create it again)`,
      );
    }
    napSync(1);
  }
}

/** A ring's identity fields, read once and checked. */
interface Geometry {
  /** Offset of the ring data. */
  base: number;
  capacity: number;
  /** Largest payload. */
  max: number;
  slots: number;
  broadcast: boolean;
  drop: boolean;
  semid: number;
}

/**
 * Reads every identity field of the header once and checks it against the
 * layout and the object's size: nothing later re-reads them from the segment.
 */
function validate(mapping: Mapping, name: string, size: number): Geometry {
  const h = new Int32Array(mapping.buffer);
  const bad = (what: string) => new FrameError(`${SCHEME}:${name} is not a usable ipcbus ring: ${what}`);
  const version = h[iVERSION];
  if (version !== L.VERSION) {
    throw bad(`its layout version is ${version >>> 0}; this ipcbus speaks version ${L.VERSION}`);
  }
  const capacity = h[L.H_CAPACITY >> 2];
  if (capacity < L.MIN_CAPACITY || capacity > L.MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) {
    throw bad(`capacity ${capacity >>> 0} is not a power of two from 4096 to 2^30`);
  }
  const slots = h[L.H_SLOTS >> 2];
  if (slots < L.MIN_SLOTS || slots > L.MAX_SLOTS || (slots & 31) !== 0) {
    throw bad(`${slots >>> 0} slots is not a multiple of 32 from 32 to 1024`);
  }
  if (h[L.H_SLOT_TABLE >> 2] !== L.SLOT_TABLE || h[L.H_SLOT_SIZE >> 2] !== L.SLOT_SIZE) {
    throw bad(
      `the slot table is at ${h[L.H_SLOT_TABLE >> 2] >>> 0} with ${h[L.H_SLOT_SIZE >> 2] >>> 0}-byte slots`,
    );
  }
  const offset = h[L.H_DATA_OFFSET >> 2];
  if (offset !== L.dataOffset(slots)) {
    throw bad(`the data offset ${offset >>> 0} does not fit ${slots} slots`);
  }
  const max = h[L.H_MAX_MESSAGE >> 2];
  if (max < 0 || max > capacity / 2 - L.FRAME_HEADER) {
    throw bad(`the largest message ${max >>> 0} is more than half the capacity ${capacity}`);
  }
  const mode = h[L.H_MODE >> 2];
  const overflow = h[L.H_OVERFLOW >> 2];
  if ((mode !== 0 && mode !== 1) || (overflow !== 0 && overflow !== 1)) {
    throw bad(`unknown mode ${mode >>> 0} or overflow ${overflow >>> 0}`);
  }
  const total = (h[L.H_TOTAL_HI >> 2] >>> 0) * TWO_32 + (h[L.H_TOTAL_LO >> 2] >>> 0);
  if (total !== offset + capacity || total !== size) {
    throw bad(
      `size mismatch: the header says ${total} bytes (data offset ${offset} + capacity ${capacity}), ` +
        `the object has ${size}`,
    );
  }
  const semid = h[L.H_SEMID >> 2];
  return {
    base: offset,
    capacity,
    max,
    slots,
    broadcast: mode === 1,
    drop: mode === 1 && overflow === 1,
    semid,
  };
}

/** Checks that the ring's semaphore set exists and fits its slots. */
function checkSemaphores(geometry: Geometry, name: string): void {
  const { semid, slots } = geometry;
  const count = semaphoreCount(semid);
  if (count === slots) return;
  if (count === -E.EACCES || count === -E.EPERM) {
    throw errnoError(
      -count,
      "semctl",
      `${SCHEME}:${name}: this process may not use the ring's semaphore set (id ${semid})`,
      strerror(-count),
    );
  }
  throw new FrameError(
    `${SCHEME}:${name} is not usable: its System V semaphore set (id ${semid}) ` +
      (count < 0
        ? "is gone (removed by hand, or the system restarted)"
        : `has ${count} semaphores, not ${slots}`) +
      `; unlink the ring and create it again`,
  );
}

/** Refuses options that disagree with an existing ring. */
function checkAgainst(geometry: Geometry, name: string, parsed: Parsed): void {
  const capacity = geometry.capacity;
  const mode: ShmRingMode = geometry.broadcast ? "broadcast" : "queue";
  const overflow: ShmRingOverflow = geometry.drop ? "drop" : "block";
  if (parsed.capacityGiven && parsed.capacity !== capacity) {
    throw new TypeError(
      `${SCHEME}:${name} exists with capacity ${capacity}; ${parsed.capacity} was asked for`,
    );
  }
  if (parsed.modeGiven && parsed.mode !== mode) {
    throw new TypeError(`${SCHEME}:${name} exists as a ${mode} ring; ${parsed.mode} was asked for`);
  }
  if (parsed.overflowGiven && parsed.overflow !== overflow && mode === "broadcast") {
    throw new TypeError(
      `${SCHEME}:${name} exists with overflow "${overflow}"; "${parsed.overflow}" was asked for`,
    );
  }
}

/** Writes a new ring's header and slot semaphores; the magic goes last. */
function initialize(mapping: Mapping, settings: Geometry): void {
  const h = new Int32Array(mapping.buffer);
  const offset = settings.base;
  const total = offset + settings.capacity;
  h[L.H_VERSION >> 2] = L.VERSION;
  h[L.H_DATA_OFFSET >> 2] = offset;
  h[L.H_CAPACITY >> 2] = settings.capacity;
  h[L.H_MAX_MESSAGE >> 2] = settings.max;
  h[L.H_MODE >> 2] = settings.broadcast ? 1 : 0;
  h[L.H_OVERFLOW >> 2] = settings.drop ? 1 : 0;
  h[L.H_SLOTS >> 2] = settings.slots;
  h[L.H_SLOT_TABLE >> 2] = L.SLOT_TABLE;
  h[L.H_SLOT_SIZE >> 2] = L.SLOT_SIZE;
  h[L.H_TOTAL_LO >> 2] = total % TWO_32;
  h[L.H_TOTAL_HI >> 2] = Math.floor(total / TWO_32);
  h[L.H_CREATOR >> 2] = libc().getpid();
  h[L.H_SEMID >> 2] = settings.semid;
  h[1] = L.MAGIC_WORD1;
  Atomics.store(h, 0, L.MAGIC_WORD0);
}

/** Claims the first free slot (an OFD lock on its byte) and makes it this process's. */
function claimSlot(mapping: Mapping, fd: number, name: string, geometry: Geometry): [number, number] {
  const h = new Int32Array(mapping.buffer);
  const slots = geometry.slots;
  for (let slot = 0; slot < slots; slot++) {
    if (!lockBytes(fd, L.slotLockByte(slot), 1, true)) continue;
    const base = (L.SLOT_TABLE + slot * L.SLOT_SIZE) >> 2;
    const gen = ((Atomics.load(h, base + (L.S_GEN >> 2)) + 1) & L.GEN_MASK) || 1;
    Atomics.store(h, base + (L.S_BELL >> 2), 0);
    Atomics.store(h, base + (L.S_GEN >> 2), gen);
    Atomics.store(h, base + (L.S_PID >> 2), libc().getpid());
    Atomics.store(h, base + (L.S_FLAGS >> 2), 0);
    Atomics.store(h, base + (L.S_STATE >> 2), 1);
    // What a dead previous owner may have left registered.
    const word = slot >> 5;
    const bit = 1 << (slot & 31);
    Atomics.and(h, (L.SUB_MASK >> 2) + word, ~bit);
    if ((Atomics.and(h, (L.DATA_MASK >> 2) + word, ~bit) & bit) !== 0) Atomics.sub(h, iR_DATA_WAITERS, 1);
    if ((Atomics.and(h, (L.SPACE_MASK >> 2) + word, ~bit) & bit) !== 0) Atomics.sub(h, iW_SPACE_WAITERS, 1);
    resetSemaphore(geometry.semid, slot);
    return [slot, ((gen << L.TOKEN_SLOT_BITS) | (slot + 1)) | 0];
  }
  throw errnoError(
    E.EMFILE,
    "fcntl(F_OFD_SETLK)",
    `${SCHEME}:${name}: every one of its ${slots} user slots is taken by a live process (create the ring with ` +
      `a larger users option)`,
  );
}

/** The state of a mapped ring (h over the whole mapping). */
function describe(h: Int32Array, geometry: Geometry, name: string, fd: number, self: number): ShmRingStat {
  const { capacity, broadcast, slots } = geometry;
  const w = Atomics.load(h, iW_WRITE);
  const users: ShmRingUser[] = [];
  for (let slot = 0; slot < slots; slot++) {
    const alive = slot === self || lockedByte(fd, L.slotLockByte(slot), 1) >= 0;
    if (!alive) continue;
    const base = (L.SLOT_TABLE + slot * L.SLOT_SIZE) >> 2;
    const subscribed = (Atomics.load(h, base + (L.S_FLAGS >> 2)) & L.SUBSCRIBED) !== 0;
    const lag = subscribed ? Math.min(capacity, (w - Atomics.load(h, base + (L.S_CURSOR >> 2))) >>> 0) : 0;
    const doorbell = Atomics.load(h, base + (L.S_BELL >> 2)) !== 0 &&
      Atomics.load(h, base + (L.S_BELL_GEN >> 2)) === Atomics.load(h, base + (L.S_GEN >> 2));
    const pid = Atomics.load(h, base + (L.S_PID >> 2));
    users.push({ slot, pid, self: slot === self, subscribed, lag, doorbell });
  }
  return {
    name,
    capacity,
    maxMessageSize: geometry.max,
    mode: broadcast ? "broadcast" : "queue",
    overflow: geometry.drop ? "drop" : "block",
    slots,
    messages: (h[iW_SEQ_HI] >>> 0) * TWO_32 + (h[iW_SEQ_LO] >>> 0),
    pendingBytes: broadcast ? 0 : Math.min(capacity, (w - Atomics.load(h, iR_READ)) >>> 0),
    users,
    inUse: users.some((user) => !user.self),
    removed: (h[iFLAGS] & L.REMOVED) !== 0,
    semaphoreSet: geometry.semid,
  };
}

/**
 * Inspects a ring from outside without joining it: opens it read-only, checks
 * its header, and asks the kernel which slots are held by live processes
 * (their open-file-description locks). `inUse` answers "is anyone still
 * using this ring": a ring whose users all died (SIGKILL included) reads as
 * not in use, whatever process ids it recorded.
 *
 * @param address The ring's name (`"/orders"`) or `shm:` address.
 * @returns The ring's state; `users` lists the live ones.
 * @throws {NotFoundError} When no object has the name.
 * @throws {PermissionDeniedError} When this user may not read it.
 * @throws {FrameError} When it is not an ipcbus ring of this version.
 *
 * @example Is anyone still using it?
 * ```ts
 * import { inspectShmRing, ShmRing } from "@ipcbus/ipcbus/shm-ring";
 *
 * const name = `/ipcbus-doc-${crypto.randomUUID()}`;
 * const ring = ShmRing.open(name, { create: true });
 * console.log(inspectShmRing(name).inUse); // true
 * ring.close();
 * console.log(inspectShmRing(name).inUse); // false
 * await ring.unlink();
 * ```
 */
export function inspectShmRing(address: string): ShmRingStat {
  const name = nameOf(address);
  let opened;
  try {
    opened = openObject(name, { create: false, exclusive: false, mode: 0, readOnly: true });
  } catch (error) {
    throw explainOpen(error as IpcError, name);
  }
  const { fd } = opened;
  try {
    const size = awaitSize(fd, name, 0);
    const mapping = Mapping.map(fd, size, { writable: false, label: `${SCHEME} ring ${name}` });
    try {
      awaitMagic(mapping, name, 0);
      const geometry = validate(mapping, name, size);
      return describe(new Int32Array(mapping.buffer), geometry, name, fd, -1);
    } finally {
      mapping.unmap();
    }
  } finally {
    closeFd(fd);
  }
}

/** The checked name in a `shm:` address or a bare name, without parameters. */
function nameOf(address: string): string {
  if (typeof address !== "string") throw new TypeError(`${SCHEME}: the address must be a string`);
  const rest = address.startsWith(`${SCHEME}:`) ? address.slice(SCHEME.length + 1) : address;
  const name = rest.includes("?") ? rest.slice(0, rest.indexOf("?")) : rest;
  return checkPosixName(name, NAME_RULE);
}

function roundUp16(n: number): number {
  return Math.max(16, (n + 15) & ~15);
}

function nextTurn(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Factory for `shm:` addresses (registered with `open()`).
 *
 * @param address `shm:/name`, optionally with `?capacity=…&mode=…&overflow=…&users=…`.
 * @param options The options given to `open()` ({@linkcode ShmRingOptions}).
 * @returns The transport.
 * @throws {TypeError} For a malformed address.
 * @throws {NotFoundError} When the ring does not exist and `create` is not set.
 *
 * @example
 * ```ts
 * import { openShmRing } from "@ipcbus/ipcbus/shm-ring";
 *
 * const ring = openShmRing(`shm:/ipcbus-doc-${crypto.randomUUID()}`, { create: true });
 * console.log(ring.info.scheme, ring.info.mode); // "shm" "queue"
 * await ring.unlink();
 * ring.close();
 * ```
 */
export function openShmRing(address: string, options: TransportOptions): ShmRing {
  if (!address.startsWith(`${SCHEME}:`)) {
    throw new TypeError(`${SCHEME}: expected an address starting with "${SCHEME}:", got "${address}"`);
  }
  return ShmRing.open(address, options as ShmRingOptions);
}
