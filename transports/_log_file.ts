/**
 * `file:` logs on disk (private): creating a log file atomically, checking
 * frames in place, repairing after a writer died inside its critical
 * section, and the recovery the first opener runs. See `docs/file-log.md`.
 *
 * @module
 */

import { AlreadyExistsError, FrameError, NotFoundError } from "../errors.ts";
import { O } from "../ffi/constants.ts";
import { closeFd, fchmodFd, openPath } from "../ffi/fd.ts";
import { reserveFileSpace, setFileSize } from "../ffi/_file_space.ts";
import { E, errno, lastError, libc } from "../ffi/libc.ts";
import { cString } from "../ffi/cstring.ts";
import { syncParentDirectory } from "../memory/_regular_file.ts";
import {
  align8,
  encodeHeader,
  FRAME_HEADER,
  getU64,
  H_DAMAGED,
  H_DIRTY,
  H_HEAD,
  H_NEXT_SEQ,
  H_RECOVERIES,
  H_SAVED_SEQ,
  H_SAVED_WRITE,
  H_SYNCED,
  H_WAITERS,
  H_WRITE,
  H_WRITER_DEATHS,
  HEADER_BYTES,
  PADDING_TYPE,
  readU64,
  RING_OFFSET,
  S_GENERATION,
  S_POSITIONS,
  S_STATE,
  SLOT_BYTES,
  SLOTS,
  TABLE_OFFSET,
  tagOf,
  TWO_32,
  writeU64,
  xxh32,
} from "./_log_format.ts";

/** Views of a mapped log. */
export interface LogMemory {
  /** The whole mapping. */
  bytes: Uint8Array;
  /** The same, as 32-bit words. */
  words: Uint32Array;
  /** Ring bytes. */
  capacity: number;
  /** Largest payload. */
  maxMessageSize: number;
}

/** What an open found and repaired. */
export interface RecoveryReport {
  /** Whether this open ran the recovery (it was the only user of the log). */
  ran: boolean;
  /** Whether anything was repaired. */
  repaired: boolean;
  /** A writer had died inside its critical section; its unfinished append was dropped or completed. */
  writerDied: boolean;
  /** Bytes of the log dropped after the last intact frame (torn or corrupt frames). */
  truncatedBytes: number;
  /** Bytes of the file restored (zero-filled) because it was shorter than its header says. */
  extendedBytes: number;
  /** Bytes skipped at the start of the log because the oldest frames were damaged. */
  skippedBytes: number;
  /** Bytes of frames checked. */
  scannedBytes: number;
}

/**
 * Checks the frame at logical position `position` in place (its fields,
 * tag and checksum) and returns how far the next frame is, or -1 when it is
 * not an intact frame that ends by `end`. Fewer than 24 bytes before the end
 * of the ring (no room for a header) count as a skip to the next lap.
 *
 * @param memory The mapping.
 * @param position Logical position (a multiple of 8).
 * @param end The write position: frames must end by it.
 * @param out Receives the frame's type (-1 for a skip) and sequence number.
 * @returns The distance to the next frame, or -1.
 */
export function checkFrame(
  memory: LogMemory,
  position: number,
  end: number,
  out: { type: number; seq: number },
): number {
  const { capacity, words, bytes } = memory;
  const phys = position % capacity;
  const room = capacity - phys;
  if (room < FRAME_HEADER) {
    out.type = -1;
    return position + room <= end ? room : -1;
  }
  const at = RING_OFFSET + phys;
  if (words[(at + 12) >>> 2] !== tagOf(position)) return -1;
  const length = words[(at + 4) >>> 2];
  const type = words[(at + 8) >>> 2];
  let size: number;
  let hashed: number;
  if (type === PADDING_TYPE) {
    if (length !== room - FRAME_HEADER) return -1;
    size = room;
    hashed = FRAME_HEADER - 4;
  } else {
    if (length > memory.maxMessageSize || FRAME_HEADER + length > room) return -1;
    size = align8(FRAME_HEADER + length);
    hashed = FRAME_HEADER - 4 + length;
  }
  if (position + size > end) return -1;
  if (words[at >>> 2] !== xxh32(words, bytes, at + 4, hashed)) return -1;
  out.type = type;
  out.seq = getU64(words, (at + 16) >>> 2);
  return size;
}

/**
 * The size of the frame at `position` for reclaiming space (no checksum:
 * only writers call it, on frames they or their peers wrote), or -1 when
 * the bytes there are not a frame of this position.
 *
 * @param memory The mapping.
 * @param position Logical position.
 * @returns Distance to the next frame, or -1.
 */
export function frameSpan(memory: LogMemory, position: number): number {
  const { capacity, words } = memory;
  const phys = position % capacity;
  const room = capacity - phys;
  if (room < FRAME_HEADER) return room;
  const at = RING_OFFSET + phys;
  if (words[(at + 12) >>> 2] !== tagOf(position)) return -1;
  const length = words[(at + 4) >>> 2];
  if (words[(at + 8) >>> 2] === PADDING_TYPE) return length === room - FRAME_HEADER ? room : -1;
  if (length > memory.maxMessageSize || FRAME_HEADER + length > room) return -1;
  return align8(FRAME_HEADER + length);
}

