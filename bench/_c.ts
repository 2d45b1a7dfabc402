/**
 * The C baseline: finds a compiler, builds bench/c/ipcbench.c (and
 * sysvbench.c, posixbench.c) into a temporary directory, and runs it.
 *
 * @module
 */

/** One round-trip repetition, in µs. */
export interface RoundTripRun {
  p50: number;
  p99: number;
  mean: number;
  n: number;
}

/** One throughput repetition. */
export interface ThroughputRun {
  seconds: number;
  count: number;
}

/** A built C program, or why there is none. */
export type CBuild =
  | { ok: true; binary: string; sysvBinary: string; posixBinary: string; compiler: string }
  | { ok: false; reason: string };

const SOURCE = new URL("./c/ipcbench.c", import.meta.url).pathname;
const SYSV_SOURCE = new URL("./c/sysvbench.c", import.meta.url).pathname;
const POSIX_SOURCE = new URL("./c/posixbench.c", import.meta.url).pathname;

async function output(command: string, args: string[]): Promise<Deno.CommandOutput | null> {
  try {
    return await new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/**
 * Builds the C program with `$CC`, `cc`, `gcc` or `clang` (the first found),
 * `-O2`, into `dir`.
 *
 * @param dir A private temporary directory.
 * @returns The binary, or the reason the C rows are skipped.
 */
export async function buildC(dir: string): Promise<CBuild> {
  const candidates = [Deno.env.get("CC"), "cc", "gcc", "clang"].filter((c): c is string => !!c);
  for (const compiler of candidates) {
    const version = await output(compiler, ["--version"]);
    if (version === null || !version.success) continue;
    const binary = `${dir}/ipcbench`;
    const sysvBinary = `${dir}/sysvbench`;
    const posixBinary = `${dir}/posixbench`;
    const builds = [[SOURCE, binary, []], [SYSV_SOURCE, sysvBinary, []], [POSIX_SOURCE, posixBinary, [
      "-lrt",
    ]]] as const;
    for (const [source, output_, libraries] of builds) {
      const build = await output(compiler, ["-O2", "-o", output_, source, ...libraries]);
      if (build === null || !build.success) {
        const stderr = build ? new TextDecoder().decode(build.stderr).trim() : "";
        return { ok: false, reason: `${compiler} -O2 ${source} failed${stderr ? `:\n${stderr}` : ""}` };
      }
    }
    const name = new TextDecoder().decode(version.stdout).split("\n")[0].trim();
    return { ok: true, binary, sysvBinary, posixBinary, compiler: `${compiler} (${name})` };
  }
  return { ok: false, reason: `no C compiler found (tried ${candidates.join(", ")})` };
}

/** Children still running, so an interrupted benchmark can kill them. */
export const runningC: Set<Deno.ChildProcess> = new Set();

/**
 * Runs the C program once: `reps` repetitions after its own warm-up.
 *
 * @param binary The built program.
 * @param options Mechanism, mode, payload size, count per repetition,
 *   repetitions, a time box for round trips, a directory for FIFOs, the spin
 *   budget (0: blocking), and a time limit.
 * @returns One result per repetition.
 */
export async function runC<M extends "rt" | "tp">(
  binary: string,
  options: {
    mechanism: "pipe" | "fifo" | "sysv" | "posix";
    mode: M;
    size: number;
    count: number;
    reps: number;
    /** Round trips: stop a repetition after this long (once 1000 are done); 0 for no limit. */
    seconds: number;
    dir: string;
    spinMicros: number;
    timeoutMs: number;
  },
): Promise<M extends "rt" ? RoundTripRun[] : ThroughputRun[]> {
  const { mechanism, mode, size, count, reps, seconds, dir, spinMicros, timeoutMs } = options;
  const child = new Deno.Command(binary, {
    args: [mechanism, mode, String(size), String(count), String(reps), String(seconds), dir],
    env: spinMicros > 0 ? { IPCBENCH_SPIN_US: String(spinMicros) } : {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  runningC.add(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    const result = await child.output();
    const stdout = new TextDecoder().decode(result.stdout);
    if (!result.success) {
      const stderr = new TextDecoder().decode(result.stderr).trim();
      throw new Error(
        `ipcbench ${mechanism} ${mode} failed (${
          result.signal ? `signal ${result.signal}` : `exit ${result.code}`
        }): ${stderr || "(no message)"}`,
      );
    }
    const runs = stdout.trim().split("\n").map((line) => JSON.parse(line));
    if (runs.length !== reps) throw new Error(`ipcbench printed ${runs.length} results, expected ${reps}`);
    return runs;
  } finally {
    clearTimeout(timer);
    runningC.delete(child);
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }
}
