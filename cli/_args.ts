/**
 * Argument parsing for the `ipcbus` subcommands: `node:util`'s `parseArgs`
 * in strict mode, with its errors turned into usage errors (exit code 2),
 * and checked integer options.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { HelpRequested, UsageError } from "./_output.ts";

/** An option of {@linkcode parse}: a flag or a string (repeatable with `multiple`). */
export type OptionSpec =
  | { type: "boolean"; short?: string }
  | { type: "string"; short?: string; multiple?: boolean };

/** Parsed options: booleans, strings and string lists by name. */
export type Values = Record<string, string | boolean | string[] | undefined>;

/**
 * Parses a subcommand's arguments (`--help`/`-h` is always accepted: it
 * throws {@linkcode HelpRequested}, which the dispatcher turns into the help text).
 *
 * @param args The arguments after the subcommand.
 * @param options The options it accepts.
 * @param command The subcommand, for usage errors.
 * @returns Values and positionals.
 * @throws {UsageError} For an unknown option or a missing value.
 * @throws {HelpRequested} For `--help` or `-h`.
 */
export function parse(
  args: readonly string[],
  options: Record<string, OptionSpec>,
  command: string,
): { values: Values; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    const message = error instanceof Error ? error.message.split("\n").join(" ") : String(error);
    throw new UsageError(message, command);
  }
  if (parsed.values.help) throw new HelpRequested(command);
  return { values: { ...parsed.values } as Values, positionals: parsed.positionals };
}

/**
 * An integer option, checked.
 *
 * @param value The option's text (undefined when not given).
 * @param name The option, for messages (`--count`).
 * @param min Smallest allowed.
 * @param max Largest allowed.
 * @param command The subcommand, for usage errors.
 * @returns The number, or undefined when not given.
 * @throws {UsageError} When it is not an integer in range.
 */
export function intOption(
  value: string | boolean | string[] | undefined,
  name: string,
  min: number,
  max: number,
  command: string,
): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value).trim();
  const n = /^-?(0x[0-9a-f]+|0o[0-7]+|\d+)$/i.test(text)
    ? Number(text.startsWith("-") ? -Number(text.slice(1)) : text)
    : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name} must be an integer from ${min} to ${max}, got "${text}"`, command);
  }
  return n;
}

/**
 * A comma-separated, repeatable list option (`--kind a,b --kind c`).
 *
 * @param value The option's values.
 * @returns The items, trimmed, without empty ones.
 */
export function listOption(value: string | boolean | string[] | undefined): string[] {
  if (value === undefined || typeof value === "boolean") return [];
  return (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(",")).map((v) => v.trim())
    .filter((v) => v !== "");
}
