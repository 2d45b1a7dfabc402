/**
 * Statistics and number formatting for the benchmark.
 *
 * @module
 */

/**
 * Nearest-rank percentile (the same definition as bench/c/ipcbench.c).
 *
 * @param sorted Ascending samples.
 * @param q From 0 to 1.
 * @returns The sample at rank ceil(q·n).
 */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n)));
  return sorted[rank - 1];
}

/**
 * The median (mean of the middle two for an even count).
 *
 * @param values The values.
 * @returns The median, NaN for none.
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * (max − min) / median, as a fraction: how much the runs disagree.
 *
 * @param values The values.
 * @returns The relative spread.
 */
export function spread(values: readonly number[]): number {
  if (values.length < 2) return 0;
  return (Math.max(...values) - Math.min(...values)) / median(values);
}

/**
 * A round-trip summary of raw samples in µs.
 *
 * @param samples The samples (sorted in place).
 * @returns p50, p99, mean and count.
 */
export function summarize(samples: Float64Array): { p50: number; p99: number; mean: number; n: number } {
  let sum = 0;
  for (const sample of samples) sum += sample;
  samples.sort();
  return {
    p50: percentile(samples, 0.5),
    p99: percentile(samples, 0.99),
    mean: sum / samples.length,
    n: samples.length,
  };
}

/**
 * Clamps and rounds.
 *
 * @param value The value.
 * @param min Lower bound.
 * @param max Upper bound.
 * @returns The integer within bounds.
 */
export function clampInt(value: number, min: number, max: number): number {
  if (!Number.isFinite(value)) return max;
  return Math.round(Math.min(max, Math.max(min, value)));
}

/**
 * A number with 3 significant digits, thousands grouped above 1000.
 *
 * @param value The value.
 * @returns The text, "—" for NaN.
 */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return "—";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US");
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}
