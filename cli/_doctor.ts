/**
 * `ipcbus doctor`: the kernel and process limits that bite IPC users, with
 * what each allows and how to raise it, read from `/proc`; then an
 * end-to-end self test of every registered transport, each removing what it
 * created.
 *
 * @module
 */

import { bytes, type Channel, ChannelClosedError, open, Presence, registeredSchemes, spawn } from "../mod.ts";
import { parse } from "./_args.ts";
import {
  describeError,
  eprintln,
  humanBytes,
  printJson,
  printLines,
  type Style,
  style,
  UsageError,
} from "./_output.ts";
import {
  devShmMount,
  effectiveUid,
  listDir,
  memTotal,
  mqueueMount,
  parseMountSize,
  readNumber,
  readNumbers,
  readText,
  resourceLimit,
  sysvQueues,
  sysvSegments,
  sysvSemaphores,
  userName,
} from "./_system.ts";

/** Help of `ipcbus doctor`. */
export const DOCTOR_HELP = `usage: ipcbus doctor [--limits-only] [--json]

Show the limits that bite IPC users (message sizes, queue counts, the
per-user POSIX queue budget, semaphore and shared memory limits, the size of
/dev/shm, pipe buffers, open files), what each allows and how to raise it;
then check that every transport works here end to end (each check creates
a private object and removes it).

  --limits-only   skip the end-to-end checks
  --json          print {system, limits, warnings, checks, ok} as JSON

Exit code 1 when a check fails (limits alone never fail).`;

/** One limit, as shown. */
export interface LimitReport {
  /** Section, such as "System V message queues (sysv-mq:)". */
  group: string;
  /** The sysctl or rlimit name. */
  name: string;
  /** The value in force (null when unreadable). */
  value: number | string | null;
  /** The value for people. */
  shown: string;
  /** Current use, when countable. */
  inUse: string | null;
  /** What it allows. */
  allows: string;
  /** How to raise it. */
  raise: string;
}

/** One end-to-end check. */
export interface CheckReport {
  /** The scheme checked (`fifo:`), or `presence`. */
  name: string;
  /** `ok`, `fail` or `skip`. */
  status: "ok" | "fail" | "skip";
  /** What was done or what went wrong. */
  detail: string;
  /** Duration in ms. */
  ms: number;
}

const SYSCTL = "sysctl -w";
const PERSIST = "(root; persist it in /etc/sysctl.d/*.conf)";

function num(value: number | null, unit = ""): string {
  if (value === null) return "unreadable";
  if (unit === "B") return value >= 1024 ? `${humanBytes(value)} (${value})` : `${value} B`;
  return `${value.toLocaleString("en-US")}${unit ? ` ${unit}` : ""}`;
}

