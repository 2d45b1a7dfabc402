// SysvSharedMemory: opening by key / private / ftok / id, sizes and page
// rounding, data across processes, nattch, remove while attached, detach and
// stale views, read-only attachments, bad arguments, a permission error, and
// no segment left behind.
import assert from "node:assert/strict";
import { AlreadyExistsError, ChannelClosedError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { IPC } from "../ffi/sysv.ts";
import { libc } from "../ffi/libc.ts";
import { SysvSharedMemory } from "../memory/sysv_shared_memory.ts";
import {
  CommandChild,
  euid,
  fixture,
  hasSetpriv,
  leftovers,
  pattern,
  sameBytes,
  TempDir,
} from "./_helpers.ts";

/** Every segment id this module made (checked against /proc/sysvipc/shm at the end). */
const made = new Set<number>();
const PAGE = 4096;

function randomKey(): number {
  return 0x50000000 + 1 + Math.floor(Math.random() * 0x0ffffffe);
}

function track(shm: SysvSharedMemory): SysvSharedMemory {
  made.add(shm.id);
  return shm;
}

/** Detaches and removes (for `finally`); tolerates a segment already gone. */
function cleanup(shm: SysvSharedMemory | undefined): void {
  if (!shm) return;
  try {
    shm.remove();
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
  shm.detach();
}

/** Removes the segment with this key if there is one (for `finally`). */
function removeKey(key: number): void {
  const id = libc().shmget(key, 0n, 0);
  if (id < 0) return;
  made.add(id);
  libc().shmctl(id, IPC.RMID, null);
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** A fixture child driven by stdin commands. */
function startChild(args: string[], wrapper: string[] = [], cwd?: string): CommandChild {
  return new CommandChild(fixture("sysv_shm_child.ts"), args, wrapper, cwd);
}

Deno.test("create, open, exclusive, missing; sizes are kept and mapped in whole pages", () => {
  const key = randomKey();
  let shm: SysvSharedMemory | undefined;
  try {
    assert.throws(() => SysvSharedMemory.open({ key }), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, `got ${error}`);
      assert.equal(error.syscall, "shmget");
      assert.match(error.message, /create: true/);
      return true;
    });
    shm = track(SysvSharedMemory.open({ key, size: 100, create: true, exclusive: true }));
    assert.equal(shm.created, true);
    assert.equal(shm.key, key);
    assert.equal(shm.size, 100, "the kernel keeps the size asked for");
    assert.equal(shm.mappedSize, PAGE, "and maps a whole page");
    assert.equal(shm.view.length, 100);
    assert.ok(shm.view.every((byte) => byte === 0), "a new segment is zero-filled");
    assert.equal(shm.readOnly, false);
    const stat = shm.stat();
    assert.equal(stat.size, 100);
    assert.equal(stat.nattch, 1);
    assert.equal(stat.cpid, Deno.pid);
    assert.equal(stat.lpid, Deno.pid);
    assert.equal(stat.mode, 0o600);
    assert.equal(stat.uid, euid());
    assert.equal(stat.key, key);
    assert.equal(stat.removed, false);
    assert.ok(stat.atime instanceof Date);
    assert.equal(stat.dtime, null);

    assert.throws(
      () => SysvSharedMemory.open({ key, size: 100, create: true, exclusive: true }),
      (error: unknown) => error instanceof AlreadyExistsError && error.code === "EEXIST",
    );
    using again = SysvSharedMemory.open({ key, size: 100, create: true });
    assert.equal(again.created, false);
    assert.equal(again.id, shm.id);
    using whole = SysvSharedMemory.open({ key });
    assert.equal(whole.size, 100);
    using smaller = SysvSharedMemory.open({ key, size: 10 });
    assert.equal(smaller.size, 100, "the view covers the whole segment");
    assert.equal(shm.stat().nattch, 4);
    // Larger than the segment: a clear RangeError naming both sizes.
    for (
      const open of [
        () => SysvSharedMemory.open({ key, size: 101 }),
        () => SysvSharedMemory.open({ key, size: PAGE, create: true }),
      ]
    ) {
      assert.throws(open, (error: unknown) => {
        assert.ok(error instanceof RangeError, `got ${error}`);
        assert.match(error.message, /has 100 bytes; \d+ were asked for/);
        return true;
      });
    }
    assert.throws(
      () => SysvSharedMemory.open({ id: whole.id, size: 101 }),
      /has 100 bytes; 101 were asked for/,
    );
    assert.equal(shm.stat().nattch, 4, "a refused open leaves no attachment");

    using big = track(SysvSharedMemory.open({ private: true, size: 3 * PAGE + 1 }));
    try {
      assert.equal(big.size, 3 * PAGE + 1);
      assert.equal(big.mappedSize, 4 * PAGE);
      big.view[3 * PAGE] = 7;
      assert.equal(big.view[3 * PAGE], 7);
    } finally {
      big.remove();
    }
  } finally {
    cleanup(shm);
  }
  assert.throws(() => SysvSharedMemory.open({ key }), NotFoundError);
});

Deno.test("private segments, ftok keys, modes, open by id", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("ftok-anchor");
  Deno.writeTextFileSync(path, "");
  let a: SysvSharedMemory | undefined;
  let b: SysvSharedMemory | undefined;
  try {
    a = track(SysvSharedMemory.open({ private: true, size: 64, mode: 0o640 }));
    assert.equal(a.key, 0);
    assert.equal(a.stat().mode, 0o640);
    using byId = SysvSharedMemory.open({ id: a.id });
    a.view[5] = 99;
    assert.equal(byId.view[5], 99, "two attachments, one memory");
    assert.equal(byId.key, 0);

    b = track(SysvSharedMemory.open({ path, project: 3, size: 10, create: true, exclusive: true }));
    using same = SysvSharedMemory.open({ path, project: 3 });
    assert.equal(same.id, b.id);
    assert.throws(() => SysvSharedMemory.open({ path }), /project 1\)/, "project defaults to 1");
    assert.throws(() => SysvSharedMemory.open({ path, project: 4 }), NotFoundError);
  } finally {
    cleanup(a);
    cleanup(b);
  }
  assert.throws(() => SysvSharedMemory.open({ id: a!.id }), (error: unknown) => {
    assert.ok(error instanceof NotFoundError, `got ${error}`);
    assert.equal(error.syscall, "shmat");
    return true;
  });
});

