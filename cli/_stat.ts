/**
 * `ipcbus stat`: everything known about one object: what `ls` sees, its
 * presence record, and, for a channel's object, what the channel reports
 * when opened (`info`, and the transport's `stat()` where it has one).
 *
 * @module
 */

import {
  FrameError,
  inspectShmRing,
  open,
  registeredSchemes,
  type ShmRingStat,
  SysvSemaphoreSet,
} from "../mod.ts";
import { parse } from "./_args.ts";
import { inventory, type IpcObject, keyText, presenceAddressOf } from "./_inventory.ts";
import { userName } from "./_system.ts";
import {
  describeError,
  Failure,
  humanBytes,
  jsonReplacer,
  octal,
  printJson,
  printLines,
  type Style,
  style,
} from "./_output.ts";
import { leavingNoRecord, parseTargets, resolveTarget, TARGET_FORMS } from "./_targets.ts";

/** Help of `ipcbus stat`. */
export const STAT_HELP = `usage: ipcbus stat TARGET... [--json]

Show everything known about objects: what ipcbus ls shows, the presence
record, and for a channel's object what the channel reports when opened
(its info: capabilities, limits and why; and the transport's stat, such as
the last sender of a System V queue). Opening never creates anything: a
presence record made by the look is removed again.

TARGET:
${TARGET_FORMS}

  --json   print {object, channel, stat, semaphores} as JSON (an array of them for several targets)`;

/** What `stat` reports about one object. */
export interface StatReport {
  /** As listed. */
  object: IpcObject;
  /** The channel's `info`, or why it could not be opened; null when it is not a channel's object. */
  channel: { info: Record<string, unknown> } | { error: string } | null;
  /** The transport's `stat()`, when it has one. */
  stat: unknown;
  /** Semaphore values of a System V set. */
  semaphores: { value: number; waiting: number; waitingForZero: number; lastPid: number }[] | null;
}

/**
 * Opens an object's channel to read what it reports, leaving no trace: a
 * presence record that opening created is removed after closing, unless
 * someone else holds it by then.
 *
 * @param object The object.
 * @returns The channel report and the transport's stat.
 */
async function look(object: IpcObject): Promise<{ channel: StatReport["channel"]; stat: unknown }> {
  // A POSIX shared memory object may be an ipcbus ring without a presence record: try it as one.
  const address = object.channelAddress ?? (object.kind === "posix-shm" ? `shm:${object.name}` : null);
  if (address === null || object.exists === false) return { channel: null, stat: null };
  const scheme = address.slice(0, address.indexOf(":"));
  if (!registeredSchemes().includes(scheme)) {
    return { channel: { error: `no ${scheme}: transport in this version of ipcbus` }, stat: null };
  }
  if (scheme === "shm") return lookAtRing(address, object);
  const recorded = presenceAddressOf(object.kind, object.name, object.id);
  return await leavingNoRecord(recorded, async () => {
    let channel;
    try {
      channel = await open(address);
    } catch (error) {
      return { channel: { error: describeError(error) }, stat: null };
    }
    let stat: unknown = null;
    try {
      const transport = channel.unsafeTransport as unknown as { stat?: () => unknown };
      if (typeof transport.stat === "function") {
        try {
          stat = transport.stat();
        } catch (error) {
          stat = { error: describeError(error) };
        }
      }
      return { channel: { info: { ...channel.info } }, stat };
    } finally {
      channel.close();
    }
  });
}

/**
 * A ring is read where it lies (`inspectShmRing`: mapped read-only, no user
 * slot taken, no presence record), not joined: joining would count as a
 * user, and wait for a creator still initializing it.
 */
function lookAtRing(address: string, object: IpcObject): { channel: StatReport["channel"]; stat: unknown } {
  let stat: ShmRingStat;
  try {
    stat = inspectShmRing(address);
  } catch (error) {
    if (error instanceof FrameError && object.channelAddress === null) {
      return { channel: { error: `not an ipcbus ring (${error.message})` }, stat: null };
    }
    return { channel: { error: describeError(error) }, stat: null };
  }
  const info = {
    scheme: "shm",
    address: `shm:${stat.name}`,
    mode: stat.mode,
    overflow: stat.overflow,
    capacity: stat.capacity,
    maxMessageSize: stat.maxMessageSize,
  };
  return { channel: { info }, stat };
}

