/**
 * Memory mappings of file descriptors (mmap/msync/mremap/munmap) with
 * detach-safe views.
 *
 * A {@linkcode Mapping} owns one `ArrayBuffer` over the mapped memory. When it
 * is unmapped (or moved by {@linkcode Mapping.remap}), that buffer is detached
 * first, so every typed array made from it reads as length 0 instead of
 * touching unmapped memory. Raw pointers taken through FFI are not covered.
 *
 * @module
 */

import { errnoError } from "../errors.ts";
import { MAP, PROT } from "./constants.ts";
import { errno, libc } from "./libc.ts";
import { pageSize } from "./sysv.ts";

/** How to map. */
export interface MapOptions {
  /** `MAP_SHARED` (default): writes reach the file and other processes. `false` maps `MAP_PRIVATE`. */
  shared?: boolean;
  /** Map writable (`PROT_WRITE`); default `true`. The descriptor must be open for writing. */
  writable?: boolean;
  /** Byte offset into the file, a multiple of the page size; default 0. */
  offset?: number;
  /** What to name in errors (a path or a name). */
  label?: string;
}

function detach(buffer: ArrayBuffer): void {
  try {
    buffer.transfer(0);
  } catch {
    // Not detachable: stale views stay dangerous (documented by callers).
  }
}

/** One mapping of `length` bytes of a descriptor. */
export class Mapping {
  #pointer: Deno.PointerObject | null;
  #buffer: ArrayBuffer | null;
  #length: number;
  readonly #label: string;
  readonly #shared: boolean;

  private constructor(pointer: Deno.PointerObject, length: number, label: string, shared: boolean) {
    this.#pointer = pointer;
    this.#length = length;
    this.#label = label;
    this.#shared = shared;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, length);
  }

  /**
   * Maps `length` bytes of `fd` (the descriptor may be closed afterwards).
   *
   * @param fd An open descriptor (O_RDWR for a writable shared mapping).
   * @param length Bytes to map, more than 0. Never map beyond the file's size:
   *   touching pages past its end raises SIGBUS.
   * @param options Sharing, protection, offset, label.
   * @returns The mapping.
   * @throws {RangeError} For a length that is not a positive safe integer.
   * @throws {IpcError} When mmap(2) fails.
   */
  static map(fd: number, length: number, options: MapOptions = {}): Mapping {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new RangeError(`mapping length must be a positive integer, got ${length}`);
    }
    const shared = options.shared ?? true;
    const prot = PROT.READ | ((options.writable ?? true) ? PROT.WRITE : 0);
    const label = options.label ?? `fd ${fd}`;
    const pointer = libc().mmap(
      null,
      BigInt(length),
      prot,
      shared ? MAP.SHARED : MAP.PRIVATE,
      fd,
      BigInt(options.offset ?? 0),
    );
    if (pointer === null || Deno.UnsafePointer.value(pointer) === MAP.FAILED) {
      throw errnoError(errno(), "mmap", label);
    }
    return new Mapping(pointer, length, label, shared);
  }

  /** Mapped bytes (0 after {@linkcode Mapping.unmap}). */
  get length(): number {
    return this.#pointer === null ? 0 : this.#length;
  }

  /** Whether the mapping is still in place. */
  get mapped(): boolean {
    return this.#pointer !== null;
  }

  /** Whether writes are shared with the file and other processes. */
  get shared(): boolean {
    return this.#shared;
  }

  /**
   * The `ArrayBuffer` over the mapping. Make views from it once; they become
   * empty when the mapping is unmapped or remapped.
   *
   * @returns The buffer.
   * @throws {Error} After {@linkcode Mapping.unmap}.
   */
  get buffer(): ArrayBuffer {
    if (this.#buffer === null) throw new Error(`${this.#label}: the mapping was unmapped`);
    return this.#buffer;
  }

  /**
   * The mapping's address, for FFI calls that take a pointer into it.
   *
   * @returns The pointer.
   * @throws {Error} After {@linkcode Mapping.unmap}.
   */
  get pointer(): Deno.PointerObject {
    if (this.#pointer === null) throw new Error(`${this.#label}: the mapping was unmapped`);
    return this.#pointer;
  }

  /**
   * Flushes a range to the file (msync).
   *
   * @param options `async` uses MS_ASYNC (schedule, don't wait; default MS_SYNC), `invalidate` adds
   *   MS_INVALIDATE; `start` and `length` (default: all) select pages (start is rounded down to a page).
   * @throws {IpcError} When msync(2) fails.
   */
  sync(options: { async?: boolean; invalidate?: boolean; start?: number; length?: number } = {}): void {
    const pointer = this.pointer;
    const page = pageSize();
    const start = Math.floor((options.start ?? 0) / page) * page;
    const end = Math.min(this.#length, (options.start ?? 0) + (options.length ?? this.#length));
    if (end <= start) return;
    const flags = (options.async ? MAP.MS_ASYNC : MAP.MS_SYNC) | (options.invalidate ? MAP.MS_INVALIDATE : 0);
    const at = start === 0 ? pointer : Deno.UnsafePointer.offset(pointer, start)!;
    if (libc().msync(at, BigInt(end - start), flags) < 0) throw errnoError(errno(), "msync", this.#label);
  }

  /**
   * Grows or shrinks the mapping (mremap, may move it). The old buffer is
   * detached: make new views from {@linkcode Mapping.buffer}.
   *
   * @param length The new length in bytes.
   * @throws {IpcError} When mremap(2) fails.
   */
  remap(length: number): void {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new RangeError(`mapping length must be a positive integer, got ${length}`);
    }
    const pointer = this.pointer;
    const moved = libc().mremap(pointer, BigInt(this.#length), BigInt(length), MAP.MREMAP_MAYMOVE);
    if (moved === null || Deno.UnsafePointer.value(moved) === MAP.FAILED) {
      throw errnoError(errno(), "mremap", this.#label);
    }
    detach(this.#buffer!);
    this.#pointer = moved;
    this.#length = length;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(moved, length);
  }

  /**
   * Unmaps (munmap). Views made from {@linkcode Mapping.buffer} become empty
   * first. Calling it again does nothing.
   *
   * @throws {IpcError} When munmap(2) fails.
   */
  unmap(): void {
    const pointer = this.#pointer;
    if (pointer === null) return;
    this.#pointer = null;
    detach(this.#buffer!);
    this.#buffer = null;
    if (libc().munmap(pointer, BigInt(this.#length)) < 0) throw errnoError(errno(), "munmap", this.#label);
  }
}
