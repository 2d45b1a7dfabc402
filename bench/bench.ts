/**
 * ipcbus benchmark: `deno task bench [--quick] [--runs N] [--out PATH] [FILTER...]`.
 *
 * Measures, side by side in one run, a 64-byte round trip (p50, p99) and
 * one-way throughput at 64 B and 64 KiB (8 KiB for `posix-mq:`, whose
 * messages are at most 8 KiB by default) for
 *
 * - ipcbus `pipe:` (`spawn()` + `pipe:parent`, bytes codec; also the json
 *   codec for the round trip, and plain `await send/receive` for throughput),
 * - ipcbus `fifo:` (two FIFOs, `writers: "single"`),
 * - ipcbus `sysv-mq:` and `posix-mq:` (two queues, one each way),
 * - the same mechanisms in C (bench/c/ipcbench.c, sysvbench.c, posixbench.c,
 *   built with `cc -O2` into a temporary directory): blocking calls, and
 *   spinning like ipcbus,
 * - `Deno.Command` piped stdio and a Deno Unix socket.
 *
 * Every figure is the median of several repetitions (5; 1 with `--quick`),
 * each sized to take about 0.4 s. Ratios against C come from the same run.
 * Results are printed as a table and saved as JSON (bench/results/latest.json,
 * or bench/results/quick.json with `--quick`).
 *
 * Filters select targets by id or by a dash-separated part of an id:
 * `pipe` (pipe, pipe-await, pipe-json, c-pipe, c-pipe-spin), `fifo`, `c`,
 * `sysv`, `posix`, `shm` (shm, shm-poll, shm-block, shm-block-sem, shm-fan2, shm-fan4 and the C ring
 * rows), `spin`, `stdio`, `unix`, `worker`, `json`, `await`.
 *
 * @module
 */

import { buildC, type CBuild, type RoundTripRun, runC, runningC, type ThroughputRun } from "./_c.ts";
import {
  denoStdio,
  denoUnixSocket,
  type Endpoint,
  ipcbusFifo,
  ipcbusPipe,
  ipcbusPosix,
  ipcbusSysv,
} from "./_endpoints.ts";
import { clampInt, fmt, median, spread } from "./_stats.ts";
import { fileLogBench } from "./_file_log.ts";
import { ipcbusShm, ipcbusShmFanIn, shmC, ShmSkip, workerPostMessage } from "./_shm.ts";

// ---- options -------------------------------------------------------------

type MetricId = "rt" | "tp64" | "tp8k" | "tp64k";
/** ipcbus's default spin budget in µs (documented `spin` option default). */
const DEFAULT_SPIN = 100;
const METRICS: readonly MetricId[] = ["rt", "tp64", "tp8k", "tp64k"];
/** The metrics most targets measure (8 KiB is for `posix-mq:`, whose default message size is 8 KiB). */
const COMMON_METRICS: readonly MetricId[] = ["rt", "tp64", "tp64k"];
const SIZE: Record<MetricId, number> = { rt: 64, tp64: 64, tp8k: 8 * 1024, tp64k: 64 * 1024 };
const SIZE_LABEL: Record<Exclude<MetricId, "rt">, string> = { tp64: "64 B", tp8k: "8 KiB", tp64k: "64 KiB" };

interface Plan {
  reps: number;
  /** Target duration of one repetition, in seconds. */
  seconds: number;
  /** Messages in a calibration probe. */
  probe: Record<MetricId, number>;
  /** Most messages in one repetition. */
  max: Record<MetricId, number>;
  /** Time limit of one repetition (or one C invocation), in ms. */
  timeoutMs: number;
}

const USAGE = `usage: deno task bench [--quick] [--runs N] [--spin µs] [--out PATH] [FILTER...]
  --quick     smoke run: 1 repetition of ~30 ms per measurement (results to bench/results/quick.json)
  --runs N    repetitions per measurement (default 5; the median is reported)
  --spin µs   the ipcbus \`spin\` option for both ends (default: the library's own, 100 µs)
  --out PATH  where to write the JSON results (default bench/results/latest.json)
  FILTER      target ids, or parts of them: pipe, fifo, sysv, posix, shm, c, spin, stdio, unix, worker, json, await`;

interface Args {
  quick: boolean;
  runs?: number;
  spin?: number;
  out?: string;
  filters: string[];
}

function parseArgs(args: string[]): Args {
  const parsed: Args = {
    quick: false,
    filters: [],
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    if (flag === "--quick") parsed.quick = true;
    else if (flag === "--runs") {
      parsed.runs = Number(value());
      if (!Number.isInteger(parsed.runs) || parsed.runs < 1) usage("--runs must be a positive integer");
    } else if (flag === "--spin") {
      parsed.spin = Number(value());
      if (!Number.isFinite(parsed.spin) || parsed.spin < 0) usage("--spin must be a number of µs, 0 or more");
    } else if (flag === "--out") parsed.out = value();
    else if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else if (flag.startsWith("-")) usage(`unknown option ${flag}`);
    else parsed.filters.push(arg);
  }
  return parsed;
}

