// PosixSharedMemory: create / open / exclusive / missing, the real size of an
// existing object, size mismatches and objects still of size 0 (a creator
// between shm_open and ftruncate), exact modes and stat, bad names and
// options, writes seen across processes (Deno and C peers, read-only
// peers), views that read length 0 after close, unlink semantics, names that
// are not shared memory objects, a permission error, ENOSPC at creation
// rather than SIGBUS later, and no object left behind in /dev/shm.
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  ChannelClosedError,
  IpcError,
  NotFoundError,
  PermissionDeniedError,
} from "../errors.ts";
import { openFailure, SHARED_MEMORY, unlinkFailure } from "../ffi/_posix_object.ts";
import { O, RLIMIT } from "../ffi/constants.ts";
import { readTextFile } from "../ffi/dir.ts";
import { lstatPath } from "../ffi/fd.ts";
import { E, libc, need } from "../ffi/libc.ts";
import { MAX_SHARED_MEMORY_NAME, PosixSharedMemory } from "../memory/posix_shared_memory.ts";
import { NamedSemaphore } from "../sync/named_semaphore.ts";
import {
  CommandChild,
  descriptorsOf,
  euid,
  fixture,
  hasCc,
  hasSetpriv,
  leftovers,
  pattern,
  RUN,
  sameBytes,
  TempDir,
} from "./_helpers.ts";
import { exists, freshName, run, shmEntries, unlinkIfPresent } from "./_posix_names.ts";

/** The file glibc keeps a shared memory object in. */
function shmPath(name: string): string {
  return `/dev/shm${name}`;
}

/** Removes the name if it still exists (for `finally`). */
const cleanup = (name: unknown) => unlinkIfPresent(PosixSharedMemory.unlink, name as string);

/** Makes an object the way a creator stopped between shm_open and ftruncate leaves it: size 0. */
function bareObject(name: string): void {
  const fd = need("shm_open")(new TextEncoder().encode(`${name}\0`), O.RDWR | O.CREAT | O.EXCL, 0o600);
  assert.ok(fd >= 0, "shm_open");
  libc().close(fd);
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function startChild(args: string[], wrapper: string[] = []): CommandChild {
  return new CommandChild(fixture("posix_shm_child.ts"), args, wrapper);
}

Deno.test("create, open, exclusive, missing; the real size of an existing object; exact mode; stat", () => {
  const name = freshName();
  try {
    assert.throws(() => PosixSharedMemory.open(name), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, `got ${error}`);
      assert.equal(error.code, "ENOENT");
      assert.equal(error.syscall, "shm_open");
      assert.match(error.message, /create: true/);
      return true;
    });
    using made = PosixSharedMemory.open(name, { create: true, exclusive: true, size: 5000 });
    assert.equal(made.created, true);
    assert.equal(made.name, name);
    assert.equal(made.size, 5000);
    assert.equal(made.view.length, 5000);
    assert.equal(made.readOnly, false);
    assert.ok(made.view.every((byte) => byte === 0), "a new object is zeroed");
    assert.equal(lstatPath(shmPath(name))!.size, 5000);
    assert.deepEqual(made.stat(), { size: 5000, mode: 0o600, uid: euid(), gid: made.stat().gid });
    assert.throws(
      () => PosixSharedMemory.open(name, { create: true, exclusive: true, size: 5000 }),
      (error: unknown) => error instanceof AlreadyExistsError && error.code === "EEXIST",
    );
    // create without exclusive opens the existing object, at its size.
    using again = PosixSharedMemory.open(name, { create: true, size: 5000 });
    assert.equal(again.created, false);
    using plain = PosixSharedMemory.open(name);
    assert.equal(plain.size, 5000, "the size comes from the object");
    made.view[4999] = 7;
    assert.equal(plain.view[4999], 7);
    assert.equal(again.view[4999], 7);
    using reader = PosixSharedMemory.open(name, { readOnly: true });
    assert.equal(reader.readOnly, true);
    assert.equal(reader.view[4999], 7);
  } finally {
    cleanup(name);
  }

  // The mode is applied exactly: the umask (022 here) does not narrow it.
  const wide = freshName();
  try {
    using shm = PosixSharedMemory.open(wide, { create: true, size: 1, mode: 0o666, reserve: false });
    assert.equal(lstatPath(shmPath(wide))!.permissions, 0o666);
    assert.equal(shm.stat().mode, 0o666);
  } finally {
    cleanup(wide);
  }
});

