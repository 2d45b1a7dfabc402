/**
 * Blocking file calls made off the event loop: waiting for an fcntl lock,
 * waiting on a word of a shared file mapping (a futex), and flushing a
 * mapping to disk (msync/fdatasync).
 *
 * Each runs on a helper thread (`_helper_thread.ts`, from a small pool) that
 * makes the blocking call itself and wakes the caller with `Atomics.notify`
 * (the caller is parked in `Atomics.waitAsync`), as in `sysv_waiter.ts`.
 * Helpers are `ref`'d only while someone awaits them, so they never keep the
 * process alive on their own; a call whose thread stops rejects.
 *
 * - {@linkcode probeLock}: `fcntl(F_OFD_SETLKW)` on a *private* open file
 *   description of the file (the caller opens it), then an unlock: a pure
 *   "the range is free now" probe. The caller then takes the lock on its own
 *   descriptor without waiting (another waiter may be faster: probe again).
 *   A blocked fcntl cannot be interrupted; a cancelled probe stays parked,
 *   detached, until the lock is released, then lets go at once. At most
 *   {@linkcode MAX_DETACHED_PROBES} stay parked; beyond that callers poll.
 * - {@linkcode futexWait}: `FUTEX_WAIT` (shared, so it works across
 *   processes on a `MAP_SHARED` file mapping) for at most one slice; the
 *   caller re-checks its condition and waits again. Cancelling sets a flag
 *   and wakes the word, so the helper returns at once.
 * - {@linkcode syncRanges}: `msync(MS_SYNC)` of address ranges, then
 *   optionally `fdatasync`, keeping errno (a `nonblocking` FFI call loses it).
 *
 * @module
 */

import {
  DONE,
  HelperErrno,
  HelperThread,
  REQUEST,
  stopHelperThreads as stopThreads,
  takeHelper as takeIdle,
} from "./_helper_thread.ts";
import { abortable } from "./_delay.ts";
import { E, type Libc, libc } from "./libc.ts";

/** Most lock probes left parked after their wait was cancelled. */
export const MAX_DETACHED_PROBES = 16;
/** Most futex waits parked at once; beyond that callers poll with a timer. */
export const MAX_FUTEX_WAITS = 64;
/** Most ranges one {@linkcode syncRanges} call flushes. */
export const MAX_SYNC_RANGES = 4;

const ARCH = Deno.build.arch;
/** The futex(2) syscall number (x86_64: 202, aarch64: 98). */
const SYS_FUTEX = ARCH === "aarch64" ? 98 : 202;
const FUTEX_WAIT = 0;
// futexWake runs once per append while readers are parked: its arguments are made once.
const SYS_FUTEX_BIG = BigInt(SYS_FUTEX);
const FUTEX_WAKE_BIG = 1n;
const WAKE_ALL = 0x7fff_ffff;
const WAKE_ALL_BIG = BigInt(WAKE_ALL);
let wakeSyscall: Libc["futex"] | undefined;

const OP_LOCK = 1;
const OP_FUTEX = 2;
const OP_SYNC = 3;
const RESULT_OK = 1; // lock free / word changed or woken / synced
const RESULT_TIMEOUT = 2;
const RESULT_CANCELLED = 3;
const RESULT_ERROR = 4;
const FAILED_MSYNC = 1;
const FAILED_FDATASYNC = 2;

// Int32 slots: 0 state, 1 op, 2 fd, 3 arg (lock type, futex value, range count), 4 slice ms,
// 5 cancel, 6 result, 7 errno, 8 which call failed.
// BigInt64 slots from byte 64 (index 8): lock start, lock length; futex address; or ranges (address, length)*.
const BIG_BASE = 8;
const SAB_BYTES = 64 + 8 * 2 * MAX_SYNC_RANGES;

