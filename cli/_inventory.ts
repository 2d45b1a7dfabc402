/**
 * The IPC objects on this machine that the user can see, as `ipcbus ls`
 * shows them: System V queues, semaphore sets and segments (from
 * `/proc/sysvipc`), POSIX queues (from the mqueue mount), POSIX shared
 * memory and named semaphores (from `/dev/shm`), and the FIFOs and logs that
 * ipcbus presence records name, each with whether ipcbus made it and whether
 * anyone still uses it.
 *
 * @module
 */

import { Presence, PRESENCE_PREFIX, type PresenceState } from "../mod.ts";
import {
  type FileRow,
  listDir,
  lstat,
  mqueueMount,
  sysvQueues,
  sysvSegments,
  sysvSemaphores,
  userName,
} from "./_system.ts";

/** The kinds of object `ls` lists (and `--kind` filters on). */
export const KINDS = [
  "sysv-mq",
  "sysv-sem",
  "sysv-shm",
  "posix-mq",
  "posix-shm",
  "posix-sem",
  "fifo",
  "file",
] as const;

/** One of {@linkcode KINDS}. */
export type Kind = typeof KINDS[number];

/**
 * Whether anyone uses an object: `live` (a process holds its presence lock,
 * or a System V segment is attached), `stale` (ipcbus made it and every user
 * has gone), `unknown` (no presence record: ipcbus cannot tell).
 */
export type InUse = "live" | "stale" | "unknown";

/** One object, as `ls` and `stat` report it. */
export interface IpcObject {
  /** A kind of {@linkcode KINDS}, or the scheme of a presence record of another transport. */
  kind: string;
  /** What names it: the key (`0x1a2b`, `private`), a POSIX name (`/orders`) or a path. */
  name: string;
  /** The System V id, else null. */
  id: number | null;
  /** How to name it for `ipcbus stat` and `ipcbus rm`. */
  ref: string;
  /** The address a channel opens it with, when it is a channel's object. */
  channelAddress: string | null;
  /** Owner uid, or null when unknown (the object is gone). */
  uid: number | null;
  /** Owner's name (from /etc/passwd) or uid. */
  owner: string | null;
  /** Permission bits, or null. */
  mode: number | null;
  /** Bytes (queued bytes of a queue, size of a segment or file), or null. */
  size: number | null;
  /** Semaphores in a set (sysv-sem), else null. */
  semaphores: number | null;
  /** Messages queued, when known, else null. */
  messages: number | null;
  /** Attachments (System V segments), else null. */
  attached: number | null;
  /** Whether ipcbus made it (it has a presence record). */
  ipcbus: boolean;
  /** Whether anyone uses it (see {@linkcode InUse}). */
  inUse: InUse;
  /** The presence record's address, state and owner, if there is one. */
  presence: { address: string; state: PresenceState; uid: number } | null;
  /** False when only the presence record is left; null when this user cannot tell. */
  exists: boolean | null;
  /** Everything else known about it. */
  details: Record<string, unknown>;
}

/** Why objects of some kinds may be missing from an inventory. */
export interface InventoryNote {
  /** The kinds it concerns. */
  kinds: Kind[];
  /** What to tell the user. */
  text: string;
}

/** What {@linkcode inventory} found, with notes on what it could not see. */
export interface Inventory {
  /** The objects, sorted by kind then name. */
  objects: IpcObject[];
  /** Why some objects may be missing (for example `/dev/mqueue` not mounted). */
  notes: InventoryNote[];
}

/**
 * A System V key as `ipcs` shows it.
 *
 * @param key The key, unsigned.
 * @returns `0x0000162e`, or `private` for key 0.
 */
export function keyText(key: number): string {
  return key === 0 ? "private" : `0x${key.toString(16).padStart(8, "0")}`;
}

/**
 * The presence address of an object: the address its channel records.
 *
 * @param kind The kind.
 * @param name The POSIX name or path (POSIX and file kinds).
 * @param id The System V id (System V kinds).
 * @returns The address.
 */
export function presenceAddressOf(kind: string, name: string, id: number | null): string {
  switch (kind) {
    case "sysv-mq":
    case "sysv-sem":
    case "sysv-shm":
      return `${kind}:id/${id}`;
    case "posix-shm":
      return `shm:${name}`;
    default:
      return `${kind}:${name}`;
  }
}

/**
 * What a presence record's address names.
 *
 * @param address A recorded address (`sysv-mq:id/5`, `fifo:/run/x.fifo`, `shm:/ring`...).
 * @returns The kind, the name or path, and the System V id.
 */
