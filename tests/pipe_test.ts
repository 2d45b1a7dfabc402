// The pipe: transport: spawn() and child processes, bad frames from a peer,
// and process lifetime.
import assert from "node:assert/strict";
import {
  bytes,
  Channel,
  ChannelClosedError,
  type ChildProcess,
  FrameError,
  NotFoundError,
  open,
  PermissionDeniedError,
  Pipe,
  spawn,
  type SpawnOptions,
} from "../mod.ts";
import {
  bounded,
  fixture,
  frame,
  leftovers,
  pattern,
  rawWrite,
  runDeno,
  sameBytes,
  TempDir,
} from "./_helpers.ts";

const timeout = () => AbortSignal.timeout(20_000);

/** spawn() on a fixture with Deno; the child is killed and reaped on dispose. */
function spawnFixture<T>(
  script: string,
  args: string[],
  permissions: string[] = ["--allow-ffi"],
  options: SpawnOptions<T> = {},
): { channel: Channel<T>; child: ChildProcess } & AsyncDisposable {
  const { channel, child } = spawn<T>(Deno.execPath(), {
    ...options,
    args: ["run", "--quiet", "--no-prompt", ...permissions, fixture(script), ...args],
  });
  return {
    channel,
    child,
    async [Symbol.asyncDispose]() {
      channel.close();
      await child[Symbol.asyncDispose]();
    },
  };
}

Deno.test("spawn(): messages of many sizes and types round-trip through a child (bytes codec)", async () => {
  await using peer = spawnFixture<Uint8Array>("echo_child.ts", ["bytes"], ["--allow-ffi"], { codec: bytes });
  const sizes = [0, 1, 64, 4084, 4085, 4096, 65_536, 70_000, 1 << 20, 3];
  const sent = sizes.map((size, i) => ({ data: pattern(size, i + 1), type: i === 0 ? 0xffff_ffff : i + 1 }));
  const receiving = (async () => {
    for (const { data, type } of sent) {
      const message = await peer.channel.receiveMessage({ signal: timeout() });
      assert.equal(message.type, type);
      assert.ok(sameBytes(message.value, data), `payload of ${data.length} bytes came back intact`);
    }
  })();
  for (const { data, type } of sent) await peer.channel.send(data, { type, signal: timeout() });
  await receiving;
  peer.channel.close();
  assert.deepEqual(await bounded(peer.child.status, "the child"), { success: true, code: 0, signal: null });
});

Deno.test("spawn(): JSON values round-trip, child ends when the parent closes", async () => {
  await using peer = spawnFixture<unknown>("echo_child.ts", []);
  const values = [{ n: 1 }, "text", [1, 2, { deep: null }], 3.5, { big: "y".repeat(200_000) }];
  for (const [i, value] of values.entries()) {
    await peer.channel.send(value, { type: i + 10, signal: timeout() });
    assert.deepEqual(await peer.channel.receiveMessage({ signal: timeout() }), {
      value,
      type: i + 10,
      priority: 0,
    });
  }
  assert.equal(peer.channel.info.address, `pipe:child/${peer.child.pid}`);
  peer.channel.close();
  const status = await bounded(peer.child.status, "the child");
  assert.equal(status.success, true);
  assert.equal(peer.child.status, peer.child.status, "status is one promise");
});

Deno.test("child exit status: codes, SIGTERM and SIGKILL", async () => {
  for (const code of [0, 3]) {
    await using peer = spawnFixture<string>("pipe_child.ts", ["exit", String(code)]);
    assert.equal(await peer.channel.receive({ signal: timeout() }), "ready");
    assert.deepEqual(await bounded(peer.child.status, "the child"), {
      success: code === 0,
      code,
      signal: null,
    });
    await assert.rejects(peer.channel.receive({ signal: timeout() }), ChannelClosedError);
  }
  for (const [signal, number] of [["SIGTERM", 15], ["SIGKILL", 9]] as const) {
    await using peer = spawnFixture<string>("pipe_child.ts", ["hang"]);
    assert.equal(await peer.channel.receive({ signal: timeout() }), "ready");
    if (signal === "SIGTERM") peer.child.kill();
    else peer.child.kill(signal);
    assert.deepEqual(await bounded(peer.child.status, "the child"), {
      success: false,
      code: 128 + number,
      signal,
    });
    peer.child.kill("SIGKILL"); // after reaping: a no-op, never another process
    peer.child.kill(9);
    await assert.rejects(peer.channel.receive({ signal: timeout() }), ChannelClosedError);
  }
  {
    await using peer = spawnFixture<string>("pipe_child.ts", ["hang"]);
    assert.throws(() => peer.child.kill("SIGNOPE" as Deno.Signal), TypeError);
  }
});

