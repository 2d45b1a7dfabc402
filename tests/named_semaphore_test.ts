// NamedSemaphore: create / open / exclusive / missing, exact modes, bad names
// and options, tryWait / post / value / SEM_VALUE_MAX, waits that do not block
// the event loop (abort, timeout, close, more waits than helper threads), no
// unit lost by a cancelled wait, waits across processes (Deno and C peers),
// unlink semantics, files that are not semaphores, a permission error, a
// process that exits by itself, and no semaphore left behind in /dev/shm.
import assert from "node:assert/strict";
import { AlreadyExistsError, ChannelClosedError, NotFoundError, PermissionDeniedError } from "../errors.ts";
import { readTextFile } from "../ffi/dir.ts";
import { lstatPath } from "../ffi/fd.ts";
import { MAX_HELPERS, semaphoreHelpers } from "../ffi/posix_sem_waiter.ts";
import { MAX_SEMAPHORE_NAME, NamedSemaphore, SEM_VALUE_MAX } from "../sync/named_semaphore.ts";
import {
  bounded,
  CommandChild,
  DenoChild,
  euid,
  fixture,
  hasCc,
  hasSetpriv,
  leftovers,
  RUN,
  TempDir,
} from "./_helpers.ts";
import { exists, freshName, run, shmEntries, unlinkIfPresent } from "./_posix_names.ts";

/** The file glibc keeps a named semaphore in. */
function semPath(name: string): string {
  return `/dev/shm/sem.${name.slice(1)}`;
}

/** Removes the name if it still exists (for `finally`). */
const cleanup = (name: unknown) => unlinkIfPresent(NamedSemaphore.unlink, name as string);

function modeOf(path: string): number {
  return lstatPath(path)!.permissions;
}

/**
 * Whether this process maps a file of /dev/shm with this inode, from
 * /proc/self/maps read synchronously (through libc: Deno's own APIs need
 * --allow-all for /proc), so nothing else runs in between.
 */
function mapsFile(inode: bigint): boolean {
  return mapped().split("\n").some((line) => {
    const fields = line.trim().split(/\s+/);
    return fields[4] === String(inode) && (fields[5] ?? "").startsWith("/dev/shm/");
  });
}

function mapped(): string {
  return readTextFile("/proc/self/maps")!;
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs a latency measurement (ms) up to three times while it is not under
 * 100 ms, and returns the best: on a loaded machine one run can lose a
 * scheduler slice, and the bound is about ipcbus, not about the load.
 */
async function bestOf3(measure: () => Promise<number>): Promise<number> {
  let best = Infinity;
  for (let attempt = 0; attempt < 3 && best >= 100; attempt++) best = Math.min(best, await measure());
  return best;
}

function startChild(args: string[], wrapper: string[] = []): CommandChild {
  return new CommandChild(fixture("named_sem_child.ts"), args, wrapper);
}

Deno.test("create, open, exclusive, missing, initial value, exact mode", () => {
  const name = freshName();
  try {
    assert.throws(() => NamedSemaphore.open(name), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, `got ${error}`);
      assert.equal(error.code, "ENOENT");
      assert.equal(error.syscall, "sem_open");
      assert.match(error.message, /create: true/);
      return true;
    });
    using first = NamedSemaphore.open(name, { create: true, exclusive: true, initial: 2 });
    assert.equal(first.created, true);
    assert.equal(first.name, name);
    assert.equal(first.value, 2);
    assert.equal(modeOf(semPath(name)), 0o600);
    assert.throws(
      () => NamedSemaphore.open(name, { create: true, exclusive: true }),
      (error: unknown) => error instanceof AlreadyExistsError && error.code === "EEXIST",
    );
    // create without exclusive opens the existing semaphore and ignores initial.
    using second = NamedSemaphore.open(name, { create: true, initial: 9 });
    assert.equal(second.created, false);
    assert.equal(second.value, 2);
    using third = NamedSemaphore.open(name);
    assert.equal(third.tryWait(), true);
    assert.equal(first.value, 1, "the same semaphore through every handle");
    second.post();
    assert.equal(third.value, 2);
  } finally {
    cleanup(name);
  }

  // The mode is applied exactly: the umask (022 here) does not narrow it.
  const open = freshName();
  try {
    using semaphore = NamedSemaphore.open(open, { create: true, mode: 0o666 });
    assert.equal(modeOf(semPath(open)), 0o666);
    assert.equal(semaphore.created, true);
  } finally {
    cleanup(open);
  }
});

