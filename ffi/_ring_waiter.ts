/**
 * The wake-up path of the `shm:` ring (private to `transports/shm_ring.ts`):
 * one helper thread per ring handle that stays blocked in `semtimedop(2)` on
 * the handle's semaphore (one of the ring's System V set), and counts the
 * units it takes in a `SharedArrayBuffer`. A parked wait ends when that count
 * moves (one `Atomics.waitAsync` at a time watches it), when the handle's
 * doorbell rings (`ffi/_doorbell.ts`: a peer wrote to a socket the event loop
 * reads, one thread wake-up instead of two), or at the next tick.
 *
 * Peers post the semaphore only when the handle registered as a waiter (the
 * ring's wait masks) and could not ring its doorbell, so the helper sleeps in
 * the kernel between waits; it re-checks for shutdown every
 * {@linkcode WAITER_SLICE_MS} ms, and `stop()` posts the semaphore to end it
 * at once. A unit taken or a ring heard while nobody waits makes the next
 * wait return at once (a spurious wake-up, which the ring tolerates). The
 * helper is `ref`'d only while a wait is pending, so it never keeps the
 * process alive on its own.
 *
 * Ending a wait touches no timer and no event listener: on this project's
 * test machine `clearTimeout` and `removeEventListener` cost 5–7 µs each in a
 * process that was idle, a quarter of a parked hop. The longest wait comes
 * from one interval per handle that ends the pending waits every tick (and
 * stops itself once idle); an abort listener stays on its signal until the
 * next tick (so a signal used for every wait costs one listener per tick, not
 * one per wait), and `stop()` removes them all.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
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

/** A wait in progress. */
interface Pending {
  resolve(outcome: WaitOutcome): void;
  reject(reason: unknown): void;
  signal: AbortSignal;
}

/** A helper thread blocked on one semaphore of a set, and waits on what it takes. */
export class SemaphoreWaiter {
  readonly #ia: Int32Array<SharedArrayBuffer>;
  readonly #worker: Worker;
  readonly #tickMs: number;
  #seen = 0;
  #rung = 0;
  #rungSeen = 0;
  /** Whether an `Atomics.waitAsync` on the count is pending (one at a time, whatever ends the waits). */
  #armed = false;
  readonly #waits = new Set<Pending>();
  /**
   * Signals with an abort listener of ours. A wait that ends leaves its listener: the next tick
   * removes those no wait uses (a listener keeps an `AbortSignal.timeout` alive), `stop()` all.
   */
  readonly #listeners = new Map<AbortSignal, () => void>();
  #ticker: number | undefined;
  #idleTicks = 0;
  #stopped = false;

