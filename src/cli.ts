import { COMMANDS } from "./cli/commands.js";
import { commandHelp, overview } from "./cli/help.js";
import { parseCommandLine } from "./cli/parse.js";
import type { Out } from "./cli/spec.js";
import { AgentError } from "./core/errors.js";
import { agentPackage } from "./core/package.js";
import { sanitize } from "./core/redact.js";

/** Parses argv against the declarations (src/cli/commands.ts) and runs one command. Never exits the process. */
export async function main(argv: string[], out: Out, err: Out): Promise<number> {
  try {
    const parsed = parseCommandLine(COMMANDS, argv, out, err);
    if (parsed.kind === "version") {
      out(`${agentPackage().version}\n`);
      return 0;
    }
    if (parsed.kind === "help") {
      out(parsed.path.length ? commandHelp(parsed.path) : overview(COMMANDS));
      return 0;
    }
    return await parsed.leaf.run(parsed.call);
  } catch (e) {
    return reportError(e, err);
  }
}

/** The one place errors become output and exit codes. */
function reportError(e: unknown, err: Out): number {
  if (e instanceof AgentError) {
    err(`error ${e.code}: ${sanitize(e.message)}\n${e.hint ? `hint: ${e.hint}\n` : ""}`);
    return e.exitCode;
  }
  err(`error INTERNAL: ${sanitize(e instanceof Error ? (e.stack ?? e.message) : String(e))}\n`);
  return 1;
}