Deno.test("bad keys and arguments: TypeError / RangeError", async () => {
  const open = SysvSharedMemory.open;
  assert.throws(() => open(null as never), TypeError);
  assert.throws(() => open({ size: 10 }), /exactly one of key, private, path/);
  assert.throws(() => open({ key: 1, private: true }), TypeError);
  assert.throws(() => open({ key: "1" as unknown as number }), TypeError);
  assert.throws(() => open({ key: 0 }), /IPC_PRIVATE/);
  assert.throws(() => open({ key: 2 ** 32 }), RangeError);
  assert.throws(() => open({ key: 0.5 }), RangeError);
  assert.throws(() => open({ id: -1 }), RangeError);
  assert.throws(() => open({ id: 1, create: true, size: 1 }), TypeError);
  assert.throws(() => open({ private: true }), /size is needed/);
  assert.throws(() => open({ private: true, size: 0 }), RangeError);
  assert.throws(() => open({ private: true, size: 1.5 }), RangeError);
  assert.throws(() => open({ private: true, size: -1 }), RangeError);
  assert.throws(() => open({ private: true, size: 1, mode: 0o1000 }), RangeError);
  assert.throws(() => open({ private: true, size: 1, readOnly: "yes" as never }), TypeError);
  assert.throws(() => open({ key: randomKey(), exclusive: true, size: 1 }), /exclusive needs create/);
  assert.throws(() => open({ path: "/tmp", project: 300 }), RangeError);
  assert.throws(() => open({ path: "/tmp" }), /project/);
  // Beyond SHMMAX / the address space: the kernel refuses, as a RangeError.
  assert.throws(() => open({ private: true, size: Number.MAX_SAFE_INTEGER }), (error: unknown) => {
    return error instanceof RangeError || (error instanceof Error && /ENOMEM|ENOSPC/.test(error.message));
  });
  assert.deepEqual((await procSegments()).filter((entry) => made.has(entry.id)), []);
});