/** Reads the limits and collects warnings. */
function limits(): { limits: LimitReport[]; warnings: string[] } {
  const out: LimitReport[] = [];
  const warnings: string[] = [];
  const add = (
    group: string,
    name: string,
    value: number | string | null,
    shown: string,
    allows: string,
    raise: string,
    inUse: string | null = null,
  ) => out.push({ group, name, value, shown, inUse, allows, raise });
  const usage = (used: number, limit: number | null, what: string) => {
    if (limit !== null && limit > 0 && used / limit >= 0.8) {
      warnings.push(`${what}: ${used} of ${limit} in use (${Math.round((used / limit) * 100)}%)`);
    }
    return `${used} in use`;
  };

  // System V message queues.
  let g = "System V message queues (sysv-mq:)";
  const msgmax = readNumber("/proc/sys/kernel/msgmax");
  const msgmnb = readNumber("/proc/sys/kernel/msgmnb");
  const msgmni = readNumber("/proc/sys/kernel/msgmni");
  const queues = sysvQueues();
  add(
    g,
    "kernel.msgmax",
    msgmax,
    num(msgmax, "B"),
    "largest message a sysv-mq: channel carries",
    `${SYSCTL} kernel.msgmax=BYTES ${PERSIST}`,
  );
  add(
    g,
    "kernel.msgmnb",
    msgmnb,
    num(msgmnb, "B"),
    "bytes a new queue holds (msg_qbytes): senders wait when it is full, and a message must fit it",
    `${SYSCTL} kernel.msgmnb=BYTES ${PERSIST}; a queue's owner may raise its own msg_qbytes up to it (root beyond)`,
  );
  add(
    g,
    "kernel.msgmni",
    msgmni,
    num(msgmni),
    "queues system-wide",
    `${SYSCTL} kernel.msgmni=N ${PERSIST}`,
    queues ? usage(queues.length, msgmni, "System V message queues (kernel.msgmni)") : null,
  );

  // POSIX message queues.
  g = "POSIX message queues (posix-mq:)";
  const mqMax = readNumber("/proc/sys/fs/mqueue/msg_max");
  const mqSizeMax = readNumber("/proc/sys/fs/mqueue/msgsize_max");
  const mqQueuesMax = readNumber("/proc/sys/fs/mqueue/queues_max");
  const mqDefault = readNumber("/proc/sys/fs/mqueue/msg_default");
  const mqSizeDefault = readNumber("/proc/sys/fs/mqueue/msgsize_default");
  const rlimitMq = resourceLimit("Max msgqueue size");
  const mount = mqueueMount();
  const mqCount = mount === "/dev/mqueue" ? (listDir(mount)?.filter((r) => r.isFile).length ?? null) : null;
  add(
    g,
    "fs.mqueue.msg_max",
    mqMax,
    num(mqMax),
    "most messages per queue an unprivileged creator may ask for (root: up to 65,536)",
    `${SYSCTL} fs.mqueue.msg_max=N ${PERSIST}`,
  );
  add(
    g,
    "fs.mqueue.msgsize_max",
    mqSizeMax,
    num(mqSizeMax, "B"),
    "largest message size an unprivileged creator may ask for (root: up to 16 MiB)",
    `${SYSCTL} fs.mqueue.msgsize_max=BYTES ${PERSIST}`,
  );
  add(
    g,
    "fs.mqueue.queues_max",
    mqQueuesMax,
    num(mqQueuesMax),
    "queues system-wide (for unprivileged creators)",
    `${SYSCTL} fs.mqueue.queues_max=N ${PERSIST}`,
    mqCount === null ? null : usage(mqCount, mqQueuesMax, "POSIX message queues (fs.mqueue.queues_max)"),
  );
  add(
    g,
    "fs.mqueue.msg_default, msgsize_default",
    mqDefault === null || mqSizeDefault === null ? null : `${mqDefault} x ${mqSizeDefault}`,
    mqDefault === null || mqSizeDefault === null
      ? "unreadable"
      : `${mqDefault} messages of ${humanBytes(mqSizeDefault)}`,
    "size of a queue created without maxMessages / messageSize (-o maxMessages=N -o messageSize=B)",
    `${SYSCTL} fs.mqueue.msg_default=N fs.mqueue.msgsize_default=BYTES ${PERSIST}`,
  );
  const perQueue = mqDefault !== null && mqSizeDefault !== null ? mqDefault * (mqSizeDefault + 96) : null;
  const fit = rlimitMq?.soft != null && perQueue ? Math.floor(rlimitMq.soft / perQueue) : null;
  add(
    g,
    "RLIMIT_MSGQUEUE",
    rlimitMq?.soft ?? null,
    rlimitMq === null
      ? "unreadable"
      : `${rlimitMq.soft === null ? "unlimited" : humanBytes(rlimitMq.soft)} (hard ${
        rlimitMq.hard === null ? "unlimited" : humanBytes(rlimitMq.hard)
      })`,
    "bytes of POSIX queues one user may have: each costs maxMessages x (messageSize + ~96 B)" +
      (fit !== null ? `; about ${fit} default-sized queues` : ""),
    `ulimit -q BYTES in the shell that starts the programs (up to the hard limit); root raises the hard ` +
      `limit in /etc/security/limits.conf ("msgqueue") or with LimitMSGQUEUE= in a systemd unit`,
  );
  if (fit !== null && fit < 16) {
    warnings.push(
      `RLIMIT_MSGQUEUE (${
        humanBytes(rlimitMq!.soft!)
      }) fits only about ${fit} POSIX queues of the default size per ` +
        "user: create smaller queues (-o maxMessages=N -o messageSize=B) or raise it (ulimit -q)",
    );
  }
  add(
    g,
    "mqueue file system",
    mount,
    mount ? `mounted on ${mount}` : "not mounted",
    "lets ipcbus ls list POSIX queues (queues work without it)",
    "mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue (root)",
  );
  if (!mount) warnings.push("the mqueue file system is not mounted: ipcbus ls cannot list POSIX queues");

  // System V semaphores.
  g = "System V semaphores";
  const sem = readNumbers("/proc/sys/kernel/sem");
  const sets = sysvSemaphores();
  const [semmsl, semmns, semopm, semmni] = sem ?? [null, null, null, null];
  const semRaise = (which: string) =>
    `${SYSCTL} kernel.sem="SEMMSL SEMMNS SEMOPM SEMMNI" (all four; raise ${which}) ${PERSIST}`;
  add(g, "kernel.sem SEMMSL", semmsl, num(semmsl), "semaphores per set", semRaise("SEMMSL"));
  add(
    g,
    "kernel.sem SEMMNS",
    semmns,
    num(semmns),
    "semaphores system-wide",
    semRaise("SEMMNS"),
    sets ? usage(sets.reduce((n, s) => n + s.count, 0), semmns, "System V semaphores (SEMMNS)") : null,
  );
  add(g, "kernel.sem SEMOPM", semopm, num(semopm), "operations in one atomic op() call", semRaise("SEMOPM"));
  add(
    g,
    "kernel.sem SEMMNI",
    semmni,
    num(semmni),
    "semaphore sets system-wide",
    semRaise("SEMMNI"),
    sets ? usage(sets.length, semmni, "System V semaphore sets (SEMMNI)") : null,
  );

  // System V shared memory.
  g = "System V shared memory";
  const shmmax = readNumber("/proc/sys/kernel/shmmax");
  const shmall = readNumber("/proc/sys/kernel/shmall");
  const shmmni = readNumber("/proc/sys/kernel/shmmni");
  const segments = sysvSegments();
  const huge = (v: number | null, unit: string) => (v !== null && v >= 2 ** 62 ? "unlimited" : num(v, unit));
  add(
    g,
    "kernel.shmmax",
    shmmax,
    huge(shmmax, "B"),
    "largest segment",
    `${SYSCTL} kernel.shmmax=BYTES ${PERSIST}`,
  );
  add(
    g,
    "kernel.shmall",
    shmall,
    huge(shmall, "pages"),
    "pages of all segments together",
    `${SYSCTL} kernel.shmall=PAGES ${PERSIST}`,
  );
  add(
    g,
    "kernel.shmmni",
    shmmni,
    num(shmmni),
    "segments system-wide",
    `${SYSCTL} kernel.shmmni=N ${PERSIST}`,
    segments ? usage(segments.length, shmmni, "System V segments (kernel.shmmni)") : null,
  );

  // /dev/shm.
  g = "POSIX shared memory (shm:, posix-shm, named semaphores, presence records)";
  const shmMount = devShmMount();
  const entries = listDir("/dev/shm");
  const used = entries?.reduce((n, r) => n + r.allocated, 0) ?? null;
  const sizeOption = shmMount?.options.get("size");
  const size = shmMount?.type === "tmpfs"
    ? (sizeOption ? parseMountSize(sizeOption, memTotal()) : (memTotal() ?? 0) / 2 || null)
    : null;
  add(
    g,
    "/dev/shm size",
    size,
    shmMount === null
      ? "not a mount point"
      : size === null
      ? `${shmMount.type}, size unknown`
      : `${humanBytes(size)}${used !== null ? `, ${humanBytes(used)} in objects (apparent sizes)` : ""}`,
    "room for every shm: ring and POSIX shared memory object; when full, creating one fails (ENOSPC) and " +
      "touching a page of a sparse one kills the process (SIGBUS)",
    "mount -o remount,size=2G /dev/shm (root; persist it in /etc/fstab; in Docker: --shm-size)",
    entries ? `${entries.length} objects` : null,
  );
  if (size !== null && used !== null && used / size >= 0.8) {
    warnings.push(
      `/dev/shm is ${Math.round((used / size) * 100)}% full (${humanBytes(used)} of ${humanBytes(size)})`,
    );
  }
  if (shmMount === null) {
    warnings.push("/dev/shm is not mounted: shm: rings, named semaphores and presence do not work");
  }

  // Pipes.
  g = "Pipes and FIFOs (pipe:, fifo:)";
  const pipeMax = readNumber("/proc/sys/fs/pipe-max-size");
  const pagesSoft = readNumber("/proc/sys/fs/pipe-user-pages-soft");
  const pagesHard = readNumber("/proc/sys/fs/pipe-user-pages-hard");
  add(
    g,
    "PIPE_BUF",
    4096,
    "4 KiB (4096), fixed",
    'largest atomic write: a fifo: with writers "many" carries payloads up to 4084 bytes',
    'fixed by Linux; use writers "locked" or "single" for larger fifo: messages',
  );
  add(
    g,
    "fs.pipe-max-size",
    pipeMax,
    num(pipeMax, "B"),
    "largest pipe buffer an unprivileged process may set (F_SETPIPE_SZ)",
    `${SYSCTL} fs.pipe-max-size=BYTES ${PERSIST}`,
  );
  add(
    g,
    "fs.pipe-user-pages-soft",
    pagesSoft,
    pagesSoft === 0 ? "unlimited" : num(pagesSoft, "pages"),
    "once one user's pipes hold this many pages, new pipes get 1 page (4 KiB) instead of 16 (64 KiB): fewer bytes in flight",
    `${SYSCTL} fs.pipe-user-pages-soft=PAGES ${PERSIST}`,
  );
  add(
    g,
    "fs.pipe-user-pages-hard",
    pagesHard,
    pagesHard === 0 ? "unlimited" : num(pagesHard, "pages"),
    "once one user's pipes hold this many pages, new pipes cannot be made",
    `${SYSCTL} fs.pipe-user-pages-hard=PAGES ${PERSIST}`,
  );

  // Descriptors.
  g = "Descriptors";
  const nofile = resourceLimit("Max open files");
  add(
    g,
    "RLIMIT_NOFILE",
    nofile?.soft ?? null,
    nofile === null
      ? "unreadable"
      : `${num(nofile.soft)} (hard ${nofile.hard === null ? "unlimited" : num(nofile.hard)})`,
    "open files per process: each open channel uses one or two descriptors, plus one for its presence record",
    "ulimit -n N (up to the hard limit); root raises the hard limit in /etc/security/limits.conf (nofile) or LimitNOFILE=",
  );
  return { limits: out, warnings };
}

