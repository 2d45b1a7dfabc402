/**
 * Waiting on System V objects without blocking the event loop.
 *
 * System V queues and semaphores have no descriptor to poll, so a wait runs
 * on a helper thread (a `node:worker_threads` Worker from a small pool) that
 * makes the blocking call itself, and wakes the caller with `Atomics.notify`
 * (the caller is parked in `Atomics.waitAsync`):
 *
 * - {@linkcode waitForMessage}: `msgrcv(qid, buf, 0, type, flags)` blocks
 *   until a message matching the type filter is queued, then fails with
 *   `E2BIG` **without removing it** (a zero-size buffer, no `MSG_NOERROR`):
 *   a pure "a message is there" probe. The caller then takes the message
 *   with a non-blocking `msgrcv`. Only a zero-length message fits the probe's
 *   buffer; it is then taken by the helper and handed back.
 * - {@linkcode semaphoreOperation}: `semtimedop` in slices of
 *   {@linkcode SLICE_MS} ms, checking for cancellation between slices.
 *
 * Cancelling (an `AbortSignal`) settles the caller at once. A message probe
 * cannot be interrupted; its helper stays parked in the kernel, detached,
 * and the next wait for the same queue and filter adopts it instead of
 * starting another thread. A zero-length message it takes while detached is
 * put back on the queue (at the tail). A semaphore helper notices the
 * cancellation within one slice; if its operation completed meanwhile, the
 * caller undoes it. A removed object (`EIDRM`) settles every wait on it.
 *
 * At most {@linkcode MAX_DETACHED} probes stay parked. Beyond that, a wait
 * for a queue and filter that has no parked probe polls instead: a
 * non-blocking size-0 msgrcv probe on the calling thread, with a 1 → 16 ms
 * backoff. Threads stay bounded; only that corner case is slower to wake.
 *
 * Helpers are `ref`'d only while someone awaits them, so they never keep
 * the process alive on their own.
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
import { abortable, delay } from "./_delay.ts";
import { E, errno, libc } from "./libc.ts";
import { IPC, SEMBUF } from "./sysv.ts";

/** Largest number of operations in one semaphore wait. */
export const MAX_SEMAPHORE_OPERATIONS = 64;
/** Slice of a semaphore wait, in ms: the longest a cancelled wait keeps its helper. */
export const SLICE_MS = 25;
/** Most message probes left parked after their wait was cancelled. */
export const MAX_DETACHED = 16;

const OP_MESSAGE = 1;
const OP_SEMAPHORE = 2;
const RESULT_READY = 1; // a message is there (E2BIG), or the operation completed
const RESULT_TAKEN = 2; // the probe took a zero-length message (its type is in the slot)
const RESULT_CANCELLED = 3;
const RESULT_ERROR = 4;
const SOPS_OFFSET = 64;
const SAB_BYTES = SOPS_OFFSET + 6 * MAX_SEMAPHORE_OPERATIONS;

// Int32 slots: 0 state, 1 op, 2 id, 3 flags / count, 4 slice ms, 5 cancel, 6 result, 7 errno.
// BigInt64 slot 4 (byte 32): the message type (in: filter; out: a taken message's type).
const HELPER_SOURCE = `
const { workerData } = require("node:worker_threads");
const { sab, path } = workerData;
const lib = Deno.dlopen(path, {
  msgrcv: { parameters: ["i32", "buffer", "usize", "i64", "i32"], result: "isize" },
  semtimedop: { parameters: ["i32", "buffer", "usize", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(lib.__errno_location(), 4));
const ia = new Int32Array(sab);
const big = new BigInt64Array(sab, 0, 8);
const message = new BigInt64Array(1);
const messageBytes = new Uint8Array(message.buffer);
const sops = new Uint8Array(sab, ${SOPS_OFFSET});
const timeout = new BigInt64Array(2);
const timeoutBytes = new Uint8Array(timeout.buffer);
for (;;) {
  // Sleep on whatever the state is (DONE until the caller takes the result, then IDLE): waiting on
  // IDLE alone would return at once while the state is DONE, and spin.
  for (let state; (state = Atomics.load(ia, 0)) !== ${REQUEST};) Atomics.wait(ia, 0, state);
  let result = ${RESULT_ERROR}, code = 0;
  if (ia[1] === ${OP_MESSAGE}) {
    for (;;) {
      const n = Number(lib.msgrcv(ia[2], messageBytes, 0n, big[4], ia[3]));
      if (n >= 0) { big[4] = message[0]; result = ${RESULT_TAKEN}; break; }
      code = errnoCell[0];
      if (code === ${E.EINTR}) continue;
      result = code === ${E.E2BIG} ? ${RESULT_READY} : ${RESULT_ERROR};
      break;
    }
  } else {
    timeout[0] = 0n;
    timeout[1] = BigInt(ia[4]) * 1000000n;
    for (;;) {
      if (Atomics.load(ia, 5) !== 0) { result = ${RESULT_CANCELLED}; break; }
      if (lib.semtimedop(ia[2], sops, BigInt(ia[3]), timeoutBytes) === 0) { result = ${RESULT_READY}; break; }
      code = errnoCell[0];
      if (code === ${E.EAGAIN} || code === ${E.EINTR}) continue;
      result = ${RESULT_ERROR};
      break;
    }
  }
  ia[6] = result;
  ia[7] = code;
  Atomics.store(ia, 0, ${DONE});
  Atomics.notify(ia, 0);
}
`;

