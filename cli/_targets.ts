/**
 * Naming one object on the command line (`ipcbus stat` and `ipcbus rm`):
 * a URL such as `sysv-mq:0x1a2b`, `posix-mq:/orders`, `fifo:/run/app.fifo`,
 * or a kind followed by ids or names (`sysv-mq 32768`, `posix-shm /name`);
 * finding it among the objects `ls` sees; and removing it through the
 * public API.
 *
 * @module
 */

import {
  FrameError,
  ftokKey,
  NamedSemaphore,
  NotFoundError,
  open,
  PosixMessageQueue,
  PosixSharedMemory,
  Presence,
  ShmRing,
  SysvMessageQueue,
  SysvSemaphoreSet,
  SysvSharedMemory,
} from "../mod.ts";
import { type Inventory, type IpcObject, type Kind, KINDS, presenceAddressOf } from "./_inventory.ts";
import { describeError, Failure, UsageError } from "./_output.ts";
import { lstat, mqueueMount, userName } from "./_system.ts";

/** An object named on the command line. */
export type Target =
  | { kind: Kind; by: "id"; id: number; text: string }
  | { kind: Kind; by: "key"; key: number; text: string }
  | { kind: Kind; by: "ftok"; path: string; project: number; text: string }
  | { kind: Kind; by: "name"; name: string; text: string };

const SYSV = new Set<string>(["sysv-mq", "sysv-sem", "sysv-shm"]);
const POSIX = new Set<string>(["posix-mq", "posix-shm", "posix-sem"]);

/** Target forms, for usage messages. */
export const TARGET_FORMS =
  `  sysv-mq:0x1a2b | sysv-mq:id/ID | sysv-mq:/path?proj=N   (also sysv-sem:, sysv-shm:)
  posix-mq:/name | posix-shm:/name | shm:/name[?...] | posix-sem:/name
  fifo:/path | file:/path
  KIND ID...   (KIND: ${KINDS.join(", ")};
               a System V ID is a number, 0x... a key; several kinds may follow each other)`;

/**
 * Parses `URL...` or `KIND ID...`.
 *
 * @param args The positional arguments.
 * @param command The subcommand (for usage errors).
 * @returns The targets, at least one.
 * @throws {UsageError} For an empty list or a malformed target.
 */
export function parseTargets(args: readonly string[], command: string): Target[] {
  if (args.length === 0) throw new UsageError(`name at least one object:\n${TARGET_FORMS}`, command);
  const targets: Target[] = [];
  let kind: Kind | null = null;
  let pending = false; // a KIND given without values yet
  for (const arg of args) {
    if ((KINDS as readonly string[]).includes(arg)) {
      if (pending) throw new UsageError(`give the ${kind} ids or names after "${kind}"`, command);
      kind = arg as Kind;
      pending = true;
      continue;
    }
    const colon = arg.indexOf(":");
    const scheme = colon > 0 ? arg.slice(0, colon) : "";
    const urlKind = scheme === "shm" ? "posix-shm" : scheme;
    if ((KINDS as readonly string[]).includes(urlKind)) {
      if (pending) throw new UsageError(`give the ${kind} ids or names after "${kind}"`, command);
      kind = null;
      targets.push(parseValue(urlKind as Kind, withoutRingQuery(scheme, arg, command), true, command));
      continue;
    }
    if (kind !== null) {
      targets.push(parseValue(kind, arg, false, command));
      pending = false;
      continue;
    }
    throw new UsageError(
      colon > 0
        ? `unknown kind "${scheme}:" in "${arg}"; name objects as:\n${TARGET_FORMS}`
        : `"${arg}" is neither a URL nor a kind; name objects as:\n${TARGET_FORMS}`,
      command,
    );
  }
  if (pending) throw new UsageError(`give the ${kind} ids or names after "${kind}"`, command);
  return targets;
}

/**
 * The name in a `shm:` URL without its query: `shm:/ticks?mode=broadcast`,
 * as given to `send`/`recv`, names the ring `/ticks` (the query says how to
 * create it).
 */
function withoutRingQuery(scheme: string, arg: string, command: string): string {
  const value = arg.slice(scheme.length + 1);
  const question = value.indexOf("?");
  if (scheme !== "shm" || question < 0) return value;
  for (const part of value.slice(question + 1).split("&")) {
    if (part !== "" && !/^(capacity|mode|overflow|users)=/.test(part)) {
      throw new UsageError(
        `${arg}: the parameters of a shm: address are capacity=, mode=, overflow= and users=, got "${part}"`,
        command,
      );
    }
  }
  return value.slice(0, question);
}