Deno.test("a size that disagrees is a RangeError naming both; an existing object is never resized", () => {
  const name = freshName();
  try {
    using shm = PosixSharedMemory.open(name, { create: true, size: 100 });
    for (const size of [99, 101, 4096]) {
      for (const options of [{ size }, { size, create: true }]) {
        assert.throws(() => PosixSharedMemory.open(name, options), (error: unknown) => {
          assert.ok(error instanceof RangeError, `got ${error}`);
          assert.match(error.message, new RegExp(`has 100 bytes; ${size} were asked for`));
          return true;
        });
      }
    }
    assert.equal(shm.stat().size, 100, "not resized");
    using same = PosixSharedMemory.open(name, { size: 100 });
    assert.equal(same.size, 100);
  } finally {
    cleanup(name);
  }
});

Deno.test("an object still of size 0: open waits for its creator, then fails clearly", async () => {
  const name = freshName();
  try {
    bareObject(name);
    assert.throws(() => PosixSharedMemory.open(name, { initTimeout: 0 }), (error: unknown) => {
      assert.ok(error instanceof RangeError, `got ${error}`);
      assert.match(error.message, /has 0 bytes: nothing to map/);
      return true;
    });
    const started = performance.now();
    assert.throws(() => PosixSharedMemory.open(name, { size: 10, initTimeout: 30 }), (error: unknown) => {
      assert.ok(error instanceof RangeError, `got ${error}`);
      assert.match(error.message, /has 0 bytes; 10 were asked for/);
      return true;
    });
    assert.ok(performance.now() - started >= 30, "it waited for the creator");
    // create without exclusive never truncates what it found.
    assert.throws(() => PosixSharedMemory.open(name, { create: true, size: 10, initTimeout: 0 }), RangeError);
    assert.equal(lstatPath(shmPath(name))!.size, 0);
  } finally {
    cleanup(name);
  }

  // A creator that sets the size while we wait: we get its size.
  const late = freshName();
  try {
    await using child = startChild(["late", late, "4096"]);
    await child.expect("ready");
    using shm = PosixSharedMemory.open(late, { initTimeout: 10_000 });
    assert.equal(shm.size, 4096);
  } finally {
    cleanup(late);
  }
});

Deno.test("bad names and options: TypeError / RangeError, nothing created", () => {
  const longest = `/${"a".repeat(MAX_SHARED_MEMORY_NAME - RUN.length)}${RUN}`;
  const badNames: unknown[] = [
    "",
    "x",
    "/",
    "//x",
    "/a/b",
    "a/b",
    "/.",
    "/..",
    "/a\0b",
    `/${"a".repeat(MAX_SHARED_MEMORY_NAME + 1)}`,
    `/${"é".repeat(128)}`, // 256 bytes of UTF-8
    null,
  ];
  for (const name of badNames) {
    assert.throws(
      () => PosixSharedMemory.open(name as string, { create: true, size: 1 }),
      TypeError,
      String(name),
    );
    assert.throws(() => PosixSharedMemory.unlink(name as string), TypeError, String(name));
  }
  try {
    using shm = PosixSharedMemory.open(longest, { create: true, exclusive: true, size: 1 });
    assert.equal(shm.created, true);
  } finally {
    cleanup(longest);
  }

  const name = freshName();
  const open = (options: unknown) => PosixSharedMemory.open(name, options as never);
  assert.throws(() => open(null), TypeError);
  assert.throws(() => open({ create: true }), /size is needed/);
  assert.throws(() => open({ exclusive: true, size: 1 }), /exclusive needs create/);
  assert.throws(() => open({ create: true, size: 1, readOnly: true }), /readOnly cannot create/);
  assert.throws(() => open({ create: 1, size: 1 }), TypeError);
  assert.throws(() => open({ create: true, size: 1, reserve: "no" }), TypeError);
  assert.throws(() => open({ create: true, size: 0 }), RangeError);
  assert.throws(() => open({ create: true, size: -1 }), RangeError);
  assert.throws(() => open({ create: true, size: 1.5 }), RangeError);
  assert.throws(() => open({ create: true, size: 2 ** 53 }), RangeError);
  assert.throws(() => open({ create: true, size: 1, mode: 0o1000 }), RangeError);
  assert.throws(() => open({ size: 1, initTimeout: -1 }), RangeError);
  assert.deepEqual(shmEntries(), [], "nothing was made");
});