/**
 * Searches forward for the next intact frame (8 bytes at a time, checking
 * the tag first and the checksum only where the tag fits).
 *
 * @param memory The mapping.
 * @param from First position to try.
 * @param end The write position.
 * @returns The position of the next intact frame, or -1 when there is none before `end`.
 */
export function findIntactFrame(memory: LogMemory, from: number, end: number): number {
  const probe = { type: 0, seq: 0 };
  const { capacity, words } = memory;
  for (let position = from; position < end; position += 8) {
    const phys = position % capacity;
    if (capacity - phys < FRAME_HEADER) continue;
    if (words[(RING_OFFSET + phys + 12) >>> 2] !== tagOf(position)) continue;
    if (checkFrame(memory, position, end, probe) > 0 && probe.type !== -1) return position;
  }
  return -1;
}

/**
 * Completes the bookkeeping of a writer that died inside its critical
 * section (the header's dirty flag was set). The commit point, the write
 * position, is kept when the dead writer had published it (readers may
 * have read those frames); the next sequence number is then recomputed from
 * the frames it appended. Call it holding the append lock.
 *
 * @param memory The mapping.
 * @returns The write position and next sequence number to continue from.
 */
export function repairDeadWriter(memory: LogMemory): { write: number; seq: number } {
  const words = memory.words;
  const saved = readU64(words, H_SAVED_WRITE >>> 2);
  const savedSeq = readU64(words, H_SAVED_SEQ >>> 2);
  let write = readU64(words, H_WRITE >>> 2);
  let seq = savedSeq;
  if (write !== saved) {
    // Published: walk what it appended (bounded by one ring) for the last sequence number.
    const out = { type: 0, seq: 0 };
    let position = saved;
    if (write < saved || write - saved > memory.capacity || saved % 8 !== 0) position = write; // nonsense: keep write
    while (position < write) {
      const step = checkFrame(memory, position, write, out);
      if (step < 0) {
        write = position; // cannot be: a published frame is intact; never let readers past a bad one
        writeU64(words, H_WRITE >>> 2, write);
        break;
      }
      if (out.type > 0) seq = out.seq + 1;
      position += step;
    }
  }
  writeU64(words, H_NEXT_SEQ >>> 2, seq);
  Atomics.store(words, H_DIRTY >>> 2, 0);
  bump(words, H_WRITER_DEATHS, 1);
  return { write, seq };
}

function bump(words: Uint32Array, field: number, by: number): void {
  writeU64(words, field >>> 2, readU64(words, field >>> 2) + by);
}

/**
 * The recovery of the first opener (no other process has the log open):
 * finishes a dead writer's append, checks the frames that may not have
 * reached the disk (from the last synced position, or from the oldest frame
 * with `full`), drops everything from the first damaged frame on, and
 * resets the count of parked readers. Call it holding the users lock
 * exclusively and the append lock, with the file at its full size.
 *
 * @param memory The mapping.
 * @param full Check every retained frame, not only the unsynced tail.
 * @param extendedBytes Bytes the caller restored to the file's end (reported).
 * @param path For messages.
 * @returns What was found and repaired.
 * @throws {FrameError} When the header's positions are impossible.
 */