function parseValue(kind: Kind, value: string, url: boolean, command: string): Target {
  const text = url ? `${kind}:${value}` : `${kind} ${value}`;
  const bad = (why: string) => new UsageError(`${text}: ${why}`, command);
  if (SYSV.has(kind)) {
    let match = /^id\/(\d+)$/.exec(value);
    if (match || (!url && /^\d+$/.test(value))) {
      const id = Number(match ? match[1] : value);
      if (id > 0x7fff_ffff) throw bad("an id is at most 2147483647");
      return { kind, by: "id", id, text };
    }
    match = /^(0x[0-9a-f]+|\d+)$/i.exec(value);
    if (match) {
      const key = Number(match[1]);
      if (key < 1 || key > 0xffff_ffff) throw bad("a key is from 1 to 0xffffffff (0 is IPC_PRIVATE)");
      return { kind, by: "key", key, text };
    }
    if (value.startsWith("/")) {
      const [path, query = ""] = value.split("?", 2);
      const proj = /^proj=(\d+)$/.exec(query);
      if (query !== "" && !proj) throw bad(`the only option of a path is ?proj=N, got "?${query}"`);
      const project = proj ? Number(proj[1]) : 1;
      if (project < 1 || project > 255) throw bad("proj is from 1 to 255");
      return { kind, by: "ftok", path, project, text };
    }
    if (value === "private") {
      throw bad("a private object has no key: name it by its id (ipcbus ls shows it)");
    }
    throw bad(`expected ${url ? "id/ID, a key (0x1a2b or decimal) or /path?proj=N" : "an id or a 0x key"}`);
  }
  if (POSIX.has(kind)) {
    const name = url || value.startsWith("/") ? value : `/${value}`;
    if (!/^\/[^/]+$/.test(name) || name === "/." || name === "/..") {
      throw bad("a POSIX name is a slash followed by 1 to 255 bytes without another slash");
    }
    return { kind, by: "name", name, text };
  }
  // fifo, file: paths.
  if (value === "") throw bad("expected a path");
  if (!value.startsWith("/")) {
    if (url) throw bad("the path must be absolute");
    value = `${Deno.cwd()}/${value}`;
  }
  return { kind, by: "name", name: value, text };
}

/** The ftok(3) key of a path (unsigned), or null when the path does not exist. */
function ftok(path: string, project: number): number | null {
  try {
    return ftokKey(path, project) >>> 0;
  } catch (error) {
    if (error instanceof NotFoundError) return null;
    throw error;
  }
}

/**
 * Finds a target among the objects listed, or makes up an entry for what
 * `ls` cannot list (a FIFO without a presence record, a POSIX queue when
 * the mqueue file system is not mounted).
 *
 * @param target The target.
 * @param found The inventory.
 * @returns The object, or null when it does not exist.
 */
export function resolveTarget(target: Target, found: Inventory): IpcObject | null {
  const { objects } = found;
  switch (target.by) {
    case "id":
      return objects.find((o) => o.kind === target.kind && o.id === target.id) ?? null;
    case "key":
    case "ftok": {
      const key = target.by === "key" ? target.key : ftok(target.path, target.project);
      if (key === null) return null;
      return objects.find((o) => o.kind === target.kind && o.exists && o.details.key === key) ?? null;
    }
    case "name": {
      const hit = objects.find((o) => o.kind === target.kind && o.name === target.name);
      if (hit) return hit;
      return unlisted(target.kind, target.name);
    }
  }
}

function unlisted(kind: Kind, name: string): IpcObject | null {
  const base: IpcObject = {
    kind,
    name,
    id: null,
    ref: `${kind}:${name}`,
    channelAddress: null,
    uid: null,
    owner: null,
    mode: null,
    size: null,
    semaphores: null,
    messages: null,
    attached: null,
    ipcbus: false,
    inUse: "unknown",
    presence: null,
    exists: null,
    details: {},
  };
  if (kind === "fifo" || kind === "file") {
    let row;
    try {
      row = lstat(name);
    } catch (error) {
      throw new Failure(`cannot look at ${name}: ${describeError(error)}`);
    }
    if (!row || (kind === "fifo" ? !row.isFifo : !row.isFile)) return null;
    return {
      ...base,
      channelAddress: `${kind}:${name}`,
      uid: row.uid,
      owner: userName(row.uid),
      mode: row.mode & 0o777,
      size: kind === "file" ? row.size : null,
      exists: true,
      details: { path: name, gid: row.gid, modified: row.modified },
    };
  }
  if (kind === "posix-mq" && mqueueMount() !== "/dev/mqueue") {
    // Cannot be listed; the queue may still exist: opening it will tell.
    return {
      ...base,
      channelAddress: `posix-mq:${name}`,
      details: { note: "the mqueue file system is not mounted" },
    };
  }
  return null;
}

/**
 * A one-line description of an object, for prompts and reports.
 *
 * @param object The object.
 * @returns Such as `sysv-mq id 32768 (key 0x00001a2b, 3 messages, owner root, stale)`.
 */
