// Shared helpers for the test files (not a test module itself).
//
// Every kernel object a test makes lives in a temporary directory named
// `ipcbus-test-<RUN>-…` under /tmp (or the system temp dir), removed in
// `finally` by `TempDir[Symbol.asyncDispose]`; `leftovers()` lists anything
// still there for a final check.

import { Presence } from "../sync/presence.ts";
import type { TransportInfo } from "../transport.ts";
import { readDirectory } from "../ffi/dir.ts";
import { fstatFd } from "../ffi/fd.ts";

/** One id per test module: every temp name made by that module contains it. */
export const RUN = crypto.randomUUID().slice(0, 8);

/** Absolute path of a fixture script. */
export function fixture(name: string): string {
  return new URL(`./fixtures/${name}`, import.meta.url).pathname;
}

/** A temporary directory, removed (recursively) on dispose. */
export class TempDir implements AsyncDisposable {
  readonly path: string;
  private constructor(path: string) {
    this.path = path;
  }
  /** Makes `/tmp/ipcbus-test-<RUN>-<random>`. */
  static async make(): Promise<TempDir> {
    return new TempDir(await Deno.makeTempDir({ prefix: `ipcbus-test-${RUN}-` }));
  }
  /** A fresh path inside the directory (nothing is created). */
  file(name = `${crypto.randomUUID()}.fifo`): string {
    return `${this.path}/${name}`;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.path, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
    // Presence records of FIFOs and logs under the directory (removed with it, not unlinked).
    for (const { address } of Presence.list()) {
      if (address.startsWith(`fifo:${this.path}/`) || address.startsWith(`file:${this.path}/`)) {
        Presence.forget(address);
      }
    }
  }
}

/** Names under the temp dir that this module made and did not remove. */
export function leftovers(): string[] {
  const dir = Deno.env.get("TMPDIR") ?? "/tmp";
  return [...Deno.readDirSync(dir)].map((entry) => entry.name).filter((name) => name.includes(RUN));
}

// ---------------------------------------------------------------------------
// Raw libc for tests that must write bytes the library would never write.

const raw = Deno.dlopen("libc.so.6", {
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  geteuid: { parameters: [], result: "u32" },
});

/** The effective uid (Deno.uid() would need --allow-sys). */
export function euid(): number {
  return raw.symbols.geteuid();
}

function errno(): number {
  const pointer = raw.symbols.__errno_location();
  return pointer === null ? -1 : new Deno.UnsafePointerView(pointer).getInt32();
}

/** Writes all of `bytes` to a blocking-or-not descriptor (retries short writes; EAGAIN is an error). */
export function rawWrite(fd: number, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) {
    const n = Number(raw.symbols.write(fd, bytes.subarray(offset), BigInt(bytes.length - offset)));
    if (n < 0) {
      const code = errno();
      if (code === 4) continue; // EINTR
      throw new Error(`write(${fd}) failed: errno ${code}`);
    }
    offset += n;
  }
}

/** One read(2) of at most `max` bytes (the descriptor may be non-blocking: EAGAIN throws). */
export function rawRead(fd: number, max: number): Uint8Array {
  const buffer = new Uint8Array(max);
  for (;;) {
    const n = Number(raw.symbols.read(fd, buffer, BigInt(max)));
    if (n >= 0) return buffer.subarray(0, n);
    const code = errno();
    if (code !== 4) throw new Error(`read(${fd}) failed: errno ${code}`);
  }
}

/** close(2). */
export function rawClose(fd: number): void {
  raw.symbols.close(fd);
}

/** open(2) of a path for writing, non-blocking (a FIFO needs a reader, else ENXIO). */
export function rawOpenWrite(path: string): number {
  const O_WRONLY = 1, O_NONBLOCK = 0o4000, O_CLOEXEC = 0o2000000;
  const fd = raw.symbols.open(new TextEncoder().encode(path + "\0"), O_WRONLY | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) throw new Error(`open(${path}) failed: errno ${errno()}`);
  return fd;
}