Deno.test("ChildProcess[Symbol.asyncDispose] kills a running child and reaps it", async () => {
  const peer = spawnFixture<string>("pipe_child.ts", ["hang"]);
  try {
    assert.equal(await peer.channel.receive({ signal: timeout() }), "ready");
    await peer.child[Symbol.asyncDispose]();
    assert.equal((await bounded(peer.child.status, "the child")).signal, "SIGKILL");
  } finally {
    await peer[Symbol.asyncDispose]();
  }
});

Deno.test("a child that exits mid-frame: FrameError, then ChannelClosedError; never a hang", async () => {
  await using peer = spawnFixture<string>("pipe_child.ts", ["truncated"], ["--allow-ffi", "--allow-env"]);
  assert.equal((await bounded(peer.child.status, "the child")).code, 0, "the fixture wrote its bytes");
  const error = await peer.channel.receive({ signal: timeout() }).catch((e) => e);
  assert.ok(error instanceof FrameError, `got ${error}`);
  assert.match(error.message, /stream ended inside a frame/);
  assert.match(error.message, /22 bytes/);
  await assert.rejects(peer.channel.receive({ signal: timeout() }), ChannelClosedError);
});

Deno.test("spawn() options: env, clearEnv, cwd; the child sees IPCBUS_PIPE and pipe:parent", async () => {
  Deno.env.set("IPCBUS_TEST_INHERITED", "from-parent");
  try {
    await using dir = await TempDir.make();
    const cwd = await Deno.realPath(dir.path);
    {
      {
        await using peer = spawnFixture<Record<string, unknown>>("pipe_child.ts", ["info"], [
          "--allow-ffi",
          "--allow-env",
          "--allow-read",
        ], { env: { IPCBUS_TEST_VARIABLE: "set" }, cwd });
        const info = await peer.channel.receive({ signal: timeout() });
        assert.equal(info.address, "pipe:parent");
        assert.equal(info.variable, "set");
        assert.equal(info.inherited, "from-parent");
        assert.equal(info.cwd, cwd);
        assert.equal(info.pid, peer.child.pid);
        assert.match(String(info.pipe), /^1:3:4:\d+:\d+$/);
      }
      {
        const keep = ["HOME", "PATH", "DENO_DIR", "XDG_CACHE_HOME"].filter((name) => Deno.env.get(name));
        await using peer = spawnFixture<Record<string, unknown>>("pipe_child.ts", ["info"], [
          "--allow-ffi",
          "--allow-env",
          "--allow-read",
        ], {
          clearEnv: true,
          env: Object.fromEntries(keep.map((name) => [name, Deno.env.get(name)!])),
        });
        const info = await peer.channel.receive({ signal: timeout() });
        assert.equal(info.inherited, null, "clearEnv drops the parent's variables");
        assert.match(String(info.pipe), /^1:3:4:\d+:\d+$/);
      }
    }
  } finally {
    Deno.env.delete("IPCBUS_TEST_INHERITED");
  }
  assert.throws(() => spawn(Deno.execPath(), { env: { "A=B": "x" } }), TypeError);
});

Deno.test("spawn() refuses IPCBUS_PIPE in options.env: ipcbus sets it itself", () => {
  assert.throws(
    () => spawn(Deno.execPath(), { args: ["--version"], env: { IPCBUS_PIPE: "1:3:4:1:2" } }),
    (error: unknown) =>
      error instanceof TypeError && /IPCBUS_PIPE is set by spawn\(\) itself/.test(error.message),
  );
});

Deno.test("spawn() with a missing cwd fails cleanly", () => {
  assert.throws(
    () => spawn(Deno.execPath(), { args: ["--version"], cwd: `/nonexistent/${crypto.randomUUID()}` }),
    NotFoundError,
  );
});

Deno.test("several children at once, each with its own channel", async () => {
  const peers = Array.from(
    { length: 4 },
    () => spawnFixture<{ from: number; i: number }>("echo_child.ts", []),
  );
  try {
    await Promise.all(peers.map(async (peer, from) => {
      for (let i = 0; i < 50; i++) {
        await peer.channel.send({ from, i }, { type: from + 1, signal: timeout() });
        assert.deepEqual(await peer.channel.receiveMessage({ signal: timeout() }), {
          value: { from, i },
          type: from + 1,
          priority: 0,
        });
      }
      peer.channel.close();
      assert.equal((await bounded(peer.child.status, "the child")).code, 0);
    }));
  } finally {
    for (const peer of peers) await peer[Symbol.asyncDispose]();
  }
});

Deno.test("spawn() of a missing command is a NotFoundError", () => {
  assert.throws(() => spawn(`/nonexistent/${crypto.randomUUID()}`), NotFoundError);
  assert.throws(() => spawn(`ipcbus-no-such-command-${crypto.randomUUID()}`), NotFoundError);
});

