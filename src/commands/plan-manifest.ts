import { AgentError, asAgentError } from "../core/errors.js";
import { SECRET_NAME } from "../core/redact.js";
import { formatZodError, interpolate, manifestYaml } from "../manifest/load.js";
import { type Manifest, manifestSchema } from "../manifest/schema.js";

/**
 * A host manifest as a plan reads it: from git, with no host. Its `${VAR}` values live in the host's env
 * file, which a plan never reads (nor the process environment, which in CI holds the CI's own tokens), so
 * each variable gets a placeholder that fits where it is used: the text `${NAME}` itself where any text
 * does, else a host name, an https URL, a room ID or an absolute path under /placeholder. A key that fits
 * none of them is reported like any other schema error.
 */

export interface PlannedManifest {
  manifest: Manifest;
  /** The variables placeholders stood in for, sorted. */
  placeholders: string[];
  /** The manifest's env file, where the host keeps their values. */
  envFile: string | undefined;
}

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Stand-ins for one variable, most readable first; tried in turn where the schema refuses the last one. */
const CANDIDATES: ((name: string) => string)[] = [
  // A token's stand-in becomes a Secret, which the redaction point blanks wherever it appears: never the
  // manifest's own `${NAME}` text, then.
  (name) => (SECRET_NAME.test(name) ? `placeholder-for-${name}` : `\${${name}}`),
  (name) => `${name.toLowerCase().replaceAll("_", "-")}.placeholder.invalid`,
  (name) => `https://${name.toLowerCase().replaceAll("_", "-")}.placeholder.invalid`,
  (name) => `!${name.toLowerCase().replaceAll("_", "-")}:placeholder.invalid`,
  (name) => `/placeholder/${name}`,
];

/** Every key path (dotted) whose string uses each variable. */
function uses(value: unknown, at: string[], out: Map<string, string[]>): Map<string, string[]> {
  if (typeof value === "string") {
    for (const m of value.matchAll(VAR)) {
      const name = m[1] ?? "";
      out.set(name, [...(out.get(name) ?? []), at.join(".")]);
    }
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) uses(v, [...at, k], out);
  }
  return out;
}

export function planManifest(text: string, file: string): PlannedManifest {
  const raw = manifestYaml(text, file);
  const used = uses(raw, [], new Map());
  const choice = new Map([...used.keys()].map((name) => [name, 0]));
  for (;;) {
    const env = Object.fromEntries(
      [...choice].map(([name, i]) => [name, (CANDIDATES[i] ?? CANDIDATES[0])?.(name) ?? name]),
    );
    const parsed = manifestSchema.safeParse(interpolate(raw, env, [], []));
    if (parsed.success) {
      const envFile =
        raw && typeof raw === "object" && "envFile" in raw && typeof raw.envFile === "string"
          ? raw.envFile
          : undefined;
      return { manifest: parsed.data, placeholders: [...used.keys()].sort(), envFile };
    }
    // The variables used at a refused key take their next stand-in; none left to try: report the errors.
    const refused = parsed.error.issues.map((i) => i.path.map(String).join("."));
    let moved = false;
    for (const [name, paths] of used) {
      const i = choice.get(name) ?? 0;
      if (i + 1 >= CANDIDATES.length) continue;
      if (paths.some((p) => refused.some((r) => r === p || r.startsWith(`${p}.`) || p.startsWith(`${r}.`)))) {
        choice.set(name, i + 1);
        moved = true;
      }
    }
    if (!moved) throw new AgentError("CONFIG_INVALID", formatZodError(file, parsed.error));
  }
}

/** The manifest, or the reason it cannot be read, as one line per problem. */
export function tryPlanManifest(
  text: string,
  file: string,
): { ok: true; value: PlannedManifest } | { ok: false; problem: string } {
  try {
    return { ok: true, value: planManifest(text, file) };
  } catch (err) {
    return { ok: false, problem: asAgentError(err).message };
  }
}
