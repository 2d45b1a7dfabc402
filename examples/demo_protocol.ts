/**
 * The messages the demo's parent and child exchange. Each message carries an
 * ipcbus `type` tag saying what it is, and a payload of the matching type.
 * A POSIX message queue carries no type: over `posix-mq:` the message's
 * priority says what it is instead ({@linkcode tagsOf}, {@linkcode kindOf}).
 *
 * @module
 */

import type { Channel, Message, MessageTags } from "../mod.ts";

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

/**
 * The priority standing for each kind where types are not carried. A higher
 * priority is received first, so `Flush` ranks below `Data`: it must not
 * overtake the burst it ends.
 */
const PRIORITY_OF: Record<Kind, number> = {
  [Kind.Ready]: 1,
  [Kind.Flushed]: 2,
  [Kind.Flush]: 3,
  [Kind.Data]: 4,
  [Kind.Pong]: 5,
  [Kind.Ping]: 6,
};

/**
 * The send options that say what a message is on `channel`.
 *
 * @param channel Where it goes.
 * @param kind What it is.
 * @returns `{ type }`, or `{ priority }` where types are not carried.
 */
export function tagsOf(channel: Channel<unknown>, kind: Kind): MessageTags {
  return channel.info.capabilities.types ? { type: kind } : { priority: PRIORITY_OF[kind] };
}

/**
 * What a message received on `channel` is.
 *
 * @param channel Where it came from.
 * @param message It.
 * @returns Its kind (a number that is no kind when it is unknown).
 */
export function kindOf(channel: Channel<unknown>, message: Message<unknown>): number {
  if (channel.info.capabilities.types) return message.type;
  const entry = Object.entries(PRIORITY_OF).find(([, priority]) => priority === message.priority);
  return entry ? Number(entry[0]) : -1;
}

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
