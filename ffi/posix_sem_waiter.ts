/**
 * Waiting on a POSIX semaphore (`sem_t *`) without blocking the event loop.
 *
 * A POSIX semaphore has no descriptor to poll, so a wait runs on a helper
 * thread (a `node:worker_threads` Worker from a small pool) that calls
 * `sem_clockwait(CLOCK_MONOTONIC)` (glibc 2.30 and later; `sem_timedwait`
 * with a `CLOCK_REALTIME` deadline otherwise) in slices of
 * {@linkcode SLICE_MS} ms on the same `sem_t *` (the helper lives in the
 * same process, so the address is valid there), checking for cancellation
 * between slices. It wakes the caller with `Atomics.notify`; the caller is
 * parked in `Atomics.waitAsync`. errno is read on the helper thread, right
 * after its own call.
 *
 * Works for any semaphore this process can address: a named one from
 * sem_open(3), or an unnamed process-shared one (`sem_init(sem, 1, n)`)
 * inside a shared mapping.
 *
 * Cancellation (an `AbortSignal`) never loses a unit: the caller and the
 * helper race for the wait with one compare-and-swap. When the helper's
 * call succeeded after the caller gave up, the unit is posted back at once
 * (by the helper, or by the caller when the helper won the swap just
 * before the abort), so other waiters can take it. A cancelled wait settles
 * when its helper has left the semaphore (within one slice, well under
 * 100 ms): from then on nothing of ours touches the pointer, so the owner
 * may sem_close(3) or unmap it. Owners must therefore not release the
 * semaphore while a wait on it is pending; abort the waits and release it
 * when they have settled.
 *
 * At most {@linkcode MAX_HELPERS} helper threads exist per JavaScript
 * thread. Beyond that, a wait polls instead (`sem_trywait` on the calling
 * thread with a 1 → 16 ms backoff) and moves to a helper as soon as one is
 * free: threads stay bounded, only that corner case is slower to wake.
 * Helpers are `ref`'d only while a wait uses them, so they never keep the
 * process alive on their own.
 *
 * @module
 */

import { errnoError } from "../errors.ts";
import { delay } from "./_delay.ts";
import { DONE, HelperThread, REQUEST, takeHelper as takeIdle } from "./_helper_thread.ts";
import { CLOCK } from "./constants.ts";
import { E, errno, need, strerror } from "./libc.ts";

/** Slice of a helper's wait, in ms: the longest a cancelled wait keeps its helper. */
export const SLICE_MS = 25;
/** Most helper threads per JavaScript thread; further waits poll. */
export const MAX_HELPERS = 16;

// Int32 slots of a helper's SharedArrayBuffer.
const STATE = 0; // IDLE -> REQUEST (caller) -> DONE (helper) -> IDLE (caller): see _helper_thread.ts
const CLAIM = 1; // PENDING -> TAKEN (helper: it got the unit) or CANCELLED (caller gave up)
const RESULT = 2;
const ERRNO = 3;
const SLICE = 4;
const ADDRESS = 3; // BigInt64 slot (byte 24): the sem_t address

const PENDING = 0;
const TAKEN = 1;
const CANCELLED = 2;
const RESULT_READY = 1; // the unit is the caller's
const RESULT_CANCELLED = 2; // gave up; nothing taken (or the unit was posted back)
const RESULT_ERROR = 3;