function usage(message: string): never {
  console.error(`bench: ${message}\n${USAGE}`);
  Deno.exit(2);
}

// ---- targets ---------------------------------------------------------------

type Run = RoundTripRun | ThroughputRun;

type Mechanism = "pipe" | "fifo" | "sysv" | "posix" | "shm";

/** The foundation's, the System V and the POSIX issues' targets, per mechanism (ratios to blocking C). */
const GOALS: Record<Mechanism, { rt: number; tp: readonly (readonly [MetricId, number, string])[] }> = {
  pipe: { rt: 1.5, tp: [["tp64", 0.6, "64 B"], ["tp64k", 0.8, "64 KiB"]] },
  fifo: { rt: 1.5, tp: [["tp64", 0.6, "64 B"], ["tp64k", 0.8, "64 KiB"]] },
  sysv: { rt: 1.3, tp: [["tp64", 0.7, "64 B"]] },
  posix: { rt: 1.3, tp: [["tp64", 0.7, "64 B"]] },
  // shm: against the C ring with the same wait strategy (see shmGoals).
  shm: { rt: 1.3, tp: [["tp64", 0.7, "64 B"], ["tp64k", 0.8, "64 KiB"]] },
};

/** The C ring (bench/c/shmring.c): blocking (spin 0) or spinning like ipcbus, with 1 to 4 producers. */
function shmCRunner(spinning: boolean, producers: number): TargetDef["start"] {
  return async (context) => {
    try {
      return await shmC(
        context.dir,
        spinning ? context.spin ?? DEFAULT_SPIN : 0,
        producers,
        context.plan.timeoutMs,
      );
    } catch (error) {
      if (error instanceof ShmSkip) throw new Skip(error.message);
      throw error;
    }
  };
}

/** Runs repetitions of one metric. */
interface Runner {
  /** Round trips stop after `seconds` (0: no limit); throughput always sends `count`. */
  runs(metric: MetricId, count: number, reps: number, seconds: number): Promise<Run[]>;
  close(): Promise<void>;
}

interface Context {
  dir: string;
  c: CBuild;
  plan: Plan;
  /** ipcbus `spin` option (undefined: the library's default). */
  spin?: number;
}

interface TargetDef {
  id: string;
  label: string;
  kind: "ipcbus" | "c" | "deno";
  mechanism?: Mechanism;
  metrics: readonly MetricId[];
  start(context: Context): Promise<Runner>;
}

function endpointRunner(endpoint: Endpoint, plan: Plan): Runner {
  return {
    async runs(metric, count, reps, seconds) {
      const runs: Run[] = [];
      for (let r = 0; r < reps; r++) {
        const run: Promise<Run> = metric === "rt"
          ? endpoint.roundTrips(count, SIZE[metric], seconds)
          : endpoint.throughput(count, SIZE[metric]);
        runs.push(await deadline(run, plan.timeoutMs, () => endpoint.close()));
      }
      return runs;
    },
    close: () => endpoint.close(),
  };
}

/** The C program; `spinning` matches ipcbus's strategy (non-blocking, the same spin budget). */
function cRunner(mechanism: Exclude<Mechanism, "shm">, spinning: boolean): TargetDef["start"] {
  return (context) => {
    const { c, dir, plan } = context;
    const spinMicros = spinning ? context.spin ?? DEFAULT_SPIN : 0;
    if (!c.ok) return Promise.reject(new Skip(c.reason));
    return Promise.resolve({
      runs: (metric, count, reps, seconds) =>
        runC(mechanism === "sysv" ? c.sysvBinary : mechanism === "posix" ? c.posixBinary : c.binary, {
          mechanism,
          mode: metric === "rt" ? "rt" : "tp",
          size: SIZE[metric],
          count,
          reps,
          seconds,
          dir,
          spinMicros,
          timeoutMs: plan.timeoutMs * (reps + 1),
        }),
      close: () => Promise.resolve(),
    });
  };
}

