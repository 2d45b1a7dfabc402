// `ipcbus send` and `ipcbus recv` run as subprocesses: JSON and raw
// round trips through every transport, stdin lines, type filters,
// priorities, timeouts and bad input.

import assert from "node:assert/strict";
import { listIpcDirectory, open, readProcFile, registeredSchemes } from "../mod.ts";
import { ipcbus, IpcbusChild } from "./_cli.ts";
import { bounded, RUN, TempDir } from "./_helpers.ts";

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

/** A `shm:` ring's name that no one else uses. */
function ringAddress(tag: string): string {
  return `shm:/ipcbus-cli-${RUN}-${tag}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Whether `/dev/shm` has the ring's file (read through ipcbus: Deno refuses /dev paths). */
function ringExists(address: string): boolean {
  const name = address.slice("shm:/".length).split("?")[0];
  return (listIpcDirectory("/dev/shm") ?? []).some((entry) => entry.name === name);
}

Deno.test({
  name: "ipcbus send/recv: a broadcast shm: ring gives each of two recv subscribers every message",
  ignore: !registeredSchemes().includes("shm"),
}, async () => {
  const address = ringAddress("bcast");
  try {
    // Made by the command: broadcast, small, permission bits from --mode. Nobody has subscribed
    // yet, so this first message is for no one.
    const made = await ipcbus([
      "send",
      address,
      "--create",
      "--exclusive",
      "--mode",
      "0640",
      "-o",
      "delivery=broadcast",
      "-o",
      "capacity=64KiB",
      '"before anyone listened"',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const stat = await ipcbus(["stat", address, "--json"]);
    assert.equal(stat.code, 0, stat.stderr);
    const report = JSON.parse(stat.stdout) as {
      object: { mode: number };
      stat: { mode: string; overflow: string; capacity: number };
    };
    assert.deepEqual(
      [report.object.mode, report.stat.mode, report.stat.overflow, report.stat.capacity],
      [0o640, "broadcast", "block", 64 * 1024],
    );

    const count = VALUES.length;
    // A long --timeout: a recv must exit after its last message, not when the timeout would fire
    // (an AbortSignal.timeout the ring still listens to would keep the process alive until then).
    const recvArgs = ["--count", String(count), "--verbose", "--timeout", "600000"];
    // One subscriber by the plain address, one by the address with its query.
    await using a = new IpcbusChild(["recv", address, ...recvArgs]);
    await using b = new IpcbusChild(["recv", `${address}?mode=broadcast`, ...recvArgs]);
    // Rendezvous: each says so on stderr once it has subscribed.
    for (const child of [a, b]) {
      const ready = await bounded(child.errorLine(), "recv's ready line");
      assert.match(ready, /^receiving from shm:.* \(a broadcast subscriber: every message/);
    }

    const first = await ipcbus(["send", address, "--type", "7", JSON.stringify(VALUES[0])]);
    assert.equal(first.code, 0, first.stderr);
    const lines = VALUES.slice(1).map((v) => JSON.stringify(v)).join("\n") + "\n";
    const rest = await ipcbus(["send", address, "--verbose", "-"], lines);
    assert.equal(rest.code, 0, rest.stderr);
    assert.match(rest.stderr, new RegExp(`sent ${count - 1} message\\(s\\)`));

    for (const [which, child] of [["first", a], ["second", b]] as const) {
      const got: Tagged[] = [];
      for (let i = 0; i < count; i++) {
        got.push(JSON.parse(await bounded(child.line(), `message ${i + 1} at the ${which} recv`)) as Tagged);
      }
      assert.deepEqual(got.map((m) => m.value), VALUES, `the ${which} subscriber`);
      assert.deepEqual(got.map((m) => m.type), [7, 1, 1, 1]);
      const { status, rest, stderr } = await bounded(child.finish(), `the ${which} recv to exit`);
      assert.equal(status.code, 0, stderr);
      assert.deepEqual(rest, []);
      assert.match(stderr, new RegExp(`received ${count} message\\(s\\) from shm:`));
    }
  } finally {
    await remove(address);
  }
  assert.equal(ringExists(address), false, "the ring was left behind");
});

Deno.test({
  name: "ipcbus send/recv: shm: delivery options: the address query, overflow=drop, and clear usage errors",
  ignore: !registeredSchemes().includes("shm"),
}, async () => {
  const address = ringAddress("opts");
  const queue = ringAddress("queue");
  try {
    // Bad values: usage errors (exit 2) that say what is accepted, and nothing made.
    const bad: [string[], RegExp][] = [
      [["-o", "delivery=fanout"], /-o delivery takes .*queue or broadcast, got "fanout"/],
      [["-o", "mode=0640"], /-o mode takes .*queue or broadcast, got "0640"; permission bits go in --mode/],
      [["--mode", "broadcast"], /--mode takes octal permission bits .*-o delivery=broadcast/],
      [["-o", "permissions=0640"], /use --mode/],
      [["-o", "delivery=broadcast", "-o", "overflow=lots"], /-o overflow takes block or drop, got "lots"/],
      [["-o", "overflow=drop"], /overflow applies to broadcast rings: add -o delivery=broadcast/],
      [["-o", "delivery=queue", "-o", "mode=broadcast"], /delivery mode is given twice/],
      [["-o", "delivery=broadcast", "-o", "subscribe=maybe"], /-o subscribe takes true or false/],
      [["-o", "delivery=broadcast", "-o", "subscribe=true"], /send never subscribes/],
      [["-o", "capcity=4096"], /unknown option "capcity"; shm: takes .*capacity/],
    ];
    for (const [args, message] of bad) {
      const result = await ipcbus(["send", address, "--create", ...args, '"x"']);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(" "));
    }
    const unsubscribed = await ipcbus([
      "recv",
      address,
      "--create",
      "-o",
      "subscribe=false",
      "--timeout",
      "10",
    ]);
    assert.equal(unsubscribed.code, 2);
    assert.match(unsubscribed.stderr, /recv always subscribes/);
    const disagree = await ipcbus([
      "send",
      `${address}?mode=queue`,
      "--create",
      "-o",
      "delivery=broadcast",
      "1",
    ]);
    assert.equal(disagree.code, 2);
    assert.match(disagree.stderr, /the address says mode=queue but the options say broadcast/);
    const notShm = await ipcbus([
      "send",
      `sysv-mq:${randomKey()}`,
      "--create",
      "-o",
      "delivery=broadcast",
      "1",
    ]);
    assert.equal(notShm.code, 2);
    assert.match(notShm.stderr, /-o delivery applies to shm: rings only/);
    assert.equal(ringExists(address), false, "a refused command made the ring");

    // The address query alone makes a broadcast ring with overflow=drop; stat and rm take it too.
    const made = await ipcbus(["send", `${address}?mode=broadcast&overflow=drop`, "--create", '"x"']);
    assert.equal(made.code, 0, made.stderr);
    const stat = await ipcbus(["stat", `${address}?mode=broadcast`, "--json"]);
    assert.equal(stat.code, 0, stat.stderr);
    const { stat: ring } = JSON.parse(stat.stdout) as { stat: { mode: string; overflow: string } };
    assert.deepEqual([ring.mode, ring.overflow], ["broadcast", "drop"]);
    // Opening it with other settings is refused, naming what it is.
    const asQueue = await ipcbus(["send", address, "-o", "delivery=queue", '"x"']);
    assert.equal(asQueue.code, 2);
    assert.match(asQueue.stderr, /exists as a broadcast ring; queue was asked for/);
    const asBlock = await ipcbus(["send", address, "-o", "overflow=block", '"x"']);
    assert.equal(asBlock.code, 2);
    assert.match(asBlock.stderr, /exists with overflow "drop"/);

    // A queue ring (the default) hands each message to one receiver: the old behaviour.
    assert.equal((await ipcbus(["send", queue, "--create", "-o", "delivery=queue", '"once"'])).code, 0);
    assert.equal((await ipcbus(["recv", queue, "--timeout", "20000"])).stdout, '"once"\n');
    const empty = await ipcbus(["recv", queue, "--timeout", "50"]);
    assert.equal(empty.code, 1);
  } finally {
    await remove(`${address}?mode=broadcast`);
    await remove(queue);
  }
  assert.equal(ringExists(address) || ringExists(queue), false, "a ring was left behind");
});

Deno.test({
  name:
    "ipcbus recv: on a broadcast ring with overflow=drop, a recv that fell behind says how many it missed",
  ignore: !registeredSchemes().includes("shm"),
}, async () => {
  const address = ringAddress("drop");
  const sent = 1000; // small messages: far more than a 4 KiB ring holds
  try {
    const made = await ipcbus([
      "send",
      address,
      "--create",
      "-o",
      "delivery=broadcast",
      "-o",
      "overflow=drop",
      "-o",
      "capacity=4KiB",
      "0",
    ]);
    assert.equal(made.code, 0, made.stderr);
    await using child = new IpcbusChild(["recv", address, "--follow", "--verbose"]);
    assert.match(await bounded(child.errorLine(), "recv's ready line"), /a broadcast subscriber/);
    // Stopped, it cannot keep up: senders never wait (drop) and overrun it.
    child.process.kill("SIGSTOP");
    try {
      const burst = await ipcbus(
        ["send", address, "-"],
        Array.from({ length: sent }, (_, i) => i + 1).join("\n"),
      );
      assert.equal(burst.code, 0, burst.stderr);
      assert.equal((await ipcbus(["send", address, '"last"'])).code, 0);
    } finally {
      child.process.kill("SIGCONT");
    }
    const numbers: number[] = [];
    for (;;) {
      const { value } = JSON.parse(await bounded(child.line(), "the messages after the overrun")) as Tagged;
      if (value === "last") break;
      numbers.push(value as number);
    }
    child.process.kill("SIGINT");
    const { status, stderr } = await bounded(child.finish(), "recv to end after SIGINT");
    assert.equal(status.code, 0, stderr);
    const missed = /missed (\d+) message\(s\) on shm:.*fell a whole ring behind/.exec(stderr);
    assert.ok(missed, `no "missed" line on stderr:\n${stderr}`);
    // It gets the newest messages, in order, and the count of the others.
    assert.ok(numbers.length > 0 && numbers.length < sent, `got ${numbers.length}`);
    assert.deepEqual(
      numbers,
      Array.from({ length: numbers.length }, (_, i) => sent - numbers.length + 1 + i),
    );
    assert.equal(Number(missed[1]) + numbers.length, sent);
  } finally {
    await remove(address);
  }
  assert.equal(ringExists(address), false, "the ring was left behind");
});