interface Outcome {
  result: number;
  errno: number;
  type: bigint;
}

class Helper extends HelperThread {
  readonly big: BigInt64Array<SharedArrayBuffer>;
  readonly sops: Uint8Array<SharedArrayBuffer>;
  /** Settles when the current request is done; rejects when the thread stopped first. */
  done: Promise<Outcome> | undefined;

  constructor() {
    const sab = new SharedArrayBuffer(SAB_BYTES);
    super("the System V helper thread", HELPER_SOURCE, sab, all);
    this.big = new BigInt64Array(sab, 0, 8);
    this.sops = new Uint8Array(sab, SOPS_OFFSET);
  }

  start(op: number, id: number, flags: number, type: bigint): void {
    const ia = this.ia;
    ia[1] = op;
    ia[2] = id;
    ia[3] = flags;
    ia[4] = SLICE_MS;
    ia[5] = 0;
    this.big[4] = type;
    this.done = this.request(() => ({ result: ia[6], errno: ia[7], type: this.big[4] }));
  }
}

const idle: Helper[] = [];
/** Detached message probes, by `qid:type:flags`, adopted by the next wait with the same key. */
const detached = new Map<string, Helper[]>();
let detachedCount = 0;

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

/** What {@linkcode waitForMessage} found. */
export type MessageWait =
  /** A matching message is queued: take it with a non-blocking msgrcv (another receiver may be faster). */
  | { kind: "ready" }
  /** The probe took a zero-length message of this type: it is the caller's now. */
  | { kind: "taken"; type: bigint };

/** The one "ready" outcome (nothing to say about it, so none is made per wait). */
const READY: MessageWait = Object.freeze({ kind: "ready" });

/**
 * Waits until a message matching `type`/`flags` (msgrcv semantics, e.g.
 * `MSG_EXCEPT`) is on queue `qid`.
 *
 * @param qid The queue id.
 * @param type The msgrcv type filter.
 * @param flags msgrcv flags (no `IPC_NOWAIT`, no `MSG_NOERROR`).
 * @param signal Aborting it settles the wait with `signal.reason`.
 * @returns Ready, or a zero-length message the probe took.
 * @throws {Error} With `errno` set (for example `EIDRM` when the queue was removed).
 */
export async function waitForMessage(
  qid: number,
  type: bigint,
  flags: number,
  signal: AbortSignal,
): Promise<MessageWait> {
  signal.throwIfAborted();
  const key = `${qid}:${type}:${flags}`;
  const adopted = detached.get(key)?.shift();
  if (adopted) detachedCount--;
  else if (detachedCount >= MAX_DETACHED) return await pollForMessage(qid, type, flags, signal);
  const helper = adopted ?? startProbe(qid, type, flags);
  helper.hold();
  let outcome: Outcome;
  try {
    outcome = await abortable(helper.done!, signal);
  } catch (error) {
    // Leave the probe parked in the kernel for the next wait on this key.
    if (!helper.dead) detach(key, helper, qid);
    throw error;
  } finally {
    helper.letGo();
  }
  idle.push(helper);
  if (outcome.result === RESULT_READY) return READY;
  if (outcome.result === RESULT_TAKEN) return { kind: "taken", type: outcome.type };
  throw errnoFailure(outcome.errno, "msgrcv");
}