Deno.test("pipe:parent can be opened once per child", async () => {
  await using peer = spawnFixture<string>("pipe_child.ts", ["twice"]);
  assert.match(await peer.channel.receive({ signal: timeout() }), /^Error: .*already open/);
});

Deno.test('open("pipe:parent") outside a spawn() child is a clear error; pipe:other is a TypeError', async () => {
  // In this very process (not started by spawn()).
  const here = await open("pipe:parent").catch((e) => e);
  assert.ok(here instanceof Error, `got ${here}`);
  assert.match(here.message, /IPCBUS_PIPE is not set/);
  assert.match(here.message, /spawn\(\)/);
  for (const address of ["pipe:other", "pipe:", "pipe:parent/x", "pipe:child"]) {
    await assert.rejects(open(address), TypeError, address);
  }
  // In a child started by Deno.Command: no variable; a malformed one; one
  // inherited from a "grandparent" (descriptors 3 and 4 are not those pipes).
  const probe = fixture("pipe_child.ts");
  const none = await runDeno(probe, ["probe"], ["--allow-ffi"], { IPCBUS_PIPE: "" });
  assert.match(none.stdout, /^Error: .*IPCBUS_PIPE is not set/);
  const malformed = await runDeno(probe, ["probe"], ["--allow-ffi"], { IPCBUS_PIPE: "2:x" });
  assert.match(malformed.stdout, /^Error: .*malformed IPCBUS_PIPE/);
  const stale = await runDeno(probe, ["probe"], ["--allow-ffi"], { IPCBUS_PIPE: "1:3:4:1:2" });
  assert.match(stale.stdout, /^PermissionDeniedError: .*not the pipe the parent made/);
  assert.equal(new PermissionDeniedError("x").name, "PermissionDeniedError");
});

Deno.test("spawn() without --allow-run is NotCapable (checked although libc starts the process)", async () => {
  const script = fixture("spawn_no_run.ts");
  const without = await runDeno(script, [], ["--allow-ffi"]);
  assert.equal(without.code, 0, without.stderr);
  assert.match(without.stdout, /^NotCapable: .*--allow-run/);
  const other = await runDeno(script, [], ["--allow-ffi", "--allow-run=/bin/true"]);
  assert.match(other.stdout, /^NotCapable: /, "permission for another command is not enough");
});

Deno.test("a parent that is done with its channels exits by itself", async () => {
  const script = fixture("parent_exits.ts");
  // A watchdog so that a hang fails this test instead of the whole run.
  const closed = await runDeno(script, ["close"], ["--allow-ffi", "--allow-run"], undefined, timeout());
  assert.equal(closed.signal, null, "the parent had to be killed: it did not exit by itself");
  assert.equal(closed.code, 0, closed.stderr);
  assert.deepEqual(JSON.parse(closed.stdout), {
    reply: { n: 41 },
    status: { success: true, code: 0, signal: null },
  });
  const open = await runDeno(script, ["open"], ["--allow-ffi", "--allow-run"], undefined, timeout());
  assert.equal(open.signal, null, "a parent with an open but idle channel did not exit by itself");
  assert.equal(open.code, 0, open.stderr);
  assert.deepEqual(JSON.parse(open.stdout), { reply: { n: 41 } });
});

Deno.test("bad frames from a peer are FrameErrors and the pipe stays unusable", async () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["wrong magic", frame(1, new Uint8Array(4), { magic: [0x4a, 0x42] }), /bad magic 0x4a42/],
    ["swapped magic", frame(1, new Uint8Array(4), { magic: [0x42, 0x49] }), /bad magic/],
    ["version 2", frame(1, new Uint8Array(4), { version: 2 }), /version 2/],
    ["version 0", frame(1, new Uint8Array(4), { version: 0 }), /version 0/],
    ["nonzero flags", frame(1, new Uint8Array(4), { flags: 0x80 }), /flags 0x80/],
    ["type 0", frame(0, new Uint8Array(4)), /type 0/],
    ["length over the limit", frame(1, new Uint8Array(0), { length: 1025 }), /1025.*maxMessageSize 1024/],
    ["plain text", new TextEncoder().encode("hello, world\n"), /bad magic/],
  ];
  for (const [name, bytesOut, message] of cases) {
    const [a, b] = Pipe.pair({ maxMessageSize: 1024 });
    using writer = new Channel<number>(a);
    using reader = new Channel<number>(b);
    await writer.send(1); // a good frame first: it is delivered
    rawWrite(a.info.writeFd as number, bytesOut);
    await writer.send(2); // after the bad bytes: never trusted
    assert.equal(await reader.receive({ signal: timeout() }), 1, name);
    const error = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(error instanceof FrameError, `${name}: got ${error}`);
    assert.match(error.message, message, name);
    const again = await reader.receive({ signal: timeout() }).catch((e) => e);
    assert.ok(again instanceof FrameError, `${name}: the stream stays unusable, got ${again}`);
    assert.throws(() => reader.tryReceive(), FrameError);
  }
});

