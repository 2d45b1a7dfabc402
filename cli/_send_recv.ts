/**
 * `ipcbus send` and `ipcbus recv`: messages from and to the shell, so shell
 * scripts can join a bus. JSON by default (one JSON value per message, one
 * per line), `--raw` for bytes.
 *
 * @module
 */

import { bytes, type Channel, ChannelClosedError, json, open, type OpenOptions, ShmRing } from "../mod.ts";
import { intOption, listOption, parse, type Values } from "./_args.ts";
import { describeError, eprintln, Failure, lines, println, UsageError, writeOut } from "./_output.ts";

const OPEN_OPTIONS = `  --create        create the object when it does not exist
  --exclusive     with --create: fail when it exists
  --mode MODE     permission bits of a created object (default 0600)
  -o, --option NAME=VALUE
                  a transport option (repeatable), e.g. -o maxMessages=100 for posix-mq:,
                  -o writers=locked for fifo:; numbers and true/false are converted
  shm: rings      -o delivery=queue|broadcast (or shm:/name?mode=broadcast): broadcast gives
                  every recv every message sent while it runs; -o overflow=block|drop (broadcast:
                  senders wait for the slowest recv, or never wait and a recv a whole ring behind
                  misses messages); -o capacity=64KiB; -o users=N. recv subscribes when it
                  opens the ring, send never does`;

/** Help of `ipcbus send`. */
export const SEND_HELP =
  `usage: ipcbus send URL [--create] [--type N] [--priority N] [--raw] [--timeout MS] (DATA | -)

Send messages to a channel. DATA is one JSON value (one message); "-" reads
standard input: one JSON value per line, each line a message (blank lines
are skipped). With --raw, DATA is sent as its UTF-8 bytes, or all of
standard input as one message.

  --type N        message type (1 or more, default 1)
  --priority N    message priority (posix-mq:, shm:; default 0)
  --raw           bytes instead of JSON
  --timeout MS    give up (exit 1) when a message cannot be sent within MS ms
                  (a full queue; a FIFO without a reader)
  --verbose       report what was sent on stderr
${OPEN_OPTIONS}

Examples:
  ipcbus send posix-mq:/orders --create '{"id": 1}'
  ipcbus send shm:/ticks --create -o delivery=broadcast '{"t": 1}'
  ipcbus send sysv-mq:0x1a2b --type 2 '"sms"'
  jq -c '.[]' orders.json | ipcbus send fifo:/tmp/orders.fifo -
  printf 'raw bytes' | ipcbus send sysv-mq:0x1a2b --raw -`;

/** Help of `ipcbus recv`. */
export const RECV_HELP =
  `usage: ipcbus recv URL [--type N] [--count N | --follow] [--timeout MS] [--raw] [--json]

Receive messages from a channel and print them: each message's JSON value on
a line of its own (with --json or --verbose: {"type", "priority", "value"}).
With --raw the bytes are written exactly, one message after another (with
--json: {"type", "priority", "size", "base64", "text"}).

  --type N        receive only type N (sysv-mq:; --type=-N for the lowest type <= N)
  --except        with --type: anything but type N
  --count N       how many messages to receive (default 1)
  --follow        receive until interrupted (Ctrl-C ends cleanly, exit 0)
  --timeout MS    wait at most MS ms for each message; exit 1 when none comes
  --raw           bytes instead of JSON
  --json          print type and priority with each value
  --verbose       same as --json, and say on stderr when receiving starts ("receiving
                  from URL": a broadcast recv gets what is sent after it) and how many came
${OPEN_OPTIONS}

Examples:
  ipcbus recv posix-mq:/orders --count 10 --timeout 5000
  ipcbus recv shm:/ticks --create -o delivery=broadcast --follow
  ipcbus recv fifo:/tmp/orders.fifo --create --follow | jq .id
  ipcbus recv sysv-mq:0x1a2b --type 2 --json`;

const OPEN_SPEC = {
  create: { type: "boolean" },
  exclusive: { type: "boolean" },
  mode: { type: "string" },
  option: { type: "string", short: "o", multiple: true },
  raw: { type: "boolean" },
  timeout: { type: "string" },
  verbose: { type: "boolean", short: "v" },
} as const;

