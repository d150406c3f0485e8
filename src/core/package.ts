import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AgentError } from "./errors.js";

/**
 * deploy-agent's own checkout and version, from its package.json: one level above src/ when running from
 * source, two above dist/src/ when bundled. dist/src has a package.json of its own that only says its files
 * are CommonJS, so the agent's is found by its name, never as the nearest one.
 */
export function agentPackage(): { dir: string; version: string } {
  for (const up of ["..", "../.."]) {
    const dir = path.resolve(fileURLToPath(new URL(up, import.meta.url)));
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "deploy-agent" && pkg.version) return { dir, version: pkg.version };
    } catch {}
  }
  throw new AgentError("INTERNAL", "package.json of deploy-agent not found beside the code");
}
