/**
 * `ipcbus rm`: removes objects, after a confirmation on a terminal (or with
 * `--yes`), and their presence records.
 *
 * @module
 */

import { parse } from "./_args.ts";
import { inventory, type IpcObject } from "./_inventory.ts";
import {
  colourFor,
  describeError,
  eprintln,
  Failure,
  printJson,
  printLines,
  style,
  UsageError,
} from "./_output.ts";
import { describeObject, parseTargets, removeObject, resolveTarget, TARGET_FORMS } from "./_targets.ts";

/** Help of `ipcbus rm`. */
export const RM_HELP = `usage: ipcbus rm TARGET... [--yes] [--json]

Remove objects (and their ipcbus presence records). Asks for confirmation on
a terminal; without a terminal (a script, CI) it refuses unless --yes is
given. Removing an object that a process still uses breaks that process's
channel: ipcbus rm says so before asking.

TARGET:
${TARGET_FORMS}

Examples:
  ipcbus rm sysv-mq:0x1a2b
  ipcbus rm sysv-mq 32768 32769
  ipcbus rm posix-mq:/orders fifo:/run/user/1000/app.fifo
  ipcbus rm posix-shm /orders posix-sem /lock

  --yes    do not ask
  --json   print [{ref, removed, action | error}] as JSON`;

/** One line per object: removed or why not. */
interface Outcome {
  ref: string;
  removed: boolean;
  action?: string;
  error?: string;
}

function confirm(objects: readonly IpcObject[]): boolean {
  const s = style(colourFor(Deno.stderr));
  eprintln(`about to remove ${objects.length} object${objects.length === 1 ? "" : "s"}:`);
  for (const object of objects) {
    const line = `  ${describeObject(object)}`;
    eprintln(object.inUse === "live" ? s.red(`${line}  <- a live process uses it`) : line);
  }
  const answer = prompt("remove? [y/N]");
  return answer !== null && /^y(es)?$/i.test(answer.trim());
}

/**
 * Runs `ipcbus rm`.
 *
 * @param args The arguments after `rm`.
 * @returns The exit code.
 */
export async function rm(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    yes: { type: "boolean", short: "y" },
    json: { type: "boolean" },
  }, "rm");
  const targets = parseTargets(positionals, "rm");
  const found = inventory();
  const outcomes: Outcome[] = [];
  const chosen: IpcObject[] = [];
  for (const target of targets) {
    const object = resolveTarget(target, found);
    if (object) {
      if (!chosen.includes(object)) chosen.push(object);
    } else outcomes.push({ ref: target.text, removed: false, error: "no such object" });
  }
  if (chosen.length && !values.yes) {
    if (!Deno.stdin.isTerminal()) {
      throw new UsageError(
        "refusing to remove without confirmation: stdin is not a terminal; pass --yes",
        "rm",
      );
    }
    if (!confirm(chosen)) {
      eprintln("nothing removed");
      return 1;
    }
  }
  for (const object of chosen) {
    try {
      const { action } = await removeObject(object);
      outcomes.push({ ref: object.ref, removed: true, action });
    } catch (error) {
      outcomes.push({ ref: object.ref, removed: false, error: describeError(error) });
    }
  }
  const failed = outcomes.filter((o) => !o.removed);
  if (values.json) printJson(outcomes);
  else {
    const s = style();
    for (const o of outcomes) {
      if (o.removed) printLines([`${s.green("removed")} ${o.ref}: ${o.action}`]);
    }
  }
  if (failed.length) {
    throw new Failure(failed.map((o) => `cannot remove ${o.ref}: ${o.error}`).join("\n"));
  }
  return 0;
}
