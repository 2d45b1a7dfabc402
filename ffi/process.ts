/**
 * Starting and reaping child processes with posix_spawnp(3) and a pidfd, so
 * that descriptors can be handed to the child at fixed numbers.
 *
 * @module
 */

import { cString, readCString } from "./cstring.ts";
import { POLL, SIG, SPAWN, SYS, WNOHANG } from "./constants.ts";
import { closeFd } from "./fd.ts";
import { E, errno, lastError, libc, strerror } from "./libc.ts";
import { OPAQUE } from "./structs.ts";
import { errnoError } from "../errors.ts";
import { waitFd } from "./poller.ts";

/** What posix_spawnp needs. */
export interface SpawnRequest {
  /** Program name (searched in `PATH`) or path. */
  file: string;
  /** argv, including argv[0]. */
  argv: readonly string[];
  /** The complete environment as `NAME=value` strings. */
  env: readonly string[];
  /** `[from, to]` pairs: the child gets `from` at descriptor `to`. */
  dup2: readonly (readonly [number, number])[];
  /** Working directory for the child. */
  cwd?: string;
}

/**
 * The calling process's current environment, read from libc's `environ`
 * (so it reflects `Deno.env.set` and needs no `--allow-env`).
 *
 * @returns `NAME=value` strings.
 */
export function currentEnvironment(): string[] {
  const address = libc().dlsym(null, cString("environ"));
  if (address === null) return [];
  const table = new Deno.UnsafePointerView(address).getPointer();
  if (table === null) return [];
  const view = new Deno.UnsafePointerView(table);
  const entries: string[] = [];
  for (let offset = 0;; offset += 8) {
    const entry = view.getPointer(offset);
    if (entry === null) break;
    entries.push(readCString(entry)!);
  }
  return entries;
}

function pointerArray(strings: readonly Uint8Array[]): BigUint64Array<ArrayBuffer> {
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((bytes, i) => {
    table[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes)));
  });
  return table;
}

/**
 * Starts a process. The child's signal mask is cleared and `SIGPIPE` is
 * reset to its default (Deno ignores it, and ignored signals survive exec).
 *
 * @param request What to start.
 * @returns The child's pid.
 */
export function spawnProcess(request: SpawnRequest): number {
  const lib = libc();
  const actions = new Uint8Array(OPAQUE.posix_spawn_file_actions_t + 64);
  const attributes = new Uint8Array(OPAQUE.posix_spawnattr_t + 64);
  const empty = new Uint8Array(OPAQUE.sigset_t);
  const defaults = new Uint8Array(OPAQUE.sigset_t);
  check(lib.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
  try {
    check(lib.posix_spawnattr_init(attributes), "posix_spawnattr_init");
    try {
      lib.sigemptyset(empty);
      lib.sigemptyset(defaults);
      lib.sigaddset(defaults, SIG.SIGPIPE);
      check(lib.posix_spawnattr_setsigmask(attributes, empty), "posix_spawnattr_setsigmask");
      check(lib.posix_spawnattr_setsigdefault(attributes, defaults), "posix_spawnattr_setsigdefault");
      check(
        lib.posix_spawnattr_setflags(attributes, SPAWN.SETSIGMASK | SPAWN.SETSIGDEF),
        "posix_spawnattr_setflags",
      );
      for (const [from, to] of request.dup2) {
        check(lib.posix_spawn_file_actions_adddup2(actions, from, to), "posix_spawn_file_actions_adddup2");
      }
      if (request.cwd !== undefined) {
        const addchdir = lib.posix_spawn_file_actions_addchdir_np;
        if (!addchdir) {
          throw new Error("spawn: `cwd` needs glibc 2.29 or later (posix_spawn_file_actions_addchdir_np)");
        }
        check(addchdir(actions, cString(request.cwd, "cwd")), "posix_spawn_file_actions_addchdir_np");
      }
      const argvStrings = request.argv.map((arg) => cString(arg, "argument"));
      const envStrings = request.env.map((entry) => cString(entry, "environment entry"));
      const argv = pointerArray(argvStrings);
      const envp = pointerArray(envStrings);
      const pid = new Int32Array(1);
      const result = lib.posix_spawnp(
        new Uint8Array(pid.buffer),
        cString(request.file, "command"),
        actions,
        attributes,
        new Uint8Array(argv.buffer),
        Deno.UnsafePointer.of(envp),
      );
      // Keep the strings alive until posix_spawnp has returned.
      void argvStrings.length, void envStrings.length;
      if (result !== 0) throw errnoError(result, "posix_spawnp", request.file, strerror(result));
      return pid[0];
    } finally {
      lib.posix_spawnattr_destroy(attributes);
    }
  } finally {
    lib.posix_spawn_file_actions_destroy(actions);
  }
}

function check(result: number, call: string): void {
  if (result !== 0) throw errnoError(result, call, "", strerror(result));
}

/** How a child ended, shaped like `Deno.CommandStatus`. */
export interface ExitStatus {
  /** True when the child exited with code 0. */
  success: boolean;
  /** The exit code, or 128 + the signal number when killed by a signal. */
  code: number;
  /** The signal that killed the child, or null. */
  signal: Deno.Signal | null;
}

const SIGNAL_NAMES: Record<number, Deno.Signal> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
};

