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

/**
 * A long-running `ipcbus` child (such as `recv --follow`) whose stdout and
 * stderr are read line by line (stderr for `recv --verbose`'s "receiving
 * from" line). Killed on dispose.
 */
export class IpcbusChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #out: AsyncIterator<string>;
  readonly #err: AsyncIterator<string>;
  readonly #errSeen: string[] = [];

  /**
   * @param args The arguments after `ipcbus`.
   */
  constructor(args: string[]) {
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...CLI_PERMISSIONS, CLI, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#out = lines(this.process.stdout);
    this.#err = lines(this.process.stderr);
  }

  /** The next line on stdout; throws (with stderr) if stdout ends first. */
  async line(): Promise<string> {
    const next = await this.#out.next();
    if (next.done) {
      const status = await this.process.status;
      throw new Error(
        `ipcbus ended (code ${status.code}) before writing a line; stderr:\n${await this.#rest()}`,
      );
    }
    return next.value;
  }

  /** The next line on stderr; throws (with what stderr said) if stderr ends first. */
  async errorLine(): Promise<string> {
    const next = await this.#err.next();
    if (next.done) {
      const status = await this.process.status;
      throw new Error(
        `ipcbus ended (code ${status.code}) before this line on stderr; stderr:\n${await this.#rest()}`,
      );
    }
    this.#errSeen.push(next.value);
    return next.value;
  }

  /** All of stderr: the lines read with errorLine() and the rest. */
  async #rest(): Promise<string> {
    const all = [...this.#errSeen];
    for (;;) {
      const next = await this.#err.next();
      if (next.done) break;
      all.push(next.value);
    }
    return all.join("\n");
  }

  /** Waits for exit; returns the status, the rest of stdout and all of stderr. */
  async finish(): Promise<{ status: Deno.CommandStatus; rest: string[]; stderr: string }> {
    const rest: string[] = [];
    for (;;) {
      const next = await this.#out.next();
      if (next.done) break;
      rest.push(next.value);
    }
    return { status: await this.process.status, rest, stderr: await this.#rest() };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.finish().catch(() => undefined);
  }
}

/** A byte stream as lines (without their newlines; a last line without one too). */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    const parts = buffered.split("\n");
    buffered = parts.pop()!;
    yield* parts;
  }
  if (buffered) yield buffered;
}