// ---- end-to-end checks ------------------------------------------------------

const CHECK_TIMEOUT_MS = 10_000;

/** Opens `address` twice, sends one message one way, checks it, unlinks. */
async function roundTrip(
  create: string,
  options: Record<string, unknown>,
  presenceOf: (info: Record<string, unknown>) => string,
): Promise<string> {
  const signal = AbortSignal.timeout(CHECK_TIMEOUT_MS);
  const opened: Channel<Uint8Array>[] = [];
  let first: Channel<Uint8Array> | undefined;
  let unlinked = false;
  try {
    first = await open<Uint8Array>(create, { ...options, create: true, exclusive: true, codec: bytes });
    opened.push(first);
    const address = first.info.address;
    const second = await open<Uint8Array>(address, { ...options, codec: bytes });
    opened.push(second);
    const recorded = presenceOf(first.info as Record<string, unknown>);
    const state = Presence.probe(recorded);
    if (state !== "live") {
      throw new Error(`presence of ${recorded} is ${state} while open (expected live)`);
    }
    const payload = crypto.getRandomValues(new Uint8Array(64));
    const type = first.info.capabilities.types ? 7 : 1;
    const received = first.receiveMessage({ signal });
    await second.send(payload, { type, signal });
    const message = await received;
    if (
      message.type !== type || message.value.length !== payload.length ||
      message.value.some((b, i) => b !== payload[i])
    ) {
      throw new Error("the message received differs from the one sent");
    }
    await first.unlink();
    unlinked = true;
    for (const channel of opened) channel.close();
    const after = Presence.probe(recorded);
    if (after !== "unknown") throw new Error(`presence record ${recorded} left after unlink (${after})`);
    return "sent and received a 64-byte message; presence live while open; removed";
  } catch (error) {
    if (first && !unlinked) await first.unlink().catch(() => {});
    throw error;
  } finally {
    for (const channel of opened) channel.close();
  }
}

