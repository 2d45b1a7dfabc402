// Runs the `ipcbus` command as a subprocess, with the permissions of `deno task cli`.

import { DenoChild } from "./_helpers.ts";

/** Absolute path of the command's entry. */
export const CLI = new URL("../cli/ipcbus.ts", import.meta.url).pathname;

/** The permissions `deno task cli` grants (keep in step with deno.json). */
export const CLI_PERMISSIONS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env=IPCBUS_LIBC",
];

/** What a finished run printed. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  bytes: Uint8Array;
}

/**
 * Runs `ipcbus ARGS` to completion (killed after 60 s rather than hanging the run).
 *
 * @param args The arguments.
 * @param stdin Bytes for standard input (default: none, /dev/null).
 * @param env Extra environment variables.
 * @param wrapper A command to run it under (such as `setpriv --reuid=65534 ...`).
 */
export async function ipcbus(
  args: string[],
  stdin?: Uint8Array | string,
  env?: Record<string, string>,
  wrapper: string[] = [],
): Promise<CliResult> {
  const [command, ...rest] = [
    ...wrapper,
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    ...CLI_PERMISSIONS,
    CLI,
  ];
  const child = new Deno.Command(command, {
    args: [...rest, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env,
    signal: AbortSignal.timeout(60_000),
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
    bytes: output.stdout,
  };
}

/** A long-running `ipcbus` child (such as `recv --follow`) whose stdout is read line by line. */
export class IpcbusChild extends DenoChild {
  /**
   * @param args The arguments after `ipcbus`.
   */
  constructor(args: string[]) {
    super(CLI, args, CLI_PERMISSIONS);
  }
}
