/**
 * What the `ipcbus` command reads about the machine: the System V tables in
 * `/proc/sysvipc`, kernel limits in `/proc/sys`, this process's limits in
 * `/proc/self/limits`, mounts, the `/dev/shm` and `/dev/mqueue` directories
 * (through the public `readProcFile` and `listIpcDirectory`: Deno's own file
 * APIs refuse `/proc` and `/dev` paths without `--allow-all`), FIFOs and
 * logs (`lstat`, through libc for such paths), and user names from
 * `/etc/passwd`.
 *
 * @module
 */

import { type IpcDirectory, type IpcPathStat, listIpcDirectory, lstatIpcPath, readProcFile } from "../mod.ts";

/**
 * A whole small file, or null when it cannot be read: `/proc` and `/sys`
 * files through ipcbus (libc), others with Deno's file API.
 *
 * @param path The file.
 * @returns Its text, or null.
 */
export function readText(path: string): string | null {
  try {
    return /^\/(proc|sys)\//.test(path) ? readProcFile(path) : Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/**
 * A number from a one-value `/proc` file.
 *
 * @param path Such as `/proc/sys/kernel/msgmax`.
 * @returns The number, or null when unreadable.
 */
export function readNumber(path: string): number | null {
  const text = readText(path)?.trim();
  if (text === undefined || text === "" || !/^-?\d+$/.test(text)) return null;
  return Number(text);
}

/**
 * Space-separated numbers from a `/proc` file (such as `kernel.sem`).
 *
 * @param path The file.
 * @returns The numbers, or null when unreadable.
 */
export function readNumbers(path: string): number[] | null {
  const text = readText(path)?.trim();
  if (!text) return null;
  const numbers = text.split(/\s+/).map(Number);
  return numbers.every(Number.isFinite) ? numbers : null;
}

let passwd: Map<number, string> | undefined;

/**
 * User names by uid, from `/etc/passwd` (no NSS: users only LDAP knows show as numbers).
 *
 * @returns The map.
 */
export function users(): Map<number, string> {
  if (passwd) return passwd;
  passwd = new Map();
  for (const line of (readText("/etc/passwd") ?? "").split("\n")) {
    const [name, , uid] = line.split(":");
    if (name && uid !== undefined && /^\d+$/.test(uid) && !passwd.has(Number(uid))) {
      passwd.set(Number(uid), name);
    }
  }
  return passwd;
}

/**
 * A uid as a name when known.
 *
 * @param uid The uid.
 * @returns The name, or the number as text.
 */
export function userName(uid: number): string {
  return users().get(uid) ?? String(uid);
}

/**
 * A uid from a user name or number.
 *
 * @param spec A name from /etc/passwd or a number.
 * @returns The uid, or null when the name is unknown.
 */
export function resolveUser(spec: string): number | null {
  if (/^\d+$/.test(spec)) return Number(spec);
  for (const [uid, name] of users()) if (name === spec) return uid;
  return null;
}

/**
 * The effective uid of this process (from `/proc/self/status`, needing no `--allow-sys`).
 *
 * @returns The uid, or -1 when unknown.
 */
export function effectiveUid(): number {
  const match = /^Uid:\s+\d+\s+(\d+)/m.exec(readText("/proc/self/status") ?? "");
  return match ? Number(match[1]) : -1;
}

/** One line of `/proc/mounts`. */
export interface Mount {
  /** The device or source (`tmpfs`, `none`). */
  source: string;
  /** Where it is mounted. */
  target: string;
  /** File system type (`tmpfs`, `mqueue`). */
  type: string;
  /** Mount options, such as `size=65536k`. */
  options: Map<string, string>;
}

/**
 * The mounts this process sees.
 *
 * @returns Every mount, in the order of `/proc/mounts` (the last one on a path is on top).
 */
export function mounts(): Mount[] {
  const list: Mount[] = [];
  for (const line of (readText("/proc/mounts") ?? "").split("\n")) {
    const [source, target, type, options] = line.split(" ");
    if (!type) continue;
    const parsed = new Map<string, string>();
    for (const option of (options ?? "").split(",")) {
      const at = option.indexOf("=");
      parsed.set(at < 0 ? option : option.slice(0, at), at < 0 ? "" : option.slice(at + 1));
    }
    // /proc/mounts escapes spaces and the like as octal.
    const unescape = (text: string) =>
      text.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    list.push({ source: unescape(source), target: unescape(target), type, options: parsed });
  }
  return list;
}

/**
 * Where the mqueue file system is mounted, preferring `/dev/mqueue`.
 *
 * @returns The mount point, or null when none is mounted.
 */
export function mqueueMount(): string | null {
  const all = mounts().filter((m) => m.type === "mqueue");
  return all.find((m) => m.target === "/dev/mqueue")?.target ?? all[0]?.target ?? null;
}

/**
 * The mount that holds `/dev/shm`.
 *
 * @returns The mount, or null when `/dev/shm` is not a mount point.
 */
export function devShmMount(): Mount | null {
  return mounts().findLast((m) => m.target === "/dev/shm") ?? null;
}

/**
 * A size option of a tmpfs mount (`size=65536k`, `size=50%`) in bytes.
 *
 * @param value The option's value.
 * @param memTotal Physical memory in bytes (for percentages).
 * @returns Bytes, or null when not understood.
 */
export function parseMountSize(value: string, memTotal: number | null): number | null {
  const match = /^(\d+)([kmgtpe%]?)$/i.exec(value);
  if (!match) return null;
  const n = Number(match[1]);
  const unit = match[2].toLowerCase();
  if (unit === "%") return memTotal === null ? null : Math.floor((memTotal * n) / 100);
  const power = " kmgtpe".indexOf(unit || " ");
  return n * 1024 ** power;
}

/**
 * Physical memory, from `/proc/meminfo`.
 *
 * @returns Bytes, or null when unreadable.
 */
export function memTotal(): number | null {
  const match = /^MemTotal:\s+(\d+) kB/m.exec(readText("/proc/meminfo") ?? "");
  return match ? Number(match[1]) * 1024 : null;
}

/** A soft and hard resource limit (null: unlimited). */
export interface ResourceLimit {
  /** The soft limit in force. */
  soft: number | null;
  /** The ceiling an unprivileged process may raise the soft limit to. */
  hard: number | null;
}

/**
 * One of this process's resource limits, from `/proc/self/limits`.
 *
 * @param title The row's title, such as `Max msgqueue size`.
 * @returns The limits, or null when the row is missing.
 */
export function resourceLimit(title: string): ResourceLimit | null {
  for (const line of (readText("/proc/self/limits") ?? "").split("\n")) {
    if (!line.startsWith(title)) continue;
    const [soft, hard] = line.slice(title.length).trim().split(/\s+/);
    const value = (text: string) => (text === "unlimited" ? null : Number(text));
    return { soft: value(soft), hard: value(hard) };
  }
  return null;
}

/** The columns every `/proc/sysvipc` table has. */
export interface SysvRow {
  key: number;
  id: number;
  /** Permission bits (without the flags above 0o777). */
  mode: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  changeTime: Date | null;
}

/** A row of `/proc/sysvipc/msg`. */
export interface SysvQueueRow extends SysvRow {
  bytes: number;
  messages: number;
  lastSendPid: number;
  lastReceivePid: number;
  lastSendTime: Date | null;
  lastReceiveTime: Date | null;
}

/** A row of `/proc/sysvipc/sem`. */
export interface SysvSemaphoreRow extends SysvRow {
  count: number;
  lastOpTime: Date | null;
}

/** A row of `/proc/sysvipc/shm`. */
export interface SysvSegmentRow extends SysvRow {
  size: number;
  creatorPid: number;
  lastPid: number;
  attached: number;
  lastAttachTime: Date | null;
  lastDetachTime: Date | null;
  /** IPC_RMID was called: destroyed when the last process detaches. */
  removed: boolean;
  /** Locked in memory (SHM_LOCK). */
  locked: boolean;
}

function table(path: string): Record<string, string>[] | null {
  const text = readText(path);
  if (text === null) return null;
  const [head, ...lines] = text.split("\n").filter((line) => line.trim() !== "");
  const names = head.trim().split(/\s+/);
  return lines.map((line) => {
    const cells = line.trim().split(/\s+/);
    return Object.fromEntries(names.map((name, i) => [name, cells[i] ?? ""]));
  });
}

const time = (text: string): Date | null => (text && text !== "0" ? new Date(Number(text) * 1000) : null);

/** The common columns of a `/proc/sysvipc` row; `idColumn` is `msqid`, `semid` or `shmid`. */
function sysvRow(r: Record<string, string>, idColumn: string): SysvRow {
  return {
    key: Number(r.key) >>> 0,
    id: Number(r[idColumn]),
    mode: parseInt(r.perms, 8) & 0o777,
    uid: Number(r.uid),
    gid: Number(r.gid),
    cuid: Number(r.cuid),
    cgid: Number(r.cgid),
    changeTime: time(r.ctime),
  };
}

/**
 * The System V message queues (`/proc/sysvipc/msg` lists every queue, whatever its mode).
 *
 * @returns The rows, or null when the file is missing (no IPC namespace support).
 */
export function sysvQueues(): SysvQueueRow[] | null {
  return table("/proc/sysvipc/msg")?.map((r) => ({
    ...sysvRow(r, "msqid"),
    bytes: Number(r.cbytes),
    messages: Number(r.qnum),
    lastSendPid: Number(r.lspid),
    lastReceivePid: Number(r.lrpid),
    lastSendTime: time(r.stime),
    lastReceiveTime: time(r.rtime),
  })) ?? null;
}

/**
 * The System V semaphore sets.
 *
 * @returns The rows, or null when the file is missing.
 */
export function sysvSemaphores(): SysvSemaphoreRow[] | null {
  return table("/proc/sysvipc/sem")?.map((r) => ({
    ...sysvRow(r, "semid"),
    count: Number(r.nsems),
    lastOpTime: time(r.otime),
  })) ?? null;
}

/**
 * The System V shared memory segments.
 *
 * @returns The rows, or null when the file is missing.
 */
export function sysvSegments(): SysvSegmentRow[] | null {
  return table("/proc/sysvipc/shm")?.map((r) => {
    const perms = parseInt(r.perms, 8);
    return {
      ...sysvRow(r, "shmid"),
      size: Number(r.size),
      creatorPid: Number(r.cpid),
      lastPid: Number(r.lpid),
      attached: Number(r.nattch),
      lastAttachTime: time(r.atime),
      lastDetachTime: time(r.dtime),
      removed: (perms & 0o1000) !== 0,
      locked: (perms & 0o2000) !== 0,
    };
  }) ?? null;
}

/** A file-like object: an entry of `/dev/shm` or `/dev/mqueue`, a FIFO, a log. */
export interface FileRow {
  /** Absolute path. */
  path: string;
  uid: number;
  gid: number;
  /** Permission bits. */
  mode: number;
  /** Bytes (st_size). */
  size: number;
  /**
   * Bytes allocated (st_blocks × 512) from {@linkcode lstat}; from {@linkcode listDir}, and from `lstat`
   * through libc, the size again.
   */
  allocated: number;
  isFifo: boolean;
  isFile: boolean;
  isSymlink: boolean;
  modified: Date | null;
}

/** Paths Deno's own file APIs refuse without `--allow-all` (they would also prompt on a terminal). */
const DENO_REFUSES = /^\/(dev|proc|sys)(\/|$)/;

/**
 * lstat of a path (FIFOs and logs, which live anywhere). Paths under `/dev`,
 * `/proc` and `/sys` (a log kept in `/dev/shm`, say), which Deno's own file
 * APIs refuse without `--allow-all`, and any other path Deno refuses, are
 * looked at through libc (`lstatIpcPath`, under `--allow-ffi`); such a row has
 * no modification time, and `allocated` is the size again.
 *
 * @param path The path.
 * @returns What it is, or null when it does not exist (or a component of the path is not a directory).
 * @throws {Error} When it cannot be looked at (permissions, a path too long).
 */
export function lstat(path: string): FileRow | null {
  if (DENO_REFUSES.test(path)) return lstatThroughLibc(path);
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) return null;
    if (error instanceof Deno.errors.NotCapable) return lstatThroughLibc(path);
    throw error;
  }
  return {
    path,
    uid: info.uid ?? -1,
    gid: info.gid ?? -1,
    mode: (info.mode ?? 0) & 0o7777,
    size: info.size,
    allocated: (info.blocks ?? 0) * 512,
    isFifo: info.isFifo ?? false,
    isFile: info.isFile,
    isSymlink: info.isSymlink,
    modified: info.mtime,
  };
}

function lstatThroughLibc(path: string): FileRow | null {
  const stat = lstatIpcPath(path);
  return stat === null ? null : rowOf(path, stat);
}

/** A row for what ipcbus (libc) says of `path`: no modification time, allocated = size. */
function rowOf(path: string, stat: IpcPathStat): FileRow {
  return {
    path,
    uid: stat.uid,
    gid: stat.gid,
    mode: stat.mode & 0o7777,
    size: stat.size,
    allocated: stat.size,
    isFifo: stat.type === "fifo",
    isFile: stat.type === "file",
    isSymlink: stat.type === "symlink",
    modified: null,
  };
}

/**
 * The entries of `/dev/shm` or `/dev/mqueue` (through ipcbus, not Deno's file API).
 *
 * @param dir The directory.
 * @returns The entries, or null when the directory cannot be read.
 */
export function listDir(dir: IpcDirectory): FileRow[] | null {
  let entries;
  try {
    entries = listIpcDirectory(dir);
  } catch {
    return null;
  }
  if (entries === null) return null;
  return entries.map((entry) => rowOf(`${dir}/${entry.name}`, entry)).sort((a, b) =>
    a.path.localeCompare(b.path)
  );
}