/** The command that runs this CLI again (for the `pipe:` check). */
function selfCommand(): { command: string; args: string[] } {
  if (Deno.build.standalone) return { command: Deno.execPath(), args: [] };
  return {
    command: Deno.execPath(),
    args: ["run", "--quiet", "--no-prompt", "--allow-ffi", new URL("./ipcbus.ts", import.meta.url).href],
  };
}

async function pipeCheck(): Promise<string | null> {
  const self = selfCommand();
  if (Deno.permissions.querySync({ name: "run", command: self.command }).state !== "granted") return null;
  const signal = AbortSignal.timeout(CHECK_TIMEOUT_MS);
  const { channel, child } = spawn<Uint8Array>(self.command, {
    args: [...self.args, "__pipe-echo"],
    codec: bytes,
  });
  try {
    const payload = crypto.getRandomValues(new Uint8Array(64));
    await channel.send(payload, { type: 7, signal });
    const echo = await channel.receiveMessage({ signal });
    if (echo.type !== 7 || echo.value.some((b, i) => b !== payload[i])) throw new Error("the echo differs");
    channel.close();
    const status = await child.status;
    if (!status.success) throw new Error(`the child exited with ${JSON.stringify(status)}`);
    return "a child started with spawn() echoed a 64-byte message and exited";
  } finally {
    channel.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
  }
}

