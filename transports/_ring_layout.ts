/**
 * The layout of an ipcbus shared-memory ring (version 1), as byte offsets.
 * `docs/shm-ring.md` is the specification; `bench/c/shmring.c` and the tests
 * speak the same layout. Every integer is little-endian; "u32" fields that
 * hold positions wrap modulo 2^32.
 *
 * @module
 */

/** The magic at offset 0: the ASCII bytes `IPCBRING`. */
export const MAGIC = new Uint8Array([0x49, 0x50, 0x43, 0x42, 0x52, 0x49, 0x4e, 0x47]);
/** The magic's first 4 bytes as a little-endian i32 (written last by the creator). */
export const MAGIC_WORD0 = 0x42435049; // "IPCB"
/** The magic's last 4 bytes as a little-endian i32. */
export const MAGIC_WORD1 = 0x474e4952; // "RING"
/** The layout version this code speaks. */
export const VERSION = 1;

// -- header: identity (written once by the creator) ---------------------------
/** u32 version. */
export const H_VERSION = 8;
/** u32 bytes before the ring data (a multiple of 4096). */
export const H_DATA_OFFSET = 12;
/** u32 ring data bytes: a power of two, 4096 to 2^30. */
export const H_CAPACITY = 16;
/** u32 largest payload: at most capacity / 2 − 16. */
export const H_MAX_MESSAGE = 20;
/** u32 delivery mode: 0 queue, 1 broadcast. */
export const H_MODE = 24;
/** u32 overflow policy (broadcast): 0 block, 1 drop. */
export const H_OVERFLOW = 28;
/** u32 number of user slots: a multiple of 32, 32 to 1024. */
export const H_SLOTS = 32;
/** u32 offset of the slot table (1024). */
export const H_SLOT_TABLE = 36;
/** u32 bytes per slot (64). */
export const H_SLOT_SIZE = 40;
/** u32 flags; bit 0: the ring was unlinked (closed for everyone). */
export const H_FLAGS = 44;
/** u32 low half of the segment's total size (data offset + capacity). */
export const H_TOTAL_LO = 48;
/** u32 high half of the total size. */
export const H_TOTAL_HI = 52;
/** u32 creator's process id (informational). */
export const H_CREATOR = 56;
/** i32 id of the ring's System V semaphore set (one semaphore per slot). */
export const H_SEMID = 60;

// -- writer cache line -----------------------------------------------------------
/** i32 writer lock: 0 free, else the holder's token. */
export const W_LOCK = 64;
/** u32 write position: frames below it are committed. */
export const W_WRITE = 68;
/** u32 low half of the sequence number the next message gets. */
export const W_SEQ_LO = 72;
/** u32 high half of it. */
export const W_SEQ_HI = 76;
/** u32 position of the last committed frame (crash recovery of the sequence). */
export const W_LAST = 80;
/** u32 broadcast drop mode: position of the oldest frame not yet being overwritten. */
export const W_TAIL = 84;

// -- reader cache line -----------------------------------------------------------
/** i32 reader lock (queue mode). */
export const R_LOCK = 128;
/** u32 read position (queue mode): frames below it were taken. */
export const R_READ = 132;

// -- waiter counts (a cache line of their own: read on every operation, rarely written)
/** i32 processes registered in the space mask (producers waiting for room). */
export const W_SPACE_WAITERS = 192;
/** i32 processes registered in the data mask (consumers waiting for a frame). */
export const R_DATA_WAITERS = 196;

// -- bit masks, one bit per slot (32 words each) ------------------------------------
/** Slots waiting for data. */
export const DATA_MASK = 256;
/** Slots waiting for room. */
export const SPACE_MASK = 384;
/** Broadcast subscribers. */
export const SUB_MASK = 512;

// -- slot table ------------------------------------------------------------------
/** Where the slot table starts. */
export const SLOT_TABLE = 1024;
/** Bytes per slot. */
export const SLOT_SIZE = 64;
/**
 * u32 the owner's doorbell number, 0 for none (written last, cleared first).
 * The slot's owner parks on semaphore `slot` of the set, and, when it has a
 * doorbell, also on its process's doorbell socket (`ffi/_doorbell.ts`).
 */
export const S_BELL = 0;
/** u32 the slot generation the doorbell was written by: it counts only while equal to `S_GEN`. */
export const S_BELL_GEN = 4;
/** 16 bytes: the owner process's doorbell id (its socket's name). */
export const S_BELL_ID = 8;
/** Reserved (8 bytes; zero). */
export const S_RESERVED = 24;
/** u32 0 free, 1 used (informational: liveness is the slot's lock). */
export const S_STATE = 32;
/** u32 owner's process id (informational). */
export const S_PID = 36;
/** u32 generation, bumped by every new owner (21 bits used). */
export const S_GEN = 40;
/** u32 flags: bit 0 subscribed (broadcast). */
export const S_FLAGS = 44;
/** u32 broadcast subscriber's read position. */
export const S_CURSOR = 48;

/** Slot flag: a broadcast subscriber. */
export const SUBSCRIBED = 1;
/** Header flag: the ring was unlinked. */
export const REMOVED = 1;

// -- frames ----------------------------------------------------------------------
/** Bytes of a frame header: u32 length, u32 type, u32 seq lo, u32 seq hi. */
export const FRAME_HEADER = 16;
/** Frames start at multiples of this. */
export const FRAME_ALIGN = 16;
/** The type of a padding frame (its length says how many bytes follow to skip). */
export const PAD_TYPE = 0;

/** Bits of a lock token that hold slot + 1. */
export const TOKEN_SLOT_BITS = 11;
/** Mask of a generation (21 bits). */
export const GEN_MASK = 0x1f_ffff;

/** Smallest capacity. */
export const MIN_CAPACITY = 4096;
/** Largest capacity (positions wrap modulo 2^32, so at most 2^31; 1 GiB keeps sums small). */
export const MAX_CAPACITY = 2 ** 30;
/** Fewest and most slots. */
export const MIN_SLOTS = 32;
/** Most slots. */
export const MAX_SLOTS = 1024;

/**
 * The data offset (header plus slot table, rounded to a page) for `slots`.
 *
 * @param slots The number of slots.
 * @returns Bytes.
 */
export function dataOffset(slots: number): number {
  return Math.ceil((SLOT_TABLE + slots * SLOT_SIZE) / 4096) * 4096;
}

/**
 * Bytes a frame of `length` payload bytes occupies in the ring.
 *
 * @param length Payload bytes.
 * @returns Header plus payload, rounded up to {@linkcode FRAME_ALIGN}.
 */
export function frameSize(length: number): number {
  return FRAME_HEADER + ((length + FRAME_ALIGN - 1) & ~(FRAME_ALIGN - 1));
}

/**
 * The byte of the segment whose lock says that slot `slot` is owned: the
 * slot's first byte.
 *
 * @param slot The slot.
 * @returns The offset to lock.
 */
export function slotLockByte(slot: number): number {
  return SLOT_TABLE + slot * SLOT_SIZE;
}
