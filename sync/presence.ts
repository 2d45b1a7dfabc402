/**
 * Presence: whether any live process still uses an ipcbus object, known from
 * the kernel rather than from process ids.
 *
 * Every process that opens an ipcbus channel holds a shared (read) lock on a
 * small POSIX shared memory object named after the channel's address,
 * `/dev/shm/ipcbus.presence.<address, escaped>`, which also records the
 * address. The locks are open-file-description locks (`F_OFD_SETLK`): the
 * kernel drops them when the last descriptor goes, however the process ends
 * (SIGKILL included), so a crashed user never looks alive. A process id
 * would not do: ids are reused, and a container sharing `/dev/shm` sees other
 * ids. Anyone may ask whether the object is in use by testing for a
 * conflicting write lock, and `ipcbus gc` takes that write lock (which
 * excludes new users for as long as it holds it) before it removes a stale
 * object.
 *
 * A process that opens an object while `gc` holds its record's write lock
 * waits (up to {@linkcode CLAIM_WAIT_MS}) for the claim to end, and is told
 * ({@linkcode Presence.contended}) that the object may have gone meanwhile:
 * the transports then check, and open again (which fails with
 * `NotFoundError`, or creates the object anew with `create`). It is told so
 * too when it made the record: a claim that ended between its open of the
 * object and its hold removed the record with the object.
 *
 * Presence is advisory and best-effort: a process that cannot open the
 * presence object (another user's, with a mode that does not let it in)
 * simply holds none, and an object without a presence record is "unknown",
 * which `gc` never removes.
 *
 * @example Holding and probing presence
 * ```ts
 * import { Presence } from "@ipcbus/ipcbus/presence";
 *
 * const address = `sysv-mq:0x${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
 * const held = Presence.hold(address);
 * console.log(Presence.probe(address)); // "live"
 * held?.release();
 * console.log(Presence.probe(address)); // "stale"
 * Presence.claim(address)?.remove();
 * console.log(Presence.probe(address)); // "unknown"
 * ```
 *
 * @module
 */

import { AlreadyExistsError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { cString } from "../ffi/cstring.ts";
import { napSync } from "../ffi/_delay.ts";
import { O } from "../ffi/constants.ts";
import { readDirectory } from "../ffi/dir.ts";
import { closeFd, fstatFd } from "../ffi/fd.ts";
import { E, errno, lastError, libc, need } from "../ffi/libc.ts";
import { FileLock } from "./file_lock.ts";

/** Prefix of every presence object's name (under `/dev/shm`). */
export const PRESENCE_PREFIX = "ipcbus.presence.";

/** Longest address recorded (the record is read back by `list`). */
const MAX_ADDRESS = 4096;

/** How long `hold` waits for a claim (`ipcbus gc` removing the object) to end before it gives up (ms). */
export const CLAIM_WAIT_MS = 1000;

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** What {@linkcode Presence.probe} can tell. */
export type PresenceState =
  /** At least one open channel holds its presence lock. */
  | "live"
  /** A record exists but nobody holds it: every user has gone. */
  | "stale"
  /** No record (not an ipcbus object, or its record was removed), or it cannot be read. */
  | "unknown";

/** One presence record, as {@linkcode Presence.list} reports it. */
export interface PresenceRecord {
  /** The channel address the record belongs to. */
  address: string;
  /** The shared memory object's name (`/ipcbus.presence.…`). */
  name: string;
  /** Whether someone holds it. */
  state: PresenceState;
  /** Owner of the record (the user that first opened the address). */
  uid: number;
}

/**
 * The shared memory name (with its leading slash) of an address's record.
 *
 * @param address A channel address such as `sysv-mq:0x1a2b`.
 * @returns A valid POSIX shm name: characters outside `[A-Za-z0-9._:@+=,-]`
 *   are %-escaped, and a very long address is shortened with a hash of the whole.
 */
export function presenceName(address: string): string {
  let escaped = "";
  for (const byte of encoder.encode(address)) {
    const c = String.fromCharCode(byte);
    escaped += /[A-Za-z0-9._:@+=,-]/.test(c) ? c : `%${byte.toString(16).padStart(2, "0").toUpperCase()}`;
  }
  if (escaped.length > 200) escaped = `${escaped.slice(0, 180)}~${fnv1a64(address)}`;
  return `/${PRESENCE_PREFIX}${escaped}`;
}

function fnv1a64(text: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of encoder.encode(text)) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * 0x100000001b3n);
  }
  return hash.toString(16).padStart(16, "0");
}

