/**
 * `ipcbus bench`: runs the project's benchmark (`bench/bench.ts`, which
 * needs the source tree: it builds C baselines and starts child scripts)
 * with a progress bar on a terminal, prints its table, and writes an SVG
 * chart with `--chart FILE`. `--from FILE` charts an earlier results file
 * without running anything.
 *
 * @module
 */

import {
  benchChart,
  type BenchFigure,
  type BenchRow,
  type BenchSummary,
  figure,
  headline,
  sizeLabel,
  summarize,
} from "./_chart.ts";
import { intOption, parse } from "./_args.ts";
import { eprintln, Failure, lines, printLines, style, table, UsageError } from "./_output.ts";

/** Help of `ipcbus bench`. */
export const BENCH_HELP =
  `usage: ipcbus bench [TARGET...] [--quick] [--runs N] [--spin µs] [--out FILE] [--chart FILE]
       ipcbus bench --from RESULTS.json [--chart FILE]

Run the benchmark (bench/bench.ts: ipcbus against the same mechanism in C
and against what Deno offers, side by side, medians of interleaved runs) and
print its table, with a progress bar on a terminal. The benchmark needs the
ipcbus source tree (it compiles its C baselines and starts child scripts):
run it from a clone with deno task cli bench; a compiled ipcbus binary finds
the tree in the current directory or with --source DIR, and needs deno on
the PATH.

  TARGET          target ids or parts of them: pipe, fifo, sysv, c, spin, stdio, unix, json, await
  --quick         a smoke run (1 short repetition; results to bench/results/quick.json)
  --runs N        repetitions per measurement (default 5)
  --spin µs       the ipcbus spin option for both ends
  --out FILE      where the JSON results go (default bench/results/latest.json)
  --chart FILE    also write an SVG bar chart of the results
  --from FILE     chart or print an existing results file instead of running
  --source DIR    the ipcbus source tree (for a compiled binary)

Other CPU load skews the figures: close what you can, and compare ratios
from one run rather than absolute times across runs.`;

function locate(source: string | undefined): string | null {
  const candidates: string[] = [];
  if (source !== undefined) candidates.push(`${source.replace(/\/$/, "")}/bench/bench.ts`);
  else {
    const here = new URL("../bench/bench.ts", import.meta.url);
    if (here.protocol === "file:" && !Deno.build.standalone) {
      candidates.push(decodeURIComponent(here.pathname));
    }
    candidates.push(`${Deno.cwd()}/bench/bench.ts`);
  }
  for (const path of candidates) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Try the next.
    }
  }
  return null;
}

const encoder = new TextEncoder();

const MEASUREMENT = /^\s+(\S+)\s+(\d+ [KM]?i?B (round trip|one-way)|skipped:|FAILED:)/;

