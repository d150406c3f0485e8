import { accessSync, constants } from "node:fs";
import path from "node:path";
import type { Manifest } from "../manifest/schema.js";
import type { Snapshot } from "../source/snapshot.js";
import { nginxTest } from "./plan-nginx-test.js";
import type { HostTools, PlanCheck } from "./plan-tool-run.js";
import { verifyUnit } from "./plan-unit-verify.js";

/**
 * The checks a plan hands to the tools that own the formats: `systemd-analyze verify` for units and
 * `nginx -t` for nginx configuration, each on a copy in a scratch directory (never a host path), with a
 * timeout. A tool this machine lacks makes its check "skipped", said as such.
 */

export const TOOL_TIMEOUT_MS = 30_000;

/** An executable of that name on PATH, or null. */
export function findTool(name: string, envPath = process.env.PATH ?? ""): string | null {
  for (const dir of envPath.split(":").filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

export function hostTools(): HostTools {
  return {
    systemdAnalyze: findTool("systemd-analyze"),
    nginx: findTool("nginx"),
    unitsDir: "/lib/systemd/system",
    timeoutMs: TOOL_TIMEOUT_MS,
  };
}

export async function toolChecks(manifest: Manifest, head: Snapshot, tools: HostTools): Promise<PlanCheck[]> {
  const checks: PlanCheck[] = [];
  for (const step of manifest.steps) {
    if (step.kind === "systemd-unit") checks.push(await verifyUnit(step, head, tools));
    if (step.kind === "file" && step.targets.some((t) => t.startsWith("/etc/nginx/")))
      checks.push(await nginxTest(step.name, step.source, step.targets, head, tools));
  }
  return checks;
}