Deno.test("detach: the view throws, stale views become empty, the segment stays", () => {
  const shm = track(SysvSharedMemory.open({ private: true, size: 32 }));
  try {
    const view = shm.view;
    const words = new Int32Array(view.buffer, 0, 8);
    view[0] = 1;
    assert.equal(shm.attached, true);
    using second = SysvSharedMemory.open({ id: shm.id });
    assert.equal(shm.stat().nattch, 2);
    shm.detach();
    assert.equal(shm.attached, false);
    assert.throws(() => shm.view, ChannelClosedError);
    assert.equal(view.length, 0, "no access to unmapped memory through a kept reference");
    assert.equal(words.length, 0);
    assert.equal(view[0], undefined);
    shm.detach(); // idempotent
    assert.equal(shm.stat().nattch, 1, "stat works while detached");
    assert.equal(second.view[0], 1, "the segment and its data stay");
    second[Symbol.dispose]();
    assert.equal(shm.stat().nattch, 0);
    assert.ok(shm.stat().dtime instanceof Date);
    second.remove(); // no attachment left: destroyed at once
    assert.throws(() => shm.remove(), NotFoundError, "removed by someone else");
    assert.throws(() => shm.stat(), ChannelClosedError);
  } finally {
    cleanup(shm);
  }
});

Deno.test("across processes: data both ways, nattch, lpid, a read-only attachment", async () => {
  const shm = track(SysvSharedMemory.open({ private: true, size: 1000 }));
  try {
    const data = pattern(1000, 7);
    shm.view.set(data);
    await using child = startChild(["id", String(shm.id)]);
    assert.equal(await child.line(), "attached 1000 2");
    assert.equal(shm.stat().nattch, 2);
    assert.equal(shm.stat().lpid, child.process.pid);
    assert.equal(await child.ask("read 0 1000"), `data ${hex(data)}`);
    assert.equal(await child.ask("write 500 deadbeef"), "written");
    assert.deepEqual([...shm.view.subarray(500, 504)], [0xde, 0xad, 0xbe, 0xef]);

    await using reader = startChild(["id", String(shm.id), "readonly"]);
    assert.equal(await reader.line(), "attached 1000 3");
    assert.equal(await reader.ask("read 500 4"), "data deadbeef");
    assert.equal(await child.ask("detach"), "detached");
    assert.equal(shm.stat().nattch, 2);
    reader.process.kill("SIGKILL"); // a process that dies detaches too
    await reader.process.status;
    assert.equal(shm.stat().nattch, 1);
    assert.ok(sameBytes(shm.view.subarray(0, 500), data.subarray(0, 500)));
  } finally {
    cleanup(shm);
  }
});

Deno.test("writing through a read-only attachment kills the process (as documented)", async () => {
  const shm = track(SysvSharedMemory.open({ private: true, size: 16 }));
  try {
    // In a temp dir: with core dumps enabled, the core file lands there and goes with it.
    await using dir = await TempDir.make();
    await using child = startChild(["id", String(shm.id), "readonly"], [], dir.path);
    assert.equal(await child.line(), "attached 16 2");
    await child.ask("write 0 01").catch(() => undefined);
    const status = await child.process.status;
    assert.equal(status.success, false);
    assert.equal(status.signal, "SIGSEGV");
    assert.equal(shm.view[0], 0);
  } finally {
    cleanup(shm);
  }
});

