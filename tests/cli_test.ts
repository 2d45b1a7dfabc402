// The `ipcbus` command, run as a subprocess: usage errors, ls, stat, rm, gc,
// doctor and bench charts. send/recv are in cli_send_recv_test.ts.

import assert from "node:assert/strict";
import {
  type Channel,
  ftokKey,
  listIpcDirectory,
  NotFoundError,
  open,
  PosixMessageQueue,
  Presence,
  readProcFile,
  registeredSchemes,
  SysvMessageQueue,
  SysvSemaphoreSet,
  SysvSharedMemory,
} from "../mod.ts";
import { ipcbus, IpcbusChild } from "./_cli.ts";
import { euid, hasSetpriv, RUN, TempDir } from "./_helpers.ts";
import config from "../deno.json" with { type: "json" };

interface ListedObject {
  kind: string;
  name: string;
  id: number | null;
  ref: string;
  ipcbus: boolean;
  inUse: string;
  exists: boolean | null;
  messages: number | null;
}

/** The id of a channel's System V queue. */
function idOf(channel: Channel<unknown>): number {
  return channel.info.id as number;
}

async function list(...args: string[]): Promise<ListedObject[]> {
  const result = await ipcbus(["ls", "--json", ...args]);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { objects: ListedObject[] }).objects;
}

/** Removes a System V queue by id if it is still there. */
async function dropQueue(id: number): Promise<void> {
  let queue;
  try {
    queue = SysvMessageQueue.open(`id/${id}`);
    await queue.unlink();
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  } finally {
    queue?.close();
  }
}

/** Removes an object with `ipcbus rm` (gone already is fine). */
async function removeWithCommand(address: string): Promise<void> {
  const removed = await ipcbus(["rm", address, "--yes"]);
  if (removed.code !== 0 && !/no such object/.test(removed.stderr)) throw new Error(removed.stderr);
}

/** Whether a System V queue exists (read from /proc: opening it would record presence). */
function queueExists(id: number): boolean {
  const table = readProcFile("/proc/sysvipc/msg") ?? "";
  return table.split("\n").slice(1).some((line) => line.trim().split(/\s+/)[1] === String(id));
}

