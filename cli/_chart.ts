/**
 * The benchmark chart of `ipcbus bench --chart FILE`: a hand-written SVG
 * with one horizontal bar chart per measurement (64 B round trip p50,
 * 64 B one-way messages/s, 64 KiB one-way MB/s), bars coloured by kind
 * (ipcbus, C, Deno), from the JSON that `bench/bench.ts` writes.
 *
 * @module
 */

/** One measurement of one target. */
export interface BenchFigure {
  /** Payload size in bytes. */
  size: number;
  /** Round trip: median p50 in µs. */
  p50?: number;
  /** Round trip: median p99 in µs. */
  p99?: number;
  /** One-way: messages per second. */
  messagesPerSecond?: number;
  /** One-way: MB (10^6 bytes) per second. */
  megabytesPerSecond?: number;
}

/** One target's figures, read from the results JSON. */
export interface BenchRow {
  id: string;
  label: string;
  kind: string;
  status: string;
  /** By metric id (`rt`, `tp64`, `tp8k`, `tp64k`…). */
  metrics: Record<string, BenchFigure>;
}

/** A measurement present in the file: a round trip or a one-way throughput at one size. */
export interface BenchMetric {
  id: string;
  size: number;
  kind: "round trip" | "one-way";
}

/** The results file, as far as the chart needs it. */
export interface BenchSummary {
  date: string | null;
  host: string | null;
  reps: number | null;
  /** The measurements, in the order the file lists them. */
  metrics: BenchMetric[];
  rows: BenchRow[];
}

const finite = (
  v: unknown,
): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

/**
 * A payload size for people: `64 B`, `8 KiB`.
 *
 * @param size Bytes.
 * @returns The text.
 */
export function sizeLabel(size: number): string {
  if (size >= 1024 * 1024 && size % (1024 * 1024) === 0) return `${size / 1024 / 1024} MiB`;
  if (size >= 1024 && size % 1024 === 0) return `${size / 1024} KiB`;
  return `${size} B`;
}

/**
 * Reads a results file's JSON (bench/results/latest.json, schema 1).
 *
 * @param json The parsed JSON.
 * @returns The rows.
 * @throws {TypeError} When it is not a benchmark results file.
 */
export function summarize(json: unknown): BenchSummary {
  const root = json as {
    date?: unknown;
    host?: { os?: unknown; cpu?: unknown; cpus?: unknown; deno?: unknown };
    plan?: { reps?: unknown };
    targets?: Record<string, unknown>;
  };
  if (
    typeof root !== "object" || root === null || typeof root.targets !== "object" || root.targets === null
  ) {
    throw new TypeError("not an ipcbus benchmark results file (no targets)");
  }
  const rows: BenchRow[] = [];
  const metrics = new Map<string, BenchMetric>();
  for (const [id, value] of Object.entries(root.targets)) {
    const t = value as {
      label?: unknown;
      kind?: unknown;
      status?: unknown;
      metrics?: Record<string, { size?: unknown; median?: Record<string, unknown> } | undefined>;
    };
    const figures: Record<string, BenchFigure> = {};
    for (const [metric, result] of Object.entries(t.metrics ?? {})) {
      const median = result?.median ?? {};
      const size = finite(result?.size) ?? 0;
      const figure: BenchFigure = {
        size,
        p50: finite(median.p50),
        p99: finite(median.p99),
        messagesPerSecond: finite(median.messagesPerSecond),
        megabytesPerSecond: finite(median.megabytesPerSecond),
      };
      const kind = figure.p50 !== undefined
        ? "round trip"
        : figure.messagesPerSecond !== undefined
        ? "one-way"
        : null;
      if (kind === null) continue;
      figures[metric] = figure;
      if (!metrics.has(metric)) metrics.set(metric, { id: metric, size, kind });
    }
    rows.push({
      id,
      label: typeof t.label === "string" ? t.label : id,
      kind: typeof t.kind === "string" ? t.kind : "other",
      status: typeof t.status === "string" ? t.status : "ok",
      metrics: figures,
    });
  }
  const host = root.host
    ? [
      root.host.os,
      root.host.cpus !== undefined ? `${root.host.cpus} × ${root.host.cpu}` : root.host.cpu,
      root.host.deno ? `Deno ${root.host.deno}` : undefined,
    ].filter((x) => typeof x === "string" && x).join(" · ")
    : null;
  const ordered = [...metrics.values()].sort((a, b) =>
    (a.kind === b.kind ? 0 : a.kind === "round trip" ? -1 : 1) || a.size - b.size
  );
  return {
    date: typeof root.date === "string" ? root.date : null,
    host: host || null,
    reps: finite(root.plan?.reps) ?? null,
    metrics: ordered,
    rows,
  };
}

/**
 * The headline number of a measurement: p50 for round trips, messages/s for
 * one-way payloads under 1 KiB, MB/s for larger ones.
 *
 * @param metric The measurement.
 * @returns How to read it from a row, its unit, and whether lower is better.
 */