const TARGETS: readonly TargetDef[] = [
  {
    id: "pipe",
    label: "ipcbus pipe: (bytes, sendBatch/receiveBatch)",
    kind: "ipcbus",
    mechanism: "pipe",
    metrics: COMMON_METRICS,
    start: ({ plan, spin }) => Promise.resolve(endpointRunner(ipcbusPipe("bytes", true, spin), plan)),
  },
  {
    id: "pipe-await",
    label: "ipcbus pipe: (bytes, await send/receive)",
    kind: "ipcbus",
    mechanism: "pipe",
    metrics: ["tp64", "tp64k"],
    start: ({ plan, spin }) => Promise.resolve(endpointRunner(ipcbusPipe("bytes", false, spin), plan)),
  },
  {
    id: "pipe-json",
    label: "ipcbus pipe: (json, 64 B object)",
    kind: "ipcbus",
    mechanism: "pipe",
    metrics: ["rt"],
    start: ({ plan, spin }) => Promise.resolve(endpointRunner(ipcbusPipe("json", true, spin), plan)),
  },
  {
    id: "fifo",
    label: "ipcbus fifo: (bytes, single writer)",
    kind: "ipcbus",
    mechanism: "fifo",
    metrics: COMMON_METRICS,
    start: async ({ dir, plan, spin }) => endpointRunner(await ipcbusFifo(dir, spin), plan),
  },
  {
    id: "sysv",
    label: "ipcbus sysv-mq: (bytes, two queues)",
    kind: "ipcbus",
    mechanism: "sysv",
    metrics: ["rt", "tp64"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusSysv(spin), plan),
  },
  {
    id: "posix",
    label: "ipcbus posix-mq: (bytes, two queues)",
    kind: "ipcbus",
    mechanism: "posix",
    metrics: ["rt", "tp64", "tp8k"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusPosix(spin), plan),
  },
  {
    id: "c-pipe",
    label: "C pipe (blocking)",
    kind: "c",
    mechanism: "pipe",
    metrics: COMMON_METRICS,
    start: cRunner("pipe", false),
  },
  {
    id: "c-fifo",
    label: "C fifo (blocking)",
    kind: "c",
    mechanism: "fifo",
    metrics: COMMON_METRICS,
    start: cRunner("fifo", false),
  },
  {
    id: "c-pipe-spin",
    label: "C pipe (non-blocking, spin SPIN µs)",
    kind: "c",
    mechanism: "pipe",
    metrics: COMMON_METRICS,
    start: cRunner("pipe", true),
  },
  {
    id: "c-fifo-spin",
    label: "C fifo (non-blocking, spin SPIN µs)",
    kind: "c",
    mechanism: "fifo",
    metrics: COMMON_METRICS,
    start: cRunner("fifo", true),
  },
  {
    id: "c-sysv",
    label: "C sysv msgsnd/msgrcv (blocking)",
    kind: "c",
    mechanism: "sysv",
    metrics: ["rt", "tp64"],
    start: cRunner("sysv", false),
  },
  {
    id: "c-sysv-spin",
    label: "C sysv msgsnd/msgrcv (IPC_NOWAIT, spin SPIN µs)",
    kind: "c",
    mechanism: "sysv",
    metrics: ["rt", "tp64"],
    start: cRunner("sysv", true),
  },
  {
    id: "c-posix",
    label: "C posix mq_send/mq_receive (blocking)",
    kind: "c",
    mechanism: "posix",
    metrics: ["rt", "tp64", "tp8k"],
    start: cRunner("posix", false),
  },
  {
    id: "c-posix-spin",
    label: "C posix mq_send/mq_receive (O_NONBLOCK, spin SPIN µs)",
    kind: "c",
    mechanism: "posix",
    metrics: ["rt", "tp64", "tp8k"],
    start: cRunner("posix", true),
  },
  {
    id: "shm",
    label: "ipcbus shm: (bytes, sendBatch/receiveBatch)",
    kind: "ipcbus",
    mechanism: "shm",
    metrics: COMMON_METRICS,
    start: async ({ plan, spin }) => endpointRunner(await ipcbusShm(spin), plan),
  },
  {
    id: "shm-raw",
    label: "ipcbus shm: transport (trySendBatch/tryReceiveBatch, no codec)",
    kind: "ipcbus",
    mechanism: "shm",
    metrics: ["tp64", "tp64k"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusShm(spin, { raw: true }), plan),
  },
  {
    id: "shm-poll",
    label: "ipcbus shm: trySend/tryReceive polled (no promise)",
    kind: "ipcbus",
    mechanism: "shm",
    metrics: ["rt"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusShm(spin, { poll: true }), plan),
  },
  {
    id: "shm-block",
    label: "ipcbus shm: (spin 0: parks at once)",
    kind: "ipcbus",
    mechanism: "shm",
    metrics: ["rt"],
    start: async ({ plan }) => endpointRunner(await ipcbusShm(0), plan),
  },
  {
    id: "shm-block-sem",
    label: "ipcbus shm: (spin 0, doorbell: false: semaphores only)",
    kind: "ipcbus",
    mechanism: "shm",
    metrics: ["rt"],
    start: async ({ plan }) => endpointRunner(await ipcbusShm(0, { doorbell: false }), plan),
  },
  {
    id: "shm-fan2",
    label: "ipcbus shm: fan-in, 2 producer processes",
    kind: "ipcbus",
    metrics: ["tp64"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusShmFanIn(2, spin), plan),
  },
  {
    id: "shm-fan4",
    label: "ipcbus shm: fan-in, 4 producer processes",
    kind: "ipcbus",
    metrics: ["tp64"],
    start: async ({ plan, spin }) => endpointRunner(await ipcbusShmFanIn(4, spin), plan),
  },
  {
    id: "c-shm",
    label: "C shm ring (same layout; parks at once)",
    kind: "c",
    mechanism: "shm",
    metrics: COMMON_METRICS,
    start: shmCRunner(false, 1),
  },
  {
    id: "c-shm-spin",
    label: "C shm ring (same layout; spin SPIN µs, then park)",
    kind: "c",
    mechanism: "shm",
    metrics: COMMON_METRICS,
    start: shmCRunner(true, 1),
  },
  {
    id: "c-shm-fan2",
    label: "C shm ring fan-in, 2 producers (spin SPIN µs)",
    kind: "c",
    metrics: ["tp64"],
    start: shmCRunner(true, 2),
  },
  {
    id: "c-shm-fan4",
    label: "C shm ring fan-in, 4 producers (spin SPIN µs)",
    kind: "c",
    metrics: ["tp64"],
    start: shmCRunner(true, 4),
  },
  {
    id: "worker",
    label: "Deno Worker postMessage (a thread)",
    kind: "deno",
    metrics: COMMON_METRICS,
    start: ({ plan }) => Promise.resolve(endpointRunner(workerPostMessage(), plan)),
  },
  {
    id: "stdio",
    label: "Deno.Command piped stdio",
    kind: "deno",
    metrics: COMMON_METRICS,
    start: ({ plan }) => Promise.resolve(endpointRunner(denoStdio(), plan)),
  },
  {
    id: "unix",
    label: "Deno Unix socket",
    kind: "deno",
    metrics: COMMON_METRICS,
    start: async ({ dir, plan }) => endpointRunner(await denoUnixSocket(dir), plan),
  },
];