export function parseRecordAddress(address: string): { kind: string; name: string; id: number | null } {
  const colon = address.indexOf(":");
  const scheme = address.slice(0, colon);
  let rest = address.slice(colon + 1);
  const idMatch = /^id\/(\d+)$/.exec(rest);
  if (scheme.startsWith("sysv-") && idMatch) return { kind: scheme, name: "", id: Number(idMatch[1]) };
  if (scheme === "shm" || scheme === "posix-mq" || scheme === "file") {
    const query = rest.indexOf("?");
    if (query >= 0) rest = rest.slice(0, query);
  }
  return { kind: scheme === "shm" ? "posix-shm" : scheme, name: rest, id: null };
}

/** An object as a lister sees it; {@linkcode finish} adds the owner's name and the presence facts. */
type Draft =
  & Pick<IpcObject, "kind" | "name" | "id" | "ref" | "channelAddress" | "uid" | "mode" | "exists" | "details">
  & Partial<Pick<IpcObject, "size" | "semaphores" | "messages" | "attached">>;

type Records = Map<string, { address: string; state: PresenceState; uid: number }>;

function finish(draft: Draft, records: Records, used: Set<string>): IpcObject {
  const address = presenceAddressOf(draft.kind, draft.name, draft.id);
  const record = records.get(address) ?? null;
  if (record) used.add(address);
  let inUse: InUse = record ? (record.state === "live" ? "live" : "stale") : "unknown";
  if (draft.kind === "sysv-shm" && (draft.attached ?? 0) > 0) inUse = "live";
  return {
    kind: draft.kind,
    name: draft.name,
    id: draft.id,
    ref: draft.ref,
    channelAddress: draft.channelAddress,
    uid: draft.uid,
    owner: draft.uid === null ? null : userName(draft.uid),
    mode: draft.mode,
    size: draft.size ?? null,
    semaphores: draft.semaphores ?? null,
    messages: draft.messages ?? null,
    attached: draft.attached ?? null,
    ipcbus: record !== null,
    inUse,
    presence: record,
    exists: draft.exists,
    details: draft.details,
  };
}

function fileDetails(row: FileRow): Record<string, unknown> {
  return row.modified === null
    ? { path: row.path, gid: row.gid }
    : { path: row.path, gid: row.gid, modified: row.modified };
}

/**
 * Lists every IPC object this user can see.
 *
 * @returns The objects and notes.
 */
