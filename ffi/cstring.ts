/**
 * C strings: UTF-8, sized by byte length, NUL-terminated.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Encodes a string as a NUL-terminated UTF-8 C string.
 *
 * @param value The string; it must not contain NUL.
 * @param what What the string is, for the error message.
 * @returns The bytes, terminator included.
 * @throws {TypeError} When the string contains a NUL character.
 */
export function cString(value: string, what = "string"): Uint8Array<ArrayBuffer> {
  if (value.includes("\0")) throw new TypeError(`${what} must not contain a NUL character`);
  const bytes = new Uint8Array(value.length * 3 + 1);
  const { written } = encoder.encodeInto(value, bytes);
  return bytes.subarray(0, written + 1);
}

/**
 * Reads a NUL-terminated C string from a pointer.
 *
 * @param pointer The pointer, or null.
 * @returns The string, or null for a NULL pointer.
 */
export function readCString(pointer: Deno.PointerValue): string | null {
  return pointer === null ? null : new Deno.UnsafePointerView(pointer).getCString();
}