function selected(filters: string[]): TargetDef[] {
  if (filters.length === 0) return [...TARGETS];
  const matches = (target: TargetDef, filter: string) =>
    target.id === filter || target.id.split("-").includes(filter);
  for (const filter of filters) {
    if (!TARGETS.some((target) => matches(target, filter))) {
      usage(`no target matches "${filter}" (targets: ${TARGETS.map((t) => t.id).join(", ")})`);
    }
  }
  return TARGETS.filter((target) => filters.some((filter) => matches(target, filter)));
}

// ---- measuring ------------------------------------------------------------

class Skip extends Error {}

class Timeout extends Error {}

async function deadline<R>(promise: Promise<R>, ms: number, onTimeout: () => Promise<void>): Promise<R> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Timeout(`no answer within ${ms / 1000} s`));
      onTimeout().catch(() => {});
    }, ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

interface RoundTripSummary {
  p50: number;
  p99: number;
  mean: number;
}

interface ThroughputSummary {
  messagesPerSecond: number;
  megabytesPerSecond: number;
}

interface MetricResult {
  size: number;
  countPerRun: number;
  runs: Run[];
  median: RoundTripSummary | ThroughputSummary;
  /** (max − min) / median of the headline figure across runs. */
  spread: number;
}

interface TargetResult {
  id: string;
  label: string;
  kind: TargetDef["kind"];
  mechanism: TargetDef["mechanism"] | null;
  status: "ok" | "skipped" | "failed";
  reason?: string;
  metrics: Partial<Record<MetricId, MetricResult>>;
}

function perMessageSeconds(metric: MetricId, run: Run): number {
  if (metric === "rt") return (run as RoundTripRun).mean / 1e6;
  const { seconds, count } = run as ThroughputRun;
  return seconds / count;
}

function summarizeRuns(metric: MetricId, runs: Run[], count: number): MetricResult {
  if (metric === "rt") {
    const rt = runs as RoundTripRun[];
    const p50s = rt.map((r) => r.p50);
    return {
      size: SIZE[metric],
      countPerRun: Math.round(median(rt.map((r) => r.n))), // time-boxed: what was done
      runs,
      median: { p50: median(p50s), p99: median(rt.map((r) => r.p99)), mean: median(rt.map((r) => r.mean)) },
      spread: spread(p50s),
    };
  }
  const rates = (runs as ThroughputRun[]).map((r) => r.count / r.seconds);
  const rate = median(rates);
  return {
    size: SIZE[metric],
    countPerRun: count,
    runs,
    median: { messagesPerSecond: rate, megabytesPerSecond: (rate * SIZE[metric]) / 1e6 },
    spread: spread(rates),
  };
}

function describe(metric: MetricId, result: MetricResult): string {
  const detail = `${result.countPerRun} ${metric === "rt" ? "round trips" : "msgs"}/run, ` +
    `spread ${(result.spread * 100).toFixed(0)}%`;
  if (metric === "rt") {
    const { p50, p99 } = result.median as RoundTripSummary;
    return `p50 ${fmt(p50)} µs, p99 ${fmt(p99)} µs (${detail})`;
  }
  const { messagesPerSecond, megabytesPerSecond } = result.median as ThroughputSummary;
  return `${fmt(messagesPerSecond)} msg/s, ${fmt(megabytesPerSecond)} MB/s (${detail})`;
}

const METRIC_NAME: Record<MetricId, string> = {
  rt: "64 B round trip",
  tp64: "64 B one-way",
  tp8k: "8 KiB one-way",
  tp64k: "64 KiB one-way",
};

/**
 * Measures every target. All of them are started first; then, metric by
 * metric, each target is warmed up and sized, and the repetitions are
 * interleaved (rep 1 of every target, then rep 2, ...), so that load from
 * elsewhere on the machine hits every target alike and ratios stay fair.
 */
