/**
 * The doorbell of the `shm:` ring (private to `transports/shm_ring.ts`): a
 * way to wake a parked handle with one thread wake-up, its event loop's.
 *
 * A parked handle also waits on its slot's System V semaphore, but that wait
 * costs two wake-ups: the kernel wakes the handle's helper thread, which then
 * wakes the main thread through `Atomics.waitAsync`. So each process that
 * parks listens on one Unix stream socket in the abstract namespace, named
 * `ipcbus-bell-` and 32 random hex digits (its doorbell id), created through
 * libc and handed to the event loop with `node:net` (no `--allow-net`
 * needed). A parked handle writes the id and its own doorbell number into
 * its slot. A waker that finds them connects once per peer process (the
 * connection is kept: see {@linkcode MAX_PEERS}) and writes the 4-byte
 * number; the event loop reads it and ends that handle's waits. Any failure
 * (no doorbell, another generation, a refused connection, a full socket)
 * makes the waker post the semaphore as before, so peers without a doorbell
 * (the C ring, `doorbell: false`) lose nothing. docs/shm-ring.md
 * ("Doorbells") is the protocol.
 *
 * The socket lives while any ring handle that may use it is open in the
 * process, and never keeps the process alive. Anyone in the network
 * namespace can connect and write: numbers that name no handle are ignored,
 * a ring for nothing is a spurious wake-up, which parked waits check for,
 * and at most {@linkcode MAX_ACCEPTED} connections are kept.
 *
 * @module
 */

import { SOCK } from "./constants.ts";
import { closeFd } from "./fd.ts";
import { E, errno, libc } from "./libc.ts";

/** The abstract socket name's prefix (the doorbell id follows as 32 hex digits). */
export const BELL_PREFIX = "ipcbus-bell-";
/** How long a new doorbell may take to hear its own probe (ms) before it is given up for the process. */
const PROBE_MS = 1000;
/**
 * At most this many connections to other processes' doorbells are kept. A
 * peer that goes (exits, or closes its last ring handle) does not tell: its
 * connection is found dead and closed when the cache is swept, which it is
 * each time it has doubled since the last sweep (from 16), and at this size
 * the oldest connections go too (they are made again when needed).
 */
export const MAX_PEERS = 256;
/**
 * At most this many accepted connections are kept; a new one beyond closes
 * the oldest (whose peer then posts the semaphore, and connects again the
 * next time). Anyone in the network namespace may connect: without a bound a
 * hostile process could use up this process's descriptors.
 */
export const MAX_ACCEPTED = 1024;
/** The first size of the connection cache that is swept. */
const SWEEP_FROM = 16;

type NetServer = {
  close(): void;
  unref(): void;
  on(event: string, listener: (...args: never[]) => void): void;
};
type NetSocket = {
  destroy(): void;
  unref(): void;
  on(event: string, listener: (...args: never[]) => void): void;
};

let users = 0;
/** This process's doorbell id (4 random words), once its socket listens. */
let id: Uint32Array | null = null;
let starting: Promise<Uint32Array | null> | null = null;
/** A doorbell failed here once: the process does without (semaphores only). */
let unavailable = false;
let server: NetServer | null = null;
const accepted = new Set<NetSocket>();
const bells = new Map<number, () => void>();
let nextNumber = 1;
/** Number 0 is the probe a new doorbell sends itself: this ends the wait for it (false: shut down meanwhile). */
let endProbe: ((heard: boolean) => void) | null = null;
/** Connections to other processes' doorbells, by their id, oldest first. */
const peers = new Map<string, number>();
/** The size of `peers` at which it is swept next. */
let sweepAt = SWEEP_FROM;
/** What a sweep reads into (a live connection has nothing to read: peers never write back). */
const sweepByte = new Uint8Array(1);
const numberBytes = new Uint8Array(4);
const numberView = new DataView(numberBytes.buffer);

