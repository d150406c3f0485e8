import { readFileSync } from "node:fs";
import { COMMANDS } from "./cli/commands.js";
import { commandHelp, overview } from "./cli/help.js";
import { parseCommandLine } from "./cli/parse.js";
import type { Out } from "./cli/spec.js";
import { AgentError } from "./core/errors.js";
import { sanitize } from "./core/redact.js";

/** The version of the package.json that ships with this code (two levels up from the bundle, one from src/). */
function version(): string {
  for (const up of ["../package.json", "../../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "deploy-agent" && pkg.version) return pkg.version;
    } catch {}
  }
  throw new AgentError("INTERNAL", "package.json of deploy-agent not found beside the code");
}

/** Parses argv against the declarations (src/cli/commands.ts) and runs one command. Never exits the process. */
export async function main(argv: string[], out: Out, err: Out): Promise<number> {
  try {
    const parsed = parseCommandLine(COMMANDS, argv, out, err);
    if (parsed.kind === "version") {
      out(`${version()}\n`);
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
