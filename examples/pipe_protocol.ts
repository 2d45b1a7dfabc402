/**
 * What `spawn_pipe.ts` and `pipe_child.ts` say to each other.
 *
 * @module
 */

/** Message type tags. */
export const Op = { Sum: 1, Quit: 2 } as const;

/** parent → child. */
export interface Request {
  numbers: number[];
}

/** child → parent. */
export interface Response {
  result: number;
}