/** pipe2(2) with O_CLOEXEC: [read, write]. */
export function rawPipe(): [number, number] {
  const fds = new Int32Array(2);
  if (raw.symbols.pipe2(new Uint8Array(fds.buffer), 0o2000000) !== 0) throw new Error("pipe2 failed");
  return [fds[0], fds[1]];
}

/** Builds a frame header (+ payload), with any field overridable to make it wrong. */
export function frame(
  type: number,
  payload: Uint8Array,
  header: { magic?: [number, number]; version?: number; flags?: number; length?: number } = {},
): Uint8Array {
  const bytes = new Uint8Array(12 + payload.length);
  const view = new DataView(bytes.buffer);
  const [m0, m1] = header.magic ?? [0x49, 0x42];
  bytes[0] = m0;
  bytes[1] = m1;
  bytes[2] = header.version ?? 1;
  bytes[3] = header.flags ?? 0;
  view.setUint32(4, type, true);
  view.setUint32(8, header.length ?? payload.length, true);
  bytes.set(payload, 12);
  return bytes;
}

/** A payload whose every byte depends on (seed, index), to detect corruption and interleaving. */
export function pattern(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** Byte-wise equality without printing megabytes on failure. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Child Deno processes with a line protocol on stdout.

/** A `deno run` child whose stdout is read line by line. */
export class DenoChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  #stderr: Promise<string>;

  constructor(
    script: string,
    args: string[],
    permissions: string[] = ["--allow-ffi"],
    env?: Record<string, string>,
  ) {
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...permissions, script, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env,
    }).spawn();
    this.#lines = this.process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())
      [Symbol.asyncIterator]();
    this.#stderr = new Response(this.process.stderr).text();
  }

  /** The next line on stdout; throws (with stderr) if stdout ends first. */
  async line(): Promise<string> {
    const next = await this.#lines.next();
    if (next.done) {
      const status = await this.process.status;
      throw new Error(
        `child ended (code ${status.code}) before writing a line; stderr:\n${await this.#stderr}`,
      );
    }
    return next.value;
  }

  /** Waits for a line equal to `expected`; throws on anything else. */
  async expect(expected: string): Promise<void> {
    const got = await this.line();
    if (got !== expected) throw new Error(`child said "${got}", expected "${expected}"`);
  }

  /** Waits for exit; returns the status and the rest of stdout and stderr. */
  async finish(): Promise<{ status: Deno.CommandStatus; rest: string[]; stderr: string }> {
    const rest: string[] = [];
    for (;;) {
      const next = await this.#lines.next();
      if (next.done) break;
      rest.push(next.value);
    }
    return { status: await this.process.status, rest, stderr: await this.#stderr };
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

function splitLines(): TransformStream<string, string> {
  let buffered = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffered += chunk;
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const part of parts) controller.enqueue(part);
    },
    flush(controller) {
      if (buffered) controller.enqueue(buffered);
    },
  });
}