function startProbe(qid: number, type: bigint, flags: number): Helper {
  const helper = takeHelper();
  helper.start(OP_MESSAGE, qid, flags, type);
  return helper;
}

function detach(key: string, helper: Helper, qid: number): void {
  const parked = detached.get(key) ?? [];
  parked.push(helper);
  detached.set(key, parked);
  detachedCount++;
  const leave = (): boolean => {
    const list = detached.get(key);
    const at = list?.indexOf(helper) ?? -1;
    if (at < 0) return false; // adopted meanwhile: the adopter handles the outcome
    list!.splice(at, 1);
    detachedCount--;
    if (list!.length === 0) detached.delete(key);
    return true;
  };
  helper.done!.then((outcome) => {
    if (!leave()) return;
    idle.push(helper);
    if (outcome.result === RESULT_TAKEN) putBack?.(qid, outcome.type);
  }, leave);
}

/** The bounded fallback: probe without waiting, back off, repeat. */
async function pollForMessage(
  qid: number,
  type: bigint,
  flags: number,
  signal: AbortSignal,
): Promise<MessageWait> {
  const { msgrcv } = libc();
  const probe = new BigInt64Array(1);
  const probeBytes = new Uint8Array(probe.buffer);
  for (let pause = 1;; pause = Math.min(pause * 2, 16)) {
    const n = Number(msgrcv(qid, probeBytes, 0n, type, flags | IPC.NOWAIT));
    if (n >= 0) return { kind: "taken", type: probe[0] };
    const code = errno();
    if (code === E.E2BIG) return READY;
    if (code !== E.ENOMSG && code !== E.EINTR) throw errnoFailure(code, "msgrcv");
    await delay(pause, signal);
  }
}

/** How a detached probe's zero-length message goes back on its queue (set by the queue transport). */
let putBack: ((qid: number, type: bigint) => void) | undefined;

/**
 * Registers how a zero-length message taken by a detached probe is returned
 * to its queue.
 *
 * @param handler Sends an empty message of `type` to `qid` without waiting.
 */
export function onDetachedMessage(handler: (qid: number, type: bigint) => void): void {
  putBack = handler;
}

/**
 * Performs semaphore operations (an encoded `struct sembuf` array) that may
 * wait, on a helper thread.
 *
 * @param semid The semaphore set id.
 * @param sops The encoded operations (6 bytes each).
 * @param signal Aborting it settles the wait with `signal.reason`.
 * @returns True when the operations completed; false when the wait was
 *   cancelled but they completed anyway (the caller must undo them).
 * @throws {Error} With `errno` set (for example `EIDRM` when the set was removed).
 */
export async function semaphoreOperation(
  semid: number,
  sops: Uint8Array,
  signal: AbortSignal,
): Promise<boolean> {
  signal.throwIfAborted();
  const count = sops.length / 6;
  if (!Number.isInteger(count) || count < 1 || count > MAX_SEMAPHORE_OPERATIONS) {
    throw new RangeError(`1 to ${MAX_SEMAPHORE_OPERATIONS} semaphore operations at once, got ${count}`);
  }
  for (let at = SEMBUF.sem_flg; at < sops.length; at += SEMBUF.size) {
    // With IPC_NOWAIT semtimedop fails at once with the EAGAIN that also
    // means "slice over": the helper would spin. Such operations never wait.
    if (((sops[at] | (sops[at + 1] << 8)) & IPC.NOWAIT) !== 0) {
      throw new TypeError("semaphoreOperation: an operation has IPC_NOWAIT; try it with semop instead");
    }
  }
  const helper = takeHelper();
  helper.sops.set(sops);
  helper.start(OP_SEMAPHORE, semid, count, 0n);
  helper.hold();
  try {
    const outcome = await abortable(helper.done!, signal);
    if (outcome.result === RESULT_READY) return true;
    throw errnoFailure(outcome.errno, "semtimedop");
  } catch (error) {
    if (!signal.aborted) throw error;
    Atomics.store(helper.ia, 5, 1); // cancel: the helper stops within one slice
    const outcome = await helper.done!;
    if (outcome.result === RESULT_READY) return false;
    throw error;
  } finally {
    helper.letGo();
    helper.done!.then(() => idle.push(helper), () => {});
  }
}

function errnoFailure(errno: number, syscall: string): HelperErrno {
  return new HelperErrno(errno, syscall);
}
