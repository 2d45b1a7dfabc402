/**
 * Opening an object again when `ipcbus gc` removed it while this process was
 * opening it (private to the transports; see `Presence.contended`).
 *
 * @module
 */

import { NotFoundError } from "../errors.ts";

let reopening = false;

/**
 * For transports: opens again an object that `ipcbus gc` removed while this
 * process was opening it (its `Presence.contended` hold found it
 * gone). The new open fails with `NotFoundError`, or with `create` makes the
 * object anew; if that one too is removed at once, this gives up.
 *
 * @param address The channel address (for the error).
 * @param open Opens the object again.
 * @returns What `open` returns.
 * @throws {NotFoundError} When the object is removed again while reopening.
 */
export function reopenRemoved<T>(address: string, open: () => T): T {
  if (reopening) {
    throw new NotFoundError(`${address} was removed (by ipcbus gc) while it was being opened, twice`);
  }
  reopening = true;
  try {
    return open();
  } finally {
    reopening = false;
  }
}