export function headline(
  metric: BenchMetric,
): { value: (f: BenchFigure) => number | undefined; unit: string; title: string } {
  const size = sizeLabel(metric.size);
  if (metric.kind === "round trip") {
    return { value: (f) => f.p50, unit: "µs", title: `${size} round trip, median p50 (µs): lower is better` };
  }
  if (metric.size < 1024) {
    return {
      value: (f) => f.messagesPerSecond,
      unit: "msg/s",
      title: `${size} one-way throughput (messages/s): higher is better`,
    };
  }
  return {
    value: (f) => f.megabytesPerSecond,
    unit: "MB/s",
    title: `${size} one-way throughput (MB/s): higher is better`,
  };
}

/**
 * A figure for people: 3 significant digits, thousands separated.
 *
 * @param value The number.
 * @returns The text.
 */
export function figure(value: number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  if (value >= 100) return Math.round(value).toLocaleString("en-US");
  return value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const COLOURS: Record<string, string> = { ipcbus: "#2563eb", c: "#6b7280", deno: "#d97706" };
const KIND_NAMES: Record<string, string> = {
  ipcbus: "ipcbus",
  c: "C (same mechanism)",
  deno: "Deno alternatives",
};

/**
 * Draws the chart.
 *
 * @param summary The results.
 * @returns The SVG document.
 */
export function benchChart(summary: BenchSummary): string {
  const width = 960;
  const labelWidth = 340;
  const barMax = 440;
  const rowHeight = 22;
  const parts: string[] = [];
  let y = 28;
  parts.push(`<text x="16" y="${y}" class="title">ipcbus benchmark</text>`);
  y += 20;
  const sub = [
    summary.date?.slice(0, 19).replace("T", " "),
    summary.host,
    summary.reps ? `median of ${summary.reps} runs` : null,
  ]
    .filter(Boolean).join(" · ");
  if (sub) {
    parts.push(`<text x="16" y="${y}" class="sub">${escape(sub)}</text>`);
    y += 14;
  }
  // Legend.
  let x = 16;
  y += 12;
  for (const kind of ["ipcbus", "c", "deno"]) {
    if (!summary.rows.some((r) => r.kind === kind)) continue;
    parts.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${COLOURS[kind]}"/>`);
    parts.push(`<text x="${x + 18}" y="${y}" class="label">${escape(KIND_NAMES[kind])}</text>`);
    x += 40 + KIND_NAMES[kind].length * 7;
  }
  y += 16;
  for (const metric of summary.metrics) {
    const panel = headline(metric);
    const rows = summary.rows.filter((r) =>
      r.status === "ok" && r.metrics[metric.id] && panel.value(r.metrics[metric.id]) !== undefined
    );
    if (rows.length === 0) continue;
    const max = Math.max(...rows.map((r) => panel.value(r.metrics[metric.id])!));
    y += 22;
    parts.push(`<text x="16" y="${y}" class="panel">${escape(panel.title)}</text>`);
    y += 10;
    for (const row of rows) {
      const figureOf = row.metrics[metric.id];
      const value = panel.value(figureOf)!;
      const note = metric.kind === "round trip" && figureOf.p99 !== undefined
        ? ` (p99 ${figure(figureOf.p99)})`
        : "";
      const length = max > 0 ? Math.max(1, (value / max) * barMax) : 1;
      const top = y + 4;
      parts.push(
        `<text x="${labelWidth - 8}" y="${top + 13}" class="label" text-anchor="end">${
          escape(row.label)
        }</text>`,
        `<rect x="${labelWidth}" y="${top}" width="${length.toFixed(1)}" height="${rowHeight - 6}" ` +
          `fill="${COLOURS[row.kind] ?? "#9ca3af"}"><title>${
            escape(`${row.label}: ${figure(value)} ${panel.unit}`)
          }</title></rect>`,
        `<text x="${(labelWidth + length + 6).toFixed(1)}" y="${top + 13}" class="value">${
          escape(`${figure(value)} ${panel.unit}${note}`)
        }</text>`,
      );
      y += rowHeight;
    }
  }
  const skipped = summary.rows.filter((r) => r.status !== "ok");
  if (skipped.length) {
    y += 24;
    parts.push(
      `<text x="16" y="${y}" class="sub">${
        escape(`not measured: ${skipped.map((r) => `${r.id} (${r.status})`).join(", ")}`)
      }</text>`,
    );
  }
  const height = y + 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `role="img" aria-label="ipcbus benchmark">`,
    "<style>",
    "  text { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; fill: #111827; }",
    "  .title { font-size: 18px; font-weight: 600; }",
    "  .sub { font-size: 12px; fill: #4b5563; }",
    "  .panel { font-size: 14px; font-weight: 600; }",
    "  .label { font-size: 12px; }",
    "  .value { font-size: 12px; fill: #374151; }",
    "</style>",
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    ...parts,
    "</svg>",
    "",
  ].join("\n");
}