/** A one-line progress bar on stderr, redrawn in place. */
class ProgressBar {
  #done = 0;
  #total = 0;
  #last = "starting";
  readonly #started = performance.now();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor() {
    this.#timer = setInterval(() => this.draw(), 250);
  }

  line(text: string): void {
    const header = /^ipcbus bench: (\d+) targets?/.exec(text);
    if (header) {
      // Targets have 1 to 4 measurements (a round trip, one-way at several sizes): about 3 on average.
      this.#total = Math.ceil(Number(header[1]) * 3);
      this.#last = "measuring";
    }
    const hit = MEASUREMENT.exec(text);
    if (hit) {
      this.#done++;
      this.#last = text.trim().replace(/\s+/g, " ");
    } else if (text.trim()) this.#last = text.trim();
    this.draw();
  }

  draw(): void {
    const columns = (() => {
      try {
        const { columns } = Deno.consoleSize();
        return columns >= 40 ? columns : 80;
      } catch {
        return 80;
      }
    })();
    const total = Math.max(this.#total, this.#done + 1);
    const fraction = Math.min(this.#done / total, 0.99);
    const width = 24;
    const filled = Math.round(fraction * width);
    const seconds = Math.round((performance.now() - this.#started) / 1000);
    const head = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${this.#done}/~${total} ${seconds}s `;
    const text = (head + this.#last).slice(0, Math.max(10, columns - 1));
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text}`));
  }

  end(): void {
    clearInterval(this.#timer);
    Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
  }
}

function summaryTable(summary: BenchSummary): string[] {
  const s = style();
  const columns = summary.metrics.flatMap((metric) => {
    const { value, unit } = headline(metric);
    const size = sizeLabel(metric.size);
    const cell = (read: (f: BenchFigure) => number | undefined) => (row: BenchRow) =>
      figure(row.metrics[metric.id] ? read(row.metrics[metric.id]) : undefined);
    return metric.kind === "round trip"
      ? [{ title: `${size} rt p50 µs`, cell: cell(value) }, { title: `p99 µs`, cell: cell((f) => f.p99) }]
      : [{ title: `${size} ${unit}`, cell: cell(value) }];
  });
  return table(
    ["target", ...columns.map((c) => c.title)],
    summary.rows.map((r) =>
      r.status === "ok"
        ? [r.label, ...columns.map((c) => c.cell(r))]
        : [r.label, r.status, ...columns.slice(1).map(() => "")]
    ),
    new Set(columns.map((_, i) => i + 1)),
    s,
  );
}

function readResults(path: string): BenchSummary {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new Failure(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    return summarize(JSON.parse(text));
  } catch (error) {
    throw new Failure(`${path} is not a benchmark results file: ${(error as Error).message}`);
  }
}

function writeChart(path: string, summary: BenchSummary): void {
  try {
    Deno.writeTextFileSync(path, benchChart(summary));
  } catch (error) {
    throw new Failure(`cannot write the chart to ${path}: ${(error as Error).message}`);
  }
  eprintln(`chart written to ${path}`);
}

/**
 * Runs `ipcbus bench`.
 *
 * @param args The arguments after `bench`.
 * @returns The exit code.
 */
export async function bench(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    quick: { type: "boolean" },
    runs: { type: "string" },
    spin: { type: "string" },
    out: { type: "string" },
    chart: { type: "string" },
    from: { type: "string" },
    source: { type: "string" },
  }, "bench");
  const chart = typeof values.chart === "string" ? values.chart : undefined;
  if (typeof values.from === "string") {
    if (positionals.length || values.quick || values.runs || values.spin || values.out) {
      throw new UsageError("--from only goes with --chart (it runs nothing)", "bench");
    }
    const summary = readResults(values.from);
    printLines(summaryTable(summary));
    if (chart) writeChart(chart, summary);
    return 0;
  }
  const runs = intOption(values.runs, "--runs", 1, 1000, "bench");
  const spin = intOption(values.spin, "--spin", 0, 1_000_000, "bench");
  const script = locate(typeof values.source === "string" ? values.source : undefined);
  if (script === null) {
    throw new Failure(
      "the benchmark needs the ipcbus source tree (bench/bench.ts): run it from a clone with " +
        "deno task cli bench, or pass --source DIR",
    );
  }
  const root = script.slice(0, -"/bench/bench.ts".length);
  const out = typeof values.out === "string"
    ? (values.out.startsWith("/") ? values.out : `${Deno.cwd()}/${values.out}`)
    : `${root}/bench/results/${values.quick ? "quick" : "latest"}.json`;
  const deno = Deno.build.standalone ? "deno" : Deno.execPath();
  const benchArgs = [
    "run",
    "--quiet",
    "--allow-ffi",
    "--allow-run",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    script,
    ...(values.quick ? ["--quick"] : []),
    ...(runs !== undefined ? ["--runs", String(runs)] : []),
    ...(spin !== undefined ? ["--spin", String(spin)] : []),
    "--out",
    out,
    ...positionals,
  ];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(deno, {
      args: benchArgs,
      cwd: root,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .spawn();
  } catch (error) {
    throw new Failure(`cannot start ${deno}: ${(error as Error).message}`);
  }
  // Ctrl-C reaches the benchmark too (same process group): it stops its
  // children and exits; wait for that instead of dying first.
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const bar = Deno.stderr.isTerminal() ? new ProgressBar() : null;
  const stdout = new Response(child.stdout).text();
  const stderrLines: string[] = [];
  try {
    for await (const line of lines(child.stderr)) {
      stderrLines.push(line);
      if (bar) bar.line(line);
      else eprintln(line);
    }
  } finally {
    bar?.end();
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  const status = await child.status;
  const report = await stdout;
  if (report.trim()) printLines([report.trimEnd()]);
  if (interrupted) {
    eprintln("interrupted");
    return 1;
  }
  if (status.code === 2) {
    // The benchmark refused its arguments.
    throw new UsageError(
      stderrLines.filter((l) => l.startsWith("bench:")).join(" ") || "bad arguments",
      "bench",
    );
  }
  if (!status.success) {
    // Failures were printed as lines; with a bar they were hidden: show them.
    if (bar) { for (const line of stderrLines.filter((l) => /FAILED|error/i.test(l))) eprintln(line); }
    if (!report.trim()) throw new Failure(`the benchmark failed (exit code ${status.code})`);
  }
  if (chart) writeChart(chart, readResults(out));
  return status.success ? 0 : 1;
}