Deno.test("two processes see each other's writes; a read-only peer reads them", async () => {
  const name = freshName();
  try {
    using shm = PosixSharedMemory.open(name, { create: true, size: 8192 });
    await using child = startChild(["map", name]);
    assert.equal(await child.line(), "mapped 8192");
    const data = pattern(300, 7);
    shm.view.set(data, 4000);
    assert.equal(await child.ask("read 4000 300"), `data ${hex(data)}`);
    assert.equal(await child.ask("write 8190 abcd"), "written");
    assert.deepEqual([...shm.view.subarray(8190)], [0xab, 0xcd]);

    await using reader = startChild(["map", name, "readonly"]);
    assert.equal(await reader.line(), "mapped 8192");
    assert.equal(await reader.ask("read 8190 2"), "data abcd");
    shm.view[0] = 0x5a;
    assert.equal(await reader.ask("read 0 1"), "data 5a");
    // Writing through a read-only mapping kills the writer (documented), not the others.
    await reader.send("write 0 ff");
    assert.equal((await reader.process.status).signal, "SIGSEGV");
    assert.equal(shm.view[0], 0x5a);

    // The child closes its mapping; ours is unaffected.
    assert.equal(await child.ask("close"), "closed");
    shm.view[1] = 1;
    assert.equal(shm.view[1], 1);
  } finally {
    cleanup(name);
  }
});

Deno.test({
  name: `interoperates with a C peer using shm_open/mmap${
    hasCc ? "" : " (skipped: no C compiler `cc` found)"
  }`,
  ignore: !hasCc,
  async fn() {
    await using dir = await TempDir.make();
    const peer = `${dir.path}/posix_peer`;
    const build = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-Werror", "-o", peer, fixture("posix_peer.c")],
    }).output();
    assert.ok(build.success, new TextDecoder().decode(build.stderr));
    const peerRun = async (args: string[]) => {
      const output = await new Deno.Command(peer, { args, signal: AbortSignal.timeout(30_000) }).output();
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return new TextDecoder().decode(output.stdout).trim();
    };
    const name = freshName();
    try {
      using shm = PosixSharedMemory.open(name, { create: true, size: 64 });
      shm.view.set(new TextEncoder().encode("from deno"));
      assert.equal(
        await peerRun(["shm-read", name, "9"]),
        `size 64 data ${hex(new TextEncoder().encode("from deno"))}`,
      );
      assert.equal(await peerRun(["shm-write", name, "from C"]), "written");
      assert.equal(new TextDecoder().decode(shm.view.subarray(0, 9)), "from Ceno");
    } finally {
      cleanup(name);
    }
  },
});

