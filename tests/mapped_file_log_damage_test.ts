// file: logs and damaged files. A power loss is simulated by truncating a
// copy of a log at every byte of its last frames, and by flipping random
// bytes anywhere in a copy: reopening yields a clean prefix of intact
// messages (every message delivered is exactly one that was sent, in order)
// and reports the damage, never a crash, a hang or a SIGBUS. Files that are
// not logs, or not safe to use, fail with clear errors: wrong magic, a
// truncated header, an unknown version, a symlink, a FIFO, a directory,
// another user's file, a world-writable file, a file truncated in use.
import assert from "node:assert/strict";
import { FrameError, PermissionDeniedError } from "../errors.ts";
import { bytes, Channel } from "../mod.ts";
import { MappedFileLog, MessagesLostError } from "../transports/mapped_file_log.ts";
import { RING_OFFSET } from "../transports/_log_format.ts";
import { euid, fixture, hasSetpriv, leftovers, pattern, sameBytes, TempDir } from "./_helpers.ts";

const MESSAGES = 60;
const MAX_SIZE = 64 * 1024;

/**
 * A small log of MESSAGES messages of varied sizes; returns the file's bytes and the payloads. With
 * `synced`, it is flushed, so that a later first opener (verify: "tail") checks none of its frames.
 */
async function makeLog(
  path: string,
  synced = false,
): Promise<{ file: Uint8Array; payloads: Uint8Array[]; write: number }> {
  const log = await MappedFileLog.open(path, { create: true, exclusive: true, maxSize: MAX_SIZE });
  const payloads: Uint8Array[] = [];
  for (let i = 0; i < MESSAGES; i++) {
    const payload = pattern(1 + ((i * 37) % 300), i + 1);
    payloads.push(payload);
    assert.ok(log.trySend(payload, 1 + (i % 3), 0));
  }
  const write = log.stats().writePosition;
  if (synced) await log.flush();
  log.close();
  return { file: await Deno.readFile(path), payloads, write };
}

interface Outcome {
  delivered: number;
  damage: number;
  lost: number;
  openError: Error | null;
  report: MappedFileLog["info"]["recovery"] | null;
}

/** Opens a damaged copy and reads everything, checking each message against what was sent. */
async function readBack(path: string, payloads: Uint8Array[], verify: "tail" | "full"): Promise<Outcome> {
  const outcome: Outcome = { delivered: 0, damage: 0, lost: 0, openError: null, report: null };
  let transport: MappedFileLog;
  try {
    transport = await MappedFileLog.open(path, { verify });
  } catch (error) {
    if (!(error instanceof FrameError)) throw error;
    outcome.openError = error;
    return outcome;
  }
  outcome.report = transport.info.recovery;
  using channel = new Channel<Uint8Array>(transport, { codec: bytes });
  let lastSeq = 0;
  for (let reads = 0; reads < 10 * MESSAGES; reads++) {
    let result;
    try {
      result = channel.tryReceive();
    } catch (error) {
      if (error instanceof FrameError) outcome.damage++;
      else if (error instanceof MessagesLostError) outcome.lost++;
      else throw error;
      continue;
    }
    if (!result.ok) break;
    const seq = transport.stats().readSequence - 1;
    assert.ok(seq > lastSeq, `sequence numbers increase (${seq} after ${lastSeq})`);
    assert.ok(seq >= 1 && seq <= MESSAGES, `sequence ${seq} was sent`);
    assert.ok(sameBytes(result.value, payloads[seq - 1]), `message ${seq} is exactly what was sent`);
    assert.equal(result.type, 1 + ((seq - 1) % 3));
    lastSeq = seq;
    outcome.delivered++;
  }
  return outcome;
}

