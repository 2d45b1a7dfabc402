/**
 * The system calls behind the `shm:` ring (private to `transports/shm_ring.ts`),
 * beside opening and sizing its shared memory object (`ffi/_posix_object.ts`,
 * shared with `PosixSharedMemory`): removing it, the ring's System V semaphore
 * set (one semaphore per slot, to wake parked processes), and
 * open-file-description locks on single bytes of the object, which tell
 * whether the process that holds them is alive.
 *
 * @module
 */

import { errnoError } from "../errors.ts";
import { cString } from "./cstring.ts";
import { F } from "./constants.ts";
import { E, errno, libc, need, strerror } from "./libc.ts";
import { fillFlock, FLOCK } from "./structs.ts";
import { IPC, SEM, SEMBUF, SEMID_DS } from "./sysv.ts";

/**
 * shm_unlink(3).
 *
 * @param name The object's name.
 * @returns 0, or the errno of the failure.
 */
export function unlinkObject(name: string): number {
  if (need("shm_unlink")(cString(name, "shared memory name")) === 0) return 0;
  return errno();
}

// -- the ring's System V semaphore set ----------------------------------------------
//
// One semaphore per slot, used only to wake a parked owner. The state lives in
// the kernel: no peer can corrupt it by scribbling over the shared memory (a
// scribbled `sem_t` makes glibc abort the whole process).

// The post operation: only `sem_num` changes from call to call.
const sembuf = new Uint8Array(SEMBUF.size);
const sembufView = new DataView(sembuf.buffer);
sembufView.setInt16(SEMBUF.sem_op, 1, true);
sembufView.setInt16(SEMBUF.sem_flg, IPC.NOWAIT, true);

/**
 * Creates a private set of `count` semaphores, all 0 (semget with
 * `IPC_PRIVATE`): reachable only by the id the ring's header records.
 *
 * @param count Semaphores.
 * @param mode Permission bits.
 * @param label What to name in errors.
 * @returns The set's id.
 * @throws {IpcError} When semget fails (ENOSPC: too many sets, kernel.sem).
 */
export function createSemaphores(count: number, mode: number, label: string): number {
  const id = libc().semget(IPC.PRIVATE, count, IPC.CREAT | IPC.EXCL | mode);
  if (id >= 0) return id;
  const code = errno();
  const error = errnoError(code, "semget", `${label} (${count} semaphores)`, strerror(code));
  if (code === E.ENOSPC) {
    error.message += ": the system's limit of semaphore sets or semaphores (sysctl kernel.sem) is reached";
  }
  throw error;
}

/**
 * The number of semaphores in a set (semctl `IPC_STAT`), or the errno of the
 * failure as a negative number (`-EINVAL`, `-EIDRM`: no such set; `-EACCES`).
 *
 * @param id The set's id.
 * @returns The count, or −errno.
 */
export function semaphoreCount(id: number): number {
  const buffer = new Uint8Array(SEMID_DS.size);
  if (libc().semctl_buffer(id, 0, IPC.STAT, buffer) < 0) return -errno();
  return Number(new DataView(buffer.buffer).getBigUint64(SEMID_DS.sem_nsems, true));
}

/**
 * Adds one to semaphore `index` (semop, `IPC_NOWAIT`). Failures are ignored:
 * a wake-up is a hint, and waiters re-check on a timer.
 *
 * @param id The set's id.
 * @param index The semaphore.
 * @returns False when the set is gone.
 */
export function postSemaphore(id: number, index: number): boolean {
  sembufView.setUint16(SEMBUF.sem_num, index, true);
  const { semop } = libc();
  for (;;) {
    if (semop(id, sembuf, 1n) === 0) return true;
    const code = errno();
    if (code !== E.EINTR) return code !== E.EIDRM && code !== E.EINVAL;
  }
}

/**
 * Sets semaphore `index` to 0 (semctl `SETVAL`): a new owner of a slot drops
 * wake-ups meant for the previous one.
 *
 * @param id The set's id.
 * @param index The semaphore.
 */
export function resetSemaphore(id: number, index: number): void {
  libc().semctl(id, index, SEM.SETVAL, 0n);
}

/**
 * Removes a set (semctl `IPC_RMID`): every wait on it fails with `EIDRM`.
 *
 * @param id The set's id.
 * @returns 0, or the errno of the failure.
 */
export function removeSemaphores(id: number): number {
  return libc().semctl(id, 0, IPC.RMID, 0n) === 0 ? 0 : errno();
}

// -- open-file-description locks on single bytes ------------------------------

const flock = new Uint8Array(FLOCK.size);
const flockView = new DataView(flock.buffer);

/**
 * Takes (without waiting) or releases an open-file-description write lock
 * on `length` bytes at `start` (`F_OFD_SETLK`). The kernel drops it when the
 * description is closed, so also when the process dies.
 *
 * @param fd The descriptor.
 * @param start First byte.
 * @param length Bytes.
 * @param lock True to take, false to release.
 * @returns False when another description holds a conflicting lock.
 * @throws {IpcError} For other failures (`ENOLCK`: the system's lock table is full).
 */
export function lockBytes(fd: number, start: number, length: number, lock: boolean): boolean {
  const { fcntl_lock } = libc();
  for (;;) {
    fillFlock(flock, lock ? F.WRLCK : F.UNLCK, start, length);
    if (fcntl_lock(fd, F.OFD_SETLK, flock) === 0) return true;
    const code = errno();
    if (code === E.EINTR) continue;
    if (code === E.EAGAIN || code === E.EACCES) return false;
    throw errnoError(code, "fcntl(F_OFD_SETLK)", `fd ${fd} bytes ${start}+${length}`, strerror(code));
  }
}

/**
 * Whether another open file description holds a lock on any of `length`
 * bytes at `start` (`F_OFD_GETLK` for a write lock). This process's own
 * description never conflicts with itself.
 *
 * @param fd The descriptor (read-only is enough).
 * @param start First byte.
 * @param length Bytes.
 * @returns The first locked byte, or -1 when none is locked.
 * @throws {IpcError} When fcntl fails.
 */
export function lockedByte(fd: number, start: number, length: number): number {
  const { fcntl_lock } = libc();
  for (;;) {
    fillFlock(flock, F.WRLCK, start, length);
    if (fcntl_lock(fd, F.OFD_GETLK, flock) === 0) {
      if (flockView.getInt16(FLOCK.l_type, true) === F.UNLCK) return -1;
      return Number(flockView.getBigInt64(FLOCK.l_start, true));
    }
    const code = errno();
    if (code !== E.EINTR) {
      throw errnoError(code, "fcntl(F_OFD_GETLK)", `fd ${fd} bytes ${start}+${length}`, strerror(code));
    }
  }
}