async function measureAll(
  targets: readonly TargetDef[],
  context: Context,
): Promise<Map<string, TargetResult>> {
  const { plan } = context;
  const results = new Map<string, TargetResult>();
  const runners = new Map<string, Runner>();
  const stop = async (id: string) => {
    const runner = runners.get(id);
    runners.delete(id);
    if (runner) {
      openRunners.delete(runner);
      await runner.close();
    }
  };
  const fail = async (target: TargetDef, error: unknown) => {
    const result = results.get(target.id)!;
    if (error instanceof Skip) {
      result.status = "skipped";
      result.reason = error.message;
      progress(`  ${target.id.padEnd(12)} skipped: ${error.message}`);
    } else {
      result.status = "failed";
      result.reason = error instanceof Error ? error.stack ?? error.message : String(error);
      progress(`  ${target.id.padEnd(12)} FAILED: ${result.reason}`);
    }
    await stop(target.id);
  };
  try {
    for (const target of targets) {
      results.set(target.id, {
        id: target.id,
        label: target.label.replace("SPIN", String(context.spin ?? DEFAULT_SPIN)),
        kind: target.kind,
        mechanism: target.mechanism ?? null,
        status: "ok",
        metrics: {},
      });
      try {
        const runner = await target.start(context);
        runners.set(target.id, runner);
        openRunners.add(runner);
      } catch (error) {
        await fail(target, error);
      }
    }
    for (const metric of METRICS) {
      const active = targets.filter((t) => t.metrics.includes(metric) && runners.has(t.id));
      const counts = new Map<string, number>();
      for (const target of active) {
        try {
          const runner = runners.get(target.id)!;
          const probe = plan.probe[metric];
          // Warm-up (and the child's start-up). Round trips are then time-boxed;
          // for throughput, two probes size the repetitions (the faster one
          // counts: a probe that hit a slow moment would make runs too short).
          const [first] = await runner.runs(metric, probe, 1, 0);
          if (metric === "rt") {
            counts.set(target.id, plan.max.rt);
          } else {
            const [second] = await runner.runs(metric, probe, 1, 0);
            const perMessage = Math.min(perMessageSeconds(metric, first), perMessageSeconds(metric, second));
            counts.set(target.id, clampInt(plan.seconds / perMessage, probe, plan.max[metric]));
          }
        } catch (error) {
          await fail(target, error);
        }
      }
      const runs = new Map<string, Run[]>(active.map((t) => [t.id, []]));
      for (let rep = 0; rep < plan.reps; rep++) {
        // Rotate the order so that no target always runs right after another.
        const order = active.map((_, i) => active[(i + rep) % active.length]);
        for (const target of order) {
          const runner = runners.get(target.id);
          const count = counts.get(target.id);
          if (!runner || count === undefined) continue;
          try {
            runs.get(target.id)!.push(...await runner.runs(metric, count, 1, plan.seconds));
          } catch (error) {
            await fail(target, error);
          }
        }
      }
      for (const target of active) {
        if (!runners.has(target.id)) continue;
        const summary = summarizeRuns(metric, runs.get(target.id)!, counts.get(target.id)!);
        results.get(target.id)!.metrics[metric] = summary;
        progress(`  ${target.id.padEnd(12)} ${METRIC_NAME[metric].padEnd(15)} ${describe(metric, summary)}`);
      }
    }
  } finally {
    await Promise.allSettled([...runners.keys()].map(stop));
  }
  return results;
}

/** Set on SIGINT/SIGTERM: failures caused by the clean-up are not reported. */
let interrupted = false;

function progress(line: string): void {
  if (!interrupted) console.error(line);
}

// ---- comparing -------------------------------------------------------------

interface Goal {
  name: string;
  target: string;
  baseline: string;
  value: number | null;
  limit: number;
  unit: "×C" | "%C" | "× faster" | "msg/s";
  met: boolean | null;
  detail: string;
}

function rt(results: Map<string, TargetResult>, id: string): RoundTripSummary | undefined {
  return results.get(id)?.metrics.rt?.median as RoundTripSummary | undefined;
}

function rate(results: Map<string, TargetResult>, id: string, metric: MetricId): number | undefined {
  return (results.get(id)?.metrics[metric]?.median as ThroughputSummary | undefined)?.messagesPerSecond;
}

function times(value: number): string {
  return `${value >= 10 ? value.toFixed(0) : value.toFixed(2)}×`;
}

function percent(value: number): string {
  return `${(value * 100).toFixed(0)}%`;
}