Deno.test("bad names and options: TypeError / RangeError, nothing created", () => {
  const longest = `/${"a".repeat(MAX_SEMAPHORE_NAME - RUN.length)}${RUN}`;
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
    `/${"a".repeat(MAX_SEMAPHORE_NAME + 1)}`,
    `/${"é".repeat(126)}`, // 252 bytes of UTF-8
    42,
    undefined,
  ];
  for (const name of badNames) {
    assert.throws(() => NamedSemaphore.open(name as string, { create: true }), TypeError, String(name));
    assert.throws(() => NamedSemaphore.unlink(name as string), TypeError, String(name));
  }
  assert.throws(
    () => NamedSemaphore.open(`/${"a".repeat(252)}`),
    /at most 251 bytes may follow the slash.*got 252/,
  );
  // The longest name works.
  try {
    using semaphore = NamedSemaphore.open(longest, { create: true, exclusive: true });
    assert.equal(semaphore.created, true);
  } finally {
    cleanup(longest);
  }

  const name = freshName();
  const open = (options: unknown) => NamedSemaphore.open(name, options as never);
  assert.throws(() => open(null), TypeError);
  assert.throws(() => open({ exclusive: true }), /exclusive needs create/);
  assert.throws(() => open({ create: "yes" }), TypeError);
  assert.throws(() => open({ create: true, initial: -1 }), RangeError);
  assert.throws(() => open({ create: true, initial: 1.5 }), RangeError);
  assert.throws(() => open({ create: true, initial: SEM_VALUE_MAX + 1 }), /SEM_VALUE_MAX/);
  assert.throws(() => open({ create: true, mode: 0o1000 }), RangeError);
  assert.throws(() => open({ create: true, mode: -1 }), RangeError);
  assert.deepEqual(shmEntries(), [], "no semaphore was made");
});

Deno.test("tryWait on 0 is false; post and value; a post beyond SEM_VALUE_MAX is a RangeError", () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    assert.equal(semaphore.value, 0);
    assert.equal(semaphore.tryWait(), false);
    semaphore.post();
    semaphore.post();
    assert.equal(semaphore.value, 2);
    assert.equal(semaphore.tryWait(), true);
    assert.equal(semaphore.tryWait(), true);
    assert.equal(semaphore.tryWait(), false);
  } finally {
    cleanup(name);
  }

  const full = freshName();
  try {
    using semaphore = NamedSemaphore.open(full, { create: true, initial: SEM_VALUE_MAX });
    assert.equal(semaphore.value, SEM_VALUE_MAX);
    assert.throws(() => semaphore.post(), (error: unknown) => {
      assert.ok(error instanceof RangeError, `got ${error}`);
      assert.match(error.message, /SEM_VALUE_MAX \(2147483647\)/);
      assert.equal((error.cause as { code: string }).code, "EOVERFLOW");
      return true;
    });
    assert.equal(semaphore.value, SEM_VALUE_MAX, "nothing changed");
    assert.equal(semaphore.tryWait(), true);
    semaphore.post();
  } finally {
    cleanup(full);
  }
});

Deno.test("a pending wait does not block the event loop; abort and timeout settle it within 100 ms", async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    // Starting a helper thread (node:worker_threads) costs tens of ms on this
    // thread, once per helper: start one before measuring how the loop runs.
    await semaphore.wait({ signal: AbortSignal.timeout(1) }).catch(() => undefined);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      const late = await bestOf3(async () => {
        const started = performance.now();
        const error = await semaphore.wait({ signal: AbortSignal.timeout(150) }).catch((error) => error);
        assert.equal(error.name, "TimeoutError");
        return performance.now() - started - 150;
      });
      assert.ok(late < 100, `settled ${late} ms after the timeout`);
      assert.ok(ticks >= 10, `the timer fired ${ticks} times during a 150 ms wait`);
    } finally {
      clearInterval(timer);
    }

    const reason = new Error("changed my mind");
    const elapsed = await bestOf3(async () => {
      const controller = new AbortController();
      const aborted = semaphore.wait({ signal: controller.signal }).catch((error) => error);
      await pause(30); // let the helper reach sem_clockwait (the bound holds either way)
      const before = performance.now();
      controller.abort(reason);
      assert.equal(await aborted, reason);
      return performance.now() - before;
    });
    assert.ok(elapsed < 100, `abort took ${elapsed} ms`);
    assert.equal(semaphore.value, 0);

    // An aborted signal rejects at once, even when a unit is there, and takes nothing.
    semaphore.post();
    await assert.rejects(semaphore.wait({ signal: AbortSignal.abort(reason) }), (e) => e === reason);
    assert.equal(semaphore.value, 1);
    // A wait that can take a unit at once resolves without a helper.
    await semaphore.wait();
    assert.equal(semaphore.value, 0);
  } finally {
    cleanup(name);
  }
});