/** The record's one locked byte: shared by every holder, exclusive for a claim. */
const RECORD_BYTE = { start: 0, length: 1 } as const;

/** The record's lock (open-file-description locks on `fd`). */
function recordLock(fd: number): FileLock {
  return FileLock.fromFd(fd, { label: "presence record" });
}

/** Whether anyone holds the record's lock (asked as for an exclusive lock: F_OFD_GETLK). */
function isHeld(fd: number): boolean {
  return recordLock(fd).holder(RECORD_BYTE) !== null;
}

function openRecord(name: string, flags: number, mode: number): number {
  const fd = need("shm_open")(cString(name), flags | O.NOFOLLOW | O.CLOEXEC, mode);
  if (fd >= 0) return fd;
  throw lastError("shm_open", name);
}

function readAddress(fd: number, name: string): string | undefined {
  const size = Number(fstatFd(fd).size);
  if (size <= 0 || size > MAX_ADDRESS) return undefined;
  const buffer = new Uint8Array(size);
  const n = Number(libc().read(fd, buffer, BigInt(size)));
  if (n !== size) return undefined;
  try {
    const address = strictUtf8.decode(buffer);
    return presenceName(address) === name ? address : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A held presence lock on one address's record. Release it when the channel
 * closes (the kernel also drops it when the process dies).
 */
export class Presence implements Disposable {
  #fd: number;
  /** The address held. */
  readonly address: string;
  /**
   * Whether the object the caller opened before holding may be gone, removed
   * by a claim (`ipcbus gc`): `hold` had to wait for a claim to end, or found
   * no record and made one (a claim removes the record with the object, so a
   * whole claim may have passed between the caller's open and its hold).
   */
  readonly contended: boolean;

  private constructor(fd: number, address: string, contended: boolean) {
    this.#fd = fd;
    this.address = address;
    this.contended = contended;
  }

  /**
   * Records that this process uses `address`, creating the record when it
   * is missing.
   *
   * @param address The channel address.
   * @param options `mode` of a new record (default `0o600`; give the object's own mode so that every
   *   user allowed to open the object can record presence too).
   * @returns The held presence, or `null` when the record cannot be opened or locked here (another
   *   user's, an exhausted descriptor table, shared memory unavailable, a claim held for longer than
   *   {@linkcode CLAIM_WAIT_MS}). Presence is best-effort.
   */
  static hold(address: string, options: { mode?: number } = {}): Presence | null {
    const name = presenceName(address);
    const deadline = performance.now() + CLAIM_WAIT_MS;
    let contended = false;
    for (;;) {
      const { fd, created } = openForHold(name, address, options.mode ?? 0o600);
      if (fd < 0) return null; // best-effort (see the module docs)
      // A shared lock fails only while a claim (gc) holds the write lock; gc removes the object, then the
      // record, then lets go: wait for that.
      let held = false;
      try {
        const lock = recordLock(fd);
        const shared = { ...RECORD_BYTE, shared: true };
        for (let attempt = 0;; attempt++) {
          held = lock.tryLock(shared) !== null;
          if (held || performance.now() >= deadline) break;
          contended = true;
          if (attempt >= 100) napSync(1);
        }
      } catch {
        // ENOLCK (the lock table is full): best-effort, as above.
      }
      if (!held) {
        closeFd(fd);
        return null;
      }
      // Held, the record can no longer be claimed. But a claim may have removed it before (while this
      // process waited, or between opening and locking it): then hold the record under the name now. A
      // record made here, or found removed, tells of a claim that may have removed the object too.
      if (created) contended = true;
      const linked = stillLinked(fd, name);
      if (linked !== false) return new Presence(fd, address, contended || linked === undefined);
      closeFd(fd);
      contended = true;
      if (performance.now() >= deadline) return null;
    }
  }

  /**
   * Whether any process holds presence on `address`.
   *
   * @param address The channel address.
   * @returns `"live"`, `"stale"` or `"unknown"`.
   */
  static probe(address: string): PresenceState {
    return probeName(presenceName(address));
  }

  /**
   * Every presence record this user can read.
   *
   * @returns The records, with their state; records whose content does not match their name are skipped.
   */
  static list(): PresenceRecord[] {
    const records: PresenceRecord[] = [];
    let names: string[] | null;
    try {
      names = readDirectory("/dev/shm");
    } catch {
      return records;
    }
    for (const entry of names ?? []) {
      if (!entry.startsWith(PRESENCE_PREFIX)) continue;
      const name = `/${entry}`;
      let fd: number;
      try {
        fd = openRecord(name, O.RDONLY, 0);
      } catch {
        continue;
      }
      try {
        const address = readAddress(fd, name);
        if (address === undefined) continue;
        records.push({ address, name, state: isHeld(fd) ? "live" : "stale", uid: fstatFd(fd).uid });
      } finally {
        closeFd(fd);
      }
    }
    return records.sort((a, b) => a.address.localeCompare(b.address));
  }

  /**
   * Takes the record's write lock if nobody uses `address`: while the claim
   * is held no process can record presence, so the object can be removed
   * without racing a new user (a process opening it meanwhile holds no
   * presence and is told so by nothing; see the module docs).
   *
   * @param address The channel address.
   * @returns The claim, or `null` when the address is in use or has no record.
   */
  static claim(address: string): PresenceClaim | null {
    const name = presenceName(address);
    let fd: number;
    try {
      fd = openRecord(name, O.RDWR, 0);
    } catch (error) {
      if (error instanceof NotFoundError || error instanceof PermissionDeniedError) return null;
      throw error;
    }
    let locked = false;
    try {
      locked = recordLock(fd).tryLock({ ...RECORD_BYTE, shared: false }) !== null;
    } finally {
      if (!locked) closeFd(fd);
    }
    if (!locked) return null;
    return new PresenceClaim(fd, name, address);
  }

  /**
   * Removes an address's record, for a transport whose `unlink()` has just
   * destroyed the object (holders keep their locks on the unnamed record
   * until they close). Does nothing when there is no record.
   *
   * @param address The channel address.
   */
  static forget(address: string): void {
    need("shm_unlink")(cString(presenceName(address)));
  }

  /** Releases the lock (closing the record's descriptor). Idempotent. */
  release(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@linkcode Presence.release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}

/** Opens (creating it if missing) the record to hold: its descriptor (−1 when it cannot be) and whether made here. */
function openForHold(name: string, address: string, mode: number): { fd: number; created: boolean } {
  // A few times: a claim may remove the record between the exclusive create and the open.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      try {
        const fd = openRecord(name, O.RDWR | O.CREAT | O.EXCL, mode);
        const bytes = encoder.encode(address);
        if (bytes.length <= MAX_ADDRESS) libc().write(fd, bytes, BigInt(bytes.length));
        return { fd, created: true };
      } catch (error) {
        if (!(error instanceof AlreadyExistsError)) throw error;
        try {
          return { fd: openRecord(name, O.RDWR, 0), created: false };
        } catch (inner) {
          if (!(inner instanceof PermissionDeniedError)) throw inner;
          return { fd: openRecord(name, O.RDONLY, 0), created: false };
        }
      }
    } catch (error) {
      if (!(error instanceof NotFoundError)) break;
    }
  }
  return { fd: -1, created: false };
}

