/**
 * The `file:` transport: a durable, replayable message log in a regular
 * file mapped with `mmap(MAP_SHARED)`, guarded by fcntl locks.
 *
 * Every message sent to a log is appended to the file and stays there,
 * numbered (a sequence number from 1, one more for each message), until
 * the log's bounded ring wraps over it. Any number of processes may append
 * at once (each append takes an exclusive open-file-description lock, which
 * the kernel drops if the holder dies); any number of readers read every
 * message (log semantics, not a queue), each from where it chooses:
 * `from: "start"` (the oldest retained message, the default), `"end"` (only
 * new ones) or a sequence number. A named reader (`reader: "billing"`) keeps
 * its position in the file, so a restarted reader resumes after the last
 * message it acknowledged. What Chronicle Queue offers Java, for Deno.
 *
 * ```ts ignore
 * const log = await open<Order>("file:/var/lib/app/orders.bus", { create: true, durability: "batch" });
 * await log.send(order);
 * for await (const order of log) handle(order); // replays from the start, then waits for new ones
 * ```
 *
 * Durability (`durability`), what a resolved `send` guarantees:
 * - `"none"` (default): the message is in the file's pages in the kernel's
 *   page cache, committed and visible to every reader; it survives the
 *   crash of any process (SIGKILL included), not an OS crash or power loss
 *   (the kernel writes the pages back within about 30 s on its own).
 * - `"batch"`: as `"none"`, and a sync (msync `MS_SYNC`) of everything
 *   appended runs at most `syncInterval` ms later (default 100), and when
 *   the log is closed: an OS crash or power loss loses at most the last
 *   `syncInterval` ms of resolved sends.
 * - `"sync"`: the message (and every message before it) is on stable
 *   storage: msync `MS_SYNC` of the appended range and of the header (which
 *   on Linux flushes the file's data for those ranges, as fdatasync would)
 *   completed before `send` resolved. Concurrent sends share one sync.
 *
 * `trySend`, `trySendBatch` never wait: the message is committed and
 * visible, and durable at the next sync (which `"batch"` and `"sync"`
 * schedule at once); `flush()` waits for it.
 *
 * Retention: the log is one file of `maxSize` bytes (default 64 MiB, fixed
 * when it is created, reserved on disk with posix_fallocate): a 12 KiB
 * header and a ring. When the ring is full, appending reclaims the oldest
 * messages. A reader that falls that far behind loses them and is told how
 * many: its next receive rejects with {@linkcode MessagesLostError}, once,
 * then goes on from the oldest message still there (or `onLoss` is called
 * instead). A message may be at most a quarter of the ring by default.
 *
 * Recovery: when a process opens a log nobody else has open, it checks the
 * frames that may not have reached the disk (or all of them with
 * `verify: "full"`), completes or drops the append of a writer that died in
 * the middle of one, and drops everything from the first torn or corrupt
 * frame on: the log is a clean prefix of intact messages. `info.recovery`
 * says what was found. A reader that meets a corrupt frame later rejects
 * once with `FrameError` and skips to the next intact one.
 *
 * The file's format is specified in `docs/file-log.md`.
 *
 * @example Two processes' view of one log, in one process
 * ```ts
 * import { open } from "@ipcbus/ipcbus";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
 * await using writer = await open<string>(`file:${path}`, { create: true, maxSize: 1 << 20 });
 * await using reader = await open<string>(`file:${path}`);
 * await writer.send("first");
 * await writer.send("second", { type: 2 });
 * console.log(await reader.receive()); // "first"
 * console.log((await reader.receiveMessage()).type); // 2
 * await writer.unlink();
 * ```
 *
 * @module
 */

import { HelperErrno } from "../ffi/_helper_thread.ts";
import {
  ChannelClosedError,
  errnoError,
  FrameError,
  IpcError,
  MessagesLostError,
  MessageTooLargeError,
} from "../errors.ts";
import { abortable, delay } from "../ffi/_delay.ts";
import { F } from "../ffi/constants.ts";
import { closeFd, type FileStat, fstatFd, lstatPath, unlinkPath } from "../ffi/fd.ts";
import { futexWait, futexWake, type SyncRange, syncRanges } from "../ffi/file_waiter.ts";
import { BELIEVE_ERRNO_AFTER, E, errno, libc, strerror } from "../ffi/libc.ts";
import { fillFlock, FLOCK } from "../ffi/structs.ts";
import { pageSize } from "../ffi/sysv.ts";
import { openRegularFile } from "../memory/_regular_file.ts";
import { MappedFile } from "../memory/mapped_file.ts";
import { FileLock, type HeldLock } from "../sync/file_lock.ts";
import { Presence } from "../sync/presence.ts";
import type {
  ReceivedFrame,
  ReceiveFilter,
  Transport,
  TransportInfo,
  TransportOptions,
} from "../transport.ts";
import {
  checkFrame,
  createLogFile,
  existsError,
  findIntactFrame,
  frameSpan,
  type LogMemory,
  recover,
  type RecoveryReport,
  repairDeadWriter,
} from "./_log_file.ts";
import {
  align8,
  decodeHeader,
  FRAME_HEADER,
  getU64,
  H_DAMAGED,
  H_DIRTY,
  H_DOORBELL,
  H_HEAD,
  H_NEXT_SEQ,
  H_RECOVERIES,
  H_SAVED_SEQ,
  H_SAVED_WRITE,
  H_SYNCED,
  H_WAITERS,
  H_WRITE,
  H_WRITER_DEATHS,
  LOCK_APPEND,
  LOCK_TABLE,
  LOCK_USERS,
  lockOfSlot,
  MAX_CAPACITY,
  MAX_READER_NAME,
  maxLength,
  MIN_CAPACITY,
  PADDING_TYPE,
  putFrameHeader,
  readU64,
  RING_OFFSET,
  S_ACKED_AT,
  S_GENERATION,
  S_NAME,
  S_NAME_CHECKSUM,
  S_NAME_LENGTH,
  S_POSITIONS,
  S_STATE,
  setU64,
  SLOT_BYTES,
  SLOTS,
  TABLE_OFFSET,
  tagOf,
  TWO_32,
  writeU64,
  xxh32,
  xxh32Of,
} from "./_log_format.ts";
import { Spinner } from "./_stream.ts";

export type { RecoveryReport } from "./_log_file.ts";
import { DEFAULT_SPIN_MICROS } from "./_stream_transport.ts";

/** How durable a resolved `send` is (see the module documentation). */
export type Durability = "none" | "batch" | "sync";

/** Where a reader starts: the oldest retained message, only new ones, or a sequence number. */
export type LogStart = "start" | "end" | number;

/** A loss a reader was told about (see `onLoss`). */
export interface LogLoss {
  /**
   * `"overrun"`: the reader fell behind and the ring reclaimed messages
   * (or `from` named messages no longer retained); `"gap"`: sequence
   * numbers are missing from the log (messages lost in a crash and
   * repaired away); `"damage"`: a corrupt frame was skipped.
   */
  kind: "overrun" | "gap" | "damage";
  /** How many messages were lost, when known. */
  lost: number | null;
  /** The sequence number the reader expected next (0 when it did not know yet). */
  expected: number;
  /** The sequence number of the message it gets next instead (null when none is there yet). */
  next: number | null;
  /** What happened, in words. */
  message: string;
}

/** Thrown once by a reader's receive after a loss (defined with the other errors, in `errors.ts`). */
export { MessagesLostError };

/** Options of {@linkcode MappedFileLog.open}. */
export interface MappedFileLogOptions {
  /** Create the log when it does not exist (default false). */
  create?: boolean;
  /** With `create`: fail with `AlreadyExistsError` when it exists. */
  exclusive?: boolean;
  /** Permission bits of a new log (default `0o600`; not writable by others: `o+w` is refused). */
  mode?: number;
  /** Size of a new log file in bytes (default 64 MiB; at least 64 KiB; the ring is this less 12 KiB). */
  maxSize?: number;
  /** Largest payload of a new log (default: a quarter of the ring, at most 16 MiB). Fixed at creation. */
  maxMessageSize?: number;
  /** `"none"` (default), `"batch"` or `"sync"`: what a resolved `send` guarantees (module docs). */
  durability?: Durability;
  /** With `"batch"`: the longest time in ms between an append and its sync (default 100). */
  syncInterval?: number;
  /** A named reader: its position is kept in the file (at most 48 UTF-8 bytes; 64 names per log). */
  reader?: string;
  /** Where this reader starts (default `"start"`); a named reader uses it only the first time. */
  from?: LogStart;
  /**
   * When a named reader's position is stored: `"auto"` (default) as each
   * message is handed over (`receive` resolves, `tryReceive` returns);
   * `"manual"` only on `ack()`, so messages received but not acknowledged
   * are delivered again after a restart.
   */
  ack?: "auto" | "manual";
  /** Called instead of throwing when this reader loses messages or skips a corrupt frame. */
  onLoss?: (loss: LogLoss) => void;
  /** What the first opener checks: `"tail"` (default: what may not have been synced) or `"full"`. */
  verify?: "tail" | "full";
  /** µs to spin before parking a receive (default 100; 0 disables). */
  spin?: number;
  /** Accept a log file owned by another user (default false). */
  allowOtherOwner?: boolean;
  /**
   * Gives up opening: opening waits (without blocking the event loop) while another process holds the
   * log's append lock or runs its recovery.
   */
  signal?: AbortSignal;
}