Deno.test("close: views read length 0, view and stat throw ChannelClosedError, idempotent; the object stays", () => {
  const name = freshName();
  try {
    const shm = PosixSharedMemory.open(name, { create: true, size: 4096 });
    const view = shm.view;
    const words = new Int32Array(view.buffer, 0, 4);
    const sub = view.subarray(10, 20);
    view[0] = 9;
    const maps = () => readTextFile("/proc/self/maps")!;
    assert.ok(maps().includes(shmPath(name)), "mapped");
    shm.close();
    assert.equal(shm.closed, true);
    assert.equal(view.length, 0);
    assert.equal(words.length, 0);
    assert.equal(sub.length, 0);
    assert.equal(view[0], undefined, "a stale view reads nothing instead of crashing");
    assert.throws(() => shm.view, ChannelClosedError);
    assert.throws(() => shm.stat(), ChannelClosedError);
    shm.close(); // idempotent
    assert.ok(!maps().includes(shmPath(name)), "unmapped");
    using again = PosixSharedMemory.open(name);
    assert.equal(again.view[0], 9, "the object outlives the mapping");
    shm.unlink(); // works after close
    assert.equal(exists(shmPath(name)), false);
  } finally {
    cleanup(name);
  }
});

Deno.test("unlink while open: still usable, the name is gone; a new object under the name is left alone", () => {
  const name = freshName();
  try {
    const first = PosixSharedMemory.open(name, { create: true, size: 16 });
    using second = PosixSharedMemory.open(name);
    first.unlink();
    assert.equal(exists(shmPath(name)), false);
    assert.throws(() => PosixSharedMemory.open(name), NotFoundError);
    first.unlink(); // idempotent on the same object
    first.view[3] = 33;
    assert.equal(second.view[3], 33, "both mappings still share the memory");
    assert.equal(first.stat().size, 16);
    assert.throws(() => second.unlink(), /already removed/);
    assert.throws(() => PosixSharedMemory.unlink(name), NotFoundError);

    // The name is created anew: the old handle's unlink leaves the new object alone.
    using fresh = PosixSharedMemory.open(name, { create: true, exclusive: true, size: 32 });
    assert.throws(() => second.unlink(), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, `got ${error}`);
      assert.match(error.message, /now refers to another object/);
      return true;
    });
    assert.equal(exists(shmPath(name)), true);
    assert.equal(fresh.view[3], 0, "a different object");
    first.close();
    fresh.unlink();
  } finally {
    cleanup(name);
  }
});

Deno.test("what is not a shared memory object is refused: a FIFO, a directory, a symlink", async () => {
  await using dir = await TempDir.make();
  const name = freshName();
  const path = shmPath(name);
  try {
    await run("mkfifo", "-m", "600", path);
    for (const options of [{}, { size: 1, create: true }, { readOnly: true }]) {
      assert.throws(() => PosixSharedMemory.open(name, options), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
        assert.match(error.message, /is a fifo, not a shared memory object/);
        return true;
      });
    }
    await run("rm", path);

    await run("mkdir", path);
    assert.throws(() => PosixSharedMemory.open(name), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
      assert.match(error.message, /is a directory, not a shared memory object/);
      return true;
    });
    await run("rmdir", path);

    const target = dir.file("target");
    Deno.writeFileSync(target, new Uint8Array(64));
    await run("ln", "-s", target, path);
    assert.throws(() => PosixSharedMemory.open(name), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
      assert.match(error.message, /symbolic link/);
      return true;
    });
  } finally {
    await run("rm", "-rf", path);
  }
});

Deno.test({
  name:
    "permission denied names the owner and mode; read-only needs only read permission (needs root, setpriv)",
  ignore: euid() !== 0 || !hasSetpriv,
}, async () => {
  const name = freshName();
  try {
    using shm = PosixSharedMemory.open(name, { create: true, exclusive: true, size: 32, mode: 0o600 });
    const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    {
      await using child = startChild(["open", name], nobody);
      const line = await child.line();
      const context = `child said: ${line}\nstderr: ${await child.stderr()}`;
      assert.match(line, /^error PermissionDeniedError EACCES /, context);
      assert.match(
        line,
        /shared memory .*belongs to uid 0 \(gid 0\) with mode 0o600; this process runs as uid 65534/,
        context,
      );
    }
    await run("chmod", "644", shmPath(name));
    assert.equal(shm.stat().mode, 0o644);
    {
      await using child = startChild(["open", name], nobody);
      assert.match(await child.line(), /^error PermissionDeniedError EACCES .*mode 0o644/);
    }
    shm.view[31] = 0x42;
    await using reader = startChild(["map", name, "readonly"], nobody);
    assert.equal(await reader.line(), "mapped 32");
    assert.equal(await reader.ask("read 31 1"), "data 42");
  } finally {
    cleanup(name);
  }
});

