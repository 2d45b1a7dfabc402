/**
 * A timer that an `AbortSignal` cancels: the backoff of the waits that have
 * nothing to poll (a FIFO writer waiting for a reader, a full System V queue,
 * the bounded message-probe fallback).
 *
 * @module
 */

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
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
