/**
 * Lazy access to libc through `Deno.dlopen`, and errno.
 *
 * Importing this module costs nothing and needs no permission: the library is
 * opened on the first call of {@linkcode libc}. `libc.so.6` is tried first;
 * the environment variable `IPCBUS_LIBC` (read only when `--allow-env` grants
 * it, so it never prompts) names another library to try before it.
 *
 * @module
 */

import { errnoError, type IpcError } from "../errors.ts";
import { type Libc, SYMBOLS } from "./_symbols.ts";

export type { Libc } from "./_symbols.ts";

/** Environment variable naming the C library to load instead of `libc.so.6`. */
export const LIBC_ENV = "IPCBUS_LIBC";

const DEFAULT_CANDIDATES = ["libc.so.6", "libc.so"] as const;

let loaded: Libc | undefined;
let loadedPath = "";
let errnoCell: Int32Array | undefined;

function envOverride(): string | undefined {
  try {
    const state = Deno.permissions.querySync({ name: "env", variable: LIBC_ENV });
    return state.state === "granted" ? Deno.env.get(LIBC_ENV) : undefined;
  } catch {
    return undefined;
  }
}

function load(): Libc {
  if (Deno.build.os !== "linux") {
    throw new Error(`ipcbus supports Linux only (this is ${Deno.build.os})`);
  }
  const override = envOverride();
  const candidates = override ? [override, ...DEFAULT_CANDIDATES] : [...DEFAULT_CANDIDATES];
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      const library = Deno.dlopen(path, SYMBOLS);
      loaded = library.symbols;
      loadedPath = path;
      // errno is thread-local; its address is fixed for this thread, so one
      // view over it makes every later read free of FFI calls.
      const cell = loaded.__errno_location();
      if (cell === null) throw new Error("__errno_location() returned NULL");
      errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(cell, 4));
      return loaded;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
        throw new Deno.errors.NotCapable(
          `ipcbus needs --allow-ffi to call libc (Deno.dlopen("${path}") was refused)`,
          { cause: error },
        );
      }
      failures.push(`${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  throw new Error(
    `ipcbus could not load the C library; tried ${failures.join("; ")}. ` +
      `Set ${LIBC_ENV} to the path of libc.so.6 and grant --allow-env=${LIBC_ENV}.`,
  );
}

/**
 * The libc symbols, loading the library on first use.
 *
 * @returns The symbol table.
 * @throws {Deno.errors.NotCapable} Without `--allow-ffi`.
 * @throws {Error} When no C library could be loaded (lists what was tried).
 */
export function libc(): Libc {
  return loaded ?? load();
}

/**
 * The path the C library was loaded from (for helper workers).
 *
 * @returns The path given to `Deno.dlopen`.
 */
export function libcPath(): string {
  libc();
  return loadedPath;
}

/**
 * The calling thread's errno, as left by the last synchronous libc call.
 * Read it right after the call: any other FFI call may change it, and so may
 * work the JavaScript engine does on this thread in between (a garbage
 * collection maps and unmaps memory). Keep the code between the call and
 * this read free of allocations, and treat an errno the call cannot return
 * as a reason to retry rather than to fail.
 *
 * @returns The errno value.
 */
export function errno(): number {
  return errnoCell![0];
}

/**
 * How many times in a row a call must fail with an errno it should not
 * give before ipcbus believes it (see {@linkcode errno}: it can be stale).
 * A call that keeps failing the same way fails for real; one overwritten
 * errno does not turn a transient `EAGAIN` into an error.
 */
export const BELIEVE_ERRNO_AFTER = 3;

/**
 * The C library's description of an errno value.
 *
 * @param code The errno value.
 * @returns Text such as "No such file or directory".
 */
export function strerror(code: number): string {
  const pointer = libc().strerror(code);
  return pointer === null ? "" : new Deno.UnsafePointerView(pointer).getCString();
}

/**
 * Builds the error for the errno left by the call that just failed. Call it
 * immediately after the failing call.
 *
 * @param syscall The failing call.
 * @param detail What it worked on (a path, a descriptor).
 * @returns The mapped error (see `errnoError` in `errors.ts`).
 */
export function lastError(syscall: string, detail = ""): IpcError {
  const code = errno();
  return errnoError(code, syscall, detail, strerror(code));
}

/** errno values the layers above test for. Linux uses the same values on every architecture. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  EACCES: 13,
  EEXIST: 17,
  EINVAL: 22,
  EPIPE: 32,
  ELOOP: 40,
  ENXIO: 6,
  ENOSYS: 38,
  E2BIG: 7,
  ENOSPC: 28,
  ERANGE: 34,
  EIDRM: 43,
  ENOMSG: 42,
  ENOMEM: 12,
  EFBIG: 27,
  EMFILE: 24,
  ENFILE: 23,
  ENAMETOOLONG: 36,
  ETIMEDOUT: 110,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EBUSY: 16,
  EISDIR: 21,
  ENOLCK: 37,
  EOPNOTSUPP: 95,
} as const;

/**
 * A symbol the table marks `optional` (absent from C libraries older than
 * glibc 2.34, which keep it in librt or libpthread), or a clear error.
 *
 * @param name The symbol's name in {@linkcode Libc}.
 * @returns The callable symbol.
 * @throws {Error} When the loaded C library lacks it.
 */
export function need<K extends keyof Libc>(name: K): NonNullable<Libc[K]> {
  const symbol = libc()[name];
  if (symbol === null || symbol === undefined) {
    throw new Error(
      `${String(name)} is not in ${loadedPath} (glibc before 2.34 keeps it in librt/libpthread; ` +
        `set ${LIBC_ENV} to a C library that has it)`,
    );
  }
  return symbol as NonNullable<Libc[K]>;
}