Deno.test("ipcbus: bad arguments give a usage error, exit code 2 and a --help hint", async () => {
  const cases: string[][] = [
    [],
    ["frobnicate"],
    ["ls", "--bogus"],
    ["ls", "--kind", "sysv-xx"],
    ["ls", "--owner", `no-such-user-${RUN}`],
    ["ls", "extra"],
    ["stat"],
    ["stat", "nope:/x"],
    ["rm"],
    ["rm", "sysv-mq:private", "--yes"],
    ["rm", "sysv-mq"],
    ["rm", "posix-mq:relative"],
    ["gc", "--kind", "bogus"],
    ["send", "posix-mq:/x"],
    ["send", "posix-mq:/x", "{not json"],
    ["send", `nope-${RUN}:/x`, "1"],
    ["send", "posix-mq:/x", "--type", "0", "1"],
    ["recv"],
    ["recv", "a", "b"],
    ["recv", "posix-mq:/x", "--count", "0"],
    ["recv", "posix-mq:/x", "--follow", "--count", "2"],
    ["recv", "posix-mq:/x", "--except"],
    ["recv", "posix-mq:/x", "--mode", "999"],
    ["doctor", "extra"],
    ["bench", "--from", "x.json", "--quick"],
    ["bench", "--runs", "zero"],
  ];
  for (const args of cases) {
    const result = await ipcbus(args);
    assert.equal(result.code, 2, `ipcbus ${args.join(" ")}: code ${result.code}\n${result.stderr}`);
    assert.equal(result.stdout === "" || args.length === 0, true, `ipcbus ${args.join(" ")} wrote to stdout`);
    if (args.length) {
      assert.match(result.stderr, /--help" for usage/, `ipcbus ${args.join(" ")}: ${result.stderr}`);
    }
  }
});

Deno.test("ipcbus: --help of the command and of every subcommand exits 0", async () => {
  for (const command of ["ls", "stat", "rm", "gc", "doctor", "send", "recv", "bench"]) {
    const result = await ipcbus([command, "--help"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^usage: ipcbus ${command}`));
    const viaHelp = await ipcbus(["help", command]);
    assert.equal(viaHelp.stdout, result.stdout);
  }
  const top = await ipcbus(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /exit codes: 0 success, 1 failure, 2 usage error/);
  assert.equal((await ipcbus(["--version"])).code, 0);
});

Deno.test("ipcbus --version: prints deno.json's version (its one source)", async () => {
  const result = await ipcbus(["--version"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(typeof config.version, "string");
  assert.match(result.stdout, new RegExp(`^ipcbus ${config.version.replaceAll(".", "\\.")} \\(Deno `));
  assert.equal((await ipcbus(["-V"])).stdout, result.stdout);
  const help = await ipcbus(["--help"]);
  assert.match(help.stdout, new RegExp(`^ipcbus ${config.version.replaceAll(".", "\\.")}:`));
});

Deno.test("ipcbus ls: shows a queue a test made (live, then stale) and not after rm", async () => {
  const queue = await open<string>("sysv-mq:private", { mode: 0o640 });
  const id = idOf(queue);
  try {
    await queue.send("one", { type: 2 });
    let [row] = (await list("--kind", "sysv-mq")).filter((o) => o.id === id);
    assert.ok(row, `queue ${id} not listed`);
    assert.equal(row.ipcbus, true);
    assert.equal(row.inUse, "live");
    assert.equal(row.messages, 1);
    assert.equal(row.ref, `sysv-mq:id/${id}`);
    queue.close();
    [row] = (await list("--kind", "sysv-mq")).filter((o) => o.id === id);
    assert.equal(row.inUse, "stale");

    // The table, without colour (stdout is not a terminal).
    const table = await ipcbus(["ls", "--kind", "sysv-mq"]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^KIND +NAME\/KEY +ID +OWNER +MODE +SIZE +MSGS +ATTACHED +IPCBUS +IN USE/);
    assert.match(table.stdout, new RegExp(`sysv-mq +private +${id} +\\S+ +0640 .* yes +stale`));
    assert.equal(table.stdout.includes("\x1b["), false);

    const removed = await ipcbus(["rm", "sysv-mq", String(id), "--yes"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, new RegExp(`removed sysv-mq:id/${id}`));
    assert.equal((await list("--kind", "sysv-mq")).some((o) => o.id === id), false);
    assert.equal(Presence.probe(`sysv-mq:id/${id}`), "unknown");
    assert.equal(queueExists(id), false);

    const again = await ipcbus(["rm", `sysv-mq:id/${id}`, "--yes"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no such object/);
  } finally {
    queue.close();
    await dropQueue(id);
  }
});

Deno.test("ipcbus ls: filters by kind and owner, and lists FIFOs from their records", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("listed.fifo");
  const fifo = await open(`fifo:${path}`, { create: true });
  try {
    const mine = await list("--kind", "fifo", "--owner", String(euid()));
    const row = mine.find((o) => o.name === path);
    assert.ok(row, "the FIFO is not listed");
    assert.equal(row.inUse, "live");
    assert.equal(row.kind, "fifo");
    assert.equal(mine.every((o) => o.kind === "fifo"), true);
    assert.equal((await list("--owner", "65534")).some((o) => o.name === path), false);
  } finally {
    await fifo.unlink();
    fifo.close();
  }
});

Deno.test('ipcbus ls/stat: a file: log kept in /dev/shm shows its real state, not "cannot tell"', async () => {
  // Deno's own lstat refuses /dev paths without --allow-all; the command looks through libc.
  const base = `ipcbus-cli-${RUN}-${crypto.randomUUID().slice(0, 8)}.bus`;
  const path = `/dev/shm/${base}`;
  const address = `file:${path}`;
  const log = await open<string>(address, { create: true, exclusive: true, mode: 0o640 });
  try {
    await log.send("kept in memory");
    log.close();
    const row = (await list("--kind", "file")).find((o) => o.name === path) as
      | (ListedObject & { mode: number | null; size: number | null; details: Record<string, unknown> })
      | undefined;
    assert.ok(row, "the log is not listed");
    assert.equal(row.exists, true, `ls: ${JSON.stringify(row.details)}`);
    assert.equal(row.mode, 0o640);
    assert.ok(row.size !== null && row.size > 0, "ls shows no size");
    assert.deepEqual([row.ipcbus, row.inUse], [true, "stale"]);
    assert.equal(row.details.note, undefined);

    const stat = await ipcbus(["stat", address, "--json"]);
    assert.equal(stat.code, 0, stat.stderr);
    const report = JSON.parse(stat.stdout) as { object: ListedObject & { mode: number; size: number } };
    assert.equal(report.object.exists, true);
    assert.equal(report.object.mode, 0o640);
    assert.equal(report.object.size, row.size);
    const text = await ipcbus(["stat", address]);
    assert.match(text.stdout, /exists +yes/);
    assert.match(text.stdout, /mode +0640/);
    assert.doesNotMatch(text.stdout, /cannot tell|cannot look at/);
  } finally {
    log.close();
    await removeWithCommand(address);
  }
  assert.equal((listIpcDirectory("/dev/shm") ?? []).some((e) => e.name === base), false, "the log was left");
  assert.equal(Presence.probe(address), "unknown", "the log's presence record was left");
  const gone = await ipcbus(["stat", address]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /no such object/);
});

Deno.test("ipcbus rm: without --yes and without a terminal it refuses (exit 2) and removes nothing", async () => {
  const queue = await open("sysv-mq:private");
  const id = idOf(queue);
  queue.close();
  try {
    const refused = await ipcbus(["rm", `sysv-mq:id/${id}`]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /pass --yes/);
    assert.equal(queueExists(id), true);
  } finally {
    await dropQueue(id);
  }
});

Deno.test({
  name: "ipcbus rm: a user who may not remove an object gets exit 1 and leaves no presence record",
  ignore: !hasSetpriv || euid() !== 0,
}, async () => {
  const queue = await open("sysv-mq:private", { mode: 0o644 });
  const id = idOf(queue);
  queue.close();
  Presence.forget(`sysv-mq:id/${id}`); // not an ipcbus object, as far as presence knows
  try {
    const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    const result = await ipcbus(["rm", `sysv-mq:id/${id}`, "--yes"], undefined, undefined, nobody);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /only the owner, the creator or root may remove/);
    assert.equal(queueExists(id), true);
    assert.equal(Presence.probe(`sysv-mq:id/${id}`), "unknown", "the failed rm left a presence record");
    const stat = await ipcbus(["stat", `sysv-mq:id/${id}`], undefined, undefined, nobody);
    assert.equal(stat.code, 0, stat.stderr);
    assert.equal(Presence.probe(`sysv-mq:id/${id}`), "unknown", "stat left a presence record");
  } finally {
    await dropQueue(id);
  }
});

Deno.test("ipcbus rm: KIND ID forms for semaphore sets and segments, and a key", async () => {
  const set = SysvSemaphoreSet.open({ private: true, count: 2 });
  const segment = SysvSharedMemory.open({ private: true, size: 4096 });
  const key = 0x10000000 + Math.floor(Math.random() * 0x0fffffff);
  const keyed = SysvMessageQueue.open(key, { create: true, exclusive: true });
  try {
    segment.detach();
    const result = await ipcbus([
      "rm",
      "sysv-sem",
      String(set.id),
      "sysv-shm",
      String(segment.id),
      `sysv-mq:0x${key.toString(16)}`,
      "--yes",
      "--json",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const outcomes = JSON.parse(result.stdout) as { ref: string; removed: boolean }[];
    assert.deepEqual(outcomes.map((o) => o.removed), [true, true, true]);
    assert.throws(() => SysvSemaphoreSet.open({ id: set.id, initTimeout: 0 }), NotFoundError);
    assert.equal(queueExists(keyed.info.id), false);
    const listed = await list("--kind", "sysv-sem,sysv-shm");
    assert.equal(listed.some((o) => o.id === set.id || o.id === segment.id), false);
  } finally {
    try {
      set.remove();
    } catch { /* removed by the test */ }
    try {
      SysvSharedMemory.open({ id: segment.id }).remove();
    } catch { /* removed by the test */ }
    keyed.close();
    await dropQueue(keyed.info.id);
  }
});

Deno.test({
  name: "ipcbus rm: a POSIX queue by name (mq_unlink, never opened) and a System V queue by ftok path",
  ignore: !registeredSchemes().includes("posix-mq"),
}, async () => {
  await using dir = await TempDir.make();
  const path = dir.file("keyed");
  await Deno.writeTextFile(path, "");
  const key = ftokKey(path, 7);
  const keyed = SysvMessageQueue.open(key, { create: true, exclusive: true });
  const name = `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
  PosixMessageQueue.open(name, { create: true, exclusive: true, mode: 0o200 }).close();
  try {
    const result = await ipcbus(["rm", `posix-mq:${name}`, `sysv-mq:${path}?proj=7`, "--yes", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const outcomes = JSON.parse(result.stdout) as { removed: boolean }[];
    assert.deepEqual(outcomes.map((o) => o.removed), [true, true]);
    assert.throws(() => PosixMessageQueue.unlink(name), NotFoundError);
    assert.equal(queueExists(keyed.info.id), false);
  } finally {
    try {
      PosixMessageQueue.unlink(name);
    } catch { /* removed by the test */ }
    keyed.close();
    await dropQueue(keyed.info.id);
  }
});

Deno.test("ipcbus stat: reports the channel and its stat, and leaves no presence record behind", async () => {
  const queue = await open<string>("sysv-mq:private");
  const id = idOf(queue);
  try {
    await queue.send("x", { type: 5 });
    queue.close();
    Presence.forget(`sysv-mq:id/${id}`); // as if a C program had made it: no record
    const result = await ipcbus(["stat", "sysv-mq", String(id), "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as {
      object: ListedObject;
      channel: { info: { scheme: string; maxMessageSize: number; maxMessageSizeReason: string } };
      stat: { messages: number; lastSendPid: number };
    };
    assert.equal(report.object.ipcbus, false);
    assert.equal(report.object.inUse, "unknown");
    assert.equal(report.channel.info.scheme, "sysv-mq");
    assert.ok(report.channel.info.maxMessageSize > 0);
    assert.match(report.channel.info.maxMessageSizeReason, /msgmax|msg_qbytes/);
    assert.equal(report.stat.messages, 1);
    assert.equal(report.stat.lastSendPid, Deno.pid);
    assert.equal(Presence.probe(`sysv-mq:id/${id}`), "unknown", "stat left a presence record");

    const text = await ipcbus(["stat", `sysv-mq:id/${id}`]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /made by ipcbus +no/);
    assert.match(text.stdout, /capabilities +types, typeFilter/);
    const missing = await ipcbus(["stat", "sysv-mq", "2147483000"]);
    assert.equal(missing.code, 1);
  } finally {
    await dropQueue(id);
  }
});

Deno.test("ipcbus gc: removes a stale object, keeps a live one and one without a record", async () => {
  const stale = await open("sysv-mq:private");
  const live = await open("sysv-mq:private");
  const unknown = await open("sysv-mq:private");
  const ids = [stale, live, unknown].map(idOf);
  const [staleId, liveId, unknownId] = ids;
  stale.close();
  unknown.close();
  Presence.forget(`sysv-mq:id/${unknownId}`);
  try {
    const targets = ids.map((id) => `sysv-mq:id/${id}`);
    const dry = await ipcbus(["gc", ...targets, "--dry-run", "--json"]);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = JSON.parse(dry.stdout) as { dryRun: boolean; results: { id: number; result: string }[] };
    assert.equal(planned.dryRun, true);
    assert.deepEqual(planned.results.map((r) => [r.id, r.result]), [
      [staleId, "would remove"],
      [liveId, "kept"],
      [unknownId, "skipped"],
    ]);
    assert.equal(queueExists(staleId), true, "--dry-run removed something");

    const run = await ipcbus(["gc", ...targets, "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const done = JSON.parse(run.stdout) as { results: { id: number; result: string; reason: string }[] };
    assert.deepEqual(done.results.map((r) => [r.id, r.result]), [
      [staleId, "removed"],
      [liveId, "kept"],
      [unknownId, "skipped"],
    ]);
    assert.equal(queueExists(staleId), false);
    assert.equal(Presence.probe(`sysv-mq:id/${staleId}`), "unknown");
    assert.equal(queueExists(liveId), true);
    assert.equal(queueExists(unknownId), true);
    assert.equal(Presence.probe(`sysv-mq:id/${liveId}`), "live");
  } finally {
    live.close();
    for (const id of ids) await dropQueue(id);
  }
});

Deno.test("ipcbus gc: keeps a queue another process holds (recv --follow) and collects it after Ctrl-C", async () => {
  const queue = await open("sysv-mq:private");
  const address = queue.info.address;
  const id = idOf(queue);
  queue.close();
  try {
    await using child = new IpcbusChild(["recv", address, "--follow"]);
    const sent = await ipcbus(["send", address, '{"ping":1}']);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(await child.line(), '{"ping":1}'); // the child has the queue open now

    const kept = await ipcbus(["gc", address, "--json"]);
    assert.equal(kept.code, 0, kept.stderr);
    assert.equal((JSON.parse(kept.stdout) as { results: { result: string }[] }).results[0].result, "kept");

    child.process.kill("SIGINT");
    const { status, stderr } = await child.finish();
    assert.equal(status.code, 0, `recv --follow after SIGINT: ${stderr}`);

    const collected = await ipcbus(["gc", address, "--json"]);
    assert.equal(
      (JSON.parse(collected.stdout) as { results: { result: string }[] }).results[0].result,
      "removed",
    );
    assert.equal(queueExists(id), false);
  } finally {
    await dropQueue(id);
  }
});

Deno.test("ipcbus gc: a record whose FIFO is gone is removed; a FIFO in use is kept", async () => {
  await using dir = await TempDir.make();
  const gone = dir.file("gone.fifo");
  const used = dir.file("used.fifo");
  let holder: Channel<unknown> | undefined;
  try {
    (await open(`fifo:${gone}`, { create: true })).close();
    await Deno.remove(gone);
    assert.equal(Presence.probe(`fifo:${gone}`), "stale");
    holder = await open(`fifo:${used}`, { create: true });
    const listed = (await list("--kind", "fifo")).find((o) => o.name === gone);
    assert.equal(listed?.exists, false);

    const result = await ipcbus(["gc", `fifo:${gone}`, `fifo:${used}`, "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const results = (JSON.parse(result.stdout) as { results: { result: string; reason: string }[] }).results;
    assert.equal(results[0].result, "removed");
    assert.match(results[0].reason, /gone/);
    assert.equal(results[1].result, "kept");
    assert.equal(Presence.probe(`fifo:${gone}`), "unknown");
    assert.ok(Deno.lstatSync(used).isFifo);
  } finally {
    if (holder) {
      await holder.unlink().catch(() => {});
      holder.close();
    }
  }
});

Deno.test({
  name: "ipcbus gc: a stale file: log is reported and never deleted; the record of a deleted one goes",
  ignore: !registeredSchemes().includes("file"),
}, async () => {
  await using dir = await TempDir.make();
  const path = dir.file("orders.bus");
  const log = await open(`file:${path}`, { create: true });
  await log.send({ n: 1 });
  log.close();
  assert.equal(Presence.probe(`file:${path}`), "stale");
  const result = await ipcbus(["gc", `file:${path}`, "--json"]);
  assert.equal(result.code, 0, result.stderr);
  const [outcome] = (JSON.parse(result.stdout) as { results: { result: string; reason: string }[] }).results;
  assert.equal(outcome.result, "kept");
  assert.match(outcome.reason, /durable/);
  assert.ok(Deno.statSync(path).isFile);
  // Deleted by hand: only its record is left, and that goes.
  await Deno.remove(path);
  const again = await ipcbus(["gc", `file:${path}`, "--json"]);
  assert.equal(again.code, 0, again.stderr);
  const [gone] = (JSON.parse(again.stdout) as { results: { result: string; reason: string }[] }).results;
  assert.equal(gone.result, "removed", gone.reason);
  assert.equal(Presence.probe(`file:${path}`), "unknown");
});

Deno.test("ipcbus doctor --json: limits, and every transport works here end to end", async () => {
  const result = await ipcbus(["doctor", "--json"]);
  const report = JSON.parse(result.stdout) as {
    limits: { name: string; value: unknown; raise: string }[];
    checks: { name: string; status: string; detail: string }[];
    ok: boolean;
  };
  assert.equal(result.code, 0, JSON.stringify(report.checks, null, 2) + result.stderr);
  assert.equal(report.ok, true);
  const names = report.limits.map((l) => l.name);
  for (
    const name of ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "RLIMIT_MSGQUEUE", "/dev/shm size"]
  ) {
    assert.ok(names.includes(name), `${name} missing`);
  }
  assert.equal(typeof report.limits.find((l) => l.name === "kernel.msgmax")?.value, "number");
  assert.ok(report.limits.every((l) => l.raise.length > 0));
  for (const scheme of ["fifo:", "sysv-mq:"]) {
    assert.equal(report.checks.find((c) => c.name === scheme)?.status, "ok", scheme);
  }
  assert.ok(report.checks.every((c) => c.status !== "fail"));
});

Deno.test("ipcbus bench --from: prints the table and writes an SVG chart", async () => {
  await using dir = await TempDir.make();
  const results = dir.file("results.json");
  const chart = dir.file("chart.svg");
  const target = (label: string, kind: string, p50: number, rate: number) => ({
    label,
    kind,
    status: "ok",
    metrics: {
      rt: { size: 64, median: { p50, p99: p50 * 10, mean: p50 } },
      tp64: { size: 64, median: { messagesPerSecond: rate, megabytesPerSecond: (rate * 64) / 1e6 } },
      tp64k: { size: 65536, median: { messagesPerSecond: rate / 100, megabytesPerSecond: 1234.5 } },
    },
  });
  await Deno.writeTextFile(
    results,
    JSON.stringify({
      schema: 1,
      date: "2026-01-02T03:04:05.000Z",
      host: { os: "Linux test", cpu: "CPU", cpus: 2, deno: "2.9.6" },
      plan: { reps: 5 },
      targets: {
        pipe: target("ipcbus pipe: <bytes>", "ipcbus", 6.5, 1_200_000),
        "c-pipe": target("C pipe (blocking)", "c", 58.25, 1_600_000),
        unix: { label: "Deno Unix socket", kind: "deno", status: "skipped", metrics: {} },
      },
    }),
  );
  const result = await ipcbus(["bench", "--from", results, "--chart", chart]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /ipcbus pipe: <bytes> +6\.50 +65\.0 +1,200,000 +1,235/);
  assert.match(result.stdout, /Deno Unix socket +skipped/);
  const svg = await Deno.readTextFile(chart);
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /ipcbus pipe: &lt;bytes&gt;/);
  assert.match(svg, /64 B round trip, median p50/);
  assert.match(svg, /64 KiB one-way throughput \(MB\/s\)/);
  assert.match(svg, /not measured: unix \(skipped\)/);
  assert.ok(svg.trimEnd().endsWith("</svg>"));

  const missing = await ipcbus(["bench", "--from", dir.file("missing.json")]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read/);
});