const HELPER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { sab, path } = workerData;
const lib = Deno.dlopen(path, {
  sem_timedwait: { parameters: ["pointer", "buffer"], result: "i32" },
  sem_clockwait: { parameters: ["pointer", "i32", "buffer"], result: "i32", optional: true },
  sem_post: { parameters: ["pointer"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(lib.__errno_location(), 4));
const clockwait = lib.sem_clockwait;
const clock = clockwait ? ${CLOCK.MONOTONIC} : ${CLOCK.REALTIME};
const ia = new Int32Array(sab);
const big = new BigInt64Array(sab);
const deadline = new BigInt64Array(2);
const deadlineBytes = new Uint8Array(deadline.buffer);
for (;;) {
  // Sleep on whatever the state is (DONE until the caller takes the result, then IDLE): waiting on
  // IDLE alone would return at once while the state is DONE, and spin.
  for (let state; (state = Atomics.load(ia, ${STATE})) !== ${REQUEST};) Atomics.wait(ia, ${STATE}, state);
  const sem = Deno.UnsafePointer.create(big[${ADDRESS}]);
  const slice = BigInt(ia[${SLICE}]) * 1000000n;
  let result = ${RESULT_ERROR}, code = 0;
  for (;;) {
    if (Atomics.load(ia, ${CLAIM}) !== ${PENDING}) { result = ${RESULT_CANCELLED}; break; }
    lib.clock_gettime(clock, deadlineBytes);
    const nanoseconds = deadline[1] + slice;
    deadline[0] += nanoseconds / 1000000000n;
    deadline[1] = nanoseconds % 1000000000n;
    const r = clockwait ? clockwait(sem, clock, deadlineBytes) : lib.sem_timedwait(sem, deadlineBytes);
    if (r === 0) {
      if (Atomics.compareExchange(ia, ${CLAIM}, ${PENDING}, ${TAKEN}) === ${PENDING}) {
        result = ${RESULT_READY};
      } else {
        lib.sem_post(sem); // the caller gave up meanwhile: give the unit back
        result = ${RESULT_CANCELLED};
      }
      break;
    }
    code = errnoCell[0];
    if (code === ${E.ETIMEDOUT} || code === ${E.EINTR}) continue;
    result = ${RESULT_ERROR};
    break;
  }
  ia[${RESULT}] = result;
  ia[${ERRNO}] = code;
  Atomics.store(ia, ${STATE}, ${DONE});
  Atomics.notify(ia, ${STATE});
}
`;

interface Outcome {
  result: number;
  errno: number;
}

class Helper extends HelperThread {
  readonly big: BigInt64Array<SharedArrayBuffer>;

  constructor() {
    const sab = new SharedArrayBuffer(32);
    super("the semaphore helper thread", HELPER_SOURCE, sab, all);
    this.big = new BigInt64Array(sab);
  }

  /** Starts a wait on the semaphore at `address`; settles when the helper is done with it. */
  async run(address: bigint): Promise<Outcome> {
    const ia = this.ia;
    ia[CLAIM] = PENDING;
    ia[SLICE] = SLICE_MS;
    this.big[ADDRESS] = address;
    this.hold();
    try {
      return await this.request(() => ({ result: ia[RESULT], errno: ia[ERRNO] }));
    } finally {
      this.letGo();
    }
  }
}

const idle: Helper[] = [];
/** The live helper threads. */
const all = new Set<HelperThread>();

function takeHelper(): Helper | undefined {
  return idle.length > 0 || all.size < MAX_HELPERS ? takeIdle(idle, () => new Helper()) : undefined;
}

/**
 * How many helper threads exist and how many are free (for tests and
 * diagnostics).
 *
 * @returns The counts.
 */
export function semaphoreHelpers(): { started: number; idle: number } {
  return { started: all.size, idle: idle.length };
}

/**
 * Takes one unit of the semaphore at `pointer`, waiting on a helper thread
 * (the event loop keeps running). Callers try `sem_trywait` first: this is
 * the slow path.
 *
 * The returned promise settles only once no helper uses `pointer` for this
 * wait any more, so the caller may close or unmap the semaphore after it
 * settled (and must not before).
 *
 * @param pointer The semaphore (`sem_t *`): from sem_open(3), or inside a
 *   shared mapping and initialized with `sem_init(sem, 1, value)`.
 * @param signal Aborting it gives up the wait: the promise rejects with
 *   `signal.reason` (within one slice) and no unit is taken.
 * @param label What to name in errors (the semaphore's name).
 * @returns Resolves when a unit was taken.
 * @throws {IpcError} When `sem_timedwait`/`sem_trywait` fails (`EINVAL`: not a semaphore).
 * @throws {unknown} `signal.reason` when the signal aborts the wait.
 * @throws {Error} When the C library has no POSIX semaphores (glibc before 2.34 keeps them in libpthread).
 */
export async function waitSemaphore(
  pointer: Deno.PointerObject,
  signal: AbortSignal,
  label = "",
): Promise<void> {
  signal.throwIfAborted();
  need("sem_timedwait");
  for (let pause = 1;; pause = Math.min(pause * 2, 16)) {
    const helper = takeHelper();
    if (helper) return await helperWait(helper, pointer, signal, label);
    // Every helper is busy: poll, and move to a helper when one is free.
    if (trySemaphore(pointer, label)) return;
    await delay(pause, signal);
  }
}

async function helperWait(
  helper: Helper,
  pointer: Deno.PointerObject,
  signal: AbortSignal,
  label: string,
): Promise<void> {
  const ia = helper.ia;
  const onAbort = () => {
    Atomics.compareExchange(ia, CLAIM, PENDING, CANCELLED);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  let outcome: Outcome;
  try {
    outcome = await helper.run(BigInt(Deno.UnsafePointer.value(pointer)));
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (!helper.dead) idle.push(helper);
  if (outcome.result === RESULT_READY) {
    if (!signal.aborted) return;
    // The helper took the unit just before (or just after) the abort: the
    // caller has given up, so the unit goes back.
    need("sem_post")(pointer);
    throw signal.reason;
  }
  if (outcome.result === RESULT_CANCELLED) throw signal.reason;
  throw errnoError(outcome.errno, "sem_timedwait", label, strerror(outcome.errno));
}

let trywait: ReturnType<typeof need<"sem_trywait">> | undefined;

/**
 * sem_trywait(3) on the calling thread: takes a unit when there is one,
 * never waits (the fast path of a semaphore wait).
 *
 * @param pointer The semaphore (`sem_t *`).
 * @param label Names the semaphore in errors.
 * @returns True when a unit was taken, false when the value is 0.
 * @throws {IpcError} When sem_trywait fails otherwise (EINVAL: not a semaphore).
 */
export function trySemaphore(pointer: Deno.PointerObject, label: string): boolean {
  const call = trywait ??= need("sem_trywait");
  for (;;) {
    if (call(pointer) === 0) return true;
    const code = errno();
    if (code === E.EAGAIN) return false;
    if (code !== E.EINTR) throw errnoError(code, "sem_trywait", label, strerror(code));
  }
}
