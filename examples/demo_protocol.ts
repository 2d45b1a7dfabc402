/**
 * The messages the demo's parent and child exchange. Each message carries an
 * ipcbus `type` tag saying what it is, and a payload of the matching type.
 *
 * @module
 */

/** Message type tags (ipcbus types are positive integers). */
export const Kind = {
  /** child → parent: the child is up and its channels are open. */
  Ready: 1,
  /** parent → child: please answer with a `Pong` carrying the same payload. */
  Ping: 2,
  /** child → parent: the answer to a `Ping`. */
  Pong: 3,
  /** parent → child: one message of a one-way burst. */
  Data: 4,
  /** parent → child: the burst is over; answer with `Flushed`. */
  Flush: 5,
  /** child → parent: how many `Data` messages arrived. */
  Flushed: 6,
} as const;

/** One of the {@linkcode Kind} tags. */
export type Kind = typeof Kind[keyof typeof Kind];

/** Payload of `Ready`. */
export interface Ready {
  pid: number;
}

/** Payload of `Ping`, `Pong` and `Data`. */
export interface Probe {
  seq: number;
  body: string;
}

/** Payload of `Flushed`. */
export interface Flushed {
  received: number;
}

/** Every payload the demo carries. */
export type DemoMessage = Ready | Probe | Flushed | null;

/** Which payload goes with which tag. */
export interface PayloadOf {
  [Kind.Ready]: Ready;
  [Kind.Ping]: Probe;
  [Kind.Pong]: Probe;
  [Kind.Data]: Probe;
  [Kind.Flush]: null;
  [Kind.Flushed]: Flushed;
}
