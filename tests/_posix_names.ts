// What the tests of the /dev/shm-backed POSIX objects (named semaphores, shared memory) share: fresh
// names carrying this module's RUN id, removal for `finally`, and inspection through libc and tools
// (Deno's own file APIs need --allow-all for paths under /dev).
import assert from "node:assert/strict";
import { NotFoundError } from "../errors.ts";
import { readDirectory } from "../ffi/dir.ts";
import { lstatPath } from "../ffi/fd.ts";
import { RUN } from "./_helpers.ts";

/** A fresh name carrying this module's RUN id (so the final check finds anything left). */
export function freshName(): string {
  return `/ipcbus-test-${RUN}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Removes the name with `unlink` if it still exists (for `finally`). */
export function unlinkIfPresent(unlink: (name: string) => void, name: string): void {
  try {
    unlink(name);
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
}

/** Whether a path exists (lstat through libc). */
export function exists(path: string): boolean {
  return lstatPath(path) !== null;
}

/** Runs a command (touch, mkfifo, mkdir, ln, chmod, rm, df), checks it succeeded, and returns its stdout. */
export async function run(command: string, ...args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args }).output();
  assert.ok(output.success, `${command} ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  return new TextDecoder().decode(output.stdout);
}

/** Entries of /dev/shm made by this test run. */
export function shmEntries(): string[] {
  return readDirectory("/dev/shm")!.filter((name) => name.includes(RUN));
}
