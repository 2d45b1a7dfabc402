/**
 * The `ipcbus` command: inspect, clean up, diagnose, send, receive and
 * benchmark Linux IPC objects, built on ipcbus's public API.
 *
 * ```sh
 * deno task cli ls                      # every IPC object you can see
 * deno task cli gc --dry-run            # what is left behind by crashed processes
 * deno task cli doctor                  # limits that bite, and a self test
 * echo '{"id":1}' | deno task cli send posix-mq:/orders --create -
 * deno task cli recv posix-mq:/orders --timeout 1000
 * deno task compile && ./bin/ipcbus ls  # the same as a single binary
 * ```
 *
 * Exit codes: 0 success, 1 failure, 2 usage error. See docs/cli.md.
 *
 * @example Running a subcommand from code
 * ```ts ignore
 * import { main } from "./cli/ipcbus.ts";
 *
 * Deno.exitCode = await main(["ls", "--kind", "sysv-mq", "--json"]);
 * ```
 *
 * @module
 */

import { bench, BENCH_HELP } from "./_bench.ts";
import { doctor, DOCTOR_HELP, pipeEcho } from "./_doctor.ts";
import { gc, GC_HELP } from "./_gc.ts";
import { ls, LS_HELP } from "./_ls.ts";
import {
  describeError,
  eprintln,
  EXIT,
  Failure,
  HelpRequested,
  OutputClosed,
  printLines,
  UsageError,
} from "./_output.ts";
import { rm, RM_HELP } from "./_rm.ts";
import { recv, RECV_HELP, send, SEND_HELP } from "./_send_recv.ts";
import { stat, STAT_HELP } from "./_stat.ts";
import config from "../deno.json" with { type: "json" };

/** The version printed by `ipcbus --version`: the package's, read from deno.json (its one source). */
export const VERSION: string = config.version;

interface Command {
  summary: string;
  help: string;
  run(args: readonly string[]): number | Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  ls: { summary: "list IPC objects (kind, owner, size, messages, in use)", help: LS_HELP, run: ls },
  stat: { summary: "everything known about one object", help: STAT_HELP, run: stat },
  rm: { summary: "remove objects (asks first unless --yes)", help: RM_HELP, run: rm },
  gc: { summary: "remove ipcbus objects no live process uses", help: GC_HELP, run: gc },
  doctor: {
    summary: "limits that bite, and an end-to-end test of every transport",
    help: DOCTOR_HELP,
    run: doctor,
  },
  send: { summary: "send messages from the shell", help: SEND_HELP, run: send },
  recv: { summary: "receive messages to the shell", help: RECV_HELP, run: recv },
  bench: { summary: "the benchmark table, with an SVG chart", help: BENCH_HELP, run: bench },
};

/** Top-level help. */
export const HELP = `ipcbus ${VERSION}: inspect, clean up, diagnose and use Linux IPC objects

usage: ipcbus COMMAND [OPTIONS] [ARGS]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(7)} ${c.summary}`).join("\n")}

ipcbus COMMAND --help shows a command's options. --json on ls, stat, rm, gc
and doctor prints JSON for scripts. Colour is used only on a terminal and
never when NO_COLOR is set.

exit codes: 0 success, 1 failure, 2 usage error`;

/**
 * Runs the command line.
 *
 * @param args The arguments (`Deno.args`).
 * @returns The exit code: 0 success, 1 failure, 2 usage error.
 */
export async function main(args: readonly string[]): Promise<number> {
  const [name, ...rest] = args;
  let command: Command | undefined;
  try {
    if (name === undefined || name === "help" || name === "--help" || name === "-h") {
      const topic = name === "help" ? rest[0] : undefined;
      if (topic !== undefined && !(topic in COMMANDS)) throw new UsageError(`unknown command "${topic}"`);
      printLines([topic ? COMMANDS[topic].help : HELP]);
      return name === undefined ? EXIT.usage : EXIT.ok;
    }
    if (name === "--version" || name === "-V") {
      printLines([`ipcbus ${VERSION} (Deno ${Deno.version.deno})`]);
      return EXIT.ok;
    }
    if (name === "__pipe-echo") return await pipeEcho();
    command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!command) throw new UsageError(`unknown command "${name}"`);
    return await command.run(rest);
  } catch (error) {
    if (error instanceof OutputClosed) return EXIT.ok;
    if (error instanceof HelpRequested) {
      printLines([COMMANDS[error.command].help]);
      return EXIT.ok;
    }
    if (error instanceof UsageError) {
      const which = error.command ? `ipcbus ${error.command}` : "ipcbus";
      eprintln(`${which}: ${error.message}`);
      eprintln(`run "${which} --help" for usage`);
      return EXIT.usage;
    }
    if (error instanceof Failure) {
      eprintln(`ipcbus${command ? ` ${name}` : ""}: ${error.message}`);
      return EXIT.failure;
    }
    if (error instanceof Deno.errors.NotCapable) {
      eprintln(`ipcbus: ${error.message}`);
      eprintln("run it with deno task cli, or grant the permissions listed in docs/cli.md");
      return EXIT.failure;
    }
    eprintln(`ipcbus${command ? ` ${name}` : ""}: ${describeError(error)}`);
    if (error instanceof Error && !(error.name.endsWith("Error") && "errno" in error)) {
      eprintln(error.stack?.split("\n").slice(1).join("\n") ?? "");
    }
    return EXIT.failure;
  }
}

if (import.meta.main) Deno.exitCode = await main(Deno.args);