export function recover(
  memory: LogMemory,
  full: boolean,
  extendedBytes: number,
  path: string,
): RecoveryReport {
  const { words, capacity } = memory;
  const report: RecoveryReport = {
    ran: true,
    repaired: extendedBytes > 0,
    writerDied: false,
    truncatedBytes: 0,
    extendedBytes,
    skippedBytes: 0,
    scannedBytes: 0,
  };
  let write = readU64(words, H_WRITE >>> 2);
  let head = readU64(words, H_HEAD >>> 2);
  const storedSeq = readU64(words, H_NEXT_SEQ >>> 2);
  if (
    !Number.isSafeInteger(write) || write % 8 !== 0 || head % 8 !== 0 || head > write ||
    write - head > capacity || storedSeq < 1 || !Number.isSafeInteger(storedSeq)
  ) {
    throw new FrameError(
      `file: the header of ${path} is damaged: write position ${write}, head ${head}, next sequence ` +
        `${storedSeq} are impossible together, so where the messages are is unknown; the log cannot be ` +
        `repaired (restore it from a copy, or remove it and start a new one)`,
    );
  }
  if (Atomics.load(words, H_DIRTY >>> 2) !== 0) {
    report.writerDied = true;
    report.repaired = true;
    write = repairDeadWriter(memory).write;
  }
  const synced = readU64(words, H_SYNCED >>> 2);
  let from = full || synced < head || synced > write || synced % 8 !== 0 ? head : synced;
  const out = { type: 0, seq: 0 };
  let lastSeq = -1;
  if (from === head && head < write && checkFrame(memory, head, write, out) < 0) {
    // The oldest frame is damaged: skip to the next intact one.
    const next = findIntactFrame(memory, head + 8, write);
    const newHead = next < 0 ? write : next;
    report.skippedBytes = newHead - head;
    report.repaired = true;
    head = from = newHead;
    writeU64(words, H_HEAD >>> 2, head);
  }
  let position = from;
  while (position < write) {
    const step = checkFrame(memory, position, write, out);
    if (step < 0) break;
    if (out.type > 0) lastSeq = out.seq;
    position += step;
  }
  report.scannedBytes = position - from;
  if (position < write) {
    report.truncatedBytes = write - position;
    report.repaired = true;
    write = position;
    writeU64(words, H_WRITE >>> 2, write);
  }
  // The next sequence number: after the last intact frame, and never below what the header or a named
  // reader already counted (so numbers of messages lost in a crash are not given to new ones).
  let seq = Math.max(lastSeq + 1, 1);
  const plausible = (value: number) => value >= seq && value - seq < TWO_32;
  if (plausible(storedSeq)) seq = storedSeq;
  for (let slot = 0; slot < SLOTS; slot++) {
    const base = TABLE_OFFSET + slot * SLOT_BYTES;
    if (words[(base + S_STATE) >>> 2] !== 1) continue;
    const copy = base + S_POSITIONS + 16 * (words[(base + S_GENERATION) >>> 2] & 1);
    const acked = readU64(words, copy >>> 2);
    if (plausible(acked)) seq = acked;
  }
  if (seq !== storedSeq) writeU64(words, H_NEXT_SEQ >>> 2, seq);
  if (synced > write || synced < head) {
    writeU64(words, H_SYNCED >>> 2, Math.min(Math.max(synced, head), write));
  }
  Atomics.store(words, H_WAITERS >>> 2, 0); // nobody is parked: nobody else has the log open
  if (report.repaired) {
    bump(words, H_RECOVERIES, 1);
    bump(words, H_DAMAGED, report.truncatedBytes + report.skippedBytes);
  }
  return report;
}

/**
 * Creates a log file atomically: a temporary file in the same directory is
 * sized, reserved on disk (posix_fallocate), given its header, synced, and
 * then linked to `path`, which fails if `path` exists. So no process ever
 * sees a half-made log.
 *
 * @param path Absolute path of the log.
 * @param mode Permission bits.
 * @param capacity Ring bytes.
 * @param maxMessageSize Largest payload.
 * @returns The descriptor of the new log (read-write), or -1 when `path` exists.
 * @throws {IpcError} When the directory is not writable, the disk is full (`ENOSPC`, explained), or a
 *   call fails.
 * @throws {RangeError} When the file system does not allow a file of the size (`EFBIG`).
 */
export function createLogFile(path: string, mode: number, capacity: number, maxMessageSize: number): number {
  const slash = path.lastIndexOf("/");
  const directory = path.slice(0, slash) || "/";
  const temporary = `${directory}/.${path.slice(slash + 1)}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  let fd: number;
  try {
    fd = openPath(temporary, O.RDWR | O.CREAT | O.EXCL | O.NOFOLLOW | O.NOCTTY, mode);
  } catch (error) {
    if (error instanceof NotFoundError) {
      throw new NotFoundError(`file: cannot create ${path}: the directory ${directory} does not exist`, {
        errno: error.errno,
        syscall: "open",
        cause: error,
      });
    }
    throw error;
  }
  const { fdatasync, link, unlink, write } = libc();
  const temporaryC = cString(temporary, "path");
  let linked = false;
  try {
    fchmodFd(fd, mode);
    const size = RING_OFFSET + capacity;
    const what = `new file: log ${path} (being made as ${temporary})`;
    setFileSize(fd, size, what);
    // A file system that cannot reserve space (EOPNOTSUPP) leaves the log sparse.
    reserveFileSpace(fd, 0, size, what, {
      where: `the file system of ${directory}`,
      advice: "free disk space, or choose a smaller maxSize",
      sparseFallback: true,
    });
    const header = new Uint8Array(HEADER_BYTES);
    encodeHeader(header, { capacity, maxMessageSize });
    for (let done = 0; done < header.length;) {
      const n = Number(write(fd, header.subarray(done), BigInt(header.length - done)));
      if (n < 0) {
        if (errno() === E.EINTR) continue;
        throw lastError("write", temporary);
      }
      done += n;
    }
    if (fdatasync(fd) !== 0) throw lastError("fdatasync", temporary);
    if (link(temporaryC, cString(path, "path")) !== 0) {
      if (errno() === E.EEXIST) return -1;
      throw lastError("link", `${temporary} to ${path}`);
    }
    linked = true;
    return fd;
  } finally {
    unlink(temporaryC);
    if (!linked) closeFd(fd);
    else syncParentDirectory(path);
  }
}

/**
 * The error for an existing path when `exclusive` was asked.
 *
 * @param path The path.
 * @returns The error.
 */
export function existsError(path: string): AlreadyExistsError {
  return new AlreadyExistsError(`file: ${path} exists (exclusive: true was asked)`, {
    errno: E.EEXIST,
    syscall: "link",
  });
}