/** Options that only `shm:` rings take, which the command checks itself. */
const SHM_ONLY = ["delivery", "mode", "overflow", "subscribe"];

/** The value of a `shm:` address's query parameter, such as `mode` in `shm:/x?mode=broadcast`. */
function queryParameter(address: string, key: string): string | undefined {
  const question = address.indexOf("?");
  if (question < 0) return undefined;
  for (const part of address.slice(question + 1).split("&")) {
    if (part.startsWith(`${key}=`)) return part.slice(key.length + 1);
  }
  return undefined;
}

/**
 * The options of `open()` from the command line. A `shm:` ring's delivery
 * mode comes from `-o delivery=queue|broadcast` (or `-o mode=...`, the
 * library's name, or the address's `?mode=`), and `--mode` stays the
 * permission bits (passed as `permissions` to `shm:`). `recv` subscribes to
 * a broadcast ring when it opens it; `send` never subscribes.
 */
function openOptions(values: Values, command: "send" | "recv", address: string): OpenOptions<Uint8Array> {
  const options: OpenOptions<Uint8Array> = { codec: bytes };
  const shm = address.startsWith("shm:");
  let delivery: "queue" | "broadcast" | undefined;
  for (const item of listOption(values.option)) {
    const at = item.indexOf("=");
    if (at <= 0) throw new UsageError(`--option takes NAME=VALUE, got "${item}"`, command);
    const name = item.slice(0, at);
    const text = item.slice(at + 1);
    if (["codec", "schema", "create", "exclusive", "permissions"].includes(name)) {
      const flag = name === "permissions" ? "mode" : name;
      throw new UsageError(
        `-o ${name} is not a transport option${name === "codec" ? "" : ` (use --${flag})`}`,
        command,
      );
    }
    if (SHM_ONLY.includes(name) && !shm) {
      throw new UsageError(
        `-o ${name} applies to shm: rings only` +
          (name === "mode" ? "; permission bits go in --mode" : ""),
        command,
      );
    }
    if (name === "delivery" || name === "mode") {
      if (text !== "queue" && text !== "broadcast") {
        throw new UsageError(
          `-o ${name} takes a shm: ring's delivery mode, queue or broadcast, got "${text}"` +
            (name === "mode" ? "; permission bits go in --mode" : ""),
          command,
        );
      }
      if (delivery !== undefined && delivery !== text) {
        throw new UsageError(`the delivery mode is given twice: ${delivery} and ${text}`, command);
      }
      delivery = text;
      continue;
    }
    if (name === "overflow" && text !== "block" && text !== "drop") {
      throw new UsageError(`-o overflow takes block or drop, got "${text}"`, command);
    }
    if (name === "subscribe") {
      if (text !== "true" && text !== "false") {
        throw new UsageError(`-o subscribe takes true or false, got "${text}"`, command);
      }
      if ((text === "true") !== (command === "recv")) {
        throw new UsageError(
          command === "recv"
            ? "recv always subscribes to a broadcast ring (-o subscribe=false is what send does)"
            : "send never subscribes to a broadcast ring (a subscriber that does not read would hold it back)",
          command,
        );
      }
      continue;
    }
    options[name] = /^-?\d+(\.\d+)?$/.test(text)
      ? Number(text)
      : text === "true"
      ? true
      : text === "false"
      ? false
      : text;
  }
  if (shm) {
    if (delivery !== undefined) options.mode = delivery;
    const mode = delivery ?? queryParameter(address, "mode");
    if (options.overflow !== undefined && (mode === "queue" || (mode === undefined && values.create))) {
      throw new UsageError(
        "-o overflow applies to broadcast rings: add -o delivery=broadcast (or ?mode=broadcast)",
        command,
      );
    }
    // recv subscribes at open: it gets every message sent once it is open (and says so with --verbose).
    options.subscribe = command === "recv";
  }
  if (values.create) options.create = true;
  if (values.exclusive) {
    if (!values.create) throw new UsageError("--exclusive goes with --create", command);
    options.exclusive = true;
  }
  if (typeof values.mode === "string") {
    const text = values.mode.replace(/^0o?/i, "") || "0";
    if (!/^[0-7]{1,3}$/.test(text)) {
      throw new UsageError(
        `--mode takes octal permission bits such as 0640, got "${values.mode}"` +
          (/^(queue|broadcast)$/.test(values.mode)
            ? `; a shm: ring's delivery mode is -o delivery=${values.mode}`
            : ""),
        command,
      );
    }
    // shm: takes the delivery mode as `mode` and the permission bits as `permissions`.
    if (shm) options.permissions = parseInt(text, 8);
    else options.mode = parseInt(text, 8);
  }
  return options;
}

