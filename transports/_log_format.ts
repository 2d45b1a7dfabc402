/**
 * The on-disk format of `file:` logs (private): layout constants, the XXH32
 * checksum, and the header codec. The format is specified in
 * `docs/file-log.md`; `bench/c/filelog.c` implements the same appends in C.
 *
 * All integers are little-endian. 64-bit fields that other processes read
 * while they change (write position, head) are written as two 32-bit words,
 * low word first, and read high-low-high (see {@linkcode readU64}).
 *
 * @module
 */

import { FrameError } from "../errors.ts";

/** "IPCBUSLG": the first 8 bytes of every log file. */
export const MAGIC: readonly number[] = [0x49, 0x50, 0x43, 0x42, 0x55, 0x53, 0x4c, 0x47];
/** The format version this code reads and writes. */
export const VERSION = 1;

/** The header page. */
export const HEADER_BYTES = 4096;
/** Named reader slots start here. */
export const TABLE_OFFSET = 4096;
/** Bytes per named reader slot. */
export const SLOT_BYTES = 128;
/** Named reader slots per log. */
export const SLOTS = 64;
/** The ring starts here; the file is `RING_OFFSET + capacity` bytes. */
export const RING_OFFSET = TABLE_OFFSET + SLOTS * SLOT_BYTES; // 12288

/** Bytes of a frame header. */
export const FRAME_HEADER = 24;
/** The smallest ring. */
export const MIN_CAPACITY = 4096;
/** The largest ring (1 TiB). */
export const MAX_CAPACITY = 2 ** 40;
/** Type of a padding record (messages have types from 1). */
export const PADDING_TYPE = 0;

// Header fields (byte offsets).
/** u32 version. */
export const H_VERSION = 8;
/** u32 ring offset (`RING_OFFSET`). */
export const H_RING_OFFSET = 12;
/** u64 capacity of the ring in bytes. */
export const H_CAPACITY = 16;
/** u32 largest payload. */
export const H_MAX_MESSAGE = 24;
/** u32 named reader slots. */
export const H_SLOTS = 28;
/** u64 creation time, ms since the epoch. */
export const H_CREATED = 32;
/** u32 flags (0). */
export const H_FLAGS = 40;
/** u32 XXH32 of bytes 0 to 44. */
export const H_CHECKSUM = 44;
/** u64 write position: the commit point (logical bytes ever appended, padding included). */
export const H_WRITE = 64;
/** u64 head: logical position of the oldest retained frame. */
export const H_HEAD = 72;
/** u64 the sequence number the next message gets. */
export const H_NEXT_SEQ = 80;
/** u64 everything before this logical position is on stable storage. */
export const H_SYNCED = 88;
/** u32 1 while a writer is inside its critical section. */
export const H_DIRTY = 96;
/** u64 write position when the current critical section began. */
export const H_SAVED_WRITE = 104;
/** u64 next sequence number when the current critical section began. */
export const H_SAVED_SEQ = 112;
/** u64 writers that died holding the lock (repaired since). */
export const H_WRITER_DEATHS = 128;
/** u64 repairs made by openers. */
export const H_RECOVERIES = 136;
/** u64 bytes dropped by repairs. */
export const H_DAMAGED = 144;
/** i32 readers parked on the doorbell, over all processes. */
export const H_WAITERS = 192;
/** u32 the doorbell: a futex word writers bump (and wake) when `waiters` is not 0. */
export const H_DOORBELL = 196;

// Named reader slot fields (byte offsets within a slot).
/** u32 0 free, 1 used. */
export const S_STATE = 0;
/** u32 name length in bytes (1 to `MAX_READER_NAME`). */
export const S_NAME_LENGTH = 4;
/** u8[48] the name, UTF-8. */
export const S_NAME = 8;
/** u32 XXH32 of the name bytes. */
export const S_NAME_CHECKSUM = 56;
/** u32 generation: the current position is copy `generation & 1`. */
export const S_GENERATION = 60;
/** Copy 0: u64 next sequence, u64 logical position. Copy 1 follows at +16. */
export const S_POSITIONS = 64;
/** u64 ms since the epoch of the last acknowledgement. */
export const S_ACKED_AT = 96;
/** Longest named reader name in UTF-8 bytes. */
export const MAX_READER_NAME = 48;

// fcntl lock bytes (open file description locks; they need no file data).
/** Exclusive while appending or repairing. */
export const LOCK_APPEND = 0;
/** Shared by every open log; exclusive for the first opener's recovery. */
export const LOCK_USERS = 1;
/** Exclusive while changing the named reader table. */
export const LOCK_TABLE = 2;
/** A named reader's claim: the byte at its slot's offset. */
export const lockOfSlot = (slot: number): number => TABLE_OFFSET + slot * SLOT_BYTES;

/** 2^32: splits positions and sequence numbers into their 32-bit words. */
export const TWO_32 = 4294967296;

/**
 * Rounds up to a multiple of 8.
 *
 * @param n Bytes.
 * @returns The aligned size.
 */