/** A `deno run` child driven by commands on stdin, answering with lines on stdout. */
export class CommandChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stderr: Promise<string>;

  /**
   * @param script The fixture to run (with `--allow-ffi`).
   * @param args Its arguments.
   * @param wrapper A command to run Deno under (such as `setpriv ...`).
   * @param cwd The child's working directory.
   */
  constructor(script: string, args: string[], wrapper: string[] = [], cwd?: string) {
    const deno = [Deno.execPath(), "run", "--quiet", "--no-prompt", "--allow-ffi", script];
    const [command, ...rest] = [...wrapper, ...deno, ...args];
    this.process = new Deno.Command(command, {
      args: rest,
      cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.process.stdin.getWriter();
    this.#lines = this.process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())
      [Symbol.asyncIterator]();
    this.#stderr = new Response(this.process.stderr).text();
  }

  /** The next line on stdout (bounded); throws with stderr if stdout ends first. */
  async line(): Promise<string> {
    const next = await bounded(this.#lines.next(), "a line from the child");
    if (next.done) {
      const status = await this.process.status;
      throw new Error(
        `child ended (code ${status.code}) before writing a line; stderr:\n${await this.#stderr}`,
      );
    }
    return next.value;
  }

  /** Waits for a line equal to `expected`; throws on anything else. */
  async expect(expected: string): Promise<void> {
    const got = await this.line();
    if (got !== expected) throw new Error(`child said "${got}", expected "${expected}"`);
  }

  /** Everything the child wrote to stderr (resolves when it exits). */
  stderr(): Promise<string> {
    return this.#stderr;
  }

  /** Writes one command line to the child's stdin. */
  async send(command: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(`${command}\n`));
  }

  /** Sends a command and returns the line that answers it. */
  async ask(command: string): Promise<string> {
    await this.send(command);
    return await this.line();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.#stdin.close().catch(() => undefined);
    await this.process.status;
    await this.#stderr.catch(() => undefined);
    for (;;) if ((await this.#lines.next().catch(() => ({ done: true }))).done) break;
  }
}

/** Runs `deno run <script>` to completion and returns code, stdout and stderr. */
export async function runDeno(
  script: string,
  args: string[],
  permissions: string[],
  env?: Record<string, string>,
  watchdog?: AbortSignal,
): Promise<{ code: number; signal: Deno.Signal | null; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-prompt", ...permissions, script, ...args],
    stdin: "null",
    env,
    signal: watchdog ?? AbortSignal.timeout(60_000), // kill rather than hang the run
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    signal: output.signal,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Waits for `promise`, but fails (instead of hanging the whole run) if it has
 * not settled after `ms`. A safety net for awaits on other processes; never
 * used to assert how fast something is.
 */
export async function bounded<T>(promise: T | Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what} after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How many descriptors of this process refer to the file `dev`/`ino`
 * (other test modules may run in this process: count only those).
 */
export function descriptorsOf({ dev, ino }: { dev: bigint; ino: bigint }): number {
  return readDirectory("/proc/self/fd")!.filter((fd) => {
    try {
      const stat = fstatFd(Number(fd));
      return stat.dev === dev && stat.ino === ino;
    } catch {
      return false; // the directory's own descriptor, closed by now
    }
  }).length;
}

/**
 * The `info` of a transport made up for a test: scheme `scheme`, message
 * types but no type filter, no priorities, one reader and one writer, not
 * persistent; the limits given.
 */
export function testTransportInfo(
  scheme: string,
  limits: { maxMessageSize: number; maxType: number },
): TransportInfo {
  return {
    scheme,
    address: `${scheme}:`,
    capabilities: {
      types: true,
      typeFilter: false,
      priority: false,
      multiWriter: false,
      multiReader: false,
      persistent: false,
    },
    maxPriority: 0,
    ...limits,
  };
}

/**
 * Polls `condition` every 2 ms until it holds (a rendezvous on state, never
 * a timed sleep standing in for one), failing after `ms`.
 */
export async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** The lines a child prints until it prints "done". */
export async function linesUntilDone(process: DenoChild): Promise<string[]> {
  const lines: string[] = [];
  for (;;) {
    const line = await bounded(process.line(), "a line from the child");
    if (line === "done") return lines;
    lines.push(line);
  }
}

/** Whether a C compiler (`cc`) runs here; tests that build C peers are skipped without one. */
export const hasCc: boolean = await (async () => {
  try {
    const { success } = await new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch {
    return false;
  }
})();

/** Whether setpriv(1) runs here (tests use it to run a child as another user). */
export const hasSetpriv: boolean = await (async () => {
  try {
    const { success } = await new Deno.Command("setpriv", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return success;
  } catch {
    return false;
  }
})();