/** Opens a channel; a malformed address or option (TypeError, RangeError) is a usage error. */
async function openChannel(address: string, options: OpenOptions<Uint8Array>, command: string) {
  try {
    return await open<Uint8Array>(address, options);
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(error.message, command);
    }
    throw new Failure(`cannot open ${address}: ${describeError(error)}`, { cause: error });
  }
}

/** Aborts on SIGINT/SIGTERM while installed. */
function interruption(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = () => controller.abort(new DOMException("interrupted", "AbortError"));
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  return {
    signal: controller.signal,
    dispose() {
      for (const s of signals) Deno.removeSignalListener(s, onSignal);
    },
  };
}

/** The signal of one wait: the interruption, and `--timeout` (a "TimeoutError" abort). */
function waitSignal(interrupt: AbortSignal, timeout: number | undefined): AbortSignal {
  return timeout === undefined ? interrupt : AbortSignal.any([interrupt, AbortSignal.timeout(timeout)]);
}

async function stdinBytes(): Promise<Uint8Array> {
  return new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
}

function parseJson(text: string, where: string, command: string, usage: boolean): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = `${where} is not JSON (${(error as Error).message}); pass --raw to send bytes`;
    throw usage ? new UsageError(message, command) : new Failure(message);
  }
}

/**
 * Runs `ipcbus send`.
 *
 * @param args The arguments after `send`.
 * @returns The exit code.
 */
export async function send(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    ...OPEN_SPEC,
    type: { type: "string" },
    priority: { type: "string" },
  }, "send");
  if (positionals.length !== 2) {
    throw new UsageError(
      positionals.length < 2 ? "give a URL and DATA (or - to read standard input)" : "too many arguments",
      "send",
    );
  }
  const [address, data] = positionals;
  const type = intOption(values.type, "--type", 1, Number.MAX_SAFE_INTEGER, "send");
  const priority = intOption(values.priority, "--priority", 0, 0x7fff_ffff, "send");
  const timeout = intOption(values.timeout, "--timeout", 0, 2 ** 31 - 1, "send");
  const raw = values.raw === true;
  const options = openOptions(values, "send", address);
  // Check DATA before opening (or creating) anything.
  const single = data === "-"
    ? null
    : raw
    ? new TextEncoder().encode(data)
    : json.encode(parseJson(data, "DATA", "send", true));

  const interrupt = interruption();
  const channel = await openChannel(address, options, "send").catch((error) => {
    interrupt.dispose();
    throw error;
  });
  let sent = 0;
  const sendOne = async (payload: Uint8Array) => {
    try {
      await channel.send(payload, { type, priority, signal: waitSignal(interrupt.signal, timeout) });
    } catch (error) {
      if (error instanceof TypeError || error instanceof RangeError) {
        throw new UsageError(error.message, "send");
      }
      if (interrupt.signal.aborted) throw new Failure(`interrupted after ${sent} message(s)`);
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw new Failure(`could not send to ${address} within ${timeout} ms (after ${sent} message(s))`);
      }
      throw new Failure(`send to ${address} failed after ${sent} message(s): ${describeError(error)}`);
    }
    sent++;
  };
  try {
    if (single) await sendOne(single);
    else if (raw) await sendOne(await stdinBytes());
    else {
      let line = 0;
      for await (const text of lines(Deno.stdin.readable)) {
        line++;
        if (text.trim() === "") continue;
        await sendOne(json.encode(parseJson(text, `line ${line} of standard input`, "send", false)));
      }
    }
  } finally {
    channel.close();
    interrupt.dispose();
  }
  if (values.verbose) eprintln(`sent ${sent} message(s) to ${address}`);
  return 0;
}

function base64(data: Uint8Array): string {
  let text = "";
  for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  return btoa(text);
}

