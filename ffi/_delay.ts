/**
 * Waiting that an `AbortSignal` cancels: a timer (the backoff of the waits
 * that have nothing to poll: a FIFO writer waiting for a reader, a full
 * System V queue, the bounded message-probe fallback), and any promise.
 *
 * @module
 */

/**
 * `promise`, or a rejection with `signal.reason` as soon as the signal
 * aborts (the promise itself goes on).
 *
 * @param promise What to wait for.
 * @param signal Stops the wait; none: `promise` itself.
 * @returns Settles as described.
 */
export function abortable<R>(promise: Promise<R>, signal: AbortSignal | undefined): Promise<R> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      signal.removeEventListener("abort", onAbort); // by hand: see delay
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort);
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Resolves after `ms` milliseconds, or rejects with `signal.reason` as soon
 * as the signal aborts.
 *
 * @param ms Milliseconds.
 * @param signal Cancels the delay.
 * @returns Settles as described.
 */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      // Removed by hand, not with `once`: Deno (2.9) keeps an AbortSignal.timeout behind `signal` (an
      // AbortSignal.any) alive after a `once` listener fired because another source aborted it.
      signal.removeEventListener("abort", onAbort);
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort);
  });
}

const napCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * Blocks the calling thread for `ms` milliseconds: only for the rare short
 * waits of synchronous calls (a creator finishing a ring, a stale errno
 * settling), never for a wait that may take long.
 *
 * @param ms Milliseconds.
 */
export function napSync(ms: number): void {
  Atomics.wait(napCell, 0, 0, ms);
}
