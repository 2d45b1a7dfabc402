/**
 * Output helpers of the `ipcbus` command: errors that carry an exit code,
 * aligned tables, colour (only on a terminal, never with `NO_COLOR`), JSON,
 * byte sizes, and writing to stdout without dying on a closed pipe.
 *
 * @module
 */

/** Exit codes of the command (documented in docs/cli.md). */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** A mistake in the command line: printed with a hint, exit code 2. */
export class UsageError extends Error {
  /** The command whose usage applies (for the hint), or "" for the top level. */
  readonly command: string;

  /**
   * @param message What is wrong with the arguments.
   * @param command The subcommand, for the `--help` hint.
   */
  constructor(message: string, command = "") {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}

/** An expected failure (printed as its message, without a stack): exit code 1. */
export class Failure extends Error {
  /**
   * @param message What failed, in words.
   * @param options The cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "Failure";
  }
}

/** Thrown when stdout's reader has gone (`ipcbus recv --follow | head -1`): the command ends quietly. */
export class OutputClosed extends Error {
  constructor() {
    super("stdout was closed");
    this.name = "OutputClosed";
  }
}

/** Thrown by `parse` for `--help`/`-h`: the dispatcher prints the subcommand's help, exit code 0. */
export class HelpRequested extends Error {
  /** The subcommand whose help to print. */
  readonly command: string;

  /**
   * @param command The subcommand.
   */
  constructor(command: string) {
    super(`help for ${command}`);
    this.name = "HelpRequested";
    this.command = command;
  }
}

/** ANSI styles, or identity functions when colour is off. */
export interface Style {
  /** Whether colour is on. */
  readonly enabled: boolean;
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
}

/**
 * Whether to colour what goes to a stream: only a terminal, and never when
 * `NO_COLOR` is set (Deno reads it at start-up without `--allow-env`).
 *
 * @param stream The stream written to.
 * @returns True when ANSI colours may be used.
 */
export function colourFor(stream: { isTerminal(): boolean } = Deno.stdout): boolean {
  return stream.isTerminal() && !Deno.noColor;
}

/**
 * The styles for a stream.
 *
 * @param enabled Whether colour is on (see {@linkcode colourFor}).
 * @returns The styles.
 */
export function style(enabled: boolean = colourFor()): Style {
  const wrap = (open: number, close: number) => (text: string) =>
    enabled ? `\x1b[${open}m${text}\x1b[${close}m` : text;
  return {
    enabled,
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
  };
}

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * The width of text as shown (without ANSI sequences).
 *
 * @param text The text.
 * @returns Its visible length in code points.
 */
export function visibleLength(text: string): number {
  return [...text.replace(ANSI, "")].length;
}

/**
 * Lays rows out in aligned columns, separated by two spaces.
 *
 * @param header The column titles.
 * @param rows The cells (already styled, if at all).
 * @param rightAligned Columns (by index) aligned to the right, such as numbers.
 * @param styled The style for the header.
 * @returns The table's lines.
 */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  rightAligned: ReadonlySet<number> = new Set(),
  styled: Style = style(false),
): string[] {
  const widths = header.map((title, c) =>
    Math.max(visibleLength(title), ...rows.map((r) => visibleLength(r[c])))
  );
  const line = (cells: readonly string[]) =>
    cells.map((cell, c) => {
      const pad = " ".repeat(widths[c] - visibleLength(cell));
      return rightAligned.has(c) ? pad + cell : c === cells.length - 1 ? cell : cell + pad;
    }).join("  ").trimEnd();
  return [styled.bold(line(header)), ...rows.map(line)];
}

/**
 * A byte count for people: `512 B`, `4.0 KiB`, `1.5 MiB`.
 *
 * @param bytes The count.
 * @returns The text.
 */
export function humanBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "-";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/**
 * Permission bits as `ipcs` shows them, with a leading zero: `0600`.
 *
 * @param mode The mode (only the low 12 bits are shown).
 * @returns The octal text.
 */
export function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, "0")}`;
}

const encoder = new TextEncoder();

/** Writes all of `bytes` to a stream (writeSync may write less than asked). */
function writeAll(stream: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += stream.writeSync(bytes.subarray(offset));
}

/**
 * Writes all of `bytes` to stdout.
 *
 * @param bytes What to write.
 * @throws {OutputClosed} When the reader of stdout has gone.
 */
export function writeOut(bytes: Uint8Array): void {
  try {
    writeAll(Deno.stdout, bytes);
  } catch (error) {
    if (error instanceof Deno.errors.BrokenPipe) throw new OutputClosed();
    throw error;
  }
}

/**
 * Writes a line of text to stdout.
 *
 * @param text The line, without its newline.
 * @throws {OutputClosed} When the reader of stdout has gone.
 */
export function println(text = ""): void {
  writeOut(encoder.encode(`${text}\n`));
}

/**
 * Writes lines to stdout.
 *
 * @param lines The lines.
 */
export function printLines(lines: readonly string[]): void {
  if (lines.length) println(lines.join("\n"));
}

/**
 * Writes a line to stderr (messages, progress, prompts), ignoring a closed stderr.
 *
 * @param text The line.
 */
export function eprintln(text = ""): void {
  try {
    writeAll(Deno.stderr, encoder.encode(`${text}\n`));
  } catch {
    // Nobody reads stderr: nothing to do.
  }
}

/**
 * The lines of a byte stream, decoded as UTF-8 (without their newlines; a
 * last line without one is yielded too, an empty one is not).
 *
 * @param stream Such as `Deno.stdin.readable` or a child's stderr.
 * @returns The lines, as they arrive.
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let at: number;
    while ((at = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, at);
      buffered = buffered.slice(at + 1);
    }
  }
  buffered += decoder.decode();
  if (buffered !== "") yield buffered;
}

/**
 * Prints a value as indented JSON on stdout (dates as ISO strings, bigints as numbers).
 *
 * @param value The value.
 */
export function printJson(value: unknown): void {
  println(JSON.stringify(value, jsonReplacer, 2));
}

/** Replacer for JSON output: bigints become numbers (or strings beyond 2^53), errors their messages. */
export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= -BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : value.toString();
  }
  if (value instanceof Error) return describeError(value);
  return value;
}

/**
 * One line about an error: its message, and the errno name and failing call for ipcbus errors.
 *
 * @param error Anything thrown.
 * @returns The text.
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const extra: string[] = [];
  const detail = error as Error & { code?: unknown; syscall?: unknown };
  if (typeof detail.code === "string" && detail.code && !error.message.includes(detail.code)) {
    extra.push(detail.code);
  }
  if (typeof detail.syscall === "string" && detail.syscall && !error.message.includes(detail.syscall)) {
    extra.push(`in ${detail.syscall}`);
  }
  return extra.length ? `${error.message} (${extra.join(", ")})` : error.message;
}