  /**
   * Starts the helper.
   *
   * @param semid The set's id.
   * @param index The semaphore in the set.
   * @param post Posts that semaphore (used by `stop` to wake the helper).
   * @param tickMs The longest a wait lasts: every `tickMs` ms the pending waits end with `"timeout"`.
   */
  constructor(semid: number, index: number, readonly post: () => void, tickMs: number) {
    const sab = new SharedArrayBuffer(16);
    this.#ia = new Int32Array(sab);
    this.#tickMs = tickMs;
    this.#worker = new Worker(HELPER_SOURCE, {
      eval: true,
      workerData: { sab, path: libcPath(), semid, index, slice: WAITER_SLICE_MS },
    });
    this.#worker.unref();
    this.#worker.on("error", () => {
      Atomics.store(this.#ia, STATE, FAILED);
      Atomics.notify(this.#ia, FIRED);
    });
  }

  /** The errno that stopped the helper (EIDRM: the set was removed), or 0. */
  get errno(): number {
    return Atomics.load(this.#ia, STATE) === FAILED ? this.#ia[ERRNO] || E.EINVAL : 0;
  }

  /**
   * Ends the pending waits as woken, or, when none is pending, the next
   * one at once: the handle's doorbell rang (`ffi/_doorbell.ts`).
   */
  readonly ring = (): void => {
    this.#rung++;
    this.#endAll("woken");
  };

  /**
   * Waits until the helper takes a unit (or took one since the last wait),
   * or {@linkcode ring} is called (or was since the last wait), or the
   * next tick (at most `tickMs` ms), or until `signal` aborts. Ending a wait
   * touches no timer and no listener: on this project's test machine those
   * cost microseconds each on a process that was idle.
   *
   * @param signal Aborting it rejects the wait with `signal.reason`.
   * @returns Why it ended.
   */
  wait(signal: AbortSignal): Promise<WaitOutcome> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const ia = this.#ia;
    const fired = Atomics.load(ia, FIRED);
    if (Atomics.load(ia, STATE) === FAILED) return Promise.resolve("failed");
    if (fired !== this.#seen || this.#rung !== this.#rungSeen) {
      this.#seen = fired;
      this.#rungSeen = this.#rung;
      return Promise.resolve("woken");
    }
    if (!this.#armed) {
      const waited = Atomics.waitAsync(ia, FIRED, fired);
      if (!waited.async) {
        this.#seen = Atomics.load(ia, FIRED);
        return Promise.resolve("woken");
      }
      this.#armed = true;
      waited.value.then(() => {
        this.#armed = false;
        this.#endAll("woken");
      });
    }
    if (!this.#listeners.has(signal)) {
      const listener = () => {
        // Removed by hand: Deno keeps an AbortSignal.timeout behind `signal` alive after a `once`
        // listener fired because another source aborted it (measured with Deno 2.9.6).
        signal.removeEventListener("abort", listener);
        this.#abort(signal);
      };
      this.#listeners.set(signal, listener);
      signal.addEventListener("abort", listener);
    }
    if (this.#ticker === undefined && !this.#stopped) {
      // Deno's own timers give numbers (the node typings that worker_threads brings say otherwise).
      this.#ticker = setInterval(this.#tick, this.#tickMs) as unknown as number;
      Deno.unrefTimer(this.#ticker);
    }
    if (this.#waits.size === 0) this.#worker.ref();
    return new Promise<WaitOutcome>((resolve, reject) => this.#waits.add({ resolve, reject, signal }));
  }

  #endAll(outcome: WaitOutcome): void {
    const waits = this.#waits;
    if (waits.size === 0) return;
    const ia = this.#ia;
    this.#seen = Atomics.load(ia, FIRED);
    this.#rungSeen = this.#rung;
    if (Atomics.load(ia, STATE) === FAILED) outcome = "failed";
    for (const pending of waits) pending.resolve(outcome);
    waits.clear();
    this.#worker.unref();
  }

  #abort(signal: AbortSignal): void {
    this.#listeners.delete(signal);
    for (const pending of this.#waits) {
      if (pending.signal !== signal) continue;
      this.#waits.delete(pending);
      pending.reject(signal.reason);
    }
    if (this.#waits.size === 0) this.#worker.unref();
  }

  /**
   * Ends the pending waits with "timeout" (their owners look again) and drops the abort listeners no
   * wait uses any more; stops after two idle ticks.
   */
  readonly #tick = (): void => {
    if (this.#waits.size > 0) {
      this.#idleTicks = 0;
      this.#endAll("timeout");
    } else if (++this.#idleTicks >= 2) {
      clearInterval(this.#ticker);
      this.#ticker = undefined;
    }
    this.#dropListeners(false);
  };

  /** Removes our abort listeners: all, or those of signals no pending wait uses. */
  #dropListeners(all: boolean): void {
    for (const [signal, listener] of this.#listeners) {
      if (!all) {
        let used = false;
        for (const pending of this.#waits) used ||= pending.signal === signal;
        if (used) continue;
      }
      signal.removeEventListener("abort", listener);
      this.#listeners.delete(signal);
    }
  }

  /** Ends the helper (it leaves the semaphore at once); pending waits end as woken. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (Atomics.compareExchange(this.#ia, STATE, RUNNING, STOPPING) === RUNNING) this.post();
    Atomics.notify(this.#ia, FIRED);
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    this.#endAll("woken");
    this.#dropListeners(true);
    this.#worker.unref();
  }
}
