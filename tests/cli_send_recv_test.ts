// `ipcbus send` and `ipcbus recv` run as subprocesses: JSON and raw
// round trips through every transport, stdin lines, type filters,
// priorities, timeouts and bad input.

import assert from "node:assert/strict";
import { open, readProcFile, registeredSchemes } from "../mod.ts";
import { ipcbus, IpcbusChild } from "./_cli.ts";
import { RUN, TempDir } from "./_helpers.ts";

const VALUES: unknown[] = [
  { id: 1, text: "héllo ✓", nested: { list: [1, 2.5, null] } },
  [true, false],
  "plain",
  42,
];

interface Tagged {
  type: number;
  priority: number;
  value: unknown;
}

function parseLines(stdout: string): Tagged[] {
  return stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as Tagged);
}

/** Removes an object by address with the command itself (and checks it went). */
async function remove(address: string): Promise<void> {
  const result = await ipcbus(["rm", address, "--yes"]);
  if (result.code !== 0 && !/no such object/.test(result.stderr)) throw new Error(result.stderr);
}

function randomKey(): string {
  return `0x${(0x20000000 + Math.floor(Math.random() * 0x0fffffff)).toString(16)}`;
}

/** Queue-like transports: send first (creating), then receive. */
const QUEUES: { scheme: string; address: (dir: string) => string; create: string[]; types: boolean }[] = [
  { scheme: "sysv-mq", address: () => `sysv-mq:${randomKey()}`, create: [], types: true },
  {
    scheme: "posix-mq",
    address: () => `posix-mq:/ipcbus-cli-${RUN}-${crypto.randomUUID().slice(0, 8)}`,
    create: ["-o", "maxMessages=8", "-o", "messageSize=512"],
    types: false,
  },
  {
    scheme: "shm",
    address: () => `shm:/ipcbus-cli-${RUN}-${crypto.randomUUID().slice(0, 8)}`,
    create: [],
    types: true,
  },
  {
    scheme: "file",
    address: (dir) => `file:${dir}/log-${crypto.randomUUID().slice(0, 8)}.bus`,
    create: [],
    types: true,
  },
];

for (const { scheme, address: makeAddress, create, types } of QUEUES) {
  Deno.test({
    name: `ipcbus send/recv: JSON values round-trip through ${scheme}:`,
    ignore: !registeredSchemes().includes(scheme),
  }, async () => {
    await using dir = await TempDir.make();
    const address = makeAddress(dir.path);
    try {
      const type = types ? ["--type", "3"] : [];
      const first = await ipcbus([
        "send",
        address,
        "--create",
        ...create,
        ...type,
        JSON.stringify(VALUES[0]),
      ]);
      assert.equal(first.code, 0, first.stderr);
      const lines = VALUES.slice(1).map((v) => JSON.stringify(v)).join("\n\n") + "\n";
      const rest = await ipcbus(["send", address, "-"], lines);
      assert.equal(rest.code, 0, rest.stderr);

      const received = await ipcbus([
        "recv",
        address,
        "--count",
        String(VALUES.length),
        "--json",
        "--timeout",
        "20000",
      ]);
      assert.equal(received.code, 0, received.stderr);
      const messages = parseLines(received.stdout);
      assert.deepEqual(messages.map((m) => m.value), VALUES);
      assert.equal(messages[0].type, types ? 3 : 1);
      assert.deepEqual(messages.slice(1).map((m) => m.type), [1, 1, 1]);

      // Plain output: one JSON value per line.
      if (scheme !== "file") {
        assert.equal((await ipcbus(["send", address, '"again"'])).code, 0);
        const plain = await ipcbus(["recv", address, "--timeout", "20000"]);
        assert.equal(plain.stdout, '"again"\n');
      }
    } finally {
      await remove(address);
    }
  });
}