function semaphoreValues(object: IpcObject): StatReport["semaphores"] {
  if (object.kind !== "sysv-sem" || object.id === null || !object.exists) return null;
  try {
    using set = SysvSemaphoreSet.open({ id: object.id, initTimeout: 0 });
    return set.values().map((value, index) => ({
      value,
      waiting: set.waitingCount(index),
      waitingForZero: set.zeroWaitingCount(index),
      lastPid: set.lastPid(index),
    }));
  } catch {
    return null;
  }
}

function show(value: unknown, key = ""): string {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && key === "key") return keyText(value);
  if (typeof value === "number" && key === "mode") return octal(value);
  if (typeof value === "number" && (key === "owner" || key === "uid")) {
    return `${userName(value)} (uid ${value})`;
  }
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object") return JSON.stringify(value, jsonReplacer);
  return String(value);
}

function section(title: string, entries: [string, unknown][], s: Style): string[] {
  const width = Math.max(0, ...entries.map(([k]) => k.length));
  return [s.bold(title), ...entries.map(([k, v]) => `  ${k.padEnd(width)}  ${show(v, k)}`)];
}

/**
 * The human-readable report of one object.
 *
 * @param report The report.
 * @param s Styles.
 * @returns The lines.
 */
function render(report: StatReport, s: Style): string[] {
  const o = report.object;
  const lines: string[] = [];
  const state = o.inUse === "live"
    ? s.green("live")
    : o.inUse === "stale"
    ? s.yellow("stale")
    : s.dim("unknown");
  lines.push(...section(o.ref, [
    ["kind", o.kind],
    ["name", o.name],
    ["id", o.id],
    [
      "exists",
      o.exists === null ? "cannot tell" : o.exists ? "yes" : "no (only its presence record is left)",
    ],
    ["owner", o.uid],
    ["mode", o.mode],
    ["size", o.size === null ? null : `${humanBytes(o.size)} (${o.size} bytes)`],
    ...(o.semaphores === null ? [] : [["semaphores", o.semaphores] as [string, unknown]]),
    ["messages", o.messages],
    ["attached", o.attached],
    ["made by ipcbus", o.ipcbus ? "yes" : "no"],
    ["in use", state],
    [
      "presence",
      o.presence
        ? `${o.presence.state}: record ${o.presence.address} (owner uid ${o.presence.uid})`
        : "no record",
    ],
    ...Object.entries(o.details),
  ], s));
  if (report.semaphores) {
    lines.push(s.bold("semaphores"));
    report.semaphores.forEach((v, i) =>
      lines.push(
        `  [${i}] value ${v.value}, ${v.waiting} waiting to decrement, ${v.waitingForZero} waiting for zero, ` +
          `last pid ${v.lastPid}`,
      )
    );
  }
  if (report.channel && "error" in report.channel) {
    lines.push(`${s.bold("channel")}  ${s.red("cannot open")}: ${report.channel.error}`);
  } else if (report.channel) {
    const { capabilities, ...info } = report.channel.info as {
      capabilities?: Record<string, boolean>;
      [key: string]: unknown;
    };
    const can = capabilities ? Object.entries(capabilities).filter(([, v]) => v).map(([k]) => k) : [];
    lines.push(...section(`channel ${info.address}`, [
      ...Object.entries(info).filter(([k]) => k !== "address" && k !== "closed" && k !== "codec"),
      ["capabilities", can.join(", ") || "none"],
    ], s));
  }
  if (report.stat !== null && report.stat !== undefined) {
    lines.push(...section("stat()", Object.entries(report.stat as Record<string, unknown>), s));
  }
  return lines;
}

/**
 * Runs `ipcbus stat`.
 *
 * @param args The arguments after `stat`.
 * @returns The exit code.
 */
export async function stat(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: "boolean" } }, "stat");
  const targets = parseTargets(positionals, "stat");
  const found = inventory();
  const reports: StatReport[] = [];
  const missing: string[] = [];
  for (const target of targets) {
    const object = resolveTarget(target, found);
    if (!object) {
      missing.push(target.text);
      continue;
    }
    const { channel, stat } = await look(object);
    // What only the open channel knows (a POSIX queue's message count).
    const counted = (stat as { messages?: unknown } | null)?.messages;
    if (object.messages === null && typeof counted === "number") object.messages = counted;
    reports.push({ object, channel, stat, semaphores: semaphoreValues(object) });
  }
  if (values.json) {
    printJson(targets.length === 1 ? reports[0] ?? null : reports);
  } else {
    const s = style();
    reports.forEach((report, i) => printLines([...(i ? [""] : []), ...render(report, s)]));
  }
  if (missing.length) throw new Failure(`no such object: ${missing.join(", ")}`);
  return 0;
}