/** Ratios of each ipcbus row against a baseline row, as text. */
function comparisons(results: Map<string, TargetResult>): { lines: string[]; json: Record<string, unknown> } {
  const lines: string[] = [];
  const json: Record<string, unknown> = {};
  const ipcbusRows = [...results.values()].filter((r) => r.kind === "ipcbus" && r.status === "ok");
  for (const row of ipcbusRows) {
    const mechanism = row.mechanism!;
    const entries: Record<string, number> = {};
    const parts: string[] = [];
    for (const [baseline, name] of [[`c-${mechanism}`, "C"], [`c-${mechanism}-spin`, "C spin"]] as const) {
      const base = results.get(baseline);
      if (base?.status !== "ok") continue;
      const bits: string[] = [];
      const a = rt(results, row.id), b = rt(results, baseline);
      if (a && b) {
        entries[`rtP50_vs_${baseline}`] = a.p50 / b.p50;
        entries[`rtP99_vs_${baseline}`] = a.p99 / b.p99;
        bits.push(`rt p50 = ${times(a.p50 / b.p50)} ${name}`, `rt p99 = ${times(a.p99 / b.p99)} ${name}`);
      }
      for (const metric of ["tp64", "tp8k", "tp64k"] as const) {
        const x = rate(results, row.id, metric), y = rate(results, baseline, metric);
        if (x && y) {
          entries[`${metric}_vs_${baseline}`] = x / y;
          bits.push(`${SIZE_LABEL[metric]} throughput = ${percent(x / y)} of ${name}`);
        }
      }
      if (bits.length) parts.push(`  vs ${base.label}: ${bits.join(" · ")}`);
    }
    const others = [["stdio", "Deno.Command stdio"], ["unix", "Unix socket"], [
      "worker",
      "Worker postMessage",
    ]] as const;
    for (const [baseline, name] of others) {
      if (results.get(baseline)?.status !== "ok") continue;
      const bits: string[] = [];
      const a = rt(results, row.id), b = rt(results, baseline);
      if (a && b) {
        const speedup = b.p50 / a.p50;
        entries[`rtSpeedup_vs_${baseline}`] = speedup;
        bits.push(speedup >= 1 ? `RT ${times(speedup)} faster` : `RT ${times(1 / speedup)} slower`);
      }
      for (const metric of ["tp64", "tp8k", "tp64k"] as const) {
        const x = rate(results, row.id, metric), y = rate(results, baseline, metric);
        if (x && y) {
          entries[`${metric}_vs_${baseline}`] = x / y;
          bits.push(`${SIZE_LABEL[metric]} throughput = ${times(x / y)}`);
        }
      }
      if (bits.length) parts.push(`  vs ${name}: ${bits.join(" · ")}`);
    }
    if (parts.length) lines.push(`${row.label}`, ...parts);
    json[row.id] = entries;
  }
  // shm: fan-in against the C ring with as many producers.
  for (const producers of [2, 4]) {
    const id = `shm-fan${producers}`, baseline = `c-shm-fan${producers}`;
    const x = rate(results, id, "tp64"), y = rate(results, baseline, "tp64");
    if (!x || !y) continue;
    (json[id] as Record<string, number>)[`tp64_vs_${baseline}`] = x / y;
    lines.push(
      `${results.get(id)!.label}`,
      `  vs ${results.get(baseline)!.label}: 64 B throughput = ${percent(x / y)} of C`,
    );
  }
  return { lines, json };
}

/**
 * The shared-memory ring issue's targets: 64 B one-way at least 5 M msg/s
 * and 70% of C, 64 KiB at least 80% of C, round-trip p50 within 1.3× of C
 * with the same wait strategy (spinning: `shm` vs `c-shm-spin`; parking at
 * once: `shm-block` vs `c-shm`).
 */
function shmGoals(results: Map<string, TargetResult>): Goal[] {
  const list: Goal[] = [];
  const limits = GOALS.shm;
  const goal = (
    name: string,
    target: string,
    baseline: string,
    value: number | null,
    limit: number,
    unit: Goal["unit"],
    higherIsBetter: boolean,
    detail: (v: number) => string,
  ) => {
    if (results.get(target)?.status !== "ok") return;
    const met = value === null ? null : higherIsBetter ? value >= limit : value <= limit;
    list.push({
      name,
      target,
      baseline,
      value,
      limit,
      unit,
      met,
      detail: value === null ? "n/a" : detail(value),
    });
  };
  const tp = rate(results, "shm", "tp64");
  goal(
    "shm: 64 B one-way at least 5 M msg/s",
    "shm",
    "",
    tp ?? null,
    5e6,
    "msg/s",
    true,
    (v) => `${fmt(v)} msg/s`,
  );
  for (const [metric, limit, label] of limits.tp) {
    const x = rate(results, "shm", metric), y = rate(results, "c-shm-spin", metric);
    goal(
      `shm: ${label} throughput at least ${percent(limit)} of C (same wait strategy)`,
      "shm",
      "c-shm-spin",
      x && y ? x / y : null,
      limit,
      "%C",
      true,
      (v) => `${percent(v)} of C (${fmt(x!)} vs ${fmt(y!)} msg/s)`,
    );
  }
  for (
    const [id, c, how] of [["shm", "c-shm-spin", "spinning"], [
      "shm-block",
      "c-shm",
      "parking at once",
    ]] as const
  ) {
    const a = rt(results, id), b = rt(results, c);
    goal(
      `shm: round trip p50 within ${limits.rt}× of C (${how})`,
      id,
      c,
      a && b ? a.p50 / b.p50 : null,
      limits.rt,
      "×C",
      false,
      (v) => `${times(v)} C (${fmt(a!.p50)} vs ${fmt(b!.p50)} µs)`,
    );
  }
  return list;
}

