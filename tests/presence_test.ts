// Presence records: held by live processes, stale after they die (SIGKILL
// included), claimable only when stale.
import assert from "node:assert/strict";
import { Presence, PRESENCE_PREFIX, presenceName } from "../sync/presence.ts";
import { SysvMessageQueue } from "../transports/sysv_mq.ts";
import { IPC } from "../ffi/sysv.ts";
import { libc } from "../ffi/libc.ts";
import { listIpcDirectory } from "../inspect.ts";
import { DenoChild, fixture, rawClose, rawOpenWrite, rawWrite } from "./_helpers.ts";

const randomAddress = (scheme = "sysv-mq") => `${scheme}:test-${crypto.randomUUID()}`;
/** Whether the record is in /dev/shm (Deno's own APIs refuse /dev paths without --allow-all). */
const recorded = (address: string) =>
  listIpcDirectory("/dev/shm")!.some((entry) => `/${entry.name}` === presenceName(address));

function cleanup(address: string): void {
  Presence.forget(address);
}

Deno.test("hold, probe, list, release, claim and remove", () => {
  const address = randomAddress();
  try {
    assert.equal(Presence.probe(address), "unknown");
    const a = Presence.hold(address)!;
    const b = Presence.hold(address)!;
    assert.ok(a && b, "two holders in one process");
    assert.equal(Presence.probe(address), "live");
    assert.equal(Presence.claim(address), null, "a live address cannot be claimed");
    const record = Presence.list().find((r) => r.address === address);
    assert.deepEqual(record && { state: record.state, name: record.name }, {
      state: "live",
      name: presenceName(address),
    });
    a.release();
    a.release();
    assert.equal(Presence.probe(address), "live", "still held by the other");
    b[Symbol.dispose]();
    assert.equal(Presence.probe(address), "stale");
    const claim = Presence.claim(address)!;
    assert.ok(claim);
    assert.equal(Presence.hold(address), null, "no one can record presence while it is claimed");
    claim.remove();
    assert.equal(Presence.probe(address), "unknown");
    assert.equal(recorded(address), false);
    assert.equal(Presence.claim(address), null, "nothing to claim");
  } finally {
    cleanup(address);
  }
});

Deno.test("a hold that had to make the record says the object may be gone (a whole claim may have passed)", () => {
  const address = randomAddress();
  try {
    // No record: a first user, or gc removed object and record between the caller's open and this hold.
    const first = Presence.hold(address)!;
    assert.equal(first.contended, true, "a hold that made the record");
    const second = Presence.hold(address)!;
    assert.equal(second.contended, false, "a hold of a live record");
    first.release();
    second.release();
    const again = Presence.hold(address)!;
    assert.equal(again.contended, false, "a hold of a stale record");
    again.release();
  } finally {
    cleanup(address);
  }
});

Deno.test("names: escaped, prefixed, shortened with a hash when long; the record holds the address", () => {
  assert.equal(presenceName("fifo:/run/a b.fifo"), `/${PRESENCE_PREFIX}fifo:%2Frun%2Fa%20b.fifo`);
  const long = `fifo:/${"x/".repeat(300)}end`;
  const other = `fifo:/${"x/".repeat(300)}enD`;
  assert.ok(presenceName(long).length < 255);
  assert.notEqual(presenceName(long), presenceName(other));
  const address = `fifo:/tmp/${"é/".repeat(200)}${crypto.randomUUID()}`;
  try {
    Presence.hold(address)?.release();
    assert.equal(Presence.list().find((r) => r.name === presenceName(address))?.address, address);
  } finally {
    cleanup(address);
  }
});

Deno.test("a holder killed with SIGKILL leaves a stale record, never a live one", async () => {
  const address = randomAddress();
  try {
    {
      await using child = new DenoChild(fixture("presence_child.ts"), [address], [
        "--allow-ffi",
        "--allow-read",
      ]);
      await child.expect("held");
      assert.equal(Presence.probe(address), "live");
      assert.equal(Presence.claim(address), null);
      child.process.kill("SIGKILL");
      await child.process.status;
    }
    assert.equal(Presence.probe(address), "stale");
    Presence.claim(address)!.remove();
  } finally {
    cleanup(address);
  }
});

Deno.test("a process opening an object while gc removes it waits for the claim and opens afresh", async () => {
  // The queue: made, then left (its record stale), as gc finds it.
  const key = `0x${(0x4000_0000 | crypto.getRandomValues(new Uint32Array(1))[0] & 0x3fff_ffff).toString(16)}`;
  const old = SysvMessageQueue.open(`sysv-mq:${key}`, { create: true, exclusive: true });
  const oldId = old.info.id;
  const address = `sysv-mq:id/${oldId}`;
  old.close();
  let newId = -1;
  try {
    const claim = Presence.claim(address);
    assert.ok(claim, "the stale record could not be claimed");
    await using child = new DenoChild(fixture("gc_race_child.ts"), [key]);
    try {
      await child.expect("opening");
      // What gc does under the claim, while the child opens the queue (before or after it got it).
      libc().msgctl(oldId, IPC.RMID, null);
      claim.remove();
    } finally {
      claim.release();
    }
    const opened = await child.line();
    assert.match(opened, /^opened \d+$/);
    newId = Number(opened.split(" ")[1]);
    assert.notEqual(newId, oldId, "the child went on with the queue gc removed");
    assert.equal(await child.line(), "works");
    const { status } = await child.finish();
    assert.equal(status.code, 0);
  } finally {
    libc().msgctl(oldId, IPC.RMID, null);
    if (newId >= 0) libc().msgctl(newId, IPC.RMID, null);
    cleanup(address);
    if (newId >= 0) cleanup(`sysv-mq:id/${newId}`);
  }
});

Deno.test("a record with content that does not match its name is not listed", () => {
  const address = randomAddress();
  try {
    Presence.hold(address)?.release();
    const fd = rawOpenWrite(`/dev/shm${presenceName(address)}`);
    try {
      rawWrite(fd, new TextEncoder().encode("sysv-mq:someone-else"));
    } finally {
      rawClose(fd);
    }
    assert.equal(Presence.list().some((r) => r.name === presenceName(address)), false);
    assert.equal(Presence.probe(address), "stale", "probing does not depend on the content");
  } finally {
    cleanup(address);
  }
});