/** Counts a ring handle that may ring or be rung (its `close` calls {@linkcode leaveDoorbell}). */
export function useDoorbell(): void {
  users++;
}

/** Uncounts a handle; the last one closes the socket and every kept connection. */
export function leaveDoorbell(): void {
  if (users === 0 || --users > 0) return;
  shutDown();
}

/**
 * Starts listening, once per process.
 *
 * @returns The process's doorbell id, or null when no doorbell can be had here (the semaphore then does).
 */
export function startDoorbell(): Promise<Uint32Array | null> {
  if (id !== null || unavailable) return Promise.resolve(id);
  return starting ??= listen().finally(() => starting = null);
}

/**
 * Registers a handle's bell.
 *
 * @param ring Called on the event loop each time the bell rings.
 * @returns Its doorbell number (never 0).
 */
export function addBell(ring: () => void): number {
  const number = nextNumber;
  nextNumber = (nextNumber % 0xffff_ffff) + 1;
  bells.set(number, ring);
  return number;
}

/**
 * Forgets a bell: later rings of its number are ignored.
 *
 * @param number What {@linkcode addBell} returned.
 */
export function removeBell(number: number): void {
  bells.delete(number);
}

/**
 * Rings bell `number` of the process whose doorbell id is `a b c d`.
 *
 * @returns False when it could not (the caller then posts the semaphore).
 */
export function ringBell(a: number, b: number, c: number, d: number, number: number): boolean {
  const own = id;
  if (own !== null && own[0] === a >>> 0 && own[1] === b >>> 0 && own[2] === c >>> 0 && own[3] === d >>> 0) {
    const ring = bells.get(number);
    ring?.();
    return ring !== undefined;
  }
  const key = `${a >>> 0}.${b >>> 0}.${c >>> 0}.${d >>> 0}`;
  let fd = peers.get(key);
  if (fd === undefined) {
    if (users === 0) return false; // nothing would close the connection
    if (peers.size >= sweepAt) prunePeers();
    fd = connectTo(Uint32Array.of(a, b, c, d));
    if (fd < 0) return false;
    peers.set(key, fd);
  }
  numberView.setUint32(0, number, true);
  const sent = libc().send(fd, numberBytes, 4n, SOCK.MSG_DONTWAIT | SOCK.MSG_NOSIGNAL);
  if (sent === 4n) return true;
  // Gone, full, or cut in the middle of a number: start afresh next time.
  peers.delete(key);
  closeFd(fd);
  return false;
}

/**
 * Closes the kept connections whose other end is gone (they read as an end
 * or an error, not EAGAIN), then the oldest while the cache is full.
 */
function prunePeers(): void {
  const { read } = libc();
  for (const [key, fd] of peers) {
    if (read(fd, sweepByte, 1n) < 0 && errno() === E.EAGAIN) continue;
    peers.delete(key);
    closeFd(fd);
  }
  if (peers.size >= MAX_PEERS) {
    for (const [key, fd] of peers) {
      if (peers.size < (MAX_PEERS * 3) >> 2) break;
      peers.delete(key);
      closeFd(fd);
    }
  }
  sweepAt = Math.min(MAX_PEERS, Math.max(SWEEP_FROM, 2 * peers.size));
}

/**
 * How many connections this process keeps (for tests).
 *
 * @returns Accepted connections to its doorbell, and its connections to other processes' doorbells.
 */
export function doorbellConnections(): { accepted: number; peers: number } {
  return { accepted: accepted.size, peers: peers.size };
}

/**
 * The socket address of a doorbell.
 *
 * @param words Its id.
 * @returns A `struct sockaddr_un` naming the abstract socket, as long as `connect`/`bind` take it.
 */