function goals(results: Map<string, TargetResult>): Goal[] {
  const list: Goal[] = [];
  for (const mechanism of ["pipe", "fifo", "sysv", "posix"] as const) {
    const id = mechanism;
    const limits = GOALS[mechanism];
    if (results.get(id)?.status !== "ok") continue;
    const c = `c-${mechanism}`;
    const a = rt(results, id), b = rt(results, c);
    const add = (
      goal: Omit<Goal, "met" | "detail">,
      higherIsBetter: boolean,
      detail: (v: number) => string,
    ) => {
      const met = goal.value === null
        ? null
        : higherIsBetter
        ? goal.value >= goal.limit
        : goal.value <= goal.limit;
      list.push({
        ...goal,
        met,
        detail: goal.value === null ? "n/a (baseline not measured)" : detail(goal.value),
      });
    };
    add(
      {
        name: `${mechanism}: round trip p50 within ${limits.rt}× of C`,
        target: id,
        baseline: c,
        value: a && b ? a.p50 / b.p50 : null,
        limit: limits.rt,
        unit: "×C",
      },
      false,
      (v) => `${times(v)} C (${fmt(a!.p50)} vs ${fmt(b!.p50)} µs)`,
    );
    for (const [metric, limit, label] of limits.tp) {
      const x = rate(results, id, metric), y = rate(results, c, metric);
      add(
        {
          name: `${mechanism}: ${label} throughput at least ${percent(limit)} of C`,
          target: id,
          baseline: c,
          value: x && y ? x / y : null,
          limit,
          unit: "%C",
        },
        true,
        (v) => `${percent(v)} of C (${fmt(x!)} vs ${fmt(y!)} msg/s)`,
      );
    }
    const s = rt(results, "stdio");
    // The stdio goal belongs to the byte-stream transports.
    if (mechanism === "sysv" || mechanism === "posix") continue;
    add(
      {
        name: `${mechanism}: round trip at least 3× faster than Deno.Command stdio`,
        target: id,
        baseline: "stdio",
        value: a && s ? s.p50 / a.p50 : null,
        limit: 3,
        unit: "× faster",
      },
      true,
      (v) => `${times(v)} faster (${fmt(a!.p50)} vs ${fmt(s!.p50)} µs)`,
    );
  }
  list.push(...shmGoals(results));
  return list;
}

// ---- printing --------------------------------------------------------------