Deno.test("bad bytes arriving while a receive is parked reject it with FrameError", async () => {
  const [a, b] = Pipe.pair();
  using writer = new Channel<number>(a);
  using reader = new Channel<number>(b);
  const pending = reader.receive({ signal: timeout() });
  rawWrite(a.info.writeFd as number, frame(1, new Uint8Array(3), { version: 9 }));
  await assert.rejects(pending, FrameError);
  writer.close();
});

Deno.test("truncated header or payload then end of stream: FrameError, then ChannelClosedError", async () => {
  for (const cut of [1, 5, 11, 12, 15]) {
    const [a, b] = Pipe.pair();
    const reader = new Channel<Uint8Array>(b, { codec: bytes });
    try {
      rawWrite(a.info.writeFd as number, frame(3, new Uint8Array(8).fill(1)).subarray(0, cut));
      assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" }, "part of a frame is not a frame");
      a.close();
      const error = await reader.receive({ signal: timeout() }).catch((e) => e);
      assert.ok(error instanceof FrameError, `cut at ${cut}: got ${error}`);
      assert.match(error.message, new RegExp(`stream ended inside a frame \\(${cut} bytes`));
      await assert.rejects(reader.receive({ signal: timeout() }), ChannelClosedError);
    } finally {
      reader.close();
      a.close();
    }
  }
});

Deno.test("a header claiming 4 GiB is refused at once under a 1 MiB limit", async () => {
  const [a, b] = Pipe.pair({ maxMessageSize: 1 << 20 });
  using writer = new Channel<number>(a);
  using reader = new Channel<number>(b);
  rawWrite(a.info.writeFd as number, frame(1, new Uint8Array(0), { length: 0xffff_ffff }));
  const error = await reader.receive({ signal: timeout() }).catch((e) => e);
  assert.ok(error instanceof FrameError, `got ${error}`);
  assert.match(error.message, /4294967295/);
  writer.close();
});

Deno.test("the reader never allocates what a header claims, even when the limit allows it", () => {
  const [a, b] = Pipe.pair({ maxMessageSize: 0xffff_ffff });
  using reader = new Channel<Uint8Array>(b, { codec: bytes });
  try {
    const before = Deno.memoryUsage().external;
    rawWrite(a.info.writeFd as number, frame(1, new Uint8Array(100), { length: 0xffff_fff0 }));
    assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
    const grown = Deno.memoryUsage().external - before;
    assert.ok(grown < 16 << 20, `the reader allocated ${grown} bytes for a 112-byte stream`);
    a.close();
    assert.throws(() => reader.tryReceive(), /stream ended inside a frame/);
    assert.deepEqual(reader.tryReceive(), { ok: false, reason: "closed" });
  } finally {
    a.close();
  }
});

Deno.test("a frame arriving in single bytes is reassembled", async () => {
  const [a, b] = Pipe.pair();
  using reader = new Channel<Uint8Array>(b, { codec: bytes });
  try {
    const payload = pattern(300, 9);
    const bytesOut = frame(77, payload);
    const receiving = reader.receiveMessage({ signal: timeout() });
    for (let i = 0; i < bytesOut.length; i++) rawWrite(a.info.writeFd as number, bytesOut.subarray(i, i + 1));
    const message = await receiving;
    assert.equal(message.type, 77);
    assert.ok(sameBytes(message.value, payload));
  } finally {
    a.close();
  }
});

Deno.test("frames written back to back in one write are all delivered", () => {
  const [a, b] = Pipe.pair();
  using reader = new Channel<Uint8Array>(b, { codec: bytes });
  try {
    const frames = Array.from({ length: 50 }, (_, i) => frame(i + 1, pattern(i * 7, i)));
    const all = new Uint8Array(frames.reduce((sum, f) => sum + f.length, 0));
    let at = 0;
    for (const f of frames) {
      all.set(f, at);
      at += f.length;
    }
    rawWrite(a.info.writeFd as number, all);
    for (let i = 0; i < 50; i++) {
      const message = reader.tryReceive();
      assert.ok(
        message.ok && message.type === i + 1 && sameBytes(message.value, pattern(i * 7, i)),
        `frame ${i}`,
      );
    }
    assert.deepEqual(reader.tryReceive(), { ok: false, reason: "empty" });
  } finally {
    a.close();
  }
});

Deno.test("pipe_test leaves nothing under /tmp", () => {
  assert.deepEqual(leftovers(), []);
});