/**
 * The hidden `__pipe-echo` command: echoes every message from `pipe:parent`
 * until the parent closes its end.
 *
 * @returns The exit code.
 */
export async function pipeEcho(): Promise<number> {
  using parent = await open<Uint8Array>("pipe:parent", { codec: bytes });
  for (;;) {
    let message;
    try {
      message = await parent.receiveMessage();
    } catch (error) {
      if (error instanceof ChannelClosedError) return 0;
      throw error;
    }
    await parent.send(message.value, { type: message.type });
  }
}

async function checks(): Promise<CheckReport[]> {
  const results: CheckReport[] = [];
  const schemes = registeredSchemes();
  const tag = `ipcbus-doctor-${crypto.randomUUID().slice(0, 8)}`;
  let dir: string | null = null;
  const tempDir = () => dir ??= Deno.makeTempDirSync({ prefix: `${tag}-` });
  const run = async (name: string, body: () => Promise<string | null>, skip: string) => {
    const started = performance.now();
    try {
      const detail = await body();
      results.push({
        name,
        status: detail === null ? "skip" : "ok",
        detail: detail ?? skip,
        ms: performance.now() - started,
      });
    } catch (error) {
      results.push({ name, status: "fail", detail: describeError(error), ms: performance.now() - started });
    }
  };
  try {
    for (const scheme of schemes) {
      const name = `${scheme}:`;
      switch (scheme) {
        case "pipe":
          await run(name, pipeCheck, "needs --allow-run to start a child (deno task cli grants it)");
          break;
        case "fifo":
          await run(
            name,
            () => roundTrip(`fifo:${tempDir()}/check.fifo`, {}, (i) => String(i.address)),
            "",
          );
          break;
        case "sysv-mq":
          await run(name, () => roundTrip("sysv-mq:private", {}, (i) => `sysv-mq:id/${i.id}`), "");
          break;
        case "posix-mq":
          await run(
            name,
            () =>
              roundTrip(
                `posix-mq:/${tag}`,
                { maxMessages: 1, messageSize: 64 },
                (i) => String(i.address),
              ),
            "",
          );
          break;
        case "shm":
          await run(name, () => roundTrip(`shm:/${tag}`, {}, (i) => String(i.address)), "");
          break;
        case "file":
          await run(
            name,
            () => roundTrip(`file:${tempDir()}/check.log`, {}, (i) => String(i.address)),
            "",
          );
          break;
        default:
          results.push({
            name,
            status: "skip",
            detail: "no self test for this third-party transport",
            ms: 0,
          });
      }
    }
  } finally {
    if (dir !== null) Deno.removeSync(dir, { recursive: true });
  }
  return results;
}