Deno.test("remove while attached: still usable until the last detach, then gone", async () => {
  const key = randomKey();
  const shm = track(SysvSharedMemory.open({ key, size: 64, create: true, exclusive: true }));
  try {
    await using child = startChild(["id", String(shm.id)]);
    assert.equal(await child.line(), "attached 64 2");
    shm.remove();
    shm.remove(); // idempotent
    const stat = shm.stat();
    assert.equal(stat.removed, true);
    assert.equal(stat.key, 0, "the key is released at once");
    assert.equal(stat.nattch, 2);
    assert.throws(() => SysvSharedMemory.open({ key }), NotFoundError);
    // A new segment may take the key while the old one lives on.
    using fresh = track(SysvSharedMemory.open({ key, size: 8, create: true, exclusive: true }));
    assert.notEqual(fresh.id, shm.id);
    fresh.remove();

    assert.equal(await child.ask("write 0 2a2b"), "written");
    assert.deepEqual([...shm.view.subarray(0, 2)], [0x2a, 0x2b]);
    shm.view[2] = 0x2c;
    assert.equal(await child.ask("read 0 3"), "data 2a2b2c");
    assert.equal(await child.ask("detach"), "detached");
    assert.equal(shm.stat().nattch, 1);
    shm.detach();
    assert.throws(() => shm.stat(), (error: unknown) => {
      assert.ok(error instanceof ChannelClosedError, `got ${error}`);
      assert.match(error.message, /destroyed/);
      return true;
    });
    shm.remove(); // removed through this object already: nothing to do
    assert.throws(() => SysvSharedMemory.open({ id: shm.id }), NotFoundError);
    assert.deepEqual((await procSegments()).filter((entry) => entry.id === shm.id), []);
  } finally {
    cleanup(shm);
    removeKey(key);
  }
});

Deno.test("permission denied names the owner and mode; read-only needs only read permission", async () => {
  const key = randomKey();
  const readable = randomKey();
  const shm = track(SysvSharedMemory.open({ key, size: 16, create: true, exclusive: true, mode: 0o600 }));
  const shared = track(
    SysvSharedMemory.open({ key: readable, size: 16, create: true, exclusive: true, mode: 0o644 }),
  );
  try {
    if (euid() !== 0) {
      // Not root: the owner itself is refused by mode 0 (made with plain shmget).
      const locked = libc().shmget(IPC.PRIVATE, 16n, IPC.CREAT | 0);
      made.add(locked);
      try {
        assert.throws(() => SysvSharedMemory.open({ id: locked }), (error: unknown) => {
          assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
          assert.match(error.message, /mode 0o000/);
          return true;
        });
      } finally {
        libc().shmctl(locked, IPC.RMID, null);
      }
      return;
    }
    if (!hasSetpriv) {
      console.log("skipped the cross-user part: setpriv(1) is not available to run a child as uid 65534");
      return;
    }
    const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    const asNobody = async (args: string[], expected: RegExp) => {
      await using child = startChild(args, nobody);
      const line = await child.line();
      assert.match(line, expected, `child said: ${line}\nstderr: ${await child.stderr()}`);
    };
    await asNobody(
      ["open", String(key)],
      new RegExp(
        `^error PermissionDeniedError EACCES .*: shared memory id ${shm.id} belongs to uid 0 \\(gid 0\\) with mode 0o600`,
      ),
    );
    await asNobody(["open", String(readable)], /^error PermissionDeniedError EACCES .*mode 0o644/);
    await asNobody(["open", String(readable), "readonly"], /^opened 16$/);
  } finally {
    cleanup(shm);
    cleanup(shared);
  }
});

/** The segments listed in /proc/sysvipc/shm (read with cat: Deno asks for --allow-all to read /proc). */
async function procSegments(): Promise<{ key: number; id: number }[]> {
  const output = await new Deno.Command("cat", { args: ["/proc/sysvipc/shm"], stderr: "inherit" }).output();
  assert.ok(output.success, "cat /proc/sysvipc/shm");
  const lines = new TextDecoder().decode(output.stdout).trim().split("\n").slice(1);
  return lines.map((line) => {
    const [key, id] = line.trim().split(/\s+/).map(Number);
    return { key, id };
  });
}

Deno.test("no segment made by these tests is left (/proc/sysvipc/shm), nothing under /tmp", async () => {
  assert.ok(made.size > 0);
  assert.deepEqual((await procSegments()).filter((entry) => made.has(entry.id)), []);
  assert.deepEqual(leftovers(), []);
});
