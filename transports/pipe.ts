/**
 * The `pipe:` transport: a pair of anonymous pipes between a parent and the
 * child it started with `spawn()`. One writer and one reader per direction,
 * so frames of any size up to `maxMessageSize` keep their boundaries.
 *
 * @example In the child started by `spawn()`
 * ```ts ignore
 * import { open } from "@ipcbus/ipcbus";
 *
 * await using parent = await open<string>("pipe:parent");
 * for await (const line of parent) await parent.send(line.toUpperCase());
 * ```
 *
 * @module
 */

import { PermissionDeniedError } from "../errors.ts";
import { cString, readCString } from "../ffi/cstring.ts";
import { closeFd, fstatFd, makePipe, setCloseOnExec, setNonBlocking } from "../ffi/fd.ts";
import { libc } from "../ffi/libc.ts";
import type { TransportInfo, TransportOptions } from "../transport.ts";
import { DEFAULT_MAX_MESSAGE_SIZE, FrameReader, FrameWriter, MAX_STREAM_TYPE } from "./_stream.ts";
import { DEFAULT_SPIN_MICROS, StreamTransport } from "./_stream_transport.ts";

/** Environment variable that tells a child where its ends of the pipes are. */
export const PIPE_ENV = "IPCBUS_PIPE";
/** Descriptor at which the child reads what the parent sends. */
export const CHILD_READ_FD = 3;
/** Descriptor at which the child writes what the parent receives. */
export const CHILD_WRITE_FD = 4;

/** Options of {@linkcode Pipe}. */
export interface PipeOptions {
  /** Largest payload accepted from the peer, in bytes (default 16 MiB). */
  maxMessageSize?: number;
  /** µs to spin on the non-blocking read before parking (default 100; 0 disables). */
  spin?: number;
}

let parentClaimed = false;

/**
 * A bidirectional channel end over two anonymous pipes.
 *
 * @example Both ends in one process (normally the other end is in a child)
 * ```ts
 * import { Channel } from "@ipcbus/ipcbus";
 * import { Pipe } from "@ipcbus/ipcbus/pipe";
 *
 * const [a, b] = Pipe.pair();
 * using left = new Channel<string>(a);
 * using right = new Channel<string>(b);
 * await left.send("ping");
 * console.log(await right.receive()); // "ping"
 * ```
 */
export class Pipe extends StreamTransport {
  readonly info: TransportInfo;
  readonly #reader: FrameReader;
  readonly #writer: FrameWriter;

  /**
   * Wraps two descriptors this process owns; they are made non-blocking and
   * close-on-exec, and closed by {@linkcode Pipe.close}.
   *
   * @param readFd The end to read frames from.
   * @param writeFd The end to write frames to.
   * @param options Size limit and spin budget.
   */
  constructor(readFd: number, writeFd: number, options: PipeOptions = {}) {
    const maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    if (!Number.isSafeInteger(maxMessageSize) || maxMessageSize < 0 || maxMessageSize > 0xffff_ffff) {
      throw new RangeError(`maxMessageSize must be an integer from 0 to 4294967295, got ${maxMessageSize}`);
    }
    super(options.spin ?? DEFAULT_SPIN_MICROS);
    for (const fd of [readFd, writeFd]) {
      setNonBlocking(fd, true);
      setCloseOnExec(fd);
    }
    this.#reader = new FrameReader(readFd, maxMessageSize);
    this.#writer = new FrameWriter(writeFd);
    this.info = {
      scheme: "pipe",
      address: `pipe:fds/${readFd},${writeFd}`,
      capabilities: {
        types: true,
        typeFilter: false,
        priority: false,
        multiWriter: false,
        multiReader: false,
        persistent: false,
      },
      maxMessageSize,
      maxType: MAX_STREAM_TYPE,
      maxPriority: 0,
      readFd,
      writeFd,
    };
  }

  /**
   * Two connected ends in this process (for tests, and for handing one end
   * to a child yourself).
   *
   * @param options Options for both ends.
   * @returns The two ends.
   */
  static pair(options: PipeOptions = {}): [Pipe, Pipe] {
    const [leftRead, rightWrite] = makePipe();
    const [rightRead, leftWrite] = makePipe();
    const ends: [Pipe, Pipe] = [
      new Pipe(leftRead, leftWrite, options),
      new Pipe(rightRead, rightWrite, options),
    ];
    for (const end of ends) end.info.address = "pipe:pair";
    return ends;
  }

  /**
   * The child's end of the pipes set up by `spawn()` in its parent. It can be
   * opened once per process.
   *
   * @param options Size limit and spin budget.
   * @returns The transport.
   * @throws {Error} When this process was not started by `spawn()`, or the
   *   descriptors are not the pipes the parent made.
   */
  static parent(options: PipeOptions = {}): Pipe {
    if (parentClaimed) throw new Error("pipe:parent is already open in this process (it can be opened once)");
    const value = readCString(libc().getenv(cString(PIPE_ENV)));
    if (!value) {
      throw new Error(
        `pipe:parent: ${PIPE_ENV} is not set; this process was not started by ipcbus spawn()`,
      );
    }
    const match = /^1:(\d+):(\d+):(\d+):(\d+)$/.exec(value);
    if (!match) throw new Error(`pipe:parent: malformed ${PIPE_ENV}=${value}`);
    const [readFd, writeFd] = [Number(match[1]), Number(match[2])];
    const expected = [BigInt(match[3]), BigInt(match[4])];
    [readFd, writeFd].forEach((fd, i) => {
      let ok = false;
      try {
        const stat = fstatFd(fd);
        ok = stat.type === "fifo" && stat.ino === expected[i];
      } catch {
        ok = false;
      }
      if (!ok) {
        throw new PermissionDeniedError(
          `pipe:parent: descriptor ${fd} is not the pipe the parent made (inherited ${PIPE_ENV} from a grandparent?)`,
        );
      }
    });
    parentClaimed = true;
    const pipe = new Pipe(readFd, writeFd, options);
    pipe.info.address = "pipe:parent";
    return pipe;
  }

  protected reader(): FrameReader {
    return this.#reader;
  }

  protected writer(): FrameWriter {
    return this.#writer;
  }

  protected endOfStream(): boolean {
    return false;
  }

  protected release(): void {
    closeFd(this.#reader.fd);
    closeFd(this.#writer.fd);
  }
}

/**
 * Factory for `pipe:` addresses: only `pipe:parent` exists.
 *
 * @param address The address.
 * @param options Options given to `open()`.
 * @returns The transport.
 */
export function openPipe(address: string, options: TransportOptions): Pipe {
  if (address !== "pipe:parent") {
    throw new TypeError(
      `pipe: only "pipe:parent" can be opened (in a child started by spawn()), got "${address}"`,
    );
  }
  return Pipe.parent(options as PipeOptions);
}