export function describeObject(object: IpcObject): string {
  const what = object.id !== null
    ? `${object.kind} id ${object.id}${object.name && object.name !== "-" ? ` (key ${object.name})` : ""}`
    : `${object.kind} ${object.name}`;
  const facts: string[] = [];
  if (object.exists === false) facts.push("object gone, presence record left");
  if (object.messages !== null) facts.push(`${object.messages} message${object.messages === 1 ? "" : "s"}`);
  if (object.attached !== null) facts.push(`${object.attached} attached`);
  if (object.owner !== null) facts.push(`owner ${object.owner}`);
  facts.push(object.inUse === "unknown" ? "use unknown" : object.inUse === "live" ? "IN USE" : "unused");
  return `${what} [${facts.join(", ")}]`;
}

/**
 * Runs `body`, which opens an object through the public API (which records
 * presence), and removes the presence record that opening made if there was
 * none before and nobody holds it now: looking at or failing to remove an
 * object ipcbus did not make must not make it look like ipcbus's.
 *
 * @param address The object's presence address.
 * @param body What to do.
 * @returns What `body` returns.
 */
export async function leavingNoRecord<R>(address: string, body: () => Promise<R>): Promise<R> {
  const before = Presence.probe(address);
  try {
    return await body();
  } finally {
    if (before === "unknown" && Presence.probe(address) === "stale") Presence.forget(address);
  }
}

/** What {@linkcode removeObject} did. */
export interface Removal {
  /** What was done, in words. */
  action: string;
  /** Whether the object was already gone. */
  alreadyGone: boolean;
}

/**
 * Removes an object (and its presence record) through the public API: a
 * channel's object with `open(address)` then `unlink()`, System V sets and
 * segments with their classes' `remove()`, POSIX shared memory, rings and
 * named semaphores with their classes' static `unlink(name)`.
 *
 * @param object The object, as listed.
 * @returns What was done.
 * @throws {Failure} When it cannot be removed (permissions, for example).
 */
export async function removeObject(object: IpcObject): Promise<Removal> {
  const record = presenceAddressOf(object.kind, object.name, object.id);
  const forgetRecord = () => {
    if (object.presence) Presence.forget(object.presence.address);
    else Presence.forget(record);
  };
  if (object.exists === false) {
    forgetRecord();
    return { action: "removed the presence record (the object was already gone)", alreadyGone: true };
  }
  try {
    const action = await leavingNoRecord(record, () => removeKernelObject(object));
    forgetRecord();
    return { action, alreadyGone: false };
  } catch (error) {
    if (error instanceof NotFoundError || error instanceof Deno.errors.NotFound) {
      forgetRecord();
      return { action: "already gone; removed its presence record, if any", alreadyGone: true };
    }
    throw new Failure(describeError(error), { cause: error });
  }
}

/**
 * Removes a POSIX shared memory object. An ipcbus `shm:` ring is removed
 * as a ring with `ShmRing.unlink` (its private semaphore set goes with it:
 * removing only the name would leak the set). Anything that is not a ring
 * (`FrameError`: wrong magic or size) is shm_unlink'ed.
 */
function removeSharedMemory(name: string): string {
  try {
    ShmRing.unlink(name);
    return "unlinked the shm: ring and its semaphore set";
  } catch (error) {
    if (!(error instanceof FrameError)) throw error;
  }
  PosixSharedMemory.unlink(name);
  return "shm_unlink";
}

async function unlinkChannel(address: string): Promise<void> {
  const channel = await open(address);
  try {
    await channel.unlink();
  } finally {
    channel.close();
  }
}

async function removeKernelObject(object: IpcObject): Promise<string> {
  switch (object.kind) {
    case "sysv-mq": {
      const queue = SysvMessageQueue.open(`id/${object.id}`);
      try {
        await queue.unlink();
      } finally {
        queue.close();
      }
      return "msgctl(IPC_RMID)";
    }
    case "sysv-sem":
      SysvSemaphoreSet.open({ id: object.id!, initTimeout: 0 }).remove();
      return "semctl(IPC_RMID)";
    case "sysv-shm": {
      const segment = SysvSharedMemory.open({ id: object.id!, readOnly: true });
      try {
        segment.remove();
      } finally {
        segment.detach();
      }
      return (object.attached ?? 0) > 0
        ? `shmctl(IPC_RMID): destroyed when its ${object.attached} attachment(s) detach`
        : "shmctl(IPC_RMID)";
    }
    case "posix-mq":
      PosixMessageQueue.unlink(object.name);
      return "mq_unlink";
    case "posix-shm":
      return removeSharedMemory(object.name);
    case "posix-sem":
      NamedSemaphore.unlink(object.name);
      return "sem_unlink";
    case "fifo":
      await unlinkChannel(`fifo:${object.name}`);
      return `unlinked ${object.name}`;
    case "file":
      await unlinkChannel(`file:${object.name}`);
      return `deleted the log ${object.name}`;
    default:
      throw new Failure(`no way to remove ${object.kind}: objects here (no transport registered for it)`);
  }
}
