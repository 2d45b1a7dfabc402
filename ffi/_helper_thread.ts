/**
 * What the request/response helper threads of `sysv_waiter.ts` and
 * `file_waiter.ts` share: a `node:worker_threads` Worker that makes blocking
 * calls for the event loop, told what to do through a `SharedArrayBuffer`.
 *
 * Protocol (Int32 slot 0 of the buffer is the state): the caller fills in a
 * request, stores {@linkcode REQUEST} and notifies; the thread makes the
 * call, writes the outcome, stores {@linkcode DONE} and notifies; the caller
 * reads the outcome and stores {@linkcode IDLE}. The thread sleeps on
 * whatever the state is between requests (never spins).
 *
 * A thread is `ref`'d only while someone awaits it, so it never keeps the
 * process alive on its own; and a request on a thread that stops (it threw,
 * or was terminated) rejects instead of hanging, after which the thread is
 * `dead` and must not be reused.
 *
 * @module
 */

import { Worker } from "node:worker_threads";
import { libcPath } from "./libc.ts";

/** The state slot: no request. */
export const IDLE = 0;
/** The state slot: a request is waiting for the thread. */
export const REQUEST = 1;
/** The state slot: the outcome is ready for the caller. */
export const DONE = 2;

/** One helper thread. */
export class HelperThread {
  /** The thread. */
  readonly worker: Worker;
  /** The shared buffer's Int32 view (slot 0 is the state). */
  readonly ia: Int32Array<SharedArrayBuffer>;
  /** Whether the thread has stopped: requests reject then, and it must not be reused. */
  dead = false;
  /** Callers awaiting a request (the worker is ref'd while there are any). */
  #holders = 0;
  /** Rejects when the thread stops. */
  readonly #died: Promise<never>;
  readonly #registry: Set<HelperThread>;

  /**
   * Starts a thread running `source` (CommonJS, evaluated), with
   * `workerData` `{ sab, path }`: the shared buffer and libc's path.
   *
   * @param what Names the thread in the error a stopped thread gives ("the System V helper thread").
   * @param source The thread's code.
   * @param sab The shared buffer.
   * @param registry Where the thread is listed until {@linkcode stopHelperThreads} stops it.
   */
  constructor(what: string, source: string, sab: SharedArrayBuffer, registry: Set<HelperThread>) {
    this.#registry = registry;
    this.ia = new Int32Array(sab);
    this.worker = new Worker(source, { eval: true, workerData: { sab, path: libcPath() } });
    this.worker.unref();
    let fail!: (error: Error) => void;
    this.#died = new Promise<never>((_, reject) => fail = reject);
    this.#died.catch(() => {}); // reported through the requests
    const die = (cause: unknown) => {
      if (this.dead) return;
      this.dead = true;
      this.#registry.delete(this);
      fail(new Error(`${what} stopped`, { cause }));
    };
    this.worker.on("error", die);
    this.worker.on("exit", (code: number) => die(new Error(`exit code ${code}`)));
    registry.add(this);
  }

  /**
   * Hands the thread the request already written to the buffer.
   *
   * @param collect Reads the outcome from the buffer (called once the thread is done).
   * @returns The outcome; rejects when the thread stops first.
   */
  request<O>(collect: () => O): Promise<O> {
    const ia = this.ia;
    Atomics.store(ia, 0, REQUEST);
    Atomics.notify(ia, 0);
    const result = Atomics.waitAsync(ia, 0, REQUEST);
    const finished = result.async ? result.value : Promise.resolve();
    return Promise.race([
      finished.then(() => {
        const outcome = collect();
        Atomics.store(ia, 0, IDLE);
        return outcome;
      }),
      this.#died,
    ]);
  }

  /** Keeps the process alive for the thread (one count per awaiting caller). */
  hold(): void {
    if (this.#holders++ === 0) this.worker.ref();
  }

  /** Undoes one {@linkcode HelperThread.hold}. */
  letGo(): void {
    if (--this.#holders === 0) this.worker.unref();
  }
}

/**
 * Takes a live thread from `idle`, or makes one.
 *
 * @param idle Threads free for a request.
 * @param make Starts a new thread.
 * @returns A thread.
 */
export function takeHelper<H extends HelperThread>(idle: H[], make: () => H): H {
  for (let helper; (helper = idle.pop());) if (!helper.dead) return helper;
  return make();
}

/**
 * Stops every thread of a registry (for tests of what a wait does when its
 * thread dies: it rejects rather than hang).
 *
 * @param registry The threads.
 * @returns Settles once they have stopped.
 */
export async function stopHelperThreads(registry: Set<HelperThread>): Promise<void> {
  const helpers = [...registry];
  registry.clear();
  await Promise.all(helpers.map((helper) => helper.worker.terminate()));
}

/** An error carrying the errno a helper thread saw; callers map it with `errnoError`. */
export class HelperErrno extends Error {
  /** The errno value. */
  readonly errno: number;
  /** The call that failed. */
  readonly syscall: string;

  /**
   * @param errno The errno value.
   * @param syscall The call.
   */
  constructor(errno: number, syscall: string) {
    super(`${syscall} failed with errno ${errno}`);
    this.name = "HelperErrno";
    this.errno = errno;
    this.syscall = syscall;
  }
}
