/**
 * `ipcbus gc`: removes the objects ipcbus made that no live process uses.
 *
 * Liveness comes from presence records (see `sync/presence.ts`): every
 * ipcbus channel holds a shared open-file-description lock on its object's
 * record, which the kernel drops when the process dies, however it dies. A
 * record nobody holds is stale. For each stale record `gc` takes the
 * record's write lock (`Presence.claim`), which no new user can get past,
 * removes the object through the public API, then removes the record. It
 * never removes an object whose record is held (live), an object without a
 * record (unknown), or a `file:` log (durable data: reported, never
 * deleted; only the record of a log whose file is gone goes).
 *
 * @module
 */

import { Presence } from "../mod.ts";
import { parse } from "./_args.ts";
import { inventory, type IpcObject } from "./_inventory.ts";
import { matches, objectFilter } from "./_ls.ts";
import { describeError, eprintln, Failure, printJson, printLines, style, table } from "./_output.ts";
import { parseTargets, removeObject, resolveTarget, TARGET_FORMS } from "./_targets.ts";

/** Help of `ipcbus gc`. */
export const GC_HELP =
  `usage: ipcbus gc [TARGET...] [--dry-run] [--kind KIND[,KIND...]] [--owner USER|UID] [--json]

Remove the objects ipcbus made that no live process uses. Every ipcbus
channel holds a lock on its object's presence record (under /dev/shm) that
the kernel releases when the process ends, however it ends; an object whose
record nobody holds is stale. gc removes a stale object while holding the
record's write lock, so no ipcbus process can start using it meanwhile
(one opening it then waits, and finds it gone).

gc never removes:
  - an object a live ipcbus process uses (its record is locked),
  - an object without a presence record (not made by ipcbus, or made by a
    program that does not record presence: its use is unknown),
  - a file: log (durable data): stale logs are reported, never deleted;
    remove one with ipcbus rm file:PATH (the record of a log whose file is
    gone is removed).
Processes that use an object without ipcbus (a C peer, ipcs tools) are not
seen: run gc when such peers are stopped, or name the objects to collect.

With TARGETs only those objects are considered:
${TARGET_FORMS}

  --dry-run       show what would be removed, remove nothing
  --kind KIND     only these kinds
  --owner USER    only objects owned by USER (a name or a uid)
  --json          print {dryRun, results: [{ref, kind, name, id, result, reason}]}`;

/** What happened to one object. */
export interface GcResult {
  ref: string;
  kind: string;
  name: string;
  id: number | null;
  /** `removed`, `would remove`, `kept` (in use or durable), `skipped` (cannot tell or cannot handle), `failed`. */
  result: "removed" | "would remove" | "kept" | "skipped" | "failed";
  reason: string;
}

async function collect(object: IpcObject, dryRun: boolean): Promise<GcResult> {
  const base = { ref: object.ref, kind: object.kind, name: object.name, id: object.id };
  const record = object.presence;
  if (record === null) {
    return { ...base, result: "skipped", reason: "no presence record: its use is unknown" };
  }
  if (record.state === "live") return { ...base, result: "kept", reason: "in use by a live process" };
  if (object.kind === "sysv-shm" && (object.attached ?? 0) > 0) {
    return { ...base, result: "kept", reason: `attached ${object.attached} time(s)` };
  }
  if (object.kind === "file" && object.exists !== false) {
    return {
      ...base,
      result: "kept",
      reason: "stale, but file: logs are durable data and gc never deletes them (ipcbus rm to delete)",
    };
  }
  const what = object.exists === false ? "stale record of an object that is gone" : "stale";
  if (dryRun) return { ...base, result: "would remove", reason: what };

  const claim = Presence.claim(record.address);
  if (claim === null) {
    const now = Presence.probe(record.address);
    if (now === "live") return { ...base, result: "kept", reason: "became live" };
    if (now === "unknown") return { ...base, result: "skipped", reason: "its record was removed meanwhile" };
    return { ...base, result: "skipped", reason: "cannot lock its presence record (another user's record?)" };
  }
  try {
    const removal = await removeObject(object);
    claim.remove();
    return { ...base, result: "removed", reason: `${what}: ${removal.action}` };
  } catch (error) {
    claim.release();
    return { ...base, result: "failed", reason: describeError(error) };
  }
}

/**
 * Runs `ipcbus gc`.
 *
 * @param args The arguments after `gc`.
 * @returns The exit code.
 */
export async function gc(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    "dry-run": { type: "boolean", short: "n" },
    kind: { type: "string", multiple: true },
    owner: { type: "string" },
    json: { type: "boolean" },
  }, "gc");
  const filter = objectFilter(values, "gc");
  const dryRun = values["dry-run"] === true;
  const found = inventory();
  let candidates: IpcObject[];
  const results: GcResult[] = [];
  if (positionals.length) {
    candidates = [];
    for (const target of parseTargets(positionals, "gc")) {
      const object = resolveTarget(target, found);
      if (object) candidates.push(object);
      else {
        results.push({
          ref: target.text,
          kind: target.kind,
          name: target.text,
          id: null,
          result: "skipped",
          reason: "no such object",
        });
      }
    }
  } else {
    candidates = found.objects.filter((o) => o.presence !== null);
  }
  for (const object of candidates.filter((o) => matches(o, filter))) {
    results.push(await collect(object, dryRun));
  }

  if (values.json) printJson({ dryRun, results });
  else {
    const s = style();
    const colour = (result: GcResult["result"]) =>
      result === "removed"
        ? s.green(result)
        : result === "would remove"
        ? s.yellow(result)
        : result === "failed"
        ? s.red(result)
        : s.dim(result);
    if (results.length === 0) printLines(["nothing to collect: no ipcbus objects with presence records"]);
    else {
      printLines(table(
        ["RESULT", "OBJECT", "WHY"],
        results.map((r) => [colour(r.result), r.ref, r.reason]),
        new Set(),
        s,
      ));
    }
    const removed = results.filter((r) => r.result === "removed").length;
    const would = results.filter((r) => r.result === "would remove").length;
    eprintln(dryRun ? `${would} object(s) would be removed (dry run)` : `${removed} object(s) removed`);
  }
  const failed = results.filter((r) => r.result === "failed");
  if (failed.length) throw new Failure(`gc could not remove ${failed.map((r) => r.ref).join(", ")}`);
  return 0;
}
