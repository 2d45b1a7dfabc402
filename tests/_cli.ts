// Runs the `ipcbus` command as a subprocess, with the permissions of `deno task cli`.

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
export class IpcbusChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: Promise<string>;

  constructor(args: string[]) {
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...CLI_PERMISSIONS, CLI, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let buffered = "";
    this.#lines = this.process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
      new TransformStream<string, string>({
        transform(chunk, controller) {
          buffered += chunk;
          const parts = buffered.split("\n");
          buffered = parts.pop()!;
          for (const part of parts) controller.enqueue(part);
        },
        flush(controller) {
          if (buffered) controller.enqueue(buffered);
        },
      }),
    )[Symbol.asyncIterator]();
    this.#stderr = new Response(this.process.stderr).text();
  }

  /** The next line on stdout; throws with stderr when stdout ends first. */
  async line(): Promise<string> {
    const next = await this.#lines.next();
    if (next.done) {
      const status = await this.process.status;
      throw new Error(`ipcbus ended (code ${status.code}) before a line; stderr:\n${await this.#stderr}`);
    }
    return next.value;
  }

  /** Waits for the exit; returns the code and stderr. */
  async finish(): Promise<{ code: number; stderr: string }> {
    for (;;) if ((await this.#lines.next()).done) break;
    return { code: (await this.process.status).code, stderr: await this.#stderr };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // Exited already.
    }
    await this.process.status;
    await this.#stderr.catch(() => "");
    for (;;) if ((await this.#lines.next().catch(() => ({ done: true }))).done) break;
  }
}