/** What {@linkcode MappedFileLog.info} describes. */
export interface MappedFileLogInfo extends TransportInfo {
  /** Why `maxMessageSize` is what it is. */
  maxMessageSizeReason: string;
  /** The log file. */
  path: string;
  /** The durability level of this open. */
  durability: Durability;
  /** Ring bytes (the file is 12 KiB more). */
  capacity: number;
  /** The named reader, or null. */
  reader: string | null;
  /** Every reader sees every message. */
  delivery: "log";
  /** Whether this open created the file. */
  created: boolean;
  /** When the log was created. */
  createdAt: Date;
  /** The owner's uid. */
  owner: number;
  /** The permission bits. */
  mode: number;
  /** What opening found and repaired. */
  recovery: RecoveryReport;
}

/** Counters of a log ({@linkcode MappedFileLog.stats}). */
export interface MappedFileLogStats {
  /** Logical bytes ever appended (padding included): the commit point. */
  writePosition: number;
  /** Logical position of the oldest retained message. */
  head: number;
  /** The sequence number the next message gets. */
  nextSequence: number;
  /** Everything before this position is on stable storage (as far as syncs recorded it). */
  syncedPosition: number;
  /** This reader's position. */
  readPosition: number;
  /** The sequence number this reader expects next (0 when unknown yet). */
  readSequence: number;
  /** Bytes this reader has yet to read. */
  lagBytes: number;
  /** Messages this reader lost (overruns and gaps) since it was opened. */
  lost: number;
  /** Corrupt frames this reader skipped since it was opened. */
  damaged: number;
  /** Readers parked waiting, over all processes. */
  waiters: number;
  /** Writers that died holding the append lock (repaired), ever. */
  writerDeaths: number;
  /** Repairs made when opening, ever. */
  recoveries: number;
  /** Bytes dropped by repairs, ever. */
  damagedBytes: number;
}

/** A named reader, as {@linkcode MappedFileLog.readers} lists it. */
export interface LogReaderInfo {
  /** Its name. */
  name: string;
  /** The sequence number it expects next. */
  nextSequence: number;
  /** Its logical position. */
  position: number;
  /** Whether a process has it open now. */
  inUse: boolean;
  /** When it last acknowledged on close or `ack()` (null if never). */
  ackedAt: Date | null;
}

const SCHEME = "file";
const DEFAULT_MAX_SIZE = 64 * 1024 * 1024;
const MIN_MAX_SIZE = 64 * 1024;
const DEFAULT_MESSAGE_LIMIT = 16 * 1024 * 1024;
const DEFAULT_SYNC_INTERVAL_MS = 100;
/** µs `trySend` retries a busy append lock before it reports "not now". */
const TRY_LOCK_SPIN_US = 20;
/** µs `send` retries a busy append lock before it parks. */
const SEND_LOCK_SPIN_US = 200;
/** Longest futex wait of a parked receive before it looks again (the bound on a missed wake-up). */
const WAIT_SLICE_MS = 50;
/** Frames up to this many bytes are copied out word by word (measured: faster than `subarray` + `set`). */
const SMALL_COPY = 256;
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * One process's open of a `file:` log: a writer, and a reader with its own
 * position.
 *
 * @example A named reader resumes where it left off
 * ```ts
 * import { Channel } from "@ipcbus/ipcbus";
 * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
 * using writer = new Channel<number>(await MappedFileLog.open(path, { create: true, maxSize: 1 << 20 }));
 * await writer.sendBatch([1, 2, 3]);
 * {
 *   using billing = new Channel<number>(await MappedFileLog.open(path, { reader: "billing" }));
 *   console.log(await billing.receive()); // 1
 * }
 * using again = new Channel<number>(await MappedFileLog.open(path, { reader: "billing" }));
 * console.log(await again.receive()); // 2: it resumes
 * await writer.unlink();
 * ```
 */
export class MappedFileLog implements Transport, Disposable {
  /** Description: capabilities, limits, path, durability, recovery. */
  readonly info: MappedFileLogInfo;
  readonly #path: string;
  readonly #file: MappedFile;
  readonly #fd: number;
  readonly #lock: FileLock;
  readonly #memory: LogMemory;
  readonly #bytes: Uint8Array;
  readonly #words: Uint32Array;
  readonly #ints: Int32Array;
  readonly #big: BigInt64Array;
  readonly #pointer: Deno.PointerObject;
  readonly #capacity: number;
  readonly #maxMessageSize: number;
  readonly #identity: FileStat;
  readonly #presence: Presence | null;
  readonly #durability: Durability;
  readonly #syncInterval: number;
  readonly #lockRequest = new Uint8Array(FLOCK.size);
  readonly #fcntlLock = libc().fcntl_lock;
  readonly #pageSize = pageSize();
  readonly #unlockRequest = new Uint8Array(FLOCK.size);
  readonly #closer = new AbortController();
  readonly #one: Uint8Array[] = [EMPTY];
  /** The frame `tryReceiveBatch` hands to its sink, made once. */
  readonly #batchFrame: ReceivedFrame = { data: EMPTY, type: 0, priority: 0 };
  readonly #receiveSpinner: Spinner;
  /** The spinner's attempt, made once (not a closure per receive). */
  readonly #attempt = (): ReceivedFrame | undefined => this.#take() ?? undefined;
  readonly #onLoss: ((loss: LogLoss) => void) | undefined;
  #closed = false;
  #lastSignal: AbortSignal | undefined;
  #lastBoth: AbortSignal | undefined;

  // Reading.
  #readPos = 0;
  #readSeq = 0;
  #skipUntil = 0;
  #jumped = false;
  #lastWrite = 0;
  #rx: Uint8Array<ArrayBuffer> = new Uint8Array(64 * 1024);
  #rxWords: Uint32Array<ArrayBuffer> = new Uint32Array(this.#rx.buffer);
  #data: Uint8Array<ArrayBuffer> = this.#rx.subarray(FRAME_HEADER, FRAME_HEADER);
  #frameType = 0;
  #lost = 0;
  #damaged = 0;
  #parked = 0;

  // Named reader.
  #slot = -1;
  #slotClaim: HeldLock | null = null;
  readonly #manualAck: boolean;