function renderLimits(list: readonly LimitReport[], s: Style): string[] {
  const lines: string[] = [];
  const nameWidth = Math.max(...list.map((l) => l.name.length));
  let group = "";
  for (const limit of list) {
    if (limit.group !== group) {
      group = limit.group;
      lines.push("", s.bold(group));
    }
    const use = limit.inUse ? s.dim(` (${limit.inUse})`) : "";
    lines.push(`  ${limit.name.padEnd(nameWidth)}  ${s.bold(limit.shown)}${use}`);
    lines.push(`      ${limit.allows}`);
    lines.push(`      ${s.dim(`raise: ${limit.raise}`)}`);
  }
  return lines;
}

/**
 * Runs `ipcbus doctor`.
 *
 * @param args The arguments after `doctor`.
 * @returns The exit code: 1 when a check failed.
 */
export async function doctor(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    "limits-only": { type: "boolean" },
    json: { type: "boolean" },
  }, "doctor");
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`, "doctor");
  const uid = effectiveUid();
  const system = {
    kernel: readText("/proc/sys/kernel/osrelease")?.trim() ?? "unknown",
    arch: Deno.build.arch,
    deno: Deno.version.deno,
    uid,
    user: uid >= 0 ? userName(uid) : "unknown",
    transports: registeredSchemes(),
  };
  const found = limits();
  const s = style();
  if (!values.json) {
    printLines([
      s.bold(
        `ipcbus doctor: Linux ${system.kernel} ${system.arch}, Deno ${system.deno}, running as ${system.user}`,
      ),
      ...renderLimits(found.limits, s),
    ]);
    if (found.warnings.length) {
      printLines(["", s.bold("Warnings"), ...found.warnings.map((w) => `  ${s.yellow("!")} ${w}`)]);
    }
  }
  const results = values["limits-only"] ? [] : await checks();
  const failed = results.filter((r) => r.status === "fail");
  if (values.json) {
    printJson({
      system,
      limits: found.limits,
      warnings: found.warnings,
      checks: results,
      ok: failed.length === 0,
    });
  } else if (results.length) {
    const width = Math.max(...results.map((r) => r.name.length));
    printLines([
      "",
      s.bold("End-to-end checks"),
      ...results.map((r) => {
        const mark = r.status === "ok"
          ? s.green("ok  ")
          : r.status === "fail"
          ? s.red("FAIL")
          : s.dim("skip");
        const time = r.status === "skip" ? "" : s.dim(` (${r.ms.toFixed(1)} ms)`);
        return `  ${mark}  ${r.name.padEnd(width)}  ${r.detail}${time}`;
      }),
      "",
      failed.length
        ? s.red(`${failed.length} of ${results.length} checks failed`)
        : `${results.filter((r) => r.status === "ok").length} checks passed` +
          (results.some((r) => r.status === "skip")
            ? `, ${results.filter((r) => r.status === "skip").length} skipped`
            : ""),
    ]);
  }
  if (failed.length && values.json) eprintln(`${failed.length} check(s) failed`);
  return failed.length ? 1 : 0;
}