export function align8(n: number): number {
  return (n + 7) & ~7; // frames are below 2^31 bytes (MAX_MESSAGE_LIMIT)
}

/**
 * A frame's tag: the low 32 bits of its logical position divided by 8.
 *
 * @param position A logical position (a multiple of 8).
 * @returns The tag.
 */
export function tagOf(position: number): number {
  return (position / 8) >>> 0;
}

/**
 * Reads a 64-bit field written low word first: high, low, high again,
 * retried while the high word changes.
 *
 * @param words A `Uint32Array` over the mapping.
 * @param index Word index of the low word.
 * @returns The value (exact below 2^53).
 */
export function readU64(words: Uint32Array, index: number): number {
  for (;;) {
    const high = Atomics.load(words, index + 1);
    const low = Atomics.load(words, index);
    if (Atomics.load(words, index + 1) === high) return high * TWO_32 + low;
  }
}

/**
 * Writes a 64-bit field for {@linkcode readU64}: low word, then high word.
 *
 * @param words A `Uint32Array` over the mapping.
 * @param index Word index of the low word.
 * @param value The value (below 2^53).
 */
export function writeU64(words: Uint32Array, index: number, value: number): void {
  Atomics.store(words, index, value >>> 0);
  Atomics.store(words, index + 1, (value / TWO_32) >>> 0);
}

/**
 * A plain 64-bit load, for fields only lock holders write (the caller holds
 * the lock), and for frame fields behind a published write position.
 *
 * @param words A `Uint32Array` over the mapping.
 * @param index Word index of the low word.
 * @returns The value (exact below 2^53).
 */
export function getU64(words: Uint32Array, index: number): number {
  return words[index] + words[index + 1] * TWO_32;
}

/**
 * A plain (non-atomic) 64-bit store, for fields whose readers hold a lock or
 * look after a generation switch.
 *
 * @param words A `Uint32Array` over the mapping.
 * @param index Word index of the low word.
 * @param value The value (below 2^53).
 */
export function setU64(words: Uint32Array, index: number, value: number): void {
  words[index] = value >>> 0;
  words[index + 1] = (value / TWO_32) >>> 0;
}

/**
 * Writes a frame's header fields (all but the checksum, which covers the
 * payload too and comes last) at mapping offset `at`.
 *
 * @param words A `Uint32Array` over the mapping.
 * @param at Mapping offset of the frame (a multiple of 8).
 * @param length Payload bytes.
 * @param type The type (`PADDING_TYPE` for a padding record).
 * @param position The frame's logical position (for its tag).
 * @param seq Its sequence number.
 */
export function putFrameHeader(
  words: Uint32Array,
  at: number,
  length: number,
  type: number,
  position: number,
  seq: number,
): void {
  words[(at + 4) >>> 2] = length;
  words[(at + 8) >>> 2] = type;
  words[(at + 12) >>> 2] = tagOf(position);
  setU64(words, (at + 16) >>> 2, seq);
}

const P1 = 2654435761;
const P2 = 2246822519;
const P3 = 3266489917;
const P4 = 668265263;
const P5 = 374761393;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

/**
 * XXH32 (seed 0) of `length` bytes from byte `start` (a multiple of 4).
 * This is the reference algorithm (github.com/Cyan4973/xxHash), reading
 * little-endian 32-bit words.
 *
 * @param words A `Uint32Array` over the same buffer as `bytes`.
 * @param bytes The bytes.
 * @param start First byte, a multiple of 4 (relative to the buffer's start).
 * @param length Bytes.
 * @returns The hash as an unsigned 32-bit number.
 */
