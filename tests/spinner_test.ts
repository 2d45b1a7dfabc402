// The bounded spin before parking (transports/_stream.ts), shared by every transport's waits.
import assert from "node:assert/strict";
import { ACTIVE_FACTOR, Spinner } from "../transports/_stream.ts";

/** Blocks for `ms` (the spinner judges waits by the clock). */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* wait */ }
}

Deno.test("Spinner: returns what the attempt gets, gives up after its budget, and never spins with 0", () => {
  const spinner = new Spinner(2000);
  let tries = 0;
  assert.equal(spinner.spin(() => ++tries === 50 ? "got" : undefined), "got");
  assert.equal(tries, 50);
  tries = 0;
  assert.equal(spinner.spin(() => (tries++, undefined)), undefined, "gives up once its budget is spent");
  assert.ok(tries >= 8, "tries a batch before it first looks at the clock");
  tries = 0;
  assert.equal(new Spinner(0).spin(() => (tries++, undefined)), undefined);
  assert.equal(tries, 0, "a budget of 0 tries nothing");
});

Deno.test("Spinner: stops spinning after 8 long waits, and spins again after one short wait", () => {
  const budget = 100; // µs
  const spinner = new Spinner(budget);
  let tries = 0;
  const miss = () => (tries++, undefined);
  // A long parked wait (beyond ACTIVE_FACTOR budgets) after each miss: an idle peer.
  for (let i = 0; i < 8; i++) {
    spinner.spin(miss);
    busy((budget * ACTIVE_FACTOR) / 1000 + 1);
    spinner.woke();
  }
  tries = 0;
  spinner.spin(miss);
  assert.equal(tries, 0, "an idle peer: no spinning");
  // The wait after that miss is short: the peer is active again, and spinning resumes.
  spinner.woke();
  tries = 0;
  spinner.spin(miss);
  assert.ok(tries > 0, "spinning again after a short wait");
});