export function bellAddress(words: Uint32Array): Uint8Array {
  let hex = "";
  for (const word of words) hex += (word >>> 0).toString(16).padStart(8, "0");
  const name = new TextEncoder().encode(BELL_PREFIX + hex);
  // struct sockaddr_un: sa_family_t sun_family, then the path; a leading 0 byte names an abstract socket.
  const bytes = new Uint8Array(3 + name.length);
  bytes[0] = SOCK.AF_UNIX;
  bytes.set(name, 3);
  return bytes;
}

function connectTo(words: Uint32Array): number {
  const lib = libc();
  const fd = lib.socket(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK | SOCK.CLOEXEC, 0);
  if (fd < 0) return -1;
  const to = bellAddress(words);
  // A Unix stream connect never blocks: it succeeds, or fails (EAGAIN on a full backlog).
  if (lib.connect(fd, to, to.length) !== 0) {
    closeFd(fd);
    return -1;
  }
  return fd;
}

async function listen(): Promise<Uint32Array | null> {
  let net: typeof import("node:net");
  try {
    net = await import("node:net");
  } catch {
    unavailable = true;
    return null;
  }
  if (users === 0 || id !== null) return id;
  const lib = libc();
  const words = crypto.getRandomValues(new Uint32Array(4));
  const at = bellAddress(words);
  const fd = lib.socket(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK | SOCK.CLOEXEC, 0);
  if (fd < 0) return null;
  if (lib.bind(fd, at, at.length) !== 0 || lib.listen(fd, 128) !== 0) {
    closeFd(fd);
    unavailable = true; // no Unix sockets here (a seccomp filter, say)
    return null;
  }
  let listening: NetServer;
  try {
    listening = net.createServer((socket) => accept(socket as unknown as NetSocket));
    listening.on("error", () => {
      if (server === listening) shutDown();
    });
    (listening as unknown as { listen(options: { fd: number }): void }).listen({ fd });
    listening.unref();
  } catch {
    closeFd(fd);
    unavailable = true;
    return null;
  }
  server = listening;
  // Ring itself once, through the event loop, before anyone relies on it: a runtime whose node:net
  // takes the socket but never reads it would otherwise lose every wake-up until the parks time out.
  const probe = connectTo(words);
  let works = false;
  if (probe >= 0) {
    let timer = 0;
    works = await new Promise<boolean>((resolve) => {
      endProbe = resolve;
      timer = setTimeout(resolve, PROBE_MS, false) as unknown as number;
      if (libc().send(probe, new Uint8Array(4), 4n, SOCK.MSG_NOSIGNAL) !== 4n) resolve(false);
    });
    endProbe = null;
    clearTimeout(timer);
    closeFd(probe);
  }
  if (server !== listening || users === 0) return null; // shut down meanwhile
  if (!works) {
    shutDown();
    unavailable = true;
    return null;
  }
  id = words;
  return id;
}

/** Reads 4-byte doorbell numbers from one connection (a number may arrive in parts). */
function accept(socket: NetSocket): void {
  socket.unref();
  if (accepted.size >= MAX_ACCEPTED) {
    const oldest = accepted.values().next().value!;
    accepted.delete(oldest);
    oldest.destroy();
  }
  accepted.add(socket);
  let carry = 0;
  let held = 0;
  socket.on("data", (chunk: Uint8Array) => {
    for (let i = 0; i < chunk.length; i++) {
      carry |= chunk[i] << (8 * held);
      if (++held < 4) continue;
      const number = carry >>> 0;
      held = carry = 0;
      if (number === 0) endProbe?.(true);
      else bells.get(number)?.();
    }
  });
  const forget = () => {
    accepted.delete(socket);
    socket.destroy();
  };
  socket.on("error", forget);
  socket.on("close", forget);
}

function shutDown(): void {
  endProbe?.(false);
  const listening = server;
  server = null;
  id = null;
  listening?.close();
  for (const socket of accepted) socket.destroy();
  accepted.clear();
  for (const fd of peers.values()) closeFd(fd);
  peers.clear();
  sweepAt = SWEEP_FROM;
}