function table(rows: string[][], rightAligned: (column: number) => boolean): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) =>
    row.map((cell, c) => (rightAligned(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ")
      .trimEnd();
  const rule = widths.map((w) => "─".repeat(w)).join("  ");
  return [line(rows[0]), rule, ...rows.slice(1).map(line)].join("\n");
}

function resultsTable(results: TargetResult[]): string {
  const rows = [[
    "target",
    "rt p50 µs",
    "rt p99 µs",
    "64 B msg/s",
    "64 B MB/s",
    "8 KiB msg/s",
    "8 KiB MB/s",
    "64 KiB msg/s",
    "64 KiB MB/s",
  ]];
  for (const result of results) {
    if (result.status !== "ok") {
      rows.push([result.label, result.status, "", "", "", "", "", "", ""]);
      continue;
    }
    const r = result.metrics.rt?.median as RoundTripSummary | undefined;
    const t64 = result.metrics.tp64?.median as ThroughputSummary | undefined;
    const t8k = result.metrics.tp8k?.median as ThroughputSummary | undefined;
    const t64k = result.metrics.tp64k?.median as ThroughputSummary | undefined;
    rows.push([
      result.label,
      fmt(r?.p50 ?? NaN),
      fmt(r?.p99 ?? NaN),
      fmt(t64?.messagesPerSecond ?? NaN),
      fmt(t64?.megabytesPerSecond ?? NaN),
      fmt(t8k?.messagesPerSecond ?? NaN),
      fmt(t8k?.megabytesPerSecond ?? NaN),
      fmt(t64k?.messagesPerSecond ?? NaN),
      fmt(t64k?.megabytesPerSecond ?? NaN),
    ]);
  }
  return table(rows, (c) => c > 0);
}

async function commandLine(command: string, args: string[]): Promise<string | undefined> {
  // /proc and Deno.osRelease() need --allow-all / --allow-sys, which the task does not grant.
  try {
    const result = await new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" })
      .output();
    return result.success ? new TextDecoder().decode(result.stdout).trim() || undefined : undefined;
  } catch {
    return undefined;
  }
}

async function hostInfo(): Promise<Record<string, unknown>> {
  const cpu = (await commandLine("grep", ["-m1", "^model name", "/proc/cpuinfo"]))?.replace(/^[^:]*:\s*/, "");
  return {
    os: (await commandLine("uname", ["-srm"])) ?? `${Deno.build.os} ${Deno.build.arch}`,
    cpu: cpu ?? "unknown CPU",
    cpus: navigator.hardwareConcurrency,
    loadAverageAtStart: (await commandLine("cat", ["/proc/loadavg"]))?.split(" ").slice(0, 3).join(" ") ??
      null,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

// ---- main ------------------------------------------------------------------

const openRunners = new Set<Runner>();

async function main(): Promise<number> {
  const args = parseArgs(Deno.args);
  const targets = selected(args.filters);
  const plan: Plan = args.quick
    ? {
      reps: args.runs ?? 1,
      seconds: 0.03,
      probe: { rt: 200, tp64: 2_000, tp8k: 200, tp64k: 50 },
      max: { rt: 5_000, tp64: 200_000, tp8k: 20_000, tp64k: 5_000 },
      timeoutMs: 30_000,
    }
    : {
      reps: args.runs ?? 5,
      seconds: 0.4,
      probe: { rt: 2_000, tp64: 20_000, tp8k: 2_000, tp64k: 400 },
      max: { rt: 200_000, tp64: 5_000_000, tp8k: 1_000_000, tp64k: 200_000 },
      timeoutMs: 60_000,
    };
  let out = args.out ??
    new URL(args.quick ? "./results/quick.json" : "./results/latest.json", import.meta.url).pathname;
  if (!out.startsWith("/")) out = `${Deno.cwd()}/${out}`;

  const dir = await Deno.makeTempDir({ prefix: "ipcbus-bench-" });
  const cleanUp = async () => {
    await Promise.allSettled([...openRunners].map((runner) => runner.close()));
    for (const child of runningC) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\ninterrupted: stopping children and removing temporary files");
    cleanUp().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const started = performance.now();
  try {
    const host = await hostInfo();
    const c: CBuild = targets.some((t) => t.kind === "c")
      ? await buildC(dir)
      : { ok: false, reason: "no C target selected" };
    progress(
      `ipcbus bench: ${targets.length} targets, ${plan.reps} repetition(s) of ~${plan.seconds * 1000} ms ` +
        `per measurement${args.quick ? " (--quick)" : ""}` +
        (args.spin === undefined ? "" : `, ipcbus spin ${args.spin} µs`),
    );
    if (targets.some((t) => t.kind === "c")) {
      progress(c.ok ? `C baseline: ${c.compiler} -O2` : `C rows skipped: ${c.reason}`);
    }
    const context: Context = { dir, c, plan, spin: args.spin };
    const results = await measureAll(targets, context);

    const list = [...results.values()];
    const compared = comparisons(results);
    const goalList = goals(results);
    const elapsed = (performance.now() - started) / 1000;

    const report: string[] = [];
    report.push(
      "",
      `ipcbus benchmark · ${host.os} · ${host.cpus} × ${host.cpu} · Deno ${host.deno}`,
      `median of ${plan.reps} interleaved repetition(s) per figure; payload bytes only; MB = 10^6 bytes; ` +
        `round trip = 64 B there and back`,
      `load average at start: ${host.loadAverageAtStart ?? "unknown"} ` +
        `(anything else running on these ${host.cpus} CPUs shows up as noise)`,
      "",
      resultsTable(list),
    );
    const skipped = list.filter((r) => r.status === "skipped");
    if (skipped.length) {
      report.push("", `skipped: ${skipped.map((r) => r.id).join(", ")}: ${skipped[0].reason}`);
    }
    if (compared.lines.length) report.push("", "Ratios (same run)", ...compared.lines);
    if (goalList.length) {
      report.push("", "Targets (ipcbus fast path vs C blocking, same run)");
      for (const goal of goalList) {
        const mark = goal.met === null ? "n/a " : goal.met ? "MET " : "MISS";
        report.push(`  [${mark}] ${goal.name}: ${goal.detail}`);
      }
    }
    const failed = list.filter((r) => r.status === "failed");
    if (failed.length) report.push("", `FAILED: ${failed.map((r) => r.id).join(", ")} (see above)`);
    report.push("", `total ${elapsed.toFixed(1)} s; results saved to ${out}`);
    console.log(report.join("\n"));

    const json = {
      schema: 1,
      date: new Date().toISOString(),
      quick: args.quick,
      filters: args.filters,
      host,
      compiler: c.ok ? c.compiler : null,
      cSkipped: c.ok ? null : c.reason,
      plan,
      ipcbusSpin: args.spin ?? "library default",
      elapsedSeconds: elapsed,
      targets: Object.fromEntries(list.map((r) => [r.id, r])),
      ratios: compared.json,
      goals: goalList,
    };
    await Deno.mkdir(out.slice(0, out.lastIndexOf("/")) || "/", { recursive: true });
    await Deno.writeTextFile(out, JSON.stringify(json, null, 2) + "\n");
    return failed.length ? 1 : 0;
  } finally {
    await cleanUp();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

// `deno task bench file [--quick]`: the file: log benchmark, which measures other things (bench/_file_log.ts).
Deno.exitCode = Deno.args.includes("file") ? await fileLogBench(Deno.args) : await main();
