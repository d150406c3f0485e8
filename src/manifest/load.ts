import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import type { core, z } from "zod";
import { AgentError } from "../core/errors.js";
import { mergeEnv, readEnvFile } from "../host/env.js";
import { STEP_KINDS } from "../steps/index.js";
import { type Manifest, manifestSchema } from "./schema.js";

/**
 * Manifest loading: YAML syntax → `${VAR}` interpolation (env file, then process environment) → zod.
 * Every failure comes back as one CONFIG_INVALID / ENV_MISSING error whose lines read `file: key.path: message`.
 */

export interface LoadedManifest {
  file: string;
  manifest: Manifest;
  /** The environment the manifest was interpolated with; holds secrets, never print it. */
  env: Record<string, string>;
  /** The env file that environment was read from, if any. */
  envFile: string | undefined;
  /**
   * The text this manifest was parsed from: the file's as read, or git's when a start took git's over the
   * file (a start compares the file's digest with the last run's).
   */
  text: string;
}

export interface LoadOptions {
  /** `--env-file`: replaces the manifest's `envFile`. */
  envFile?: string | undefined;
  /** `--root`: prefixed to the manifest's `envFile`. */
  root?: string;
  processEnv?: NodeJS.ProcessEnv;
}

const VAR = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

type KeyPath = (string | number)[];
const keyPath = (p: readonly PropertyKey[]) => (p.length ? p.map(String).join(".") : "(top level)");

/** Replaces `${NAME}` in every string of the tree; `$$` is a literal `$`. Collects what is missing. */
export function interpolate(
  value: unknown,
  env: Record<string, string>,
  at: KeyPath,
  missing: string[],
): unknown {
  if (typeof value === "string") {
    return value.replace(VAR, (match, name: string | undefined) => {
      if (match === "$$") return "$";
      const v = name === undefined ? undefined : env[name];
      if (v === undefined) {
        missing.push(`${keyPath(at)}: \${${name}} is not set`);
        return match;
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, [...at, i], missing));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, interpolate(v, env, [...at, k], missing)]),
    );
  }
  return value;
}

function describeIssue(issue: core.$ZodIssue): string[] {
  const at = keyPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown key`);
  }
  if (issue.code === "invalid_union" && "discriminator" in issue && issue.discriminator) {
    return [`${at}: unknown step kind (known: ${STEP_KINDS.join(", ")})`];
  }
  return [`${at}: ${issue.message}`];
}

export function formatZodError(file: string, error: z.ZodError): string {
  return error.issues
    .flatMap(describeIssue)
    .map((line) => `${file}: ${line}`)
    .join("\n");
}

export async function loadManifest(file: string, options: LoadOptions = {}): Promise<LoadedManifest> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new AgentError(
      "CONFIG_INVALID",
      `cannot read manifest ${file}: ${(err as NodeJS.ErrnoException).code}`,
      {
        hint: "pass --config config/<host>.yaml",
        cause: err,
      },
    );
  }
  return parseManifest(text, file, options);
}

/**
 * A manifest from its text: YAML, `${VAR}` interpolation, schema. `file` names it in every message (for a
 * manifest read from git: `config/lxc151.yaml@<commit>`).
 */
export async function parseManifest(
  text: string,
  file: string,
  options: LoadOptions = {},
): Promise<LoadedManifest> {
  const raw = manifestYaml(text, file);
  const declaredEnvFile =
    raw && typeof raw === "object" && "envFile" in raw && typeof raw.envFile === "string"
      ? raw.envFile
      : undefined;
  const envFile = options.envFile ?? (declaredEnvFile && (options.root ?? "") + declaredEnvFile);
  const env = mergeEnv(envFile ? await readEnvFile(envFile) : {}, options.processEnv ?? process.env);

  const missing: string[] = [];
  const interpolated = interpolate(raw, env, [], missing);
  if (missing.length) {
    throw new AgentError("ENV_MISSING", missing.map((m) => `${file}: ${m}`).join("\n"), {
      hint: envFile
        ? `set it in ${envFile} or in the environment`
        : "set it in the environment, or name an env file with envFile: or --env-file",
    });
  }
  const parsed = manifestSchema.safeParse(interpolated);
  if (!parsed.success) {
    throw new AgentError("CONFIG_INVALID", formatZodError(file, parsed.error));
  }
  return { file, manifest: parsed.data, env, envFile: envFile || undefined, text };
}

/** A manifest's YAML as plain data, before interpolation; syntax errors read `file:line:col: message`. */
export function manifestYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    const lines = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      return `${file}${pos ? `:${pos.line}:${pos.col}` : ""}: ${e.message.split("\n")[0]}`;
    });
    throw new AgentError("CONFIG_INVALID", lines.join("\n"));
  }
  let raw: unknown;
  try {
    // yaml refuses more than 100 alias expansions (a "billion laughs" document) here.
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new AgentError("CONFIG_INVALID", `${file}: ${(err as Error).message}`, {
      hint: "a manifest needs no YAML aliases; write the values out",
    });
  }
  return raw;
}
