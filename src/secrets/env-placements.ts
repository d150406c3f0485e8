import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { AgentError } from "../core/errors.js";
import { envValueProblem } from "../host/env.js";

/**
 * Where the config repository's host manifests (`config/*.yaml`) write a secret as one `KEY=value` line of
 * an env file (a `secret` step with `format: env`), read from the checkout `secret set` runs in. Read
 * leniently: a manifest that does not parse says nothing here (`plan` and `validate` report it).
 */
export interface EnvPlacement {
  /** The manifest, relative to the repository. */
  manifest: string;
  step: string;
  key: string;
  target: string;
}

export const MANIFESTS_DIR = "config";

export async function envPlacements(repo: string, name: string): Promise<EnvPlacement[]> {
  const dir = path.join(repo, MANIFESTS_DIR);
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".yaml")).sort();
  const out: EnvPlacement[] = [];
  for (const file of files) {
    let doc: unknown;
    try {
      doc = parseYaml(await readFile(path.join(dir, file), "utf8"));
    } catch {
      continue;
    }
    const steps = (doc as { steps?: unknown } | null)?.steps;
    if (!Array.isArray(steps)) continue;
    for (const step of steps as Record<string, unknown>[]) {
      if (step?.kind !== "secret" || step.secret !== name || step.format !== "env") continue;
      out.push({
        manifest: `${MANIFESTS_DIR}/${file}`,
        step: String(step.name),
        key: String(step.key),
        target: String(step.target),
      });
    }
  }
  return out;
}

/**
 * Refuses, before anything is written, a value that a host writing it as an env line would refuse at
 * deploy (ENV_VALUE_UNSAFE there, its target left as it was): the same rule (envValueProblem), said for
 * the first manifest that places it so. The message names where and why, never the value.
 */
export async function refuseUnplaceable(repo: string, name: string, value: string): Promise<void> {
  const problem = envValueProblem(value);
  if (!problem) return;
  const [first, ...more] = await envPlacements(repo, name);
  if (!first) return;
  const others = more.length ? ` (and ${more.length} more step${more.length === 1 ? "" : "s"})` : "";
  throw new AgentError(
    "ENV_VALUE_UNSAFE",
    `secret ${name}: ${first.manifest} step ${first.step} writes it as ${first.key}= in ${first.target}${others}, and ${problem}; nothing was written`,
    {
      hint: "an env line carries one line without control characters, and not both kinds of quotes nor a quote with a backslash; choose such a value (e.g. openssl rand -hex 32), or place the secret with format file",
    },
  );
}
