/**
 * `ipcbus ls`: every IPC object on the machine the user can see, with kind,
 * name or key, id, owner, mode, size, messages, attachments, whether ipcbus
 * made it and whether anyone still uses it.
 *
 * @module
 */

import { listOption, parse, type Values } from "./_args.ts";
import { inventory, type IpcObject, KINDS } from "./_inventory.ts";
import { eprintln, humanBytes, octal, printJson, printLines, style, table, UsageError } from "./_output.ts";
import { resolveUser } from "./_system.ts";

/** Help of `ipcbus ls`. */
export const LS_HELP = `usage: ipcbus ls [--kind KIND[,KIND...]] [--owner USER|UID] [--ipcbus] [--json]

List every IPC object this user can see: System V message queues, semaphore
sets and shared memory segments; POSIX message queues (when the mqueue file
system is mounted), shared memory and named semaphores; and the FIFOs and
logs ipcbus knows of from their presence records.

  --kind KIND     only these kinds: ${KINDS.join(", ")}
  --owner USER    only objects owned by USER (a name or a uid)
  --ipcbus        only objects ipcbus made
  --json          print {objects, notes} as JSON

Columns: IPCBUS says whether ipcbus made the object (it has a presence
record); IN USE is "live" when a process has it open
through ipcbus (or a System V segment is attached), "stale" when ipcbus made
it and every user has gone (ipcbus gc removes those), "unknown" otherwise.
A NAME marked "(gone)" is a presence record whose object no longer exists.`;

/** The `--kind`, `--owner` and `--ipcbus` filters shared by `ls` and `gc`. */
export interface ObjectFilter {
  /** Kinds kept (empty: all). */
  kinds: Set<string>;
  /** Owner kept, or null for all. */
  uid: number | null;
  /** Keep only ipcbus objects. */
  ipcbusOnly: boolean;
}

/**
 * Reads the filter options.
 *
 * @param values Parsed options.
 * @param command The subcommand, for usage errors.
 * @returns The filter.
 * @throws {UsageError} For an unknown kind or user.
 */
export function objectFilter(values: Values, command: string): ObjectFilter {
  const kinds = new Set(listOption(values.kind));
  for (const kind of kinds) {
    if (!(KINDS as readonly string[]).includes(kind)) {
      throw new UsageError(`unknown kind "${kind}"; kinds are ${KINDS.join(", ")}`, command);
    }
  }
  let uid: number | null = null;
  if (typeof values.owner === "string") {
    uid = resolveUser(values.owner);
    if (uid === null) {
      throw new UsageError(`unknown user "${values.owner}" (not in /etc/passwd; give a uid)`, command);
    }
  }
  return { kinds, uid, ipcbusOnly: values.ipcbus === true };
}

/**
 * Whether an object passes a filter.
 *
 * @param object The object.
 * @param filter The filter.
 * @returns True to keep it.
 */
export function matches(object: IpcObject, filter: ObjectFilter): boolean {
  if (filter.kinds.size && !filter.kinds.has(object.kind)) return false;
  if (filter.uid !== null && object.uid !== filter.uid) return false;
  if (filter.ipcbusOnly && !object.ipcbus) return false;
  return true;
}

/** The table columns of `ls`. */
const HEADER = ["KIND", "NAME/KEY", "ID", "OWNER", "MODE", "SIZE", "MSGS", "ATTACHED", "IPCBUS", "IN USE"];

/**
 * Formats objects as the `ls` table.
 *
 * @param objects The objects.
 * @param colour Whether to colour the cells.
 * @returns The lines.
 */
export function objectTable(objects: readonly IpcObject[], colour: boolean): string[] {
  const s = style(colour);
  const dash = "-";
  const rows = objects.map((o) => [
    o.kind,
    o.exists === false ? `${o.name === "-" ? "" : `${o.name} `}${s.dim("(gone)")}` : o.name,
    o.id === null ? dash : String(o.id),
    o.owner ?? dash,
    o.mode === null ? dash : octal(o.mode),
    o.semaphores !== null
      ? `${o.semaphores} sem${o.semaphores === 1 ? "" : "s"}`
      : o.size === null
      ? dash
      : humanBytes(o.size),
    o.messages === null ? dash : String(o.messages),
    o.attached === null ? dash : String(o.attached),
    o.ipcbus ? s.cyan("yes") : "no",
    o.inUse === "live" ? s.green("live") : o.inUse === "stale" ? s.yellow("stale") : s.dim("unknown"),
  ]);
  return table(HEADER, rows, new Set([2, 5, 6, 7]), s);
}

/**
 * Runs `ipcbus ls`.
 *
 * @param args The arguments after `ls`.
 * @returns The exit code.
 */
export function ls(args: readonly string[]): number {
  const { values, positionals } = parse(args, {
    kind: { type: "string", multiple: true },
    owner: { type: "string" },
    ipcbus: { type: "boolean" },
    json: { type: "boolean" },
  }, "ls");
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`, "ls");
  const filter = objectFilter(values, "ls");
  const found = inventory();
  const objects = found.objects.filter((o) => matches(o, filter));
  const notes =
    (filter.kinds.size
      ? found.notes.filter((note) => note.kinds.some((kind) => filter.kinds.has(kind)))
      : found.notes).map((note) => note.text);
  if (values.json) {
    printJson({ objects, notes });
    return 0;
  }
  if (objects.length === 0) printLines(["no IPC objects found"]);
  else printLines(objectTable(objects, style().enabled));
  for (const note of notes) eprintln(`note: ${note}`);
  return 0;
}