Deno.test("a wait cancelled as a unit arrives never loses it", async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    // Different delays hit different moments of the helper's slice: before it
    // starts, inside sem_clockwait, between slices.
    for (const delay of [0, 0, 1, 1, 2, 5, 10, 24, 25, 26, 40]) {
      const controller = new AbortController();
      const pending = semaphore.wait({ signal: controller.signal }).then(() => "resolved", (error) => error);
      await pause(delay);
      semaphore.post(); // the helper's wait may complete now...
      controller.abort("late"); // ...but the caller has given up: the unit must come back.
      assert.equal(await pending, "late", `delay ${delay}`);
      assert.equal(semaphore.value, 1, `delay ${delay}: the unit is back`);
      assert.equal(semaphore.tryWait(), true);
    }
  } finally {
    cleanup(name);
  }
});

Deno.test("close() settles pending waits within 100 ms, refuses later calls, keeps the semaphore", async () => {
  const name = freshName();
  try {
    const keeper = NamedSemaphore.open(name, { create: true });
    const elapsed = await bestOf3(async () => {
      const semaphore = NamedSemaphore.open(name);
      const pending = [semaphore.wait(), semaphore.wait(), semaphore.wait()].map((wait) =>
        wait.catch((error) => error)
      );
      await pause(30);
      const before = performance.now();
      semaphore.close();
      const errors = await Promise.all(pending);
      const elapsed = performance.now() - before;
      for (const error of errors) assert.ok(error instanceof ChannelClosedError, `got ${error}`);
      assert.equal(semaphore.closed, true);
      assert.throws(() => semaphore.value, ChannelClosedError);
      assert.throws(() => semaphore.post(), ChannelClosedError);
      assert.throws(() => semaphore.tryWait(), ChannelClosedError);
      await assert.rejects(semaphore.wait(), ChannelClosedError);
      semaphore.close(); // idempotent
      return elapsed;
    });
    assert.ok(elapsed < 100, `close settled the waits after ${elapsed} ms`);
    // The semaphore stays, and other handles in this process keep working
    // (glibc shares one mapping per process; sem_close only drops a reference).
    keeper.post();
    assert.equal(keeper.value, 1, "no closed wait took a unit");
    const again = NamedSemaphore.open(name);
    assert.equal(again.tryWait(), true);

    // sem_close runs once the helpers have left the semaphore: with every
    // handle closed, the mapping is gone from this process.
    // (glibc maps the file under its temporary creation name: match the inode.)
    const inode = lstatPath(semPath(name))!.ino;
    const last = NamedSemaphore.open(name);
    const pending = last.wait().catch((error) => error);
    await pause(30);
    keeper.close();
    again.close();
    last.close();
    // No await since close(): the wait cannot have settled, its helper may be in sem_clockwait.
    assert.ok(mapsFile(inode), "kept while the wait is pending");
    assert.ok((await pending) instanceof ChannelClosedError);
    assert.ok(!mapsFile(inode), "released after the wait settled");
  } finally {
    cleanup(name);
  }
});

Deno.test("more waits than helper threads: every wait is released, threads stay bounded", async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    const count = MAX_HELPERS + 8;
    let done = 0;
    const waits = Array.from({ length: count }, () => semaphore.wait().then(() => done++));
    await pause(30);
    assert.ok(semaphore.value === 0 && done === 0);
    assert.ok(semaphoreHelpers().started <= MAX_HELPERS, JSON.stringify(semaphoreHelpers()));
    for (let i = 0; i < count; i++) semaphore.post();
    await bounded(Promise.all(waits), "every wait");
    assert.equal(done, count);
    assert.equal(semaphore.value, 0, "each wait took exactly one unit");
    assert.ok(semaphoreHelpers().started <= MAX_HELPERS);
  } finally {
    cleanup(name);
  }
});

