/**
 * The `file:` log benchmark: `deno task bench file [--quick] [--runs N] [--out PATH]`
 * (or `deno run -A bench/_file_log.ts [--quick] ...`).
 *
 * Measures, side by side in one run, on log files in a temporary directory
 * (on the file system of the system's temp dir):
 *
 * - appends of 64-byte messages per durability level: ipcbus through the
 *   transport (`trySend`, one lock per message; `trySendBatch`, 64 per lock)
 *   and through a `Channel` with the `bytes` codec (`await send`,
 *   `sendBatch` of 64), against bench/c/filelog.c doing the same appends
 *   (same frames, checksums, header updates and fcntl lock) one per lock and
 *   64 per lock;
 * - replay: reading every retained message of a full log (64 B, 4 KiB and
 *   64 KiB messages) through the transport (`tryReceiveBatch`, each frame
 *   copied and checked) and through a `Channel` (`tryReceiveBatch`, bytes
 *   codec), against the C program's replay (copy and check too).
 *
 * Every figure is the median of several repetitions (5; 1 with `--quick`).
 * Appends go to a 64 MiB log, so long runs wrap the ring and pay for
 * reclaiming, as a log in service does.
 *
 * @module
 */

import { bytes, Channel, MappedFileLog, Presence } from "../mod.ts";
import { median, spread } from "./_stats.ts";

interface Args {
  quick: boolean;
  runs?: number;
  out?: string;
}

function parse(args: string[]): Args {
  const parsed: Args = { quick: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--quick") parsed.quick = true;
    else if (arg === "--runs") parsed.runs = Number(args[++i]);
    else if (arg.startsWith("--runs=")) parsed.runs = Number(arg.slice(7));
    else if (arg === "--out") parsed.out = args[++i];
    else if (arg.startsWith("--out=")) parsed.out = arg.slice(6);
  }
  return parsed;
}

interface Row {
  id: string;
  label: string;
  unit: "appends/s" | "MB/s";
  /** Median per repetition. */
  value: number;
  /** Messages per second for replay rows. */
  messages?: number;
  spread: number;
  note?: string;
}

const PAYLOAD = 64;
const BATCH = 64;
const LOG_SIZE = 64 << 20;

async function buildC(dir: string): Promise<string | null> {
  const source = new URL("./c/filelog.c", import.meta.url).pathname;
  for (const compiler of [Deno.env.get("CC"), "cc", "gcc", "clang"].filter((c): c is string => !!c)) {
    try {
      const binary = `${dir}/filelog`;
      const out = await new Deno.Command(compiler, { args: ["-O2", "-o", binary, source], stderr: "piped" })
        .output();
      if (out.success) return binary;
    } catch {
      // next compiler
    }
  }
  return null;
}