export function xxh32(words: Uint32Array, bytes: Uint8Array, start: number, length: number): number {
  let i = start;
  const end = start + length;
  let h: number;
  if (length >= 16) {
    let v1 = (P1 + P2) | 0;
    let v2 = P2 | 0;
    let v3 = 0;
    let v4 = -P1 | 0;
    const limit = end - 16;
    while (i <= limit) {
      const j = i >>> 2;
      v1 = Math.imul(rotl((v1 + Math.imul(words[j], P2)) | 0, 13), P1);
      v2 = Math.imul(rotl((v2 + Math.imul(words[j + 1], P2)) | 0, 13), P1);
      v3 = Math.imul(rotl((v3 + Math.imul(words[j + 2], P2)) | 0, 13), P1);
      v4 = Math.imul(rotl((v4 + Math.imul(words[j + 3], P2)) | 0, 13), P1);
      i += 16;
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = P5 | 0;
  }
  h = (h + length) | 0;
  while (i + 4 <= end) {
    h = Math.imul(rotl((h + Math.imul(words[i >>> 2], P3)) | 0, 17), P4);
    i += 4;
  }
  while (i < end) {
    h = Math.imul(rotl((h + Math.imul(bytes[i], P5)) | 0, 11), P1);
    i++;
  }
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The immutable part of a header. */
export interface LogGeometry {
  /** Ring bytes. */
  capacity: number;
  /** Largest payload. */
  maxMessageSize: number;
  /** When the log was made. */
  createdAt: Date;
}

/**
 * Writes a fresh header (and zeroes the counters) into `bytes`, which
 * covers at least the header page.
 *
 * @param bytes The mapping (or a buffer) from offset 0.
 * @param geometry Capacity and largest payload.
 */
export function encodeHeader(bytes: Uint8Array, geometry: Omit<LogGeometry, "createdAt">): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  bytes.fill(0, 0, HEADER_BYTES);
  bytes.set(MAGIC, 0);
  view.setUint32(H_VERSION, VERSION, true);
  view.setUint32(H_RING_OFFSET, RING_OFFSET, true);
  view.setBigUint64(H_CAPACITY, BigInt(geometry.capacity), true);
  view.setUint32(H_MAX_MESSAGE, geometry.maxMessageSize, true);
  view.setUint32(H_SLOTS, SLOTS, true);
  view.setBigUint64(H_CREATED, BigInt(Date.now()), true);
  view.setUint32(H_FLAGS, 0, true);
  view.setUint32(H_CHECKSUM, headerChecksum(bytes), true);
  view.setBigUint64(H_NEXT_SEQ, 1n, true);
}

function headerChecksum(bytes: Uint8Array): number {
  return xxh32Of(bytes.subarray(0, H_CHECKSUM));
}

/**
 * XXH32 (seed 0) of any bytes, wherever they lie (they are copied to an
 * aligned buffer first; for headers and names, not frames).
 *
 * @param bytes The bytes.
 * @returns The hash as an unsigned 32-bit number.
 */
export function xxh32Of(bytes: Uint8Array): number {
  const copy = new Uint8Array(Math.ceil(bytes.length / 4) * 4 || 4);
  copy.set(bytes);
  return xxh32(new Uint32Array(copy.buffer), copy, 0, bytes.length);
}

/**
 * Reads and checks a header: magic, version, checksum, geometry.
 *
 * @param bytes The first bytes of the file (at least what exists of the header page).
 * @param path For messages.
 * @returns The geometry.
 * @throws {FrameError} For a truncated header, wrong magic, an unknown version, a checksum
 *   mismatch, or impossible sizes.
 */
export function decodeHeader(bytes: Uint8Array, path: string): LogGeometry {
  if (bytes.length < RING_OFFSET) {
    const magicOk = bytes.length >= MAGIC.length && MAGIC.every((b, i) => bytes[i] === b);
    throw new FrameError(
      `file: ${path} has ${bytes.length} bytes, less than the ${RING_OFFSET}-byte header of a log` +
        (magicOk ? " (a truncated log)" : bytes.length === 0 ? " (an empty file)" : " (not a log)"),
    );
  }
  if (!MAGIC.every((b, i) => bytes[i] === b)) {
    const found = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new FrameError(
      `file: ${path} is not an ipcbus log: its first bytes are ${found}, not the magic "IPCBUSLG"`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const version = view.getUint32(H_VERSION, true);
  if (version !== VERSION) {
    throw new FrameError(
      `file: ${path} is a version ${version} log; this ipcbus reads version ${VERSION} only`,
    );
  }
  const stored = view.getUint32(H_CHECKSUM, true);
  const computed = headerChecksum(bytes);
  if (stored !== computed) {
    throw new FrameError(
      `file: the header of ${path} is corrupt (checksum 0x${stored.toString(16)}, computed ` +
        `0x${computed.toString(16)})`,
    );
  }
  const ringOffset = view.getUint32(H_RING_OFFSET, true);
  const capacity = Number(view.getBigUint64(H_CAPACITY, true));
  const maxMessageSize = view.getUint32(H_MAX_MESSAGE, true);
  const slots = view.getUint32(H_SLOTS, true);
  if (
    ringOffset !== RING_OFFSET || slots !== SLOTS || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY ||
    capacity % 4096 !== 0 || maxMessageSize < 1 || maxLength(capacity) < maxMessageSize
  ) {
    throw new FrameError(
      `file: the header of ${path} describes an impossible log (ring at ${ringOffset}, ${slots} reader ` +
        `slots, capacity ${capacity}, largest message ${maxMessageSize})`,
    );
  }
  return {
    capacity,
    maxMessageSize,
    createdAt: new Date(Number(view.getBigUint64(H_CREATED, true))),
  };
}

/**
 * The largest payload a ring of `capacity` bytes accepts: a frame (header,
 * payload, alignment) must fit in half the ring, so that it always fits
 * after a padding record.
 *
 * @param capacity Ring bytes.
 * @returns Bytes.
 */
export function maxLength(capacity: number): number {
  return Math.min(MAX_MESSAGE_LIMIT, capacity / 2 - FRAME_HEADER - 8);
}

/** The largest payload any log accepts (1 GiB). */
export const MAX_MESSAGE_LIMIT = 2 ** 30;