Deno.test("power loss: a copy truncated at every byte of its last frames reopens as a clean prefix", async () => {
  await using dir = await TempDir.make();
  const { file, payloads, write } = await makeLog(dir.file("original.bus"));
  const sizes = payloads.map((p) => (24 + p.length + 7) & ~7);
  const tail = sizes.slice(-3).reduce((a, b) => a + b, 0);
  const copy = dir.file("copy.bus");
  let cuts = 0;
  let reported = 0;
  for (let cut = RING_OFFSET + write - tail; cut <= RING_OFFSET + write; cut++) {
    await Deno.writeFile(copy, file.subarray(0, cut), { mode: 0o600 });
    // Frames whose bytes (header and payload) all lie before the cut are intact.
    let intact = 0;
    for (let at = 0; intact < MESSAGES && at + 24 + payloads[intact].length <= cut - RING_OFFSET;) {
      at += sizes[intact++];
    }
    const outcome = await readBack(copy, payloads, "tail");
    assert.equal(outcome.openError, null);
    assert.equal(outcome.delivered, intact, `cut at ${cut}: the intact prefix`);
    assert.equal(outcome.damage + outcome.lost, 0, "the recovery dropped the torn frames before any read");
    assert.equal(outcome.report!.extendedBytes, MAX_SIZE - cut);
    if (intact < MESSAGES) {
      assert.ok(outcome.report!.truncatedBytes > 0, `cut at ${cut}: the damage is reported`);
      reported++;
    }
    // Appending goes on after the prefix.
    const log = await MappedFileLog.open(copy);
    assert.ok(log.trySend(new Uint8Array([1]), 1, 0));
    assert.equal(log.stats().nextSequence, MESSAGES + 2, "numbers of lost messages are not reused");
    log.close();
    cuts++;
  }
  console.log(`truncation: ${cuts} cuts, ${reported} reported a torn tail`);
});

Deno.test("power loss: random byte flips anywhere give intact messages in order, or clear errors", async () => {
  await using dir = await TempDir.make();
  const unsynced = await makeLog(dir.file("original.bus"));
  const synced = await makeLog(dir.file("synced.bus"), true);
  const copy = dir.file("flipped.bus");
  const counts = { runs: 0, openErrors: 0, delivered: 0, damage: 0, lost: 0, repaired: 0 };
  for (let run = 0; run < 400; run++) {
    // Half the runs damage a synced log opened with verify: "tail": the opener checks none of its
    // frames, so the readers find the damage.
    const { file, payloads, write } = run % 8 < 4 ? unsynced : synced;
    const damaged = file.slice();
    const flips = 1 + Math.floor(Math.random() * 4);
    // Mostly in the frames, sometimes in the header and the reader table.
    const span = run % 4 === 0 ? RING_OFFSET + write : write;
    const base = run % 4 === 0 ? 0 : RING_OFFSET;
    for (let f = 0; f < flips; f++) {
      damaged[base + Math.floor(Math.random() * span)] ^= 1 << Math.floor(Math.random() * 8);
    }
    await Deno.writeFile(copy, damaged, { mode: 0o600 });
    const outcome = await readBack(copy, payloads, run % 8 < 2 ? "full" : "tail");
    counts.runs++;
    if (outcome.openError) counts.openErrors++;
    counts.delivered += outcome.delivered;
    counts.damage += outcome.damage;
    counts.lost += outcome.lost;
    if (outcome.report?.repaired) counts.repaired++;
  }
  console.log(
    `flips: ${counts.runs} damaged copies; ${counts.openErrors} refused with FrameError at open, ` +
      `${counts.repaired} repaired at open, ${counts.damage} corrupt frames and ${counts.lost} losses ` +
      `reported while reading, ${counts.delivered} intact messages delivered`,
  );
});

