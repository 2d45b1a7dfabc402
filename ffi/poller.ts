/**
 * Waiting for a descriptor without blocking the event loop.
 *
 * One helper thread per JavaScript thread (a `node:worker_threads` Worker,
 * started on the first wait) sits in a blocking poll(2) over every descriptor
 * someone is waiting for, plus an eventfd used to hand it new work. When a
 * descriptor becomes ready it flips a slot in a `SharedArrayBuffer` and
 * `Atomics.notify`s; the waiting side is parked in `Atomics.waitAsync`.
 * Measured on a 2-core VM: about 6 µs from readiness to a resolved promise,
 * against about 60 µs for a `nonblocking: true` FFI call.
 *
 * The helper is `ref`'d only while a wait is pending, so a pending receive
 * keeps the process alive and a process with nothing pending exits, open
 * channels or not. Readiness is a hint: callers retry their non-blocking
 * call and wait again when it still says `EAGAIN`.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import { POLL } from "./constants.ts";
import { makeEventFd } from "./fd.ts";
import { libc, libcPath } from "./libc.ts";

const SLOTS = 1024;
const HEADER = 4; // [0] = one past the highest slot ever used
const SLOT_INTS = 4; // state, fd, events, revents
const FREE = 0;
const WAITING = 1;
const READY = 2;
const CANCELLED = 3;

// The helper thread. Plain JavaScript, evaluated by node:worker_threads, so
// it needs no module file next to the library (works from JSR and from
// `deno compile` binaries alike).
const HELPER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { sab, efd, path, slots, header, slotInts, waiting, ready } = workerData;
const { poll, read } = Deno.dlopen(path, {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
}).symbols;
const ia = new Int32Array(sab);
const pfd = new Int32Array(2 * (slots + 1));
const pfdBytes = new Uint8Array(pfd.buffer);
const owner = new Int32Array(slots + 1);
const drain = new Uint8Array(8);
for (;;) {
  const limit = Atomics.load(ia, 0);
  pfd[0] = efd;
  pfd[1] = 1;
  let n = 1;
  for (let s = 0; s < limit; s++) {
    const base = header + s * slotInts;
    if (Atomics.load(ia, base) === waiting) {
      pfd[2 * n] = ia[base + 1];
      pfd[2 * n + 1] = ia[base + 2];
      owner[n] = base;
      n++;
    }
  }
  if (poll(pfdBytes, BigInt(n), -1) < 0) continue;
  if (pfd[1] >>> 16) read(efd, drain, 8n);
  for (let i = 1; i < n; i++) {
    const revents = pfd[2 * i + 1] >>> 16;
    if (revents === 0) continue;
    const base = owner[i];
    Atomics.store(ia, base + 3, revents);
    if (Atomics.compareExchange(ia, base, waiting, ready) === waiting) Atomics.notify(ia, base);
  }
}
`;

interface Helper {
  worker: Worker;
  ia: Int32Array<SharedArrayBuffer>;
  eventFd: number;
  free: number[];
  pending: number;
  failures: Map<number, (error: unknown) => void>;
}

let helper: Helper | undefined;
const one = new BigUint64Array([1n]);
const oneBytes = new Uint8Array(one.buffer);

function start(): Helper {
  const eventFd = makeEventFd();
  const sab = new SharedArrayBuffer((HEADER + SLOTS * SLOT_INTS) * 4);
  const worker = new Worker(HELPER_SOURCE, {
    eval: true,
    workerData: {
      sab,
      efd: eventFd,
      path: libcPath(),
      slots: SLOTS,
      header: HEADER,
      slotInts: SLOT_INTS,
      waiting: WAITING,
      ready: READY,
    },
  });
  worker.unref();
  const state: Helper = {
    worker,
    ia: new Int32Array(sab),
    eventFd,
    free: Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i),
    pending: 0,
    failures: new Map(),
  };
  const fail = (reason: unknown) => {
    if (helper === state) helper = undefined;
    const error = new Error("ipcbus: the poll helper thread stopped", { cause: reason });
    for (const reject of state.failures.values()) reject(error);
    state.failures.clear();
  };
  worker.on("error", fail);
  worker.on("exit", fail);
  return state;
}

function wake(state: Helper): void {
  libc().write(state.eventFd, oneBytes, 8n);
}

/**
 * Waits until `fd` reports one of `events` (`POLL.IN`, `POLL.OUT`), an error
 * or a hang-up. The answer is a hint: retry the non-blocking call.
 *
 * @param fd The descriptor.
 * @param events The poll events wanted.
 * @param signal Aborting it settles the wait with `signal.reason`.
 * @returns The `revents` reported by poll(2).
 */
export function waitFd(fd: number, events: number, signal?: AbortSignal): Promise<number> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  const state = helper ??= start();
  const slot = state.free.pop();
  if (slot === undefined) {
    return Promise.reject(new Error(`ipcbus: more than ${SLOTS} descriptor waits at once`));
  }
  const { ia } = state;
  const base = HEADER + slot * SLOT_INTS;
  ia[base + 1] = fd;
  ia[base + 2] = events | POLL.ERR | POLL.HUP;
  ia[base + 3] = 0;
  Atomics.store(ia, base, WAITING);
  if (Atomics.load(ia, 0) <= slot) Atomics.store(ia, 0, slot + 1);
  wake(state);
  if (state.pending++ === 0) state.worker.ref();

  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const finish = (error?: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      state.failures.delete(slot);
      const outcome = Atomics.exchange(ia, base, FREE);
      state.free.push(slot);
      if (--state.pending === 0) state.worker.unref();
      if (error !== undefined) reject(error);
      else if (outcome === READY) resolve(Atomics.load(ia, base + 3));
      else reject(signal?.reason ?? new Error("ipcbus: wait cancelled"));
    };
    const onAbort = () => {
      if (Atomics.compareExchange(ia, base, WAITING, CANCELLED) === WAITING) {
        Atomics.notify(ia, base);
        wake(state);
      }
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    state.failures.set(slot, finish);
    const result = Atomics.waitAsync(ia, base, WAITING);
    if (result.async) result.value.then(() => finish());
    else finish();
  });
}