Deno.test("a size /dev/shm cannot hold fails at creation with ENOSPC (not SIGBUS later), and nothing is left", async () => {
  const total = Number((await run("df", "-B1", "--output=size", "/dev/shm")).trim().split("\n")[1]);
  assert.ok(total > 0, "the size of /dev/shm");
  const name = freshName();
  try {
    const size = total + 2 ** 30;
    assert.throws(() => PosixSharedMemory.open(name, { create: true, size }), (error: unknown) => {
      assert.ok(error instanceof IpcError, `got ${error}`);
      assert.equal(error.code, "ENOSPC");
      assert.equal(error.syscall, "posix_fallocate");
      assert.match(error.message, /df \/dev\/shm/);
      assert.match(error.message, /reserve: false/);
      return true;
    });
    assert.equal(exists(shmPath(name)), false, "the failed object was removed");
  } finally {
    cleanup(name);
  }
});

Deno.test("open and unlink failures name the call, the name and the errno, with the right class", () => {
  const name = "/ipcbus-explained";
  const cases: [string, new (...args: never[]) => IpcError, RegExp][] = [
    [
      "ENOENT",
      NotFoundError,
      /no shared memory object has this name: \/dev\/shm\/ipcbus-explained\); open with create/,
    ],
    ["EEXIST", AlreadyExistsError, /exclusive was asked for/],
    ["ELOOP", PermissionDeniedError, /\/dev\/shm\/ipcbus-explained is a symbolic link/],
    ["EMFILE", IpcError, /ulimit -n, RLIMIT_NOFILE/],
    ["ENFILE", IpcError, /sysctl fs\.file-max/],
    ["ENOSPC", IpcError, /df -i \/dev\/shm/],
    ["EACCES", PermissionDeniedError, /Permission denied/],
    ["EINVAL", IpcError, /Invalid argument/],
  ];
  for (const [code, kind, explained] of cases) {
    const error = openFailure(SHARED_MEMORY, E[code as keyof typeof E], name);
    assert.ok(error instanceof kind, `${code}: got ${error}`);
    assert.equal(error.constructor, kind, code);
    assert.deepEqual([error.code, error.syscall], [code, "shm_open"]);
    assert.match(error.message, new RegExp(`^shm_open /ipcbus-explained failed: ${code} `), code);
    assert.match(error.message, explained, code);
  }
  const gone = unlinkFailure(SHARED_MEMORY, E.ENOENT, name);
  assert.ok(gone instanceof NotFoundError);
  assert.match(gone.message, /^shm_unlink \/ipcbus-explained failed: ENOENT /);
});

