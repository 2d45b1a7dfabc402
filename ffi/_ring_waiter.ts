/**
 * The wake-up path of the `shm:` ring (private to `transports/shm_ring.ts`):
 * one helper thread per ring handle that stays blocked in `semtimedop(2)` on
 * the handle's semaphore (one of the ring's System V set), and counts the
 * units it takes in a `SharedArrayBuffer`. A parked wait is then only an
 * `Atomics.waitAsync` on that count: a post by a peer costs one thread
 * wake-up (the helper's) and a notify, instead of handing each wait to a
 * pooled thread that must first be woken to start blocking.
 *
 * Peers post the semaphore only when the handle registered as a waiter (the
 * ring's wait masks), so the helper sleeps in the kernel between waits; it
 * re-checks for shutdown every {@linkcode WAITER_SLICE_MS} ms, and `stop()`
 * posts the semaphore to end it at once. A unit it takes while nobody waits
 * makes the next wait return at once (a spurious wake-up, which the ring
 * tolerates). The helper is `ref`'d only while a wait is pending, so it never
 * keeps the process alive on its own.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import { abortable } from "./_delay.ts";
import { E, libcPath } from "./libc.ts";
import { SEMBUF } from "./sysv.ts";

/** The helper re-checks for shutdown this often (ms) when nothing wakes it. */
export const WAITER_SLICE_MS = 500;

// Int32 slots of the shared buffer.
const FIRED = 0; // units taken (wraps)
const STATE = 1; // RUNNING, STOPPING, FAILED
const ERRNO = 2;
const RUNNING = 0;
const STOPPING = 1;
const FAILED = 2;

const HELPER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { sab, path, semid, index, slice } = workerData;
const lib = Deno.dlopen(path, {
  semtimedop: { parameters: ["i32", "buffer", "usize", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(lib.__errno_location(), 4));
const ia = new Int32Array(sab);
const sops = new Uint8Array(${SEMBUF.size});
const view = new DataView(sops.buffer);
view.setUint16(${SEMBUF.sem_num}, index, true);
view.setInt16(${SEMBUF.sem_op}, -1, true);
const timeout = new BigInt64Array([BigInt(Math.floor(slice / 1000)), BigInt((slice % 1000) * 1000000)]);
const timeoutBytes = new Uint8Array(timeout.buffer);
for (;;) {
  if (Atomics.load(ia, ${STATE}) !== ${RUNNING}) break;
  if (lib.semtimedop(semid, sops, 1n, timeoutBytes) === 0) {
    if (Atomics.load(ia, ${STATE}) !== ${RUNNING}) break;
    Atomics.add(ia, ${FIRED}, 1);
    Atomics.notify(ia, ${FIRED});
    continue;
  }
  const code = errnoCell[0];
  if (code === ${E.EAGAIN} || code === ${E.EINTR}) continue;
  ia[${ERRNO}] = code;
  Atomics.store(ia, ${STATE}, ${FAILED});
  Atomics.notify(ia, ${FIRED});
  break;
}
`;

/** Why a wait ended. */
export type WaitOutcome = "woken" | "timeout" | "failed";

/** A helper thread blocked on one semaphore of a set, and waits on what it takes. */
export class SemaphoreWaiter {
  readonly #ia: Int32Array<SharedArrayBuffer>;
  readonly #worker: Worker;
  #seen: number;
  #pending = 0;
  #stopped = false;

  /**
   * Starts the helper.
   *
   * @param semid The set's id.
   * @param index The semaphore in the set.
   * @param post Posts that semaphore (used by `stop` to wake the helper).
   */
  constructor(semid: number, index: number, readonly post: () => void) {
    const sab = new SharedArrayBuffer(16);
    this.#ia = new Int32Array(sab);
    this.#seen = 0;
    this.#worker = new Worker(HELPER_SOURCE, {
      eval: true,
      workerData: { sab, path: libcPath(), semid, index, slice: WAITER_SLICE_MS },
    });
    this.#worker.unref();
    this.#worker.on("error", () => Atomics.store(this.#ia, STATE, FAILED));
  }

  /** The errno that stopped the helper (EIDRM: the set was removed), or 0. */
  get errno(): number {
    return Atomics.load(this.#ia, STATE) === FAILED ? this.#ia[ERRNO] || E.EINVAL : 0;
  }

  /**
   * Waits until the helper takes a unit (or took one since the last wait),
   * at most `ms` milliseconds, or until `signal` aborts.
   *
   * @param ms The longest wait.
   * @param signal Aborting it settles the wait with `signal.reason`.
   * @returns Why it ended.
   */
  async wait(ms: number, signal: AbortSignal): Promise<WaitOutcome> {
    signal.throwIfAborted();
    const ia = this.#ia;
    const fired = Atomics.load(ia, FIRED);
    if (Atomics.load(ia, STATE) === FAILED) return "failed";
    if (fired !== this.#seen) {
      this.#seen = fired;
      return "woken";
    }
    const waited = Atomics.waitAsync(ia, FIRED, fired, ms);
    if (!waited.async) {
      this.#seen = Atomics.load(ia, FIRED);
      return waited.value === "timed-out" ? "timeout" : "woken";
    }
    if (this.#pending++ === 0) this.#worker.ref();
    try {
      const result = await abortable(waited.value, signal);
      this.#seen = Atomics.load(ia, FIRED);
      if (Atomics.load(ia, STATE) === FAILED) return "failed";
      return result === "timed-out" ? "timeout" : "woken";
    } finally {
      if (--this.#pending === 0) this.#worker.unref();
    }
  }

  /** Ends the helper (it leaves the semaphore at once). Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (Atomics.compareExchange(this.#ia, STATE, RUNNING, STOPPING) === RUNNING) this.post();
    this.#worker.unref();
  }
}
