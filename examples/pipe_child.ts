/**
 * The child of `spawn_pipe.ts`: answers `Sum` requests on `pipe:parent`
 * until it is told to quit or the parent closes the pipe.
 *
 * @module
 */

import { ChannelClosedError, open } from "../mod.ts";
import { Op, type Request, type Response } from "./pipe_protocol.ts";

using parent = await open<Request | Response>("pipe:parent");
for (;;) {
  let message;
  try {
    message = await parent.receiveMessage();
  } catch (error) {
    if (error instanceof ChannelClosedError) break; // the parent has gone
    throw error;
  }
  if (message.type === Op.Quit) break;
  const { numbers } = message.value as Request;
  await parent.send({ result: numbers.reduce((a, b) => a + b, 0) } satisfies Response);
}
