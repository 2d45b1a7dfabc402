/**
 * `spawn()`: start a child process connected by a `pipe:` channel.
 *
 * @module
 */

import { Channel, type ChannelOptions } from "./channel.ts";
import { closeFd, duplicateAbove, fstatFd, makePipe } from "./ffi/fd.ts";
import {
  ChildWatcher,
  currentEnvironment,
  type ExitStatus,
  SIGNAL_NUMBERS,
  spawnProcess,
} from "./ffi/process.ts";
import { CHILD_READ_FD, CHILD_WRITE_FD, Pipe, PIPE_ENV, type PipeOptions } from "./transports/pipe.ts";

export type { ExitStatus } from "./ffi/process.ts";

/** Options of {@linkcode spawn}. */
export interface SpawnOptions<T> extends ChannelOptions<T>, PipeOptions {
  /** Arguments after the command. */
  args?: readonly string[];
  /** Environment variables to set in the child (on top of this process's, unless `clearEnv`). */
  env?: Readonly<Record<string, string>>;
  /** Start the child with only `env` (and ipcbus's own variable). */
  clearEnv?: boolean;
  /** Working directory of the child. */
  cwd?: string;
}

/** A child started by {@linkcode spawn}. */
export class ChildProcess implements AsyncDisposable {
  readonly #watcher: ChildWatcher;
  #status: Promise<ExitStatus> | undefined;

  /** @param pid A child of this process. */
  constructor(pid: number) {
    this.#watcher = new ChildWatcher(pid);
  }

  /** The child's process id. */
  get pid(): number {
    return this.#watcher.pid;
  }

  /**
   * Settles when the child exits (it is reaped then). While awaited, it
   * keeps this process alive.
   */
  get status(): Promise<ExitStatus> {
    return this.#status ??= this.#watcher.wait();
  }

  /**
   * Sends a signal (default `SIGTERM`). Does nothing once the child was reaped.
   *
   * @param signal A signal name or number.
   */
  kill(signal: Deno.Signal | number = "SIGTERM"): void {
    const number = typeof signal === "number" ? signal : SIGNAL_NUMBERS[signal];
    if (number === undefined) throw new TypeError(`unknown signal ${signal}`);
    this.#watcher.kill(number);
  }

  /** Kills the child with `SIGKILL` if it still runs, and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#watcher.poll()) this.kill("SIGKILL");
    await this.status;
  }
}

/** What {@linkcode spawn} returns. */
export interface SpawnResult<T> {
  /** The parent's end: what it sends the child receives from `pipe:parent`, and back. */
  channel: Channel<T>;
  /** The child process. */
  child: ChildProcess;
}

/**
 * Starts `command` with a pair of anonymous pipes connected to it. In the
 * child, `await open("pipe:parent")` returns the other end. The child keeps
 * this process's stdin, stdout and stderr.
 *
 * Needs `--allow-run` for the command (checked, though the process is started
 * through libc) and `--allow-ffi`.
 *
 * @typeParam T The type of the values carried.
 * @param command The program (looked up in `PATH`) or its path.
 * @param options Arguments, environment, working directory, codec, schema, and pipe options.
 * @returns The channel and the child.
 * @throws {Deno.errors.NotCapable} Without run permission for `command`.
 * @throws {NotFoundError} When the command does not exist.
 *
 * @example Talking to a child Deno script
 * ```ts ignore
 * import { spawn } from "@ipcbus/ipcbus";
 *
 * const { channel, child } = spawn<string>(Deno.execPath(), {
 *   args: ["run", "--allow-ffi", "child.ts"],
 * });
 * await channel.send("ping");
 * console.log(await channel.receive());
 * channel.close();
 * console.log(await child.status);
 * ```
 */
export function spawn<T = unknown>(command: string, options: SpawnOptions<T> = {}): SpawnResult<T> {
  const permission = Deno.permissions.querySync({ name: "run", command });
  if (permission.state !== "granted") {
    throw new Deno.errors.NotCapable(
      `spawn needs --allow-run (or --allow-run=${command}) to start "${command}"`,
    );
  }
  const [childReadLow, parentWrite] = makePipe();
  const [parentRead, childWriteLow] = makePipe();
  const owned = [childReadLow, parentWrite, parentRead, childWriteLow];
  let childRead = -1, childWrite = -1;
  try {
    // Move the child's ends above the numbers they will get in the child, so
    // the dup2 actions cannot overwrite each other.
    childRead = duplicateAbove(childReadLow, 10);
    childWrite = duplicateAbove(childWriteLow, 10);
    const identity = `1:${CHILD_READ_FD}:${CHILD_WRITE_FD}:${fstatFd(childRead).ino}:${
      fstatFd(childWrite).ino
    }`;
    const extra = Object.entries(options.env ?? {}).map(([name, value]) => {
      if (name.includes("=") || name === "") {
        throw new TypeError(`invalid environment variable name "${name}"`);
      }
      if (name === PIPE_ENV) {
        throw new TypeError(`${PIPE_ENV} is set by spawn() itself and cannot be given in env`);
      }
      return `${name}=${value}`;
    });
    const overridden = new Set([PIPE_ENV, ...Object.keys(options.env ?? {})]);
    const inherited = options.clearEnv
      ? []
      : currentEnvironment().filter((entry) => !overridden.has(entry.slice(0, entry.indexOf("="))));
    const pid = spawnProcess({
      file: command,
      argv: [command, ...(options.args ?? [])],
      env: [...inherited, ...extra, `${PIPE_ENV}=${identity}`],
      dup2: [[childRead, CHILD_READ_FD], [childWrite, CHILD_WRITE_FD]],
      cwd: options.cwd,
    });
    const child = new ChildProcess(pid);
    closeFd(childReadLow);
    closeFd(childWriteLow);
    owned.length = 0;
    const pipe = new Pipe(parentRead, parentWrite, options);
    pipe.info.address = `pipe:child/${pid}`;
    const channel = new Channel<T>(pipe, options);
    return { channel, child };
  } catch (error) {
    for (const fd of owned) closeFd(fd);
    throw error;
  } finally {
    if (childRead >= 0) closeFd(childRead);
    if (childWrite >= 0) closeFd(childWrite);
  }
}