const HELPER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { sab, path } = workerData;
const lib = Deno.dlopen(path, {
  fcntl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  syscall: { parameters: ["i64", "pointer", "i64", "i64", "buffer", "pointer", "i64"], result: "i64" },
  msync: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(lib.__errno_location(), 4));
const ia = new Int32Array(sab);
const big = new BigInt64Array(sab);
const flock = new Uint8Array(32);
const flockView = new DataView(flock.buffer);
const timeout = new BigInt64Array(2);
const timeoutBytes = new Uint8Array(timeout.buffer);
for (;;) {
  // Sleep on whatever the state is (DONE until the caller collects, then IDLE): never spin.
  for (let state; (state = Atomics.load(ia, 0)) !== ${REQUEST};) Atomics.wait(ia, 0, state);
  let result = ${RESULT_ERROR}, code = 0, failed = 0;
  const op = ia[1];
  if (op === ${OP_LOCK}) {
    flock.fill(0);
    flockView.setInt16(0, ia[3], true);
    flockView.setBigInt64(8, big[${BIG_BASE}], true);
    flockView.setBigInt64(16, big[${BIG_BASE + 1}], true);
    for (;;) {
      if (lib.fcntl(ia[2], 38 /* F_OFD_SETLKW */, flock) === 0) {
        flockView.setInt16(0, 2 /* F_UNLCK */, true);
        lib.fcntl(ia[2], 37 /* F_OFD_SETLK */, flock);
        result = ${RESULT_OK};
        break;
      }
      code = errnoCell[0];
      if (code === ${E.EINTR}) continue;
      break;
    }
  } else if (op === ${OP_FUTEX}) {
    if (Atomics.load(ia, 5) !== 0) {
      result = ${RESULT_CANCELLED};
    } else {
      const ms = ia[4];
      timeout[0] = BigInt(Math.floor(ms / 1000));
      timeout[1] = BigInt((ms % 1000) * 1000000);
      const address = Deno.UnsafePointer.create(big[${BIG_BASE}]);
      const r = lib.syscall(${SYS_FUTEX}n, address, ${FUTEX_WAIT}n, BigInt(ia[3] >>> 0), timeoutBytes, null, 0n);
      if (r === 0n) result = ${RESULT_OK};
      else {
        code = errnoCell[0];
        if (code === ${E.ETIMEDOUT}) result = ${RESULT_TIMEOUT};
        else if (code === ${E.EAGAIN} || code === ${E.EINTR}) result = ${RESULT_OK};
      }
      if (Atomics.load(ia, 5) !== 0) result = ${RESULT_CANCELLED};
    }
  } else if (op === ${OP_SYNC}) {
    result = ${RESULT_OK};
    for (let r = 0; r < ia[3]; r++) {
      const address = Deno.UnsafePointer.create(big[${BIG_BASE} + 2 * r]);
      const length = big[${BIG_BASE} + 2 * r + 1];
      if (lib.msync(address, length, 4 /* MS_SYNC */) !== 0) {
        code = errnoCell[0];
        result = ${RESULT_ERROR};
        failed = ${FAILED_MSYNC};
        break;
      }
    }
    if (result === ${RESULT_OK} && ia[2] >= 0) {
      for (;;) {
        if (lib.fdatasync(ia[2]) === 0) break;
        code = errnoCell[0];
        if (code === ${E.EINTR}) continue;
        result = ${RESULT_ERROR};
        failed = ${FAILED_FDATASYNC};
        break;
      }
    }
  }
  ia[6] = result;
  ia[7] = code;
  ia[8] = failed;
  Atomics.store(ia, 0, ${DONE});
  Atomics.notify(ia, 0);
}
`;

interface Outcome {
  result: number;
  errno: number;
  failed: number;
}

class Helper extends HelperThread {
  readonly big: BigInt64Array<SharedArrayBuffer>;
  /** Settles when the current request is done; rejects when the thread stopped first. */
  done: Promise<Outcome> | undefined;

  constructor() {
    const sab = new SharedArrayBuffer(SAB_BYTES);
    super("the file helper thread", HELPER_SOURCE, sab, all);
    this.big = new BigInt64Array(sab);
  }

  start(op: number, fd: number, arg: number, sliceMs: number): void {
    const ia = this.ia;
    ia[1] = op;
    ia[2] = fd;
    ia[3] = arg;
    ia[4] = sliceMs;
    ia[5] = 0;
    this.done = this.request(() => ({ result: ia[6], errno: ia[7], failed: ia[8] }));
  }
}

const idle: Helper[] = [];
let detachedProbes = 0;
let futexWaits = 0;

/** The live helper threads (for {@linkcode stopHelperThreads}). */
const all = new Set<HelperThread>();

/**
 * Stops every helper thread of this module (for tests of what a wait does
 * when its thread dies: it rejects rather than hang).
 *
 * @internal
 * @returns Settles once the threads have stopped.
 */
export function stopHelperThreads(): Promise<void> {
  return stopThreads(all);
}

function takeHelper(): Helper {
  return takeIdle(idle, () => new Helper());
}

/** Returns `helper` to the idle list once its request is done (a stopped thread is dropped). */
function release(helper: Helper): void {
  helper.done!.then(() => idle.push(helper), () => {});
}

/**
 * Whether a lock probe may start now (fewer than
 * {@linkcode MAX_DETACHED_PROBES} cancelled probes are still parked).
 *
 * @returns True when {@linkcode probeLock} will not refuse.
 */
export function canProbeLock(): boolean {
  return detachedProbes < MAX_DETACHED_PROBES;
}

/**
 * Waits until a lock of `type` on `[start, start + length)` could be taken,
 * by taking and at once releasing it on `probeFd`, a private open file
 * description of the file (open file description locks conflict between
 * descriptions, so the probe waits exactly as the caller's own request
 * would). `onSettled` runs once the probe's thread is done with `probeFd`,
 * also after a cancellation: close the descriptor there.
 *
 * @param probeFd A descriptor of its own open file description, opened for
 *   writing for a write lock, for reading for a read lock.
 * @param type `F.WRLCK` or `F.RDLCK`.
 * @param start First byte.
 * @param length Bytes (0: to the end of the file and beyond).
 * @param signal Cancels the wait (the probe stays parked, detached).
 * @param onSettled Called when the helper no longer uses `probeFd`.
 * @returns Resolves when the range was free.
 * @throws {HelperErrno} When fcntl fails (for example `ENOLCK`).
 */
export async function probeLock(
  probeFd: number,
  type: number,
  start: number,
  length: number,
  signal: AbortSignal,
  onSettled: () => void,
): Promise<void> {
  if (signal.aborted) {
    onSettled();
    throw signal.reason;
  }
  const helper = takeHelper();
  helper.big[BIG_BASE] = BigInt(start);
  helper.big[BIG_BASE + 1] = BigInt(length);
  helper.start(OP_LOCK, probeFd, type, 0);
  // Also when the thread stopped: it no longer uses the descriptor then.
  helper.done!.then(onSettled, onSettled);
  helper.hold();
  let outcome: Outcome;
  try {
    outcome = await abortable(helper.done!, signal);
  } catch (error) {
    if (helper.dead) throw error;
    // The probe stays blocked in the kernel until the range is free; it lets go at once then.
    detachedProbes++;
    const settled = () => detachedProbes--;
    helper.done!.then(settled, settled);
    release(helper);
    throw error;
  } finally {
    helper.letGo();
  }
  idle.push(helper);
  if (outcome.result !== RESULT_OK) throw new HelperErrno(outcome.errno, "fcntl(F_OFD_SETLKW)");
}

/** How a {@linkcode futexWait} ended. */
export type FutexWaitResult = "woken" | "timeout" | "busy";

/**
 * Waits while the 32-bit word at `pointer + offset` holds `expected`, for at
 * most `sliceMs` (FUTEX_WAIT on a shared mapping: a `FUTEX_WAKE` from any
 * process that maps the same file wakes it). Spurious wake-ups happen:
 * re-check the condition.
 *
 * @param pointer The mapping's address.
 * @param offset Byte offset of the word (a multiple of 4).
 * @param expected The value to sleep on (as an unsigned 32-bit number).
 * @param sliceMs Longest wait in ms.
 * @param signal Aborting it rejects with `signal.reason` at once.
 * @returns `"woken"` (woken, or the word differed), `"timeout"`, or
 *   `"busy"` when {@linkcode MAX_FUTEX_WAITS} waits are parked already (the
 *   caller should sleep with a timer instead).
 */
export async function futexWait(
  pointer: Deno.PointerObject,
  offset: number,
  expected: number,
  sliceMs: number,
  signal: AbortSignal,
): Promise<FutexWaitResult> {
  signal.throwIfAborted();
  if (futexWaits >= MAX_FUTEX_WAITS) return "busy";
  const address = Deno.UnsafePointer.value(Deno.UnsafePointer.offset(pointer, offset));
  const helper = takeHelper();
  futexWaits++;
  helper.big[BIG_BASE] = BigInt(address);
  helper.start(OP_FUTEX, -1, expected | 0, Math.max(1, Math.ceil(sliceMs)));
  helper.hold();
  const onAbort = () => {
    Atomics.store(helper.ia, 5, 1);
    futexWake(pointer, offset, WAKE_ALL);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const outcome = await abortable(helper.done!, signal);
    if (outcome.result === RESULT_TIMEOUT) return "timeout";
    if (outcome.result === RESULT_ERROR) throw new HelperErrno(outcome.errno, "futex(FUTEX_WAIT)");
    return "woken";
  } finally {
    signal.removeEventListener("abort", onAbort);
    helper.letGo();
    const settled = () => futexWaits--;
    helper.done!.then(settled, settled);
    release(helper);
  }
}

/**
 * Wakes up to `count` waiters on the word at `pointer + offset`, in every
 * process mapping the same file (FUTEX_WAKE).
 *
 * @param pointer The mapping's address.
 * @param offset Byte offset of the word (a multiple of 4).
 * @param count How many waiters to wake at most.
 * @returns How many were woken (-1 on failure, which only a bad address causes).
 */
export function futexWake(pointer: Deno.PointerObject, offset: number, count: number): number {
  const at = offset === 0 ? pointer : Deno.UnsafePointer.offset(pointer, offset);
  const futex = wakeSyscall ??= libc().futex;
  const n = count === WAKE_ALL ? WAKE_ALL_BIG : BigInt(count);
  return Number(futex(SYS_FUTEX_BIG, at, FUTEX_WAKE_BIG, n, null, null, 0n));
}

/** One range of a mapping to flush. */
export interface SyncRange {
  /** The mapping's address. */
  pointer: Deno.PointerObject;
  /** Byte offset of the range in the mapping (a multiple of the page size). */
  offset: number;
  /** Bytes. */
  length: number;
}

/**
 * Flushes ranges of mappings to the file (`msync(MS_SYNC)`, in order), then
 * optionally `fdatasync(fd)`, on a helper thread. The mappings must stay
 * mapped until the promise settles.
 *
 * @param ranges At most {@linkcode MAX_SYNC_RANGES} ranges (empty ones are skipped).
 * @param fd A descriptor to fdatasync afterwards, or -1 for none.
 * @returns Resolves once everything is on stable storage.
 * @throws {HelperErrno} Naming `msync` or `fdatasync` and the errno (`EIO`, `ENOSPC`...).
 */
export async function syncRanges(ranges: readonly SyncRange[], fd: number): Promise<void> {
  const used = ranges.filter((range) => range.length > 0);
  if (used.length > MAX_SYNC_RANGES) throw new RangeError(`at most ${MAX_SYNC_RANGES} ranges at once`);
  if (used.length === 0 && fd < 0) return;
  const helper = takeHelper();
  used.forEach((range, r) => {
    const at = range.offset === 0 ? range.pointer : Deno.UnsafePointer.offset(range.pointer, range.offset);
    helper.big[BIG_BASE + 2 * r] = BigInt(Deno.UnsafePointer.value(at));
    helper.big[BIG_BASE + 2 * r + 1] = BigInt(range.length);
  });
  helper.start(OP_SYNC, fd, used.length, 0);
  helper.hold();
  try {
    const outcome = await helper.done!;
    if (outcome.result !== RESULT_OK) {
      throw new HelperErrno(outcome.errno, outcome.failed === FAILED_FDATASYNC ? "fdatasync" : "msync");
    }
  } finally {
    helper.letGo();
    if (!helper.dead) idle.push(helper);
  }
}