/** Signal numbers by name (the same on x86_64 and aarch64 for these). */
export const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = Object.fromEntries(
  Object.entries(SIGNAL_NAMES).map(([number, name]) => [name, Number(number)]),
);

/**
 * Watches one child through a pidfd, so waiting never blocks the event loop
 * and a pid is never reused under us before we reap it.
 */
export class ChildWatcher {
  readonly pid: number;
  #pidfd: number;
  #status: ExitStatus | undefined;

  /** @param pid A child of this process, not yet reaped. */
  constructor(pid: number) {
    this.pid = pid;
    const fd = Number(libc().syscall2(SYS.pidfd_open, BigInt(pid), 0n));
    this.#pidfd = fd >= 0 ? fd : -1;
    if (fd < 0 && errno() !== E.ENOSYS) throw lastError("pidfd_open", `pid ${pid}`);
  }

  /** The status once reaped, else undefined. */
  get exited(): ExitStatus | undefined {
    return this.#status;
  }

  /**
   * Reaps the child if it has exited.
   *
   * @returns The status, or undefined while it runs.
   */
  poll(): ExitStatus | undefined {
    if (this.#status) return this.#status;
    const status = new Int32Array(1);
    for (;;) {
      const result = libc().waitpid(this.pid, new Uint8Array(status.buffer), WNOHANG);
      if (result === 0) return undefined;
      if (result === this.pid) break;
      const code = errno();
      if (code === E.EINTR) continue;
      throw lastError("waitpid", `pid ${this.pid}`);
    }
    const raw = status[0];
    const signal = raw & 0x7f;
    this.#status = signal === 0
      ? { success: ((raw >> 8) & 0xff) === 0, code: (raw >> 8) & 0xff, signal: null }
      : { success: false, code: 128 + signal, signal: SIGNAL_NAMES[signal] ?? null };
    if (this.#pidfd >= 0) closeFd(this.#pidfd);
    this.#pidfd = -1;
    return this.#status;
  }

  /**
   * Waits for the child to exit and reaps it.
   *
   * @returns The exit status.
   */
  async wait(): Promise<ExitStatus> {
    for (;;) {
      const status = this.poll();
      if (status) return status;
      if (this.#pidfd >= 0) await waitFd(this.#pidfd, POLL.IN);
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /**
   * Sends a signal unless the child has been reaped already.
   *
   * @param signal The signal number.
   */
  kill(signal: number): void {
    if (this.#status) return;
    if (libc().kill(this.pid, signal) !== 0 && errno() !== E.ESRCH) {
      throw lastError("kill", `pid ${this.pid}`);
    }
  }
}