/** For the `--verbose` ready line: whether a `shm:` broadcast ring has this process as a subscriber. */
function subscription(channel: Channel<Uint8Array>): string {
  const ring = channel.unsafeTransport;
  if (!(ring instanceof ShmRing) || channel.info.mode !== "broadcast") return "";
  const subscribed = ring.stat().users.some((user) => user.self && user.subscribed);
  return subscribed
    ? ` (a broadcast subscriber: every message sent from now on)`
    : ` (a broadcast subscriber from its first receive)`;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Runs `ipcbus recv`.
 *
 * @param args The arguments after `recv`.
 * @returns The exit code.
 */
export async function recv(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    ...OPEN_SPEC,
    type: { type: "string" },
    except: { type: "boolean" },
    count: { type: "string" },
    follow: { type: "boolean", short: "f" },
    json: { type: "boolean" },
  }, "recv");
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length ? "too many arguments" : "give the URL to receive from", "recv");
  }
  const [address] = positionals;
  const type = intOption(values.type, "--type", -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, "recv") ??
    0;
  if (values.except && type === 0) throw new UsageError("--except goes with --type N", "recv");
  const count = intOption(values.count, "--count", 1, Number.MAX_SAFE_INTEGER, "recv");
  const follow = values.follow === true;
  if (follow && count !== undefined) throw new UsageError("--follow and --count do not go together", "recv");
  const timeout = intOption(values.timeout, "--timeout", 0, 2 ** 31 - 1, "recv");
  const raw = values.raw === true;
  const tagged = values.json === true || values.verbose === true;
  const options = openOptions(values, "recv", address);
  if (address.startsWith("shm:")) {
    // A broadcast ring with overflow=drop overruns a subscriber that falls a whole ring behind.
    options.onMissed = (missed: number) =>
      eprintln(
        `ipcbus recv: missed ${missed} message(s) on ${address}: this subscriber fell a whole ring behind`,
      );
  }
  const wanted = follow ? Infinity : count ?? 1;

  const interrupt = interruption();
  let channel: Channel<Uint8Array>;
  try {
    channel = await openChannel(address, options, "recv");
  } catch (error) {
    interrupt.dispose();
    throw error;
  }
  // With --verbose, a line on stderr once messages sent from now on will be received (scripts wait for it).
  if (values.verbose) eprintln(`receiving from ${address}${subscription(channel)}`);
  let received = 0;
  try {
    while (received < wanted) {
      let message;
      try {
        const signal = waitSignal(interrupt.signal, timeout);
        message = await channel.receiveMessage({ type, except: values.except === true, signal });
      } catch (error) {
        if (interrupt.signal.aborted) return 0; // Ctrl-C: a clean end
        if (error instanceof DOMException && error.name === "TimeoutError") {
          throw new Failure(
            `nothing arrived on ${address} within ${timeout} ms` +
              (received ? ` (after ${received} message(s))` : ""),
          );
        }
        if (error instanceof TypeError || error instanceof RangeError) {
          throw new UsageError(error.message, "recv");
        }
        if (error instanceof ChannelClosedError) {
          throw new Failure(`${address} was closed or removed after ${received} message(s)`);
        }
        throw new Failure(`receive from ${address} failed: ${describeError(error)}`, { cause: error });
      }
      received++;
      const data = message.value;
      if (raw) {
        if (!tagged) writeOut(data);
        else {
          let text: string | undefined;
          try {
            text = strictUtf8.decode(data);
          } catch {
            text = undefined;
          }
          println(
            JSON.stringify({
              type: message.type,
              priority: message.priority,
              size: data.length,
              base64: base64(data),
              text,
            }),
          );
        }
        continue;
      }
      let value: unknown;
      try {
        value = json.decode(data);
      } catch (error) {
        throw new Failure(
          `message ${received} (type ${message.type}, ${data.length} bytes) is not JSON (${
            (error as Error).message
          }); ` +
            "use --raw to receive bytes",
        );
      }
      println(JSON.stringify(tagged ? { type: message.type, priority: message.priority, value } : value));
    }
  } finally {
    channel.close();
    interrupt.dispose();
    if (values.verbose) eprintln(`received ${received} message(s) from ${address}`);
  }
  return 0;
}