Deno.test("not a log: wrong magic, truncated header, unknown version, corrupt header, empty file", async () => {
  await using dir = await TempDir.make();
  const { file } = await makeLog(dir.file("good.bus"));
  const bad = dir.file("bad.bus");
  const expectError = async (bytes: Uint8Array, pattern: RegExp) => {
    await Deno.writeFile(bad, bytes, { mode: 0o600 });
    await assert.rejects(MappedFileLog.open(bad), (error: Error) => {
      assert.ok(error instanceof FrameError, `${error.name}: ${error.message}`);
      assert.match(error.message, pattern);
      return true;
    });
  };
  const magic = file.slice();
  magic.set(new TextEncoder().encode("NOTALOG!"));
  await expectError(magic, /not an ipcbus log: its first bytes are 4e 4f 54/);
  for (const size of [0, 7, 100, 4096, RING_OFFSET - 1]) {
    await expectError(file.slice(0, size), /less than the 12288-byte header/);
  }
  const version = file.slice();
  new DataView(version.buffer).setUint32(8, 2, true);
  await expectError(version, /version 2 log; this ipcbus reads version 1 only/);
  const corrupt = file.slice();
  corrupt[20] ^= 1; // the capacity, under the header checksum
  await expectError(corrupt, /header .* is corrupt/);
  const positions = file.slice();
  new DataView(positions.buffer).setUint32(72, 8, true); // head after the write position
  new DataView(positions.buffer).setUint32(64, 0, true);
  await expectError(positions, /damaged: write position 0, head 8/);
  // create: true on an existing file that is not a log does not overwrite it.
  await Deno.writeFile(bad, new TextEncoder().encode("hello"), { mode: 0o600 });
  await assert.rejects(
    MappedFileLog.open(bad, { create: true }),
    /less than the 12288-byte header .*not a log/,
  );
  assert.equal(await Deno.readTextFile(bad), "hello");
});

Deno.test("unsafe files: a symlink, a FIFO, a directory, a world-writable file, another user's file", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("real.bus");
  await makeLog(path);
  await Deno.symlink(path, dir.file("link.bus"));
  await assert.rejects(MappedFileLog.open(dir.file("link.bus")), (error: Error) => {
    assert.ok(error instanceof PermissionDeniedError);
    assert.match(error.message, /symbolic link/);
    return true;
  });
  const fifo = dir.file("f.bus");
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  await assert.rejects(MappedFileLog.open(fifo), /is a fifo, not a regular file/);
  await assert.rejects(MappedFileLog.open(dir.path), PermissionDeniedError);
  await Deno.chmod(path, 0o666);
  await assert.rejects(MappedFileLog.open(path), /any user may write it/);
  await Deno.chmod(path, 0o600);
  await assert.rejects(MappedFileLog.open(dir.file("new.bus"), { create: true, mode: 0o666 }), RangeError);
  if (euid() === 0) {
    await Deno.chown(path, 65534, 65534);
    await assert.rejects(MappedFileLog.open(path), /belongs to uid 65534/);
    (await MappedFileLog.open(path, { allowOtherOwner: true })).close();
  }
});

Deno.test({
  name: `another user cannot open a 0600 log: PermissionDeniedError${
    hasSetpriv && euid() === 0 ? "" : " (skipped: needs root and setpriv(1))"
  }`,
  ignore: !hasSetpriv || euid() !== 0,
  async fn() {
    await using dir = await TempDir.make();
    await Deno.chmod(dir.path, 0o755);
    const path = dir.file("private.bus");
    (await MappedFileLog.open(path, { create: true, maxSize: MAX_SIZE })).close();
    const output = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        Deno.execPath(),
        "run",
        "--quiet",
        "--no-prompt",
        "--allow-ffi",
        fixture("file_log_child.ts"),
        path,
        "{}",
      ],
      env: { DENO_DIR: dir.path, HOME: dir.path },
      stdin: "null",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.match(new TextDecoder().decode(output.stdout), /^error PermissionDeniedError EACCES /);
  },
});

Deno.test("a log truncated while another open has it is refused, not mapped past its end", async () => {
  await using dir = await TempDir.make();
  const path = dir.file("cut.bus");
  const first = await MappedFileLog.open(path, { create: true, maxSize: MAX_SIZE });
  try {
    await Deno.truncate(path, RING_OFFSET + 4096);
    await assert.rejects(MappedFileLog.open(path), /was truncated while other processes have it open/);
  } finally {
    first.close(); // touches nothing past the new end
  }
  // Alone, an opener restores the size and goes on.
  const log = await MappedFileLog.open(path);
  assert.equal(log.info.recovery.extendedBytes, MAX_SIZE - RING_OFFSET - 4096);
  log.close();
});

Deno.test("no temporary files are left behind", () => {
  assert.deepEqual(leftovers(), []);
});
