// The wire format against an independent C implementation
// (tests/fixtures/peer.c, built with `cc` in a temp dir): over spawn()'s
// pipes in both directions, and over FIFOs in both directions. Plus the exact
// bytes of the documented example frame.
import assert from "node:assert/strict";
import { bytes, Channel, open, Pipe, spawn } from "../mod.ts";
import { bounded, fixture, hasCc, leftovers, pattern, rawRead, sameBytes, TempDir } from "./_helpers.ts";

const skipped = hasCc ? "" : " (skipped: no C compiler `cc` found)";
const timeout = () => AbortSignal.timeout(20_000);

/** Builds tests/fixtures/peer.c into a fresh temp dir (removed on dispose). */
async function buildPeer(): Promise<{ path: string } & AsyncDisposable> {
  const dir = await TempDir.make();
  try {
    const path = `${dir.path}/peer`;
    const build = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-Wextra", "-Werror", "-o", path, fixture("peer.c")],
    }).output();
    assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
    return { path, [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
  } catch (error) {
    await dir[Symbol.asyncDispose]();
    throw error;
  }
}

function fnv1a(data: Uint8Array): number {
  let hash = 2166136261;
  for (const byte of data) hash = Math.imul(hash ^ byte, 16777619) >>> 0;
  return hash;
}

Deno.test("the frame of send({n:1}, {type:7}) is exactly the documented 19 bytes", async () => {
  const [a, b] = Pipe.pair();
  using sender = new Channel<{ n: number }>(a);
  try {
    await sender.send({ n: 1 }, { type: 7 });
    const wire = rawRead(b.info.readFd as number, 100);
    assert.deepEqual(
      [...wire],
      [0x49, 0x42, 0x01, 0x00, 0x07, 0, 0, 0, 0x07, 0, 0, 0, ...new TextEncoder().encode('{"n":1}')],
    );
    await sender.send({ n: 2 }, { type: 0x0102_0304 });
    const second = rawRead(b.info.readFd as number, 100);
    assert.deepEqual([...second.subarray(4, 8)], [0x04, 0x03, 0x02, 0x01], "type is little-endian");
    const large = new Channel<Uint8Array>(a, { codec: bytes });
    await large.send(new Uint8Array(0x0201));
    const third = rawRead(b.info.readFd as number, 12);
    assert.deepEqual([...third.subarray(8, 12)], [0x01, 0x02, 0, 0], "length is little-endian");
  } finally {
    b.close();
  }
});

Deno.test({
  name: `a C peer started with spawn(): bytes both ways, payload reversed, type + 1${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    const { channel, child } = spawn<Uint8Array>(peer.path, { args: ["reverse"], codec: bytes });
    try {
      const sizes = [0, 1, 2, 11, 12, 13, 4084, 4096, 65_535, 65_536, 70_000, 1 << 20];
      const types = [1, 2, 7, 255, 256, 65_536, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
      const cases = sizes.map((size, i) => ({ data: pattern(size, i + 100), type: types[i % types.length] }));
      const receiving = (async () => {
        for (const { data, type } of cases) {
          const message = await channel.receiveMessage({ signal: timeout() });
          assert.equal(message.type, type === 0xffff_ffff ? 1 : type + 1, `type for ${data.length} bytes`);
          assert.ok(sameBytes(message.value, data.slice().reverse()), `${data.length} bytes reversed by C`);
        }
      })();
      for (const { data, type } of cases) await channel.send(data, { type, signal: timeout() });
      await receiving;
      channel.close();
      assert.deepEqual(
        await bounded(child.status, "the C child"),
        { success: true, code: 0, signal: null },
        "C saw a clean end",
      );
    } finally {
      channel.close();
      await child[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: `a C peer started with spawn(): JSON values both ways${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    const { channel, child } = spawn<unknown>(peer.path, { args: ["echo"] });
    try {
      const values = [{ n: 1 }, "ünïcödé \u{1F600}", [1, 2, 3], null, { long: "z".repeat(300_000) }];
      for (const value of values) {
        await channel.send(value, { type: 41, signal: timeout() });
        assert.deepEqual(await channel.receiveMessage({ signal: timeout() }), {
          value,
          type: 42,
          priority: 0,
        });
      }
      channel.close();
      assert.equal((await bounded(child.status, "the C child")).code, 0);
    } finally {
      channel.close();
      await child[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: `spawn() resets SIGPIPE: a C child writing to a parent that has gone dies of SIGPIPE${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    const { channel, child } = spawn<Uint8Array>(peer.path, { args: ["echo"], codec: bytes });
    try {
      // The child reads the whole 1 MiB frame, then blocks writing its echo
      // (nobody reads it); closing the parent's ends makes that write fail.
      await channel.send(new Uint8Array(1 << 20), { signal: timeout() });
      channel.close();
      const status = await bounded(child.status, "the C child");
      assert.deepEqual(status, { success: false, code: 128 + 13, signal: "SIGPIPE" });
    } finally {
      channel.close();
      await child[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: `a C program checks IPCBUS_PIPE: it refuses to run when started without spawn()${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    const output = await new Deno.Command(peer.path, { args: ["echo"], env: { IPCBUS_PIPE: "1:3:4:1:2" } })
      .output();
    assert.equal(output.code, 2, "descriptors 3 and 4 are not the pipes named by the variable");
  },
});

Deno.test({
  name: `a C writer fills an ipcbus-created FIFO; ipcbus reads every frame${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    await using dir = await TempDir.make();
    const path = dir.file();
    using reader = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "single" });
    reader.tryReceive(); // the read end exists: the C open(O_WRONLY) can proceed
    const count = 200;
    const writer = new Deno.Command(peer.path, { args: ["fifo-write", path, String(count)] }).spawn();
    try {
      for (let i = 0; i < count; i++) {
        const message = await reader.receiveMessage({ signal: timeout() });
        assert.equal(message.type, i + 1);
        const length = (i * 37) % 5000;
        const expected = Uint8Array.from({ length }, (_, j) => (i * 31 + j) & 0xff);
        assert.ok(sameBytes(message.value, expected), `frame ${i} (${length} bytes)`);
      }
      assert.equal((await bounded(writer.status, "the C writer")).code, 0);
    } finally {
      try {
        writer.kill("SIGKILL");
      } catch {
        // exited
      }
      await writer.status;
    }
  },
});

Deno.test({
  name: `ipcbus writes frames into a FIFO; a C reader parses every one${skipped}`,
  ignore: !hasCc,
  async fn() {
    await using peer = await buildPeer();
    await using dir = await TempDir.make();
    const path = dir.file();
    using writer = await open<Uint8Array>(`fifo:${path}`, { create: true, codec: bytes, writers: "single" });
    const sent = [0, 1, 12, 4084, 4085, 65_536, 300_000].map((size, i) => ({
      data: pattern(size, i + 7),
      type: 0xffff_ffff - i,
    }));
    const reader = new Deno.Command(peer.path, {
      args: ["fifo-read", path, String(sent.length)],
      stdout: "piped",
    }).spawn();
    try {
      for (const { data, type } of sent) await writer.send(data, { type, signal: timeout() }); // waits for the C reader
      writer.close();
      const output = await bounded(reader.output(), "the C reader");
      assert.equal(output.code, 0);
      const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
      assert.deepEqual(lines, sent.map(({ data, type }) => `${type} ${data.length} ${fnv1a(data)}`));
    } finally {
      try {
        reader.kill("SIGKILL");
      } catch {
        // exited
      }
      await reader.status;
    }
  },
});

Deno.test("wire_format_test leaves nothing under /tmp", () => {
  assert.deepEqual(leftovers(), []);
});