Deno.test("ipcbus send/recv: JSON values round-trip through fifo: (the reader first)", async () => {
  await using dir = await TempDir.make();
  const address = `fifo:${dir.file("cli.fifo")}`;
  try {
    await using reader = new IpcbusChild([
      "recv",
      address,
      "--create",
      "--count",
      "3",
      "--json",
      "--timeout",
      "30000",
    ]);
    // `send` waits for the reader (a FIFO writer needs one); --create makes the
    // FIFO if the reader has not yet.
    for (const [i, value] of VALUES.slice(0, 3).entries()) {
      const sent = await ipcbus([
        "send",
        address,
        "--create",
        "--type",
        String(i + 1),
        JSON.stringify(value),
      ]);
      assert.equal(sent.code, 0, sent.stderr);
    }
    const got = [await reader.line(), await reader.line(), await reader.line()].map((l) =>
      JSON.parse(l) as Tagged
    );
    assert.deepEqual(got.map((m) => m.value), VALUES.slice(0, 3));
    assert.deepEqual(got.map((m) => m.type), [1, 2, 3]);
    assert.equal((await reader.finish()).status.code, 0);

    // Type filters are not a FIFO's: a usage error, not silence.
    const filtered = await ipcbus(["recv", address, "--type", "2", "--timeout", "100"]);
    assert.equal(filtered.code, 2);
    assert.match(filtered.stderr, /type/i);
  } finally {
    await remove(address);
  }
});