Deno.test("across processes: posts release waits both ways; a killed waiter takes nothing", async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    await using child = startChild(["serve", name]);
    await child.expect("ready");

    // The child posts; our wait resolves.
    const waiting = semaphore.wait();
    // Awaited below; should the child fail first, the close in `using` must not reject it unhandled.
    waiting.catch(() => {});
    await child.send("post");
    await child.expect("posted");
    await bounded(waiting, "the wait released by the child's post");
    assert.equal(semaphore.value, 0);

    // The child waits; our post releases it.
    await child.send("wait");
    await child.expect("waiting");
    semaphore.post();
    await child.expect("got");
    assert.equal(semaphore.value, 0);
    assert.equal(await child.ask("trywait"), "trywait false");
    semaphore.post();
    assert.equal(await child.ask("value"), "value 1");
    assert.equal(await child.ask("trywait"), "trywait true");

    // The child waits again and is killed: a later post is not taken by anyone.
    await child.send("wait");
    await child.expect("waiting");
    child.process.kill("SIGKILL");
    assert.equal((await child.process.status).signal, "SIGKILL");
    semaphore.post();
    assert.equal(semaphore.value, 1);
  } finally {
    cleanup(name);
  }
});

Deno.test({
  name: `interoperates with a C peer using sem_open/sem_wait/sem_post${
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
      return new TextDecoder().decode(output.stdout).trim().split("\n");
    };
    const name = freshName();
    try {
      // C creates, ipcbus opens.
      assert.deepEqual(await peerRun(["sem-create", name, "3"]), ["created"]);
      using semaphore = NamedSemaphore.open(name);
      assert.equal(semaphore.created, false);
      assert.equal(semaphore.value, 3);
      // C posts, ipcbus sees it.
      assert.deepEqual(await peerRun(["sem-post", name]), ["posted"]);
      assert.equal(semaphore.value, 4);
      while (semaphore.tryWait());
      // C waits in sem_wait; an ipcbus post releases it.
      const waiter = new Deno.Command(peer, { args: ["sem-wait", name], stdout: "piped", stderr: "piped" })
        .spawn();
      try {
        const lines = waiter.stdout.pipeThrough(new TextDecoderStream()).getReader();
        let seen = "";
        while (!seen.includes("waiting\n")) {
          seen += (await bounded(lines.read(), "the peer's line")).value ?? "";
        }
        semaphore.post();
        const status = await bounded(waiter.status, "the C waiter");
        assert.equal(status.code, 0);
        for (;;) {
          const next = await lines.read();
          if (next.done) break;
          seen += next.value;
        }
        assert.equal(seen, "waiting\ngot\n");
        assert.equal(semaphore.value, 0);
      } finally {
        try {
          waiter.kill("SIGKILL");
        } catch {
          // already exited
        }
        await waiter.status;
        await waiter.stderr.cancel().catch(() => undefined);
      }
      // An ipcbus wait released by C.
      const waiting = semaphore.wait();
      assert.deepEqual(await peerRun(["sem-post", name]), ["posted"]);
      await bounded(waiting, "the wait released by the C peer");
    } finally {
      cleanup(name);
    }
  },
});

Deno.test("unlink: the name goes, open handles keep working, a new semaphore under the name is left alone", () => {
  const name = freshName();
  try {
    const first = NamedSemaphore.open(name, { create: true, exclusive: true });
    using second = NamedSemaphore.open(name);
    first.unlink();
    assert.equal(exists(semPath(name)), false);
    assert.throws(() => NamedSemaphore.open(name), NotFoundError);
    first.unlink(); // idempotent on the same object
    second.post();
    assert.equal(first.value, 1, "still one semaphore for both handles");
    assert.equal(first.tryWait(), true);
    assert.throws(() => second.unlink(), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, `got ${error}`);
      assert.match(error.message, /already removed/);
      return true;
    });
    assert.throws(() => NamedSemaphore.unlink(name), NotFoundError);
    first.close();

    // The name is created anew: the old handle's unlink leaves the new semaphore alone.
    using fresh = NamedSemaphore.open(name, { create: true, exclusive: true, initial: 5 });
    assert.throws(() => second.unlink(), /now refers to another semaphore/);
    assert.equal(exists(semPath(name)), true);
    assert.equal(second.value, 0, "the old semaphore");
    assert.equal(fresh.value, 5, "the new one");

    // unlink works after close.
    fresh.close();
    fresh.unlink();
    assert.equal(exists(semPath(name)), false);
  } finally {
    cleanup(name);
  }
});

Deno.test("what is not a semaphore is refused, never mapped: a short file, a FIFO, a directory, a symlink", async () => {
  await using dir = await TempDir.make();
  const name = freshName();
  const path = semPath(name);
  try {
    // An empty file: glibc would map it unchecked and crash on first use (SIGBUS).
    await run("touch", path);
    for (const options of [{}, { create: true }]) {
      assert.throws(() => NamedSemaphore.open(name, options), (error: unknown) => {
        assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
        assert.match(error.message, /a file of 0 bytes, not a semaphore/);
        return true;
      });
    }
    assert.equal(lstatPath(path)!.size, 0, "left as it was");
    await run("rm", path);

    await run("mkfifo", "-m", "600", path);
    assert.throws(() => NamedSemaphore.open(name), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
      assert.match(error.message, /is a fifo, not a semaphore/);
      return true;
    });
    await run("rm", path);

    await run("mkdir", path);
    assert.throws(() => NamedSemaphore.open(name), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
      assert.match(error.message, /is a directory, not a semaphore/);
      return true;
    });
    await run("rmdir", path);

    const target = dir.file("target");
    Deno.writeFileSync(target, new Uint8Array(32));
    await run("ln", "-s", target, path);
    assert.throws(() => NamedSemaphore.open(name), (error: unknown) => {
      assert.ok(error instanceof PermissionDeniedError, `got ${error}`);
      assert.match(error.message, /symbolic link/);
      return true;
    });
  } finally {
    await run("rm", "-rf", path);
  }
});

Deno.test({
  name: "permission denied names the owner and mode (needs root and setpriv(1) to run a child as uid 65534)",
  ignore: euid() !== 0 || !hasSetpriv,
}, async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true, exclusive: true, mode: 0o600 });
    const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    {
      await using child = startChild(["open", name], nobody);
      const line = await child.line();
      const context = `child said: ${line}\nstderr: ${await child.stderr()}`;
      assert.match(line, /^error PermissionDeniedError EACCES /, context);
      assert.match(
        line,
        /belongs to uid 0 \(gid 0\) with mode 0o600; this process runs as uid 65534/,
        context,
      );
    }
    {
      // /dev/shm is sticky: only the owner may remove the name.
      await using child = startChild(["unlink", name], nobody);
      const line = await child.line();
      assert.match(line, /^error PermissionDeniedError (EACCES|EPERM) .*belongs to uid 0/, line);
    }
    assert.equal(exists(semPath(name)), true);
    // With mode 0o666 the other user may use it.
    semaphore.post();
    await run("chmod", "666", semPath(name));
    await using child = startChild(["open", name], nobody);
    assert.equal(await child.line(), "opened 1");
  } finally {
    cleanup(name);
  }
});

Deno.test("a process with nothing pending exits by itself, semaphores still open", async () => {
  const name = freshName();
  try {
    using semaphore = NamedSemaphore.open(name, { create: true });
    await using child = new DenoChild(fixture("named_sem_child.ts"), ["exits", name]);
    await child.expect("timed out");
    await child.expect("waiting");
    semaphore.post();
    await child.expect("got");
    const { status, rest, stderr } = await bounded(child.finish(), "the child to exit by itself");
    assert.equal(status.code, 0, stderr);
    assert.deepEqual(rest, []);
    assert.equal(semaphore.value, 0);
  } finally {
    cleanup(name);
  }
});

Deno.test("no named semaphore made by these tests is left in /dev/shm, nothing under /tmp", () => {
  assert.deepEqual(shmEntries(), []);
  assert.deepEqual(leftovers(), []);
});