Deno.test("every POSIX object kind explains a descriptor table that is full (EMFILE), creating nothing", async () => {
  const [semaphore, memory, ring] = [freshName(), freshName(), freshName()];
  const module = (path: string) => JSON.stringify(new URL(path, import.meta.url).href);
  // The child lowers its own RLIMIT_NOFILE to 0 once ipcbus is loaded: every open call then
  // needs a descriptor it cannot have.
  const code = `
    import { NamedSemaphore } from ${module("../sync/named_semaphore.ts")};
    import { PosixSharedMemory } from ${module("../memory/posix_shared_memory.ts")};
    import { ShmRing } from ${module("../transports/shm_ring.ts")};
    const { getrlimit, setrlimit } = Deno.dlopen("libc.so.6", {
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
    }).symbols;
    const opens = {
      semaphore: () => NamedSemaphore.open(${JSON.stringify(semaphore)}, { create: true }),
      memory: () => PosixSharedMemory.open(${JSON.stringify(memory)}, { create: true, size: 4096 }),
      ring: () => ShmRing.open("shm:" + ${JSON.stringify(ring)}, { create: true, doorbell: false }),
    };
    for (const name of ["/ipcbus-emfile-warm-up", "shm:/ipcbus-emfile-warm-up"]) {
      for (const open of [NamedSemaphore.open, PosixSharedMemory.open, ShmRing.open]) {
        try { open(name); } catch { /* loads what the opens use */ }
      }
    }
    const old = new BigUint64Array(2);
    if (getrlimit(${RLIMIT.NOFILE}, new Uint8Array(old.buffer)) !== 0) throw new Error("getrlimit");
    const results = {};
    if (setrlimit(${RLIMIT.NOFILE}, new Uint8Array(new BigUint64Array([0n, old[1]]).buffer)) !== 0) {
      throw new Error("setrlimit");
    }
    for (const [kind, open] of Object.entries(opens)) {
      try {
        open();
        results[kind] = "opened";
      } catch (error) {
        results[kind] = [error.constructor.name, error.code, error.syscall, error.message];
      }
    }
    if (setrlimit(${RLIMIT.NOFILE}, new Uint8Array(old.buffer)) !== 0) throw new Error("setrlimit");
    console.log(JSON.stringify(results));
  `;
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      stdin: "null",
      signal: AbortSignal.timeout(60_000), // kill rather than hang the run
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const results = JSON.parse(new TextDecoder().decode(output.stdout));
    const expected = { semaphore: "sem_open", memory: "shm_open", ring: "shm_open" } as const;
    for (const [kind, syscall] of Object.entries(expected)) {
      const [name, code, call, message] = results[kind];
      assert.deepEqual([name, code, call], ["IpcError", "EMFILE", syscall], `${kind}: ${results[kind]}`);
      assert.match(message, new RegExp(`^${syscall} /ipcbus-test-\\S+ failed: EMFILE `), kind);
      assert.match(message, /raise it \(ulimit -n, RLIMIT_NOFILE\) or close descriptors/, kind);
    }
    for (const path of [`/dev/shm/sem.${semaphore.slice(1)}`, shmPath(memory), shmPath(ring)]) {
      assert.equal(exists(path), false, `${path} was created`);
    }
  } finally {
    unlinkIfPresent(NamedSemaphore.unlink, semaphore);
    cleanup(memory);
    cleanup(ring);
  }
});

Deno.test("many objects open and closed: descriptors and mappings are released", () => {
  const name = freshName();
  try {
    using keeper = PosixSharedMemory.open(name, { create: true, size: 1 << 16 });
    const identity = lstatPath(shmPath(name))!;
    const { ino } = identity;
    const descriptors = () => descriptorsOf(identity);
    const mappings = () =>
      readTextFile("/proc/self/maps")!.split("\n").filter((line) => {
        const fields = line.trim().split(/\s+/); // address perms offset dev inode path
        return fields[4] === String(ino) && (fields[5] ?? "").startsWith("/dev/shm/");
      }).length;
    assert.equal(descriptors(), 1);
    assert.equal(mappings(), 1);
    const data = pattern(1 << 16, 3);
    keeper.view.set(data);
    for (let i = 0; i < 2000; i++) {
      using shm = PosixSharedMemory.open(name, { readOnly: i % 2 === 0 });
      if (i % 500 === 0) {
        assert.ok(sameBytes(shm.view, data));
        assert.equal(descriptors(), 2);
        assert.equal(mappings(), 2);
      }
    }
    assert.equal(descriptors(), 1, "only the keeper's descriptor is left");
    assert.equal(mappings(), 1, "only the keeper's mapping is left");
  } finally {
    cleanup(name);
  }
});

Deno.test("no shared memory object made by these tests is left in /dev/shm, nothing under /tmp", () => {
  assert.deepEqual(shmEntries(), []);
  assert.deepEqual(leftovers(), []);
});
