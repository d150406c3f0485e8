import { AgentError } from "../core/errors.js";
import { bashCompletion } from "./completion.js";
import { commandHelp, overview } from "./help.js";
import { HOST_COMMANDS } from "./host-commands.js";
import { resolvePath } from "./parse.js";
import { fleet, plan, secret } from "./repo-commands.js";
import { type CommandSpec, command } from "./spec.js";

/**
 * Every command of deploy-agent, in the order the overview lists them. A new command is one declaration
 * (src/cli/host-commands.ts or repo-commands.ts, its module in src/commands/) and one line here.
 */

const help = command({
  name: "help",
  summary: "the overview, or a command's usage, options and an example",
  args: [
    { name: "COMMAND", optional: true, help: "the command to explain" },
    { name: "SUBCOMMAND", optional: true, help: "its subcommand (fleet, secret)" },
  ],
  options: [],
  examples: ["deploy-agent help secret set"],
  run: async (c) => {
    const { path, rest } = resolvePath(COMMANDS, c.args, true);
    if (rest.length)
      throw new AgentError("USAGE", `unexpected argument "${rest[0]}"`, { hint: "deploy-agent help" });
    c.out(path.length ? commandHelp(path) : overview(COMMANDS));
    return 0;
  },
});

const completion = command({
  name: "completion",
  summary: "print the shell completion script (bash)",
  about:
    "print the bash completion script: commands, subcommands and each command's options, written from the same declarations as this help",
  args: [{ name: "SHELL", choices: ["bash"], help: "the shell: bash" }],
  options: [],
  examples: ["deploy-agent completion bash > /usr/share/bash-completion/completions/deploy-agent"],
  run: async (c) => {
    c.out(bashCompletion(COMMANDS));
    return 0;
  },
});

export const COMMANDS: readonly CommandSpec[] = [...HOST_COMMANDS, fleet, plan, secret, help, completion];