Deno.test("ipcbus send/recv: --raw carries bytes exactly (stdin to stdout)", async () => {
  const address = `sysv-mq:${randomKey()}`;
  const payload = new Uint8Array(1000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 37) & 0xff; // includes 0x00 and 0xff
  try {
    const sent = await ipcbus(["send", address, "--create", "--raw", "--type", "9", "-"], payload);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal((await ipcbus(["send", address, "--raw", "text as bytes"])).code, 0);
    const raw = await ipcbus(["recv", address, "--raw", "--type", "9", "--timeout", "20000"]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.deepEqual(raw.bytes, payload);
    const tagged = await ipcbus(["recv", address, "--raw", "--json", "--timeout", "20000"]);
    const message = JSON.parse(tagged.stdout) as { type: number; size: number; base64: string; text: string };
    assert.deepEqual([message.type, message.size, message.text], [1, 13, "text as bytes"]);
    assert.equal(atob(message.base64), "text as bytes");
  } finally {
    await remove(address);
  }
});

Deno.test("ipcbus recv: type filters on sysv-mq:, --timeout on an empty queue exits 1", async () => {
  const address = `sysv-mq:${randomKey()}`;
  try {
    for (const [type, value] of [[1, "email"], [2, "sms"], [5, "fax"]] as const) {
      const sent = await ipcbus(["send", address, "--create", "--type", String(type), JSON.stringify(value)]);
      assert.equal(sent.code, 0, sent.stderr);
    }
    const sms = await ipcbus(["recv", address, "--type", "2"]);
    assert.equal(sms.stdout, '"sms"\n');
    const notEmail = await ipcbus(["recv", address, "--type", "1", "--except", "--json"]);
    assert.deepEqual(parseLines(notEmail.stdout)[0], { type: 5, priority: 0, value: "fax" });
    const lowest = await ipcbus(["recv", address, "--type=-9"]);
    assert.equal(lowest.stdout, '"email"\n');

    const empty = await ipcbus(["recv", address, "--timeout", "50"]);
    assert.equal(empty.code, 1);
    assert.equal(empty.stdout, "");
    assert.match(empty.stderr, /nothing arrived on sysv-mq:0x[0-9a-f]+ within 50 ms/);

    const missing = await ipcbus(["recv", `sysv-mq:${randomKey()}`, "--timeout", "50"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot open/);
  } finally {
    await remove(address);
  }
});

Deno.test({
  name: "ipcbus send: priorities on posix-mq: come out highest first",
  ignore: !registeredSchemes().includes("posix-mq"),
}, async () => {
  const address = `posix-mq:/ipcbus-cli-${RUN}-prio`;
  try {
    const options = ["--create", "-o", "maxMessages=4", "-o", "messageSize=128"];
    assert.equal((await ipcbus(["send", address, ...options, '"routine"'])).code, 0);
    assert.equal((await ipcbus(["send", address, "--priority", "9", '"urgent"'])).code, 0);
    const got = parseLines((await ipcbus(["recv", address, "--count", "2", "--verbose"])).stdout);
    assert.deepEqual(got.map((m) => [m.value, m.priority]), [["urgent", 9], ["routine", 0]]);
    const typed = await ipcbus(["send", address, "--type", "2", '"x"']);
    assert.equal(typed.code, 2, "posix-mq: carries no types: a usage error");
  } finally {
    await remove(address);
  }
});

Deno.test("ipcbus send: a bad line on stdin fails (exit 1) after the good ones, naming the line", async () => {
  const address = `sysv-mq:${randomKey()}`;
  try {
    const result = await ipcbus(["send", address, "--create", "-"], '{"a":1}\n{"b":\n');
    assert.equal(result.code, 1);
    assert.match(result.stderr, /line 2 of standard input is not JSON/);
    const received = await ipcbus(["recv", address, "--timeout", "20000"]);
    assert.equal(received.stdout, '{"a":1}\n');

    // A message that is not JSON, received without --raw.
    assert.equal((await ipcbus(["send", address, "--raw", "not json"])).code, 0);
    const bad = await ipcbus(["recv", address, "--timeout", "20000"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /is not JSON .*--raw/);
  } finally {
    await remove(address);
  }
});

Deno.test("ipcbus send: --timeout gives up on a FIFO without a reader", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("lonely.fifo");
  try {
    const result = await ipcbus(["send", `fifo:${path}`, "--create", "--timeout", "100", '"hello?"']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /could not send .* within 100 ms/);
  } finally {
    await remove(`fifo:${path}`);
  }
});

Deno.test("ipcbus send/recv: a channel opened from code sees what the command sent", async () => {
  const address = `sysv-mq:${randomKey()}`;
  await using channel = await open<{ n: number }>(address, { create: true, exclusive: true });
  try {
    assert.equal((await ipcbus(["send", address, "--type", "4", '{"n":7}'])).code, 0);
    const message = await channel.receiveMessage({ signal: AbortSignal.timeout(20_000) });
    assert.deepEqual([message.value, message.type], [{ n: 7 }, 4]);
    await channel.send({ n: 8 });
    assert.equal((await ipcbus(["recv", address])).stdout, '{"n":8}\n');
  } finally {
    await channel.unlink();
  }
});

/** Ids of System V semaphore sets with `count` semaphores (from /proc). */
function semaphoreSets(count: number): Set<number> {
  const rows = (readProcFile("/proc/sysvipc/sem") ?? "").split("\n").slice(1).map((l) =>
    l.trim().split(/\s+/)
  );
  return new Set(rows.filter((r) => r.length > 3 && Number(r[3]) === count).map((r) => Number(r[1])));
}

Deno.test({
  name: "ipcbus rm: a shm: ring goes with its semaphore set",
  ignore: !registeredSchemes().includes("shm"),
}, async () => {
  const address = `shm:/ipcbus-cli-${RUN}-ring`;
  const users = 96; // the ring's set has one semaphore per user slot (multiples of 32): an unusual count
  const before = semaphoreSets(users);
  try {
    const sent = await ipcbus(["send", address, "--create", "-o", `users=${users}`, '"x"']);
    assert.equal(sent.code, 0, sent.stderr);
    const made = [...semaphoreSets(users)].filter((id) => !before.has(id));
    assert.equal(made.length, 1, "the ring's semaphore set was not found");
    const stat = await ipcbus(["stat", address, "--json"]);
    const report = JSON.parse(stat.stdout) as {
      object: { messages: number };
      stat: { messages: number; users: unknown[]; inUse: boolean };
    };
    assert.equal(report.object.messages, 1);
    // Read where it lies, not joined: stat is no user of the ring.
    assert.deepEqual([report.stat.messages, report.stat.users.length, report.stat.inUse], [1, 0, false]);
    const removed = await ipcbus(["rm", address, "--yes"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /semaphore set/);
    assert.equal(semaphoreSets(users).has(made[0]), false, "rm left the ring's semaphore set behind");
  } finally {
    await remove(address);
  }
});