  // Durability.
  #appendedUpTo = 0;
  #syncedUpTo = 0;
  #flushing: Promise<void> | null = null;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    path: string,
    file: MappedFile,
    lock: FileLock,
    identity: FileStat,
    created: boolean,
    geometry: { capacity: number; maxMessageSize: number; createdAt: Date },
    options: MappedFileLogOptions,
    recovery: RecoveryReport,
  ) {
    this.#path = path;
    this.#file = file;
    this.#fd = file.fd;
    this.#lock = lock;
    this.#identity = identity;
    this.#capacity = geometry.capacity;
    const limit = Math.min(geometry.maxMessageSize, options.maxMessageSize ?? geometry.maxMessageSize);
    this.#maxMessageSize = geometry.maxMessageSize;
    this.#durability = options.durability ?? "none";
    this.#syncInterval = options.syncInterval ?? DEFAULT_SYNC_INTERVAL_MS;
    this.#receiveSpinner = new Spinner(options.spin ?? DEFAULT_SPIN_MICROS);
    this.#onLoss = options.onLoss;
    this.#manualAck = options.ack === "manual";
    const buffer = file.buffer;
    this.#bytes = new Uint8Array(buffer);
    this.#words = new Uint32Array(buffer);
    this.#ints = new Int32Array(buffer);
    this.#big = new BigInt64Array(buffer, 0, RING_OFFSET / 8);
    this.#pointer = file.unsafePointer!;
    this.#memory = {
      bytes: this.#bytes,
      words: this.#words,
      capacity: this.#capacity,
      maxMessageSize: this.#maxMessageSize,
    };
    fillFlock(this.#lockRequest, F.WRLCK, LOCK_APPEND, 1);
    fillFlock(this.#unlockRequest, F.UNLCK, LOCK_APPEND, 1);
    this.info = {
      scheme: SCHEME,
      address: `${SCHEME}:${path}`,
      capabilities: {
        types: true,
        typeFilter: false,
        priority: false,
        multiWriter: true,
        multiReader: true,
        persistent: true,
      },
      maxMessageSize: limit,
      maxType: 0xffff_ffff,
      maxPriority: 0,
      maxMessageSizeReason: limit < geometry.maxMessageSize
        ? `${SCHEME}: the maxMessageSize option is ${limit} bytes`
        : `${SCHEME}: ${path} takes messages of at most ${geometry.maxMessageSize} bytes, fixed when it was ` +
          `created (maxMessageSize, at most half its ring of ${geometry.capacity} bytes)`,
      path,
      durability: this.#durability,
      capacity: geometry.capacity,
      reader: options.reader ?? null,
      delivery: "log",
      created,
      createdAt: geometry.createdAt,
      owner: identity.uid,
      mode: identity.permissions,
      recovery,
    };
    // Presence: tools (`ipcbus ls`, `gc`) see the log is in use; gc never deletes a log, only reports it.
    this.#presence = Presence.hold(`${SCHEME}:${path}`, { mode: this.#identity.permissions & 0o666 });
  }

  /**
   * Opens (and with `create`, makes) a log.
   *
   * @param path Absolute path of the log file.
   * @param options Creation, durability, reader and recovery options.
   * @returns The transport.
   * @throws {TypeError} For a relative path or a bad option.
   * @throws {RangeError} For an out-of-range `maxSize`, `maxMessageSize`, `mode` or `syncInterval`.
   * @throws {NotFoundError} When the log does not exist and `create` is not set.
   * @throws {AlreadyExistsError} With `create` and `exclusive` when it exists.
   * @throws {PermissionDeniedError} For a symlink, a FIFO or other non-regular file, another user's
   *   file, a file any user may write, or no access.
   * @throws {FrameError} For a file that is not a log: wrong magic, a truncated or corrupt header,
   *   an unknown version.
   * @throws {IpcError} When the named reader is open elsewhere (`EBUSY`) or the reader table is full,
   *   or a system call fails (`ENOSPC` when creating...).
   *
   * @example Create a small log with synchronous durability
   * ```ts
   * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
   * const log = await MappedFileLog.open(path, { create: true, maxSize: 1 << 20, durability: "sync" });
   * console.log(log.info.capacity, log.info.durability); // 1036288 "sync"
   * await log.send(new TextEncoder().encode("durable"), 1, 0, AbortSignal.timeout(5000));
   * log.close();
   * await log.unlink();
   * ```
   */
  static async open(path: string, options: MappedFileLogOptions = {}): Promise<MappedFileLog> {
    const checked = checkOptions(path, options);
    const mode = options.mode ?? 0o600;
    let created = false;
    let fd = -1;
    if (options.create) {
      fd = createLogFile(path, mode, checked.capacity, checked.maxMessageSize);
      if (fd >= 0) created = true;
      else if (options.exclusive) throw existsError(path);
    }
    let stat: FileStat;
    if (fd < 0) {
      ({ fd, stat } = openRegularFile(path, {
        mode,
        refuseWorldWritable: true,
        allowOtherOwner: options.allowOtherOwner,
        label: `${SCHEME}:`,
      }));
    } else {
      try {
        stat = fstatFd(fd); // the file this call made: ours, regular, with `mode`
      } catch (error) {
        closeFd(fd);
        throw error;
      }
    }
    let file: MappedFile;
    try {
      file = MappedFile.fromFd(fd, { path });
    } catch (error) {
      closeFd(fd);
      throw error;
    }
    let lock: FileLock | undefined;
    try {
      const geometry = decodeHeader(file.view.subarray(0, Math.min(file.length, RING_OFFSET)), path);
      lock = FileLock.fromFd(file.fd, { label: path });
      const recovery = await join(file, lock, geometry, path, options.verify === "full", options.signal);
      const log = new MappedFileLog(path, file, lock, stat, created, geometry, options, recovery);
      await log.#startReading(options);
      return log;
    } catch (error) {
      lock?.close();
      file.close(); // closing the descriptor releases its locks
      throw error;
    }
  }

  // -- appending ----------------------------------------------------------------

  /** Tries the append lock, retrying for up to `spinMicros`; false when another writer holds it. */
  #tryLockAppend(spinMicros: number): boolean {
    const fcntl_lock = this.#fcntlLock;
    const fd = this.#fd;
    const request = this.#lockRequest;
    let deadline = 0;
    for (let odd = 0;;) {
      if (fcntl_lock(fd, F.OFD_SETLK, request) === 0) return true;
      const code = errno();
      if (code === E.EAGAIN || code === E.EACCES || code === E.EINTR) {
        const now = performance.now();
        if (deadline === 0) deadline = now + spinMicros / 1000;
        else if (now >= deadline) return false;
        continue;
      }
      if (++odd < BELIEVE_ERRNO_AFTER) continue; // errno can be stale (see ffi/libc.ts)
      throw errnoError(code, "fcntl", `(F_OFD_SETLK) append lock of ${this.#path}`, strerror(code));
    }
  }

  #unlockAppend(): void {
    this.#fcntlLock(this.#fd, F.OFD_SETLK, this.#unlockRequest);
  }

  /**
   * Appends frames (holding the append lock): reclaims old frames as
   * needed, writes each frame, then publishes the write position. At most
   * half the ring goes in one call, so a batch never overwrites itself.
   *
   * @returns How many frames were appended, from `frames[first]` on.
   */
  #append(frames: readonly Uint8Array[], type: number, first = 0): number {
    const words = this.#words;
    const bytes = this.#bytes;
    const capacity = this.#capacity;
    // Plain loads: only lock holders write these, and taking the lock (a system call) is a full barrier.
    let write = getU64(words, H_WRITE >>> 2);
    let seq = getU64(words, H_NEXT_SEQ >>> 2);
    if (words[H_DIRTY >>> 2] !== 0) ({ write, seq } = repairDeadWriter(this.#memory));
    let head = getU64(words, H_HEAD >>> 2);
    // Plain stores for fields only lock holders read (after a system call: a full barrier). They are
    // also crash-safe: one thread's stores are made in program order, and a process killed at any
    // instant leaves exactly the stores before that instant in the shared pages.
    setU64(words, H_SAVED_WRITE >>> 2, write);
    setU64(words, H_SAVED_SEQ >>> 2, seq);
    words[H_DIRTY >>> 2] = 1;
    const high = (write / TWO_32) >>> 0;
    const budget = capacity / 2;
    const start = write;
    const limit = frames.length - first;
    let count = 0;
    for (; count < limit; count++) {
      const data = frames[first + count];
      const length = data.length;
      const size = align8(FRAME_HEADER + length);
      let phys = write % capacity;
      const room = capacity - phys;
      const need = room < size ? room + size : size;
      if (count > 0 && write + need - start > budget) break;
      if (room < size) {
        head = this.#reclaim(head, write + room + size);
        if (room >= FRAME_HEADER) {
          const at = RING_OFFSET + phys;
          putFrameHeader(words, at, room - FRAME_HEADER, PADDING_TYPE, write, seq);
          words[at >>> 2] = xxh32(words, bytes, at + 4, FRAME_HEADER - 4);
        }
        write += room;
        phys = 0;
      } else {
        head = this.#reclaim(head, write + size);
      }
      const at = RING_OFFSET + phys;
      putFrameHeader(words, at, length, type, write, seq);
      bytes.set(data, at + FRAME_HEADER);
      words[at >>> 2] = xxh32(words, bytes, at + 4, FRAME_HEADER - 4 + length);
      write += size;
      seq++;
    }
    // The commit point, a release for readers: low word, then the high word if it changed (readers read
    // high, low, high).
    Atomics.store(words, H_WRITE >>> 2, write >>> 0);
    if ((write / TWO_32) >>> 0 !== high) Atomics.store(words, (H_WRITE >>> 2) + 1, (write / TWO_32) >>> 0);
    setU64(words, H_NEXT_SEQ >>> 2, seq);
    words[H_DIRTY >>> 2] = 0;
    this.#appendedUpTo = write;
    return count;
  }

  /** Appends one frame (holding the append lock), without allocating. */
  #appendOne(data: Uint8Array, type: number): void {
    const one = this.#one;
    one[0] = data;
    try {
      this.#append(one, type);
    } finally {
      one[0] = EMPTY; // keep no reference to the caller's bytes
    }
  }

  /** Moves the head past the oldest frames until `end - head` fits the ring; publishes it first. */
  #reclaim(head: number, end: number): number {
    const capacity = this.#capacity;
    if (end - head <= capacity) return head;
    let next = head;
    while (end - next > capacity) {
      const step = frameSpan(this.#memory, next);
      if (step <= 0) {
        next = end - capacity; // damaged old frames: readers resynchronise from here
        break;
      }
      next += step;
    }
    writeU64(this.#words, H_HEAD >>> 2, next); // before any byte of those frames is overwritten
    return next;
  }

  /**
   * Wakes parked readers (any process) if there are any, and (unless the
   * caller awaits a sync itself) schedules the sync the durability level asks for.
   */
  #afterAppend(awaited = false): void {
    // A plain load is enough: the unlock before it was a system call, a full barrier.
    if (this.#ints[H_WAITERS >>> 2] !== 0) {
      Atomics.add(this.#words, H_DOORBELL >>> 2, 1);
      futexWake(this.#pointer, H_DOORBELL, 0x7fff_ffff);
    }
    if (this.#durability !== "none" && !awaited && this.#flushTimer === undefined) {
      const interval = this.#durability === "batch" ? this.#syncInterval : 0;
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = undefined;
        this.flush().catch(() => {}); // a failing sync shows in the next send or flush()
      }, interval);
    }
  }

  #checkSend(data: Uint8Array, type: number): void {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    if (data.length > this.info.maxMessageSize) {
      throw new MessageTooLargeError(data.length, this.info.maxMessageSize, this.info.maxMessageSizeReason);
    }
    if (!Number.isInteger(type) || type < 1 || type > 0xffff_ffff) {
      throw new RangeError(`${SCHEME}: type must be from 1 to 4294967295, got ${type}`);
    }
  }

  /**
   * Appends without waiting (retrying a busy append lock for a few µs).
   *
   * @param data The payload.
   * @param type The message type, 1 to 2^32 − 1.
   * @param _priority Unused.
   * @returns False when another writer held the append lock (nothing was appended).
   * @throws {ChannelClosedError} After `close()`.
   * @throws {MessageTooLargeError} For a payload over `info.maxMessageSize`.
   */
  trySend(data: Uint8Array, type: number, _priority: number): boolean {
    this.#checkSend(data, type);
    if (!this.#tryLockAppend(TRY_LOCK_SPIN_US)) return false;
    try {
      this.#appendOne(data, type);
    } finally {
      this.#unlockAppend();
    }
    this.#afterAppend();
    return true;
  }

  /**
   * Appends a prefix of `frames` under one acquisition of the append lock,
   * publishing them and waking readers once.
   *
   * @param frames The payloads.
   * @param type Their type.
   * @param _priority Unused.
   * @returns How many were appended (0 when another writer held the lock; fewer than all when they
   *   exceed half the ring). Like `trySend`, it does not wait for a sync: with `durability: "sync"`
   *   the frames are durable at the next sync (`flush()` waits for it; `sendBatch` waits itself).
   * @throws {ChannelClosedError} After `close()`.
   * @throws {MessageTooLargeError} For a payload over `info.maxMessageSize` (nothing is appended).
   */
  trySendBatch(frames: readonly Uint8Array[], type: number, _priority: number): number {
    for (const data of frames) this.#checkSend(data, type);
    if (frames.length === 0 || !this.#tryLockAppend(TRY_LOCK_SPIN_US)) return 0;
    let count: number;
    try {
      count = this.#append(frames, type);
    } finally {
      this.#unlockAppend();
    }
    this.#afterAppend();
    return count;
  }

  /**
   * Appends, waiting (without blocking the event loop) for the append lock,
   * and with `durability: "sync"` for the disk.
   *
   * @param data The payload.
   * @param type The message type.
   * @param _priority Unused.
   * @param signal Aborting it rejects with `signal.reason`. An abort during the sync of `"sync"`
   *   leaves the message appended (it is only not known to be durable yet).
   * @returns `undefined` when appended at once (and no sync is awaited), else a promise.
   * @throws {ChannelClosedError} After `close()`, also while waiting.
   * @throws {IpcError} When the sync fails (`EIO`, `ENOSPC`): the message may not be durable.
   */
  send(data: Uint8Array, type: number, _priority: number, signal: AbortSignal): Promise<void> | undefined {
    this.#checkSend(data, type);
    if (this.#tryLockAppend(SEND_LOCK_SPIN_US)) {
      try {
        this.#appendOne(data, type);
      } finally {
        this.#unlockAppend();
      }
      if (this.#durability !== "sync") {
        this.#afterAppend();
        return undefined;
      }
      this.#afterAppend(true);
      return this.#flushTo(this.#appendedUpTo, signal);
    }
    return this.#sendSlowly([data.slice()], type, signal).then(() =>
      this.#durability === "sync" ? this.#flushTo(this.#appendedUpTo, signal) : undefined
    );
  }

  /**
   * Appends every frame, waiting for the append lock (and, with `"sync"`,
   * for the disk), in as few lock acquisitions as half-ring budgets allow.
   *
   * @param frames The payloads.
   * @param type Their type.
   * @param _priority Unused.
   * @param signal Aborting it rejects with `signal.reason` (frames appended by then stay appended).
   * @returns Resolves when all are appended (and durable with `"sync"`).
   * @throws {ChannelClosedError} After `close()`, also while waiting.
   */
  async sendBatch(
    frames: readonly Uint8Array[],
    type: number,
    _priority: number,
    signal: AbortSignal,
  ): Promise<void> {
    const awaited = this.#durability === "sync";
    for (const data of frames) this.#checkSend(data, type);
    let sent = 0;
    while (sent < frames.length) {
      if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
      let count = 0;
      if (this.#tryLockAppend(TRY_LOCK_SPIN_US)) {
        try {
          count = this.#append(frames, type, sent);
        } finally {
          this.#unlockAppend();
        }
        this.#afterAppend(awaited);
      } else {
        count = await this.#sendSlowly(frames, type, signal, sent);
      }
      sent += count;
    }
    if (awaited) await this.#flushTo(this.#appendedUpTo, signal);
  }

  async #sendSlowly(
    frames: readonly Uint8Array[],
    type: number,
    signal: AbortSignal,
    first = 0,
  ): Promise<number> {
    const both = signal === this.#lastSignal ? this.#lastBoth! : this.#combine(signal);
    let held: HeldLock;
    try {
      held = await this.#lock.lock({ start: LOCK_APPEND, length: 1, signal: both });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`, { cause: error });
      throw error;
    }
    let count: number;
    try {
      count = this.#append(frames, type, first);
    } finally {
      held.unlock();
    }
    this.#afterAppend(this.#durability === "sync");
    return count;
  }

  /** The caller's signal combined with close(), made once per signal (AbortSignal.any costs µs). */
  #combine(signal: AbortSignal): AbortSignal {
    this.#lastSignal = signal;
    return this.#lastBoth = AbortSignal.any([signal, this.#closer.signal]);
  }

  // -- durability ---------------------------------------------------------------

  /**
   * Waits until everything appended to the log so far (by any process) is
   * on stable storage: msync `MS_SYNC` of the unsynced part of the ring and
   * of the header, on a helper thread. Works at every durability level.
   *
   * @param signal Aborting it stops waiting (the sync itself completes).
   * @returns Resolves once synced.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When msync fails (`EIO`, `ENOSPC`...).
   *
   * @example Make a burst durable once
   * ```ts
   * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
   * using log = await MappedFileLog.open(path, { create: true, maxSize: 1 << 20 });
   * const event = new TextEncoder().encode("event");
   * for (let i = 0; i < 100; i++) log.trySend(event, 1, 0);
   * await log.flush();
   * console.log(log.stats().syncedPosition === log.stats().writePosition); // true
   * await log.unlink();
   * ```
   */
  flush(signal?: AbortSignal): Promise<void> {
    if (this.#closed) return Promise.reject(new ChannelClosedError(`${this.info.address} is closed`));
    return this.#flushTo(readU64(this.#words, H_WRITE >>> 2), signal);
  }

  async #flushTo(target: number, signal?: AbortSignal): Promise<void> {
    while (this.#syncedUpTo < target) {
      if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
      if (this.#flushing === null) {
        this.#flushing = this.#syncOnce().finally(() => this.#flushing = null);
      }
      await abortable(this.#flushing, signal);
    }
  }

  /** The ranges of the mapping that hold [from, to) of the ring, and the header and reader table. */
  #syncRanges(from: number, to: number): SyncRange[] {
    const pointer = this.#pointer;
    const capacity = this.#capacity;
    const page = this.#pageSize;
    const ranges: SyncRange[] = [{ pointer, offset: 0, length: RING_OFFSET }];
    const add = (start: number, end: number) => {
      const offset = RING_OFFSET + start - (start % page);
      ranges.push({ pointer, offset, length: RING_OFFSET + end - offset });
    };
    if (to - from >= capacity) add(0, capacity);
    else if (to > from) {
      const a = from % capacity;
      const b = to % capacity;
      if (a < b) add(a, b);
      else {
        add(a, capacity);
        if (b > 0) add(0, b);
      }
    }
    return ranges;
  }

  async #syncOnce(): Promise<void> {
    const words = this.#words;
    const to = readU64(words, H_WRITE >>> 2);
    const recorded = Number(Atomics.load(this.#big, H_SYNCED >>> 3));
    const from = Math.max(Math.min(recorded, to), to - this.#capacity);
    try {
      await syncRanges(this.#syncRanges(from, to), -1);
    } catch (error) {
      if (this.#closed) throw new ChannelClosedError(`${this.info.address} was closed during a sync`);
      if (error instanceof HelperErrno) {
        throw errnoError(
          error.errno,
          error.syscall,
          `${this.#path} (the log may not be durable)`,
          strerror(error.errno),
        );
      }
      throw error;
    }
    if (this.#closed) return;
    this.#syncedUpTo = Math.max(this.#syncedUpTo, to);
    // Record it for recovery: the largest synced position any process reached.
    const big = this.#big;
    for (let seen = Atomics.load(big, H_SYNCED >>> 3); Number(seen) < to;) {
      const now = Atomics.compareExchange(big, H_SYNCED >>> 3, seen, BigInt(to));
      if (now === seen) break;
      seen = now;
    }
  }

  // -- reading ------------------------------------------------------------------

  /** Positions the reader (under the append lock, so head, write position and numbers agree). */
  async #startReading(options: MappedFileLogOptions): Promise<void> {
    const held = await this.#lock.lock({ start: LOCK_APPEND, length: 1, signal: options.signal });
    try {
      const words = this.#words;
      if (Atomics.load(words, H_DIRTY >>> 2) !== 0) repairDeadWriter(this.#memory);
      const write = readU64(words, H_WRITE >>> 2);
      const head = readU64(words, H_HEAD >>> 2);
      const next = readU64(words, H_NEXT_SEQ >>> 2);
      this.#lastWrite = write;
      this.#appendedUpTo = write;
      this.#syncedUpTo = Math.min(Number(Atomics.load(this.#big, H_SYNCED >>> 3)), write);
      const from = options.from ?? "start";
      if (options.reader !== undefined) {
        const stored = await this.#claimReader(options.reader, from, head, write, next, options.signal);
        if (stored !== null) {
          this.#resume(stored.seq, stored.position, head, write, next);
          return;
        }
      }
      this.#place(from, head, write, next);
      if (this.#slot >= 0) this.#commitSlot();
    } finally {
      held.unlock();
    }
  }

  /** Sets the position for `from`. */
  #place(from: LogStart, head: number, write: number, next: number): void {
    if (from === "end") {
      this.#readPos = write;
      this.#readSeq = next;
      return;
    }
    const first = this.#seqAt(head, write);
    if (from === "start") {
      this.#readPos = head;
      this.#readSeq = first ?? (head === write ? next : 0);
      return;
    }
    if (from >= next) {
      this.#readPos = write;
      this.#readSeq = next;
      this.#skipUntil = from;
    } else if (first !== null && from < first) {
      this.#readPos = head;
      this.#readSeq = from; // the first read reports the messages no longer retained
      this.#jumped = true;
    } else {
      this.#seek(from, head, write);
    }
  }

  /** Restores a named reader's stored position, validated against the log. */
  #resume(seq: number, position: number, head: number, write: number, next: number): void {
    if (!Number.isSafeInteger(seq) || seq < 1 || !Number.isSafeInteger(position) || position % 8 !== 0) {
      this.#place("start", head, write, next);
      return;
    }
    if (position > write || seq > next) {
      // The log lost its tail in a crash since: go on with what comes next.
      this.#readPos = write;
      this.#readSeq = next;
      return;
    }
    if (position < head) {
      this.#readPos = head;
      this.#readSeq = seq; // overrun while away: reported by the first read
      this.#jumped = true;
      return;
    }
    if (position === write ? seq === next : this.#seqAt(position, write) === seq) {
      this.#readPos = position;
      this.#readSeq = seq;
      return;
    }
    this.#seek(seq, head, write);
  }

  /** The sequence number of the intact frame at `position` (skipping padding), or null. */
  #seqAt(position: number, write: number): number | null {
    const out = { type: 0, seq: 0 };
    for (let at = position; at < write;) {
      const step = checkFrame(this.#memory, at, write, out);
      if (step < 0) return null;
      if (out.type > 0) return out.seq;
      at += step;
    }
    return null;
  }

  /** Finds the first message numbered `seq` or more, walking from the head. */
  #seek(seq: number, head: number, write: number): void {
    const out = { type: 0, seq: 0 };
    let at = head;
    while (at < write) {
      const step = checkFrame(this.#memory, at, write, out);
      if (step < 0) break; // damaged: reading from here reports it
      if (out.type > 0 && out.seq >= seq) break;
      at += step;
    }
    this.#readPos = at;
    this.#readSeq = seq;
  }

  /** The write position, never going back (a torn read of the two words is retried). */
  #writePosition(): number {
    const words = this.#words;
    let write = readU64(words, H_WRITE >>> 2);
    for (let tries = 0; write < this.#lastWrite && tries < 1000; tries++) {
      write = readU64(words, H_WRITE >>> 2);
    }
    this.#lastWrite = write;
    return write;
  }

  /**
   * Reads the next message into the receive buffer. Returns false when
   * there is none yet. Throws (once per event) when messages were lost or a
   * corrupt frame was skipped, unless `onLoss` takes the report.
   */
  #next(): boolean {
    const words = this.#words;
    const capacity = this.#capacity;
    for (;;) {
      const position = this.#readPos;
      // Everything below a write position seen once is committed: read it again only when needed.
      const write = position < this.#lastWrite ? this.#lastWrite : this.#writePosition();
      if (position >= write) {
        if (position > write) {
          // The log is shorter than this reader's position (repaired or rewritten): follow it.
          this.#readPos = write;
          this.#readSeq = 0;
        }
        return false;
      }
      const head = readU64(words, H_HEAD >>> 2);
      if (position < head) {
        this.#readPos = head; // overrun: the ring reclaimed what we had not read
        this.#jumped = true;
        continue;
      }
      const phys = position % capacity;
      const room = capacity - phys;
      if (room < FRAME_HEADER) {
        this.#readPos = position + room;
        continue;
      }
      const at = RING_OFFSET + phys;
      const length = words[(at + 4) >>> 2];
      const type = words[(at + 8) >>> 2];
      let size: number;
      if (type === PADDING_TYPE) {
        size = room;
        if (length === room - FRAME_HEADER && this.#copyAndCheck(at, FRAME_HEADER, length, position)) {
          this.#readPos = position + room;
          continue;
        }
      } else {
        size = align8(FRAME_HEADER + length);
        if (
          length <= this.#maxMessageSize && FRAME_HEADER + length <= room && position + size <= write &&
          this.#copyAndCheck(at, FRAME_HEADER + length, length, position)
        ) {
          const rx = this.#rxWords;
          const seq = rx[4] + rx[5] * TWO_32;
          const expected = this.#readSeq;
          if (expected !== 0 && seq !== expected) {
            if (seq > expected) {
              this.#readSeq = seq;
              this.#loss(this.#jumped ? "overrun" : "gap", seq - expected, expected, seq);
              this.#jumped = false;
              continue; // onLoss took the report: deliver it now
            }
            // A number going backwards: not this log's history. Treat as damage.
            this.#damage(position, write, `sequence ${seq} after ${expected - 1}`);
            continue;
          }
          this.#jumped = false;
          this.#readPos = position + size;
          this.#readSeq = seq + 1;
          if (seq < this.#skipUntil) continue;
          this.#frameType = rx[2];
          if (this.#data.length !== length) {
            this.#data = this.#rx.subarray(FRAME_HEADER, FRAME_HEADER + length);
          }
          if (this.#slot >= 0 && !this.#manualAck) this.#commitSlot();
          return true;
        }
      }
      // Not an intact frame: overwritten while we copied it (the head moved past it), or damaged.
      if (readU64(words, H_HEAD >>> 2) > position) {
        this.#readPos = readU64(words, H_HEAD >>> 2);
        this.#jumped = true;
        continue;
      }
      this.#damage(position, write, `the frame at logical position ${position} is not intact`);
    }
  }

  /**
   * Copies `total` bytes of the frame at mapping offset `at` (its header and
   * payload; a padding record's header only) into the receive buffer and
   * checks them there: length field, tag, checksum.
   */
  #copyAndCheck(at: number, total: number, length: number, position: number): boolean {
    if (this.#rx.length < total) {
      let size = this.#rx.length;
      while (size < total) size *= 2;
      this.#rx = new Uint8Array(size);
      this.#rxWords = new Uint32Array(this.#rx.buffer);
      this.#data = this.#rx.subarray(FRAME_HEADER, FRAME_HEADER);
    }
    const rx = this.#rx;
    const words = this.#rxWords;
    if (total <= SMALL_COPY) {
      // Word by word: cheaper than a subarray view (an allocation) per message for small frames. The
      // frame's bytes up to the next multiple of 4 lie inside its ring slot (slots are 8-aligned).
      const from = at >>> 2;
      const mapped = this.#words;
      for (let i = 0, n = (total + 3) >>> 2; i < n; i++) words[i] = mapped[from + i];
    } else {
      rx.set(this.#bytes.subarray(at, at + total));
    }
    return words[1] === length && words[3] === tagOf(position) &&
      words[0] === xxh32(words, rx, 4, total - 4);
  }

  /** Reports a corrupt frame and skips to the next intact one. */
  #damage(position: number, write: number, what: string): void {
    const next = findIntactFrame(this.#memory, position + 8, write);
    const resume = next < 0 ? write : next;
    this.#readPos = resume;
    this.#damaged++;
    const expected = this.#readSeq;
    const nextSeq = next < 0 ? null : this.#seqAt(next, write);
    const lost = nextSeq !== null && expected !== 0 ? nextSeq - expected : null;
    if (nextSeq !== null) this.#readSeq = nextSeq;
    if (lost !== null && lost > 0) this.#lost += lost;
    const message = `${SCHEME}: ${this.#path} is damaged: ${what}; skipped ${resume - position} bytes to ` +
      (next < 0 ? "the end of the log" : `the next intact frame (logical position ${next})`) +
      (lost === null ? "" : `, losing ${lost} message${lost === 1 ? "" : "s"}`);
    if (this.#onLoss) this.#onLoss({ kind: "damage", lost, expected, next: nextSeq, message });
    else throw new FrameError(message);
  }

  #loss(kind: "overrun" | "gap", lost: number, expected: number, next: number): void {
    this.#lost += lost;
    const message = kind === "overrun"
      ? `${SCHEME}: this reader of ${this.#path} fell behind: the ring reclaimed ${lost} message${
        lost === 1 ? "" : "s"
      } (numbers ${expected} to ${next - 1}) before they were read; it goes on with message ${next}`
      : `${SCHEME}: messages ${expected} to ${next - 1} of ${this.#path} are missing (lost in a crash ` +
        `and repaired away); this reader goes on with message ${next}`;
    const loss: LogLoss = { kind, lost, expected, next, message };
    if (this.#onLoss) this.#onLoss(loss);
    else throw new MessagesLostError(loss);
  }

  #take(): ReceivedFrame | null {
    if (!this.#next()) return null;
    return { data: this.#data, type: this.#frameType, priority: 0 };
  }

  /**
   * Reads the next message without waiting.
   *
   * @param _filter Unused (no type filters).
   * @returns The frame (its `data` is valid until the next receive), or null when there is none yet.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {MessagesLostError} When messages were lost before this one (once; without `onLoss`).
   * @throws {FrameError} When a corrupt frame was skipped (once; without `onLoss`).
   */
  tryReceive(_filter: ReceiveFilter): ReceivedFrame | null {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    return this.#take();
  }

  /**
   * Reads up to `max` messages without waiting, handing each to `sink`.
   *
   * @param _filter Unused.
   * @param max The most to read.
   * @param sink Gets each frame; its `data` is valid only during the call.
   * @returns How many were handed to `sink`.
   * @throws {ChannelClosedError} After `close()`.
   */
  tryReceiveBatch(_filter: ReceiveFilter, max: number, sink: (frame: ReceivedFrame) => void): number {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    let count = 0;
    const frame = this.#batchFrame;
    while (count < max && this.#next()) {
      frame.data = this.#data;
      frame.type = this.#frameType;
      count++;
      sink(frame);
    }
    return count;
  }

  /**
   * Reads the next message, waiting for one: spins for `spin` µs, then
   * parks on the log's doorbell (a futex in the file's header that writers
   * ring when readers wait), looking again at least every 50 ms.
   *
   * @param filter Unused.
   * @param signal Aborting it rejects with `signal.reason`.
   * @returns The frame (its `data` is valid until the next receive): itself when taken without
   *   parking (at once or within the spin), else a promise of it.
   * @throws {ChannelClosedError} After `close()`, also while waiting.
   */
  receive(filter: ReceiveFilter, signal: AbortSignal): ReceivedFrame | Promise<ReceivedFrame> {
    try {
      const frame = this.tryReceive(filter) ?? this.#receiveSpinner.spin(this.#attempt);
      if (frame) return frame;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#receiveSlowly(signal);
  }

  async #receiveSlowly(signal: AbortSignal): Promise<ReceivedFrame> {
    const both = signal === this.#lastSignal ? this.#lastBoth! : this.#combine(signal);
    for (let pause = 0;;) {
      if (signal.aborted) throw signal.reason;
      if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
      Atomics.add(this.#ints, H_WAITERS >>> 2, 1);
      this.#parked++;
      let result;
      try {
        const bell = Atomics.load(this.#words, H_DOORBELL >>> 2);
        const frame = this.#take();
        if (frame) {
          this.#receiveSpinner.woke();
          return frame;
        }
        result = await futexWait(this.#pointer, H_DOORBELL, bell, WAIT_SLICE_MS, both);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`, { cause: error });
        throw error;
      } finally {
        if (!this.#closed) {
          Atomics.sub(this.#ints, H_WAITERS >>> 2, 1);
          this.#parked--;
        }
      }
      if (result === "busy") {
        pause = Math.min(16, pause * 2 || 1);
        try {
          await delay(pause, both);
        } catch (error) {
          if (signal.aborted) throw signal.reason;
          throw new ChannelClosedError(`${this.info.address} is closed`, { cause: error });
        }
      }
    }
  }

  // -- named readers ------------------------------------------------------------

  /**
   * Finds or makes the slot of a named reader (under the table lock) and
   * claims it (an exclusive lock on its byte, held until close).
   *
   * @returns The stored position, or null for a new slot.
   */
  async #claimReader(
    name: string,
    from: LogStart,
    head: number,
    write: number,
    next: number,
    signal: AbortSignal | undefined,
  ): Promise<{ seq: number; position: number } | null> {
    const encoded = encoder.encode(name);
    const table = await this.#lock.lock({ start: LOCK_TABLE, length: 1, signal });
    try {
      const words = this.#words;
      let slot = this.#findSlot(encoded);
      let fresh = false;
      if (slot < 0) {
        for (let s = 0; s < SLOTS && slot < 0; s++) {
          const base = TABLE_OFFSET + s * SLOT_BYTES;
          if (words[(base + S_STATE) >>> 2] !== 1 || this.#slotName(s) === null) {
            // Free (or damaged: a damaged slot's reader cannot be found any more).
            if (this.#lock.holder({ start: lockOfSlot(s), length: 1 }) === null) slot = s;
          }
        }
        if (slot < 0) {
          throw new IpcError(
            `${SCHEME}: ${this.#path} has ${SLOTS} named readers already; remove one with removeReader()`,
            { errno: E.ENOSPC, code: "ENOSPC", syscall: "" },
          );
        }
        fresh = true;
      }
      const claim = this.#lock.tryLock({ start: lockOfSlot(slot), length: 1 });
      if (claim === null) {
        throw new IpcError(
          `${SCHEME}: the named reader "${name}" of ${this.#path} is open already (in this or another ` +
            `process); a named reader has one user at a time`,
          { errno: E.EBUSY, code: "EBUSY", syscall: "fcntl" },
        );
      }
      this.#slot = slot;
      this.#slotClaim = claim;
      const base = TABLE_OFFSET + slot * SLOT_BYTES;
      if (fresh) {
        Atomics.store(words, (base + S_STATE) >>> 2, 0);
        this.#bytes.fill(0, base, base + SLOT_BYTES);
        this.#bytes.set(encoded, base + S_NAME);
        words[(base + S_NAME_LENGTH) >>> 2] = encoded.length;
        words[(base + S_NAME_CHECKSUM) >>> 2] = xxh32Of(encoded);
        this.#place(from, head, write, next);
        this.#commitSlot();
        Atomics.store(words, (base + S_STATE) >>> 2, 1);
        return null;
      }
      const copy = base + S_POSITIONS + 16 * (words[(base + S_GENERATION) >>> 2] & 1);
      return { seq: readU64(words, copy >>> 2), position: readU64(words, (copy + 8) >>> 2) };
    } finally {
      table.unlock();
    }
  }

  #slotName(slot: number): string | null {
    const base = TABLE_OFFSET + slot * SLOT_BYTES;
    const length = this.#words[(base + S_NAME_LENGTH) >>> 2];
    if (length < 1 || length > MAX_READER_NAME) return null;
    const bytes = this.#bytes.slice(base + S_NAME, base + S_NAME + length);
    if (xxh32Of(bytes) !== this.#words[(base + S_NAME_CHECKSUM) >>> 2]) return null;
    try {
      return decoder.decode(bytes);
    } catch {
      return null;
    }
  }

  #findSlot(encoded: Uint8Array): number {
    const words = this.#words;
    for (let s = 0; s < SLOTS; s++) {
      const base = TABLE_OFFSET + s * SLOT_BYTES;
      if (words[(base + S_STATE) >>> 2] !== 1 || words[(base + S_NAME_LENGTH) >>> 2] !== encoded.length) {
        continue;
      }
      const name = this.#bytes.subarray(base + S_NAME, base + S_NAME + encoded.length);
      if (!name.every((b, i) => b === encoded[i])) continue;
      if (xxh32Of(name) !== words[(base + S_NAME_CHECKSUM) >>> 2]) continue;
      return s;
    }
    return -1;
  }

  /** Stores this reader's position in its slot: the other copy, then the generation that selects it. */
  #commitSlot(): void {
    const words = this.#words;
    const base = TABLE_OFFSET + this.#slot * SLOT_BYTES;
    const generation = words[(base + S_GENERATION) >>> 2];
    const copy = base + S_POSITIONS + 16 * ((generation + 1) & 1);
    setU64(words, copy >>> 2, this.#readSeq);
    setU64(words, (copy + 8) >>> 2, this.#readPos);
    Atomics.store(words, (base + S_GENERATION) >>> 2, (generation + 1) >>> 0);
  }

  /**
   * Acknowledges every message handed over so far: a named reader reopened
   * later resumes after them. Needed only with `ack: "manual"` (with
   * `"auto"` each message is acknowledged as it is handed over).
   *
   * @throws {ChannelClosedError} After `close()`.
   * @throws {TypeError} When this is not a named reader.
   *
   * @example Acknowledge after processing
   * ```ts
   * import { Channel } from "@ipcbus/ipcbus";
   * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
   * using writer = new Channel<string>(await MappedFileLog.open(path, { create: true, maxSize: 1 << 20 }));
   * await writer.sendBatch(["a", "b"]);
   * const log = await MappedFileLog.open(path, { reader: "jobs", ack: "manual" });
   * using jobs = new Channel<string>(log);
   * console.log(await jobs.receive()); // "a"
   * log.ack(); // "a" is done: a restarted "jobs" reader begins with "b"
   * await writer.unlink();
   * ```
   */
  ack(): void {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    if (this.#slot < 0) throw new TypeError(`${SCHEME}: ack() needs a named reader (the reader option)`);
    this.#commitSlot();
    this.#stampSlot();
  }

  #stampSlot(): void {
    const base = TABLE_OFFSET + this.#slot * SLOT_BYTES;
    writeU64(this.#words, (base + S_ACKED_AT) >>> 2, Date.now());
  }

  /**
   * Lists the log's named readers.
   *
   * @returns Name, position, whether open now, last acknowledgement.
   * @throws {ChannelClosedError} After `close()`.
   *
   * @example Where each named reader is
   * ```ts
   * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
   * using log = await MappedFileLog.open(path, { create: true, maxSize: 1 << 20 });
   * (await MappedFileLog.open(path, { reader: "billing" })).close();
   * console.log(log.readers().map((r) => [r.name, r.nextSequence, r.inUse])); // [ [ "billing", 1, false ] ]
   * await log.unlink();
   * ```
   */
  readers(): LogReaderInfo[] {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    const words = this.#words;
    const list: LogReaderInfo[] = [];
    for (let s = 0; s < SLOTS; s++) {
      const base = TABLE_OFFSET + s * SLOT_BYTES;
      if (words[(base + S_STATE) >>> 2] !== 1) continue;
      const name = this.#slotName(s);
      if (name === null) continue;
      const copy = base + S_POSITIONS + 16 * (words[(base + S_GENERATION) >>> 2] & 1);
      const acked = readU64(words, (base + S_ACKED_AT) >>> 2);
      list.push({
        name,
        nextSequence: readU64(words, copy >>> 2),
        position: readU64(words, (copy + 8) >>> 2),
        inUse: s === this.#slot || this.#lock.holder({ start: lockOfSlot(s), length: 1 }) !== null,
        ackedAt: acked === 0 ? null : new Date(acked),
      });
    }
    return list;
  }

  /**
   * Forgets a named reader (frees its slot), unless it is open.
   *
   * @param name The reader's name.
   * @returns True when it existed.
   * @throws {ChannelClosedError} After `close()`.
   * @throws {IpcError} When it is open (`EBUSY`).
   */
  async removeReader(name: string): Promise<boolean> {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    const table = await this.#lock.lock({ start: LOCK_TABLE, length: 1 });
    try {
      const slot = this.#findSlot(encoder.encode(name));
      if (slot < 0) return false;
      const claim = slot === this.#slot ? null : this.#lock.tryLock({ start: lockOfSlot(slot), length: 1 });
      if (claim === null) {
        throw new IpcError(`${SCHEME}: the named reader "${name}" of ${this.#path} is open; close it first`, {
          errno: E.EBUSY,
          code: "EBUSY",
          syscall: "fcntl",
        });
      }
      Atomics.store(this.#words, (TABLE_OFFSET + slot * SLOT_BYTES + S_STATE) >>> 2, 0);
      claim.unlock();
      return true;
    } finally {
      table.unlock();
    }
  }

  // -- state and lifetime -------------------------------------------------------

  /**
   * The log's counters and this reader's position.
   *
   * @returns Positions, sequence numbers, losses and repair counters.
   * @throws {ChannelClosedError} After `close()`.
   *
   * @example How far behind a reader is
   * ```ts
   * import { MappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
   *
   * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
   * using log = await MappedFileLog.open(path, { create: true, maxSize: 1 << 20 });
   * log.trySend(new Uint8Array(40), 1, 0);
   * const { nextSequence, lagBytes } = log.stats();
   * console.log(nextSequence, lagBytes); // 2 64
   * await log.unlink();
   * ```
   */
  stats(): MappedFileLogStats {
    if (this.#closed) throw new ChannelClosedError(`${this.info.address} is closed`);
    const words = this.#words;
    const write = readU64(words, H_WRITE >>> 2);
    return {
      writePosition: write,
      head: readU64(words, H_HEAD >>> 2),
      nextSequence: readU64(words, H_NEXT_SEQ >>> 2),
      syncedPosition: readU64(words, H_SYNCED >>> 2),
      readPosition: this.#readPos,
      readSequence: this.#readSeq,
      lagBytes: Math.max(0, write - this.#readPos),
      lost: this.#lost,
      damaged: this.#damaged,
      waiters: Atomics.load(this.#ints, H_WAITERS >>> 2),
      writerDeaths: readU64(words, H_WRITER_DEATHS >>> 2),
      recoveries: readU64(words, H_RECOVERIES >>> 2),
      damagedBytes: readU64(words, H_DAMAGED >>> 2),
    };
  }

  /**
   * Ends this process's use of the log: pending receives and sends settle
   * with `ChannelClosedError`; with `"batch"` or `"sync"` durability, what
   * this process appended is synced first (msync on this thread); the
   * descriptor is closed, which releases its locks. The file stays.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    if (this.#durability !== "none" && this.#syncedUpTo < this.#appendedUpTo) {
      try {
        const from = Math.max(this.#syncedUpTo, this.#appendedUpTo - this.#capacity);
        for (const range of this.#syncRanges(from, this.#appendedUpTo)) {
          this.#file.sync({ start: range.offset, length: range.length });
        }
        this.#syncedUpTo = this.#appendedUpTo;
      } catch {
        // close() does not throw; the data is in the page cache and reaches the disk later.
      }
    }
    if (this.#slot >= 0) this.#stampSlot();
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    // Wake this process's parked waits while the doorbell is still mapped, and take them off the count.
    this.#closer.abort(new ChannelClosedError(`${this.info.address} is closed`));
    if (this.#parked > 0) Atomics.sub(this.#ints, H_WAITERS >>> 2, this.#parked);
    this.#parked = 0;
    this.#slotClaim = null;
    this.#lock.close();
    this.#file.close();
    this.#presence?.release();
    // The log removed or replaced by someone else while we had it: drop its record.
    const now = this.#presence ? lstatPath(this.#path) : undefined;
    if (now === null || (now && (now.ino !== this.#identity.ino || now.dev !== this.#identity.dev))) {
      Presence.forget(`${SCHEME}:${this.#path}`);
    }
  }

  /** Same as `close()`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Removes the log file's name (after checking that the path still names
   * this log). Processes that have it open keep using it until they close.
   * Works after `close()` too.
   *
   * @returns Settles once removed.
   * @throws {NotFoundError} When the path no longer exists.
   * @throws {PermissionDeniedError} When the path now names another file.
   */
  unlink(): Promise<void> {
    const stat = lstatPath(this.#path);
    if (stat === null) {
      Presence.forget(`${SCHEME}:${this.#path}`);
      return Promise.reject(errnoError(E.ENOENT, "unlink", this.#path, strerror(E.ENOENT)));
    }
    if (stat.dev !== this.#identity.dev || stat.ino !== this.#identity.ino) {
      return Promise.reject(
        errnoError(E.EPERM, "unlink", `${this.#path} (it now names another file; not removed)`),
      );
    }
    unlinkPath(this.#path);
    Presence.forget(`${SCHEME}:${this.#path}`);
    return Promise.resolve();
  }
}

// -- opening --------------------------------------------------------------------

function checkOptions(
  path: string,
  options: MappedFileLogOptions,
): { capacity: number; maxMessageSize: number } {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${SCHEME}: options must be an object`);
  }
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new TypeError(`${SCHEME}: the path must be absolute, got "${path}"`);
  }
  const mode = options.mode ?? 0o600;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
    throw new RangeError(`${SCHEME}: mode must be permission bits from 0 to 0o777, got ${mode}`);
  }
  if ((mode & 0o002) !== 0) {
    throw new RangeError(
      `${SCHEME}: mode 0o${mode.toString(8)} would let any user write the log (and truncate it under its ` +
        `readers); share it through a group instead (for example 0o660)`,
    );
  }
  if (options.exclusive && !options.create) throw new TypeError(`${SCHEME}: exclusive needs create: true`);
  const maxSize = options.maxSize ?? DEFAULT_MAX_SIZE;
  if (!Number.isSafeInteger(maxSize) || maxSize < MIN_MAX_SIZE || maxSize > MAX_CAPACITY + RING_OFFSET) {
    throw new RangeError(
      `${SCHEME}: maxSize must be from ${MIN_MAX_SIZE} to ${
        MAX_CAPACITY + RING_OFFSET
      } bytes, got ${maxSize}`,
    );
  }
  const capacity = Math.floor((maxSize - RING_OFFSET) / 4096) * 4096;
  if (capacity < MIN_CAPACITY) {
    throw new RangeError(`${SCHEME}: maxSize ${maxSize} leaves no room for a ring`);
  }
  const largest = maxLength(capacity);
  const maxMessageSize = options.maxMessageSize ?? Math.min(DEFAULT_MESSAGE_LIMIT, Math.floor(capacity / 4));
  if (!Number.isSafeInteger(maxMessageSize) || maxMessageSize < 1 || maxMessageSize > largest) {
    throw new RangeError(
      `${SCHEME}: maxMessageSize must be from 1 to ${largest} bytes (half a ${capacity}-byte ring, less a ` +
        `frame header) for maxSize ${maxSize}, got ${maxMessageSize}`,
    );
  }
  const durability = options.durability ?? "none";
  if (durability !== "none" && durability !== "batch" && durability !== "sync") {
    throw new TypeError(`${SCHEME}: durability must be "none", "batch" or "sync", got ${String(durability)}`);
  }
  const interval = options.syncInterval ?? DEFAULT_SYNC_INTERVAL_MS;
  if (typeof interval !== "number" || !(interval >= 0) || interval > 3_600_000) {
    throw new RangeError(`${SCHEME}: syncInterval must be from 0 to 3600000 ms, got ${interval}`);
  }
  const from = options.from ?? "start";
  if (from !== "start" && from !== "end" && !(Number.isSafeInteger(from) && (from as number) >= 1)) {
    throw new TypeError(
      `${SCHEME}: from must be "start", "end" or a sequence number from 1, got ${String(from)}`,
    );
  }
  if (options.reader !== undefined) {
    const length = typeof options.reader === "string" ? encoder.encode(options.reader).length : 0;
    if (length < 1 || length > MAX_READER_NAME) {
      throw new TypeError(`${SCHEME}: reader must be a name of 1 to ${MAX_READER_NAME} UTF-8 bytes`);
    }
  }
  if (options.ack !== undefined && options.ack !== "auto" && options.ack !== "manual") {
    throw new TypeError(`${SCHEME}: ack must be "auto" or "manual", got ${String(options.ack)}`);
  }
  if (options.verify !== undefined && options.verify !== "tail" && options.verify !== "full") {
    throw new TypeError(`${SCHEME}: verify must be "tail" or "full", got ${String(options.verify)}`);
  }
  if (options.onLoss !== undefined && typeof options.onLoss !== "function") {
    throw new TypeError(`${SCHEME}: onLoss must be a function`);
  }
  const spin = options.spin ?? DEFAULT_SPIN_MICROS;
  if (typeof spin !== "number" || !(spin >= 0)) {
    throw new RangeError(`${SCHEME}: spin must be a non-negative number of µs, got ${spin}`);
  }
  return { capacity, maxMessageSize };
}

/**
 * Joins the log's users: the first (alone) takes the users lock
 * exclusively, restores a truncated file's size, and runs the recovery;
 * everyone then holds it shared until close.
 */
async function join(
  file: MappedFile,
  lock: FileLock,
  geometry: { capacity: number; maxMessageSize: number },
  path: string,
  full: boolean,
  signal: AbortSignal | undefined,
): Promise<RecoveryReport> {
  const expected = RING_OFFSET + geometry.capacity;
  const alone = lock.tryLock({ start: LOCK_USERS, length: 1 });
  let report: RecoveryReport = {
    ran: false,
    repaired: false,
    writerDied: false,
    truncatedBytes: 0,
    extendedBytes: 0,
    skippedBytes: 0,
    scannedBytes: 0,
  };
  if (alone !== null) {
    const append = await lock.lock({ start: LOCK_APPEND, length: 1, signal });
    try {
      const size = file.fileSize();
      let extended = 0;
      if (size < expected) {
        file.resize(expected, { allocate: true }); // zeros: the cut frames fail their checks
        extended = expected - size;
      } else if (file.length !== expected) {
        file.remap(expected);
      }
      const memory: LogMemory = {
        bytes: file.view,
        words: new Uint32Array(file.buffer),
        capacity: geometry.capacity,
        maxMessageSize: geometry.maxMessageSize,
      };
      report = recover(memory, full, extended, path);
      if (report.repaired) file.sync({ start: 0, length: RING_OFFSET });
    } finally {
      append.unlock();
    }
    // Converts the exclusive lock into a shared one, atomically.
    lock.tryLock({ start: LOCK_USERS, length: 1, shared: true });
    return report;
  }
  await lock.lock({ start: LOCK_USERS, length: 1, shared: true, signal });
  const size = file.fileSize();
  if (size < expected) {
    throw new FrameError(
      `${SCHEME}: ${path} has ${size} bytes but its header says ${expected}: it was truncated while ` +
        `other processes have it open (reopen it when they have closed it, to repair it)`,
    );
  }
  if (file.length !== expected) file.remap(expected);
  return report;
}

/**
 * Factory for `file:` addresses (registered with `open()`).
 *
 * @param address `file:/absolute/path` (or `file:///absolute/path`).
 * @param options The options given to `open()` ({@linkcode MappedFileLogOptions}).
 * @returns The transport.
 * @throws {TypeError} For a malformed address.
 *
 * @example Opening by URL
 * ```ts
 * import { openMappedFileLog } from "@ipcbus/ipcbus/mapped-file-log";
 *
 * const path = `/tmp/ipcbus-doc-${crypto.randomUUID()}.bus`;
 * const log = await openMappedFileLog(`file://${path}`, { create: true, maxSize: 1 << 20 });
 * console.log(log.info.address === `file:${path}`); // true
 * log.close();
 * await log.unlink();
 * ```
 */
export function openMappedFileLog(address: string, options: TransportOptions): Promise<MappedFileLog> {
  if (!address.startsWith(`${SCHEME}:`)) {
    return Promise.reject(
      new TypeError(`${SCHEME}: expected an address starting with "${SCHEME}:", got "${address}"`),
    );
  }
  let path = address.slice(SCHEME.length + 1);
  if (path.startsWith("//")) {
    if (!path.startsWith("///")) {
      return Promise.reject(
        new TypeError(
          `${SCHEME}: "${address}" names a host; use file:/absolute/path or file:///absolute/path`,
        ),
      );
    }
    path = path.slice(2);
  }
  return MappedFileLog.open(path, options as MappedFileLogOptions);
}