/**
 * Whether `fd` is still the record named `name` (a claim may have removed it); undefined when that
 * cannot be told.
 */
function stillLinked(fd: number, name: string): boolean | undefined {
  let now: number;
  try {
    now = openRecord(name, O.RDONLY, 0);
  } catch (error) {
    return error instanceof NotFoundError ? false : undefined;
  }
  try {
    const a = fstatFd(fd), b = fstatFd(now);
    return a.dev === b.dev && a.ino === b.ino;
  } finally {
    closeFd(now);
  }
}

function probeName(name: string): PresenceState {
  let fd: number;
  try {
    fd = openRecord(name, O.RDONLY, 0);
  } catch {
    return "unknown";
  }
  try {
    return isHeld(fd) ? "live" : "stale";
  } finally {
    closeFd(fd);
  }
}

/** An exclusive claim on a stale address's record, from {@linkcode Presence.claim}. */
export class PresenceClaim implements Disposable {
  #fd: number;
  readonly #name: string;
  /** The address claimed. */
  readonly address: string;

  /** @internal */
  constructor(fd: number, name: string, address: string) {
    this.#fd = fd;
    this.#name = name;
    this.address = address;
  }

  /**
   * Removes the record (shm_unlink) and releases the claim. Call it after
   * removing the object itself.
   *
   * @throws {IpcError} When shm_unlink fails for a reason other than the record being gone already.
   */
  remove(): void {
    if (this.#fd < 0) return;
    if (need("shm_unlink")(cString(this.#name)) < 0 && errno() !== E.ENOENT) {
      const error = lastError("shm_unlink", this.#name);
      this.release();
      throw error;
    }
    this.release();
  }

  /** Releases the claim, keeping the record. Idempotent. */
  release(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@linkcode PresenceClaim.release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}