export function inventory(): Inventory {
  const notes: InventoryNote[] = [];
  const records: Records = new Map();
  for (const record of Presence.list()) {
    records.set(record.address, { address: record.address, state: record.state, uid: record.uid });
  }
  const used = new Set<string>();
  const objects: IpcObject[] = [];
  const add = (draft: Draft) => objects.push(finish(draft, records, used));

  const queues = sysvQueues();
  const sets = sysvSemaphores();
  const segments = sysvSegments();
  if (queues === null || sets === null || segments === null) {
    notes.push({
      kinds: ["sysv-mq", "sysv-sem", "sysv-shm"],
      text: "System V objects are not listed: /proc/sysvipc cannot be read here",
    });
  }
  for (const q of queues ?? []) {
    add({
      kind: "sysv-mq",
      name: keyText(q.key),
      id: q.id,
      ref: `sysv-mq:id/${q.id}`,
      channelAddress: `sysv-mq:id/${q.id}`,
      uid: q.uid,
      mode: q.mode,
      size: q.bytes,
      messages: q.messages,
      exists: true,
      details: {
        key: q.key,
        gid: q.gid,
        creator: { uid: q.cuid, gid: q.cgid },
        lastSendPid: q.lastSendPid,
        lastReceivePid: q.lastReceivePid,
        lastSendTime: q.lastSendTime,
        lastReceiveTime: q.lastReceiveTime,
        changeTime: q.changeTime,
      },
    });
  }
  for (const s of sets ?? []) {
    add({
      kind: "sysv-sem",
      name: keyText(s.key),
      id: s.id,
      ref: `sysv-sem:id/${s.id}`,
      channelAddress: null,
      uid: s.uid,
      mode: s.mode,
      semaphores: s.count,
      exists: true,
      details: {
        key: s.key,
        gid: s.gid,
        creator: { uid: s.cuid, gid: s.cgid },
        lastOpTime: s.lastOpTime,
        changeTime: s.changeTime,
      },
    });
  }
  for (const m of segments ?? []) {
    add({
      kind: "sysv-shm",
      name: keyText(m.key),
      id: m.id,
      ref: `sysv-shm:id/${m.id}`,
      channelAddress: null,
      uid: m.uid,
      mode: m.mode,
      size: m.size,
      attached: m.attached,
      exists: true,
      details: {
        key: m.key,
        gid: m.gid,
        creator: { uid: m.cuid, gid: m.cgid },
        creatorPid: m.creatorPid,
        lastPid: m.lastPid,
        lastAttachTime: m.lastAttachTime,
        lastDetachTime: m.lastDetachTime,
        changeTime: m.changeTime,
        removed: m.removed,
        locked: m.locked,
      },
    });
  }

  const mqueue = mqueueMount();
  if (mqueue === null) {
    notes.push({
      kinds: ["posix-mq"],
      text: "POSIX message queues are not listed: the mqueue file system is not mounted " +
        "(as root: mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue)",
    });
  } else if (mqueue !== "/dev/mqueue") {
    notes.push({
      kinds: ["posix-mq"],
      text:
        `POSIX message queues are not listed: the mqueue file system is mounted on ${mqueue}, not /dev/mqueue`,
    });
  }
  for (const row of (mqueue === "/dev/mqueue" ? listDir("/dev/mqueue") : null) ?? []) {
    if (!row.isFile) continue;
    const name = row.path.slice(mqueue!.length);
    add({
      kind: "posix-mq",
      name,
      id: null,
      ref: `posix-mq:${name}`,
      channelAddress: `posix-mq:${name}`,
      uid: row.uid,
      mode: row.mode & 0o777,
      exists: true,
      details: fileDetails(row),
    });
  }

  const shm = listDir("/dev/shm");
  if (shm === null) {
    notes.push({
      kinds: ["posix-shm", "posix-sem"],
      text: "POSIX shared memory and named semaphores are not listed: /dev/shm cannot be read",
    });
  }
  for (const row of shm ?? []) {
    const base = row.path.slice("/dev/shm/".length);
    if (base.startsWith(PRESENCE_PREFIX) || !row.isFile) continue;
    if (base.startsWith("sem.")) {
      const name = `/${base.slice(4)}`;
      add({
        kind: "posix-sem",
        name,
        id: null,
        ref: `posix-sem:${name}`,
        channelAddress: null,
        uid: row.uid,
        mode: row.mode & 0o777,
        size: row.size,
        exists: true,
        details: fileDetails(row),
      });
      continue;
    }
    const name = `/${base}`;
    const isRing = records.has(`shm:${name}`);
    add({
      kind: "posix-shm",
      name,
      id: null,
      ref: `posix-shm:${name}`,
      channelAddress: isRing ? `shm:${name}` : null,
      uid: row.uid,
      mode: row.mode & 0o777,
      size: row.size,
      exists: true,
      details: fileDetails(row),
    });
  }

  // Objects known only from their records: FIFOs and logs (which live
  // anywhere), and records whose object has gone.
  for (const [address, record] of records) {
    if (used.has(address)) continue;
    const { kind, name, id } = parseRecordAddress(address);
    const gone: Draft = {
      kind,
      name: id === null ? name : "-",
      id,
      ref: address.startsWith("shm:") ? `posix-shm:${name}` : address,
      channelAddress: kind.startsWith("sysv-") && kind !== "sysv-mq" ? null : address,
      uid: record.uid, // the object is gone: whose record it is
      mode: null,
      exists: false,
      details: {},
    };
    if (kind === "fifo" || kind === "file") {
      let row: FileRow | null;
      try {
        row = name.startsWith("/") ? lstat(name) : null;
      } catch (error) {
        add({
          ...gone,
          exists: null,
          details: { note: `cannot look at ${name}: ${(error as Error).message}` },
        });
        continue;
      }
      if (row !== null && (kind === "fifo" ? row.isFifo : row.isFile)) {
        add({
          ...gone,
          uid: row.uid,
          mode: row.mode & 0o777,
          size: kind === "file" ? row.size : null,
          exists: true,
          details: fileDetails(row),
        });
      } else {
        add({
          ...gone,
          details: row ? { note: `${name} is no longer a ${kind === "fifo" ? "FIFO" : "file"}` } : {},
        });
      }
      continue;
    }
    if (kind === "posix-mq" && mqueue !== "/dev/mqueue") {
      add({ ...gone, exists: null, details: { note: "the mqueue file system is not mounted" } });
      continue;
    }
    if (!(KINDS as readonly string[]).includes(kind)) {
      add({ ...gone, exists: null, details: { note: `no listing for ${kind}: objects` } });
      continue;
    }
    add(gone);
  }

  const order = (kind: string) => {
    const at = (KINDS as readonly string[]).indexOf(kind);
    return at < 0 ? KINDS.length : at;
  };
  objects.sort((a, b) =>
    order(a.kind) - order(b.kind) || a.kind.localeCompare(b.kind) || (a.id ?? 0) - (b.id ?? 0) ||
    a.name.localeCompare(b.name)
  );
  return { objects, notes };
}