async function runC(binary: string, args: string[]): Promise<Record<string, number>[]> {
  const out = await new Deno.Command(binary, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`filelog ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((line) => JSON.parse(line));
}

async function freshLog(
  dir: string,
  name: string,
  durability: "none" | "batch" | "sync",
): Promise<MappedFileLog> {
  const path = `${dir}/${name}.bus`;
  await Deno.remove(path).catch(() => {});
  return await MappedFileLog.open(path, { create: true, maxSize: LOG_SIZE, durability });
}

async function repeat(reps: number, run: () => Promise<number>): Promise<number[]> {
  const values: number[] = [];
  for (let r = 0; r < reps; r++) values.push(await run());
  return values;
}

function row(id: string, label: string, unit: Row["unit"], values: number[], note?: string): Row {
  return { id, label, unit, value: median(values), spread: spread(values), note };
}

/**
 * Runs the benchmark and prints its table.
 *
 * @param argv Command-line arguments.
 * @returns The exit code.
 */
export async function fileLogBench(argv: string[]): Promise<number> {
  const args = parse(argv);
  const reps = args.runs ?? (args.quick ? 1 : 5);
  const scale = args.quick ? 0.1 : 1;
  const count = Math.round(1_000_000 * scale);
  const syncCount = Math.round(2_000 * scale);
  const dir = await Deno.makeTempDir({ prefix: "ipcbus-bench-filelog-" });
  const rows: Row[] = [];
  const started = performance.now();
  try {
    const c = await buildC(dir);
    const payload = new Uint8Array(PAYLOAD);
    const batch = Array.from({ length: BATCH }, () => payload);
    const progress = (text: string) => console.error(`  ${text}`);

    // ---- appends, durability "none" ------------------------------------------
    // Repetitions interleave ipcbus and C (one of each in turn), so each ratio compares runs made
    // under the same conditions: this VM's speed drifts by tens of percent between seconds.
    progress(`appends: ${count} × 64 B per repetition, ${reps} interleaved repetition(s)`);
    let log = await freshLog(dir, "append", "none");
    const cPath = `${dir}/append-c.bus`;
    if (c) (await MappedFileLog.open(cPath, { create: true, maxSize: LOG_SIZE })).close();
    const appendRuns: Record<string, number[]> = {};
    {
      using channel = new Channel<Uint8Array>(log, { codec: bytes });
      const targets: [id: string, run: () => number | Promise<number>][] = [
        ["js-trysend", () => {
          const t = performance.now();
          for (let i = 0; i < count; i++) log.trySend(payload, 1, 0);
          return count / ((performance.now() - t) / 1000);
        }],
        ["js-trysendbatch", () => {
          const t = performance.now();
          for (let i = 0; i < count; i += BATCH) log.trySendBatch(batch, 1, 0);
          return count / ((performance.now() - t) / 1000);
        }],
        ["js-send", async () => {
          const t = performance.now();
          for (let i = 0; i < count; i++) await channel.send(payload);
          return count / ((performance.now() - t) / 1000);
        }],
        ["js-sendbatch", async () => {
          const t = performance.now();
          for (let i = 0; i < count; i += BATCH) await channel.sendBatch(batch);
          return count / ((performance.now() - t) / 1000);
        }],
      ];
      if (c) {
        for (const [per, id] of [[1, "c-append"], [BATCH, "c-appendbatch"]] as const) {
          targets.push([id, async () => {
            const [run] = await runC(c, ["append", cPath, `${count}`, `${PAYLOAD}`, `${per}`, "1", "none"]);
            return run.count / run.seconds;
          }]);
        }
      }
      for (let r = 0; r < reps; r++) {
        for (const [id, run] of targets) (appendRuns[id] ??= []).push(await run());
      }
    }
    const APPEND_LABELS: Record<string, string> = {
      "js-trysend": "ipcbus transport trySend (1 per lock)",
      "js-trysendbatch": `ipcbus transport trySendBatch (${BATCH} per lock)`,
      "js-send": "ipcbus Channel await send (bytes codec)",
      "js-sendbatch": `ipcbus Channel sendBatch of ${BATCH} (bytes codec)`,
      "c-append": "C filelog.c (1 per lock)",
      "c-appendbatch": `C filelog.c (${BATCH} per lock)`,
    };
    for (const [id, values] of Object.entries(appendRuns)) {
      rows.push(row(id, APPEND_LABELS[id], "appends/s", values));
    }

    // ---- appends, "batch" and "sync" -----------------------------------------
    log.close();
    log = await freshLog(dir, "append-batch", "batch");
    {
      using channel = new Channel<Uint8Array>(log, { codec: bytes });
      rows.push(row(
        "js-send-batch",
        `ipcbus Channel await send, durability "batch"`,
        "appends/s",
        await repeat(reps, async () => {
          const t = performance.now();
          for (let i = 0; i < count; i++) await channel.send(payload);
          const rate = count / ((performance.now() - t) / 1000);
          await log.flush();
          return rate;
        }),
      ));
    }
    log = await freshLog(dir, "append-sync", "sync");
    progress(`durability "sync": ${syncCount} appends per repetition`);
    {
      using channel = new Channel<Uint8Array>(log, { codec: bytes });
      rows.push(row(
        "js-send-sync",
        `ipcbus Channel await send, durability "sync"`,
        "appends/s",
        await repeat(reps, async () => {
          const t = performance.now();
          for (let i = 0; i < syncCount; i++) await channel.send(payload);
          return syncCount / ((performance.now() - t) / 1000);
        }),
      ));
      rows.push(row(
        "js-sendbatch-sync",
        `ipcbus Channel sendBatch of ${BATCH}, durability "sync"`,
        "appends/s",
        await repeat(reps, async () => {
          const t = performance.now();
          for (let i = 0; i < syncCount * 8; i += BATCH) await channel.sendBatch(batch);
          return (syncCount * 8) / ((performance.now() - t) / 1000);
        }),
      ));
    }
    if (c) {
      const path = `${dir}/append-c-sync.bus`;
      (await MappedFileLog.open(path, { create: true, maxSize: LOG_SIZE })).close();
      for (
        const [per, n, id] of [[1, syncCount, "c-append-sync"], [
          BATCH,
          syncCount * 8,
          "c-appendbatch-sync",
        ]] as const
      ) {
        const runs = await runC(c, ["append", path, `${n}`, `${PAYLOAD}`, `${per}`, `${reps}`, "sync"]);
        rows.push(
          row(
            id,
            `C filelog.c (${per} per lock), msync per lock`,
            "appends/s",
            runs.map((r) => r.count / r.seconds),
          ),
        );
      }
    }
    log.close();

    // ---- replay ----------------------------------------------------------------
    for (const size of [64, 4096, 65536]) {
      progress(`replay: a full ${LOG_SIZE >> 20} MiB log of ${size}-byte messages`);
      const path = `${dir}/replay-${size}.bus`;
      const writer = await MappedFileLog.open(path, { create: true, maxSize: LOG_SIZE });
      const message = new Uint8Array(size);
      const fill = Array.from({ length: 16 }, () => message);
      while (writer.stats().writePosition < 2 * writer.info.capacity) writer.trySendBatch(fill, 1, 0);
      writer.close();
      const label = size >= 1024 ? `${size >> 10} KiB` : `${size} B`;
      const messages: number[] = [];
      const values = await repeat(reps, async () => {
        const reader = await MappedFileLog.open(path);
        let n = 0;
        let bytesRead = 0;
        const t = performance.now();
        for (;;) {
          const got = reader.tryReceiveBatch({ type: 0, except: false }, 1024, (frame) => {
            bytesRead += frame.data.length;
          });
          if (got === 0) break;
          n += got;
        }
        const seconds = (performance.now() - t) / 1000;
        reader.close();
        messages.push(n / seconds);
        return bytesRead / seconds / 1e6;
      });
      rows.push({
        ...row(`js-replay-${size}`, `ipcbus transport replay, ${label}`, "MB/s", values),
        messages: median(messages),
      });
      const channelMessages: number[] = [];
      const channelValues = await repeat(reps, async () => {
        using channel = new Channel<Uint8Array>(await MappedFileLog.open(path), { codec: bytes });
        let n = 0;
        let bytesRead = 0;
        const t = performance.now();
        for (;;) {
          const got = channel.tryReceiveBatch(1024);
          if (got.length === 0) break;
          n += got.length;
          for (const m of got) bytesRead += m.value.length;
        }
        const seconds = (performance.now() - t) / 1000;
        channelMessages.push(n / seconds);
        return bytesRead / seconds / 1e6;
      });
      rows.push({
        ...row(
          `js-replay-channel-${size}`,
          `ipcbus Channel tryReceiveBatch, ${label}`,
          "MB/s",
          channelValues,
        ),
        messages: median(channelMessages),
      });
      if (c) {
        const runs = await runC(c, ["replay", path, `${reps}`]);
        rows.push({
          ...row(
            `c-replay-${size}`,
            `C filelog.c replay, ${label}`,
            "MB/s",
            runs.map((r) => r.bytes / r.seconds / 1e6),
          ),
          messages: median(runs.map((r) => r.count / r.seconds)),
        });
      }
    }

    // ---- report ----------------------------------------------------------------
    const byId = new Map(rows.map((r) => [r.id, r]));
    const value = (id: string) => byId.get(id)?.value;
    const lines: string[] = [];
    const header = ["target", "figure", "msgs/s", "spread"];
    const cells = rows.map((r) => [
      r.label,
      r.unit === "MB/s"
        ? `${Math.round(r.value).toLocaleString("en-US")} MB/s`
        : `${Math.round(r.value).toLocaleString("en-US")} appends/s`,
      r.messages ? Math.round(r.messages).toLocaleString("en-US") : "",
      `${(r.spread * 100).toFixed(0)}%`,
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...cells.map((cell) => cell[i].length)));
    const format = (cell: string[]) =>
      cell.map((text, i) => i === 0 ? text.padEnd(widths[i]) : text.padStart(widths[i])).join("  ");
    lines.push(
      "",
      `ipcbus file: log benchmark · median of ${reps} repetition(s) · 64 B appends · MB = 10^6 bytes · ` +
        "ratios: median of interleaved pairs",
      "",
    );
    lines.push(format(header), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(format));
    const goals: { name: string; met: boolean | null; detail: string }[] = [];
    const best = Math.max(value("js-trysendbatch") ?? 0, value("js-sendbatch") ?? 0);
    goals.push({
      name: `durability "none": at least 1,000,000 appends/s`,
      met: best >= 1e6,
      detail: `best ipcbus figure ${Math.round(best).toLocaleString("en-US")}/s (batches of ${BATCH})`,
    });
    // The median of the ratios of interleaved repetitions (each pair ran back to back).
    const ratio = (js: string, cId: string) => {
      const a = appendRuns[js];
      const b = appendRuns[cId];
      return a && b ? median(a.map((v, i) => v / b[i])) : null;
    };
    for (
      const [js, cId, what] of [
        ["js-trysend", "c-append", "one per lock, transport trySend"],
        ["js-send", "c-append", "one per lock, Channel await send"],
        ["js-trysendbatch", "c-appendbatch", `${BATCH} per lock, transport trySendBatch`],
        ["js-sendbatch", "c-appendbatch", `${BATCH} per lock, Channel sendBatch`],
      ] as const
    ) {
      const r = ratio(js, cId);
      goals.push({
        name: `durability "none": at least 80% of C (${what})`,
        met: r === null ? null : r >= 0.8,
        detail: r === null ? "no C figure" : `${(r * 100).toFixed(0)}% of C`,
      });
    }
    const replay = Math.max(value("js-replay-65536") ?? 0, value("js-replay-4096") ?? 0);
    goals.push({
      name: "replay reads at least 1 GB/s",
      met: replay >= 1000,
      detail: `best ipcbus figure ${Math.round(replay)} MB/s (transport, large messages)`,
    });
    lines.push("", "Targets of the file: log issue (same run)");
    for (const goal of goals) {
      lines.push(
        `  [${goal.met === null ? "n/a " : goal.met ? "MET " : "MISS"}] ${goal.name}: ${goal.detail}`,
      );
    }
    const elapsed = (performance.now() - started) / 1000;
    const out = args.out ??
      new URL(args.quick ? "./results/file-log-quick.json" : "./results/file-log.json", import.meta.url)
        .pathname;
    lines.push(
      "",
      `total ${elapsed.toFixed(1)} s; results saved to ${out}${c ? "" : "; C rows skipped: no C compiler"}`,
    );
    console.log(lines.join("\n"));
    await Deno.writeTextFile(
      out,
      JSON.stringify(
        { schema: 1, date: new Date().toISOString(), quick: args.quick, reps, rows, goals },
        null,
        2,
      ) + "\n",
    );
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    // The logs went with the directory: drop their presence records too.
    for (const { address } of Presence.list()) {
      if (address.startsWith(`file:${dir}/`)) Presence.forget(address);
    }
  }
}

if (import.meta.main) Deno.exitCode = await fileLogBench(Deno.args);
