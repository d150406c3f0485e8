import { createHash } from "node:crypto";
import { AgentError, isConfigInvalid } from "../core/errors.js";
import type { Snapshot } from "../source/snapshot.js";
import { type LoadOptions, parseManifest } from "./load.js";
import type { Manifest } from "./schema.js";

/**
 * The host manifest as the revision being deployed has it (GitOps: the configuration is reconciled like
 * everything else). Read from git objects, parsed and checked exactly like a manifest file. Settings that
 * the running process bound at start (its listener, its secret, its clone, its state) cannot change under
 * it: they are reported as taking effect after a restart, and the running values stay in force.
 */

/** Keys bound at process start, as "key.path" → how to read them. */
export const RESTART_ONLY: Record<string, (m: Manifest) => unknown> = {
  host: (m) => m.host,
  listen: (m) => m.listen,
  repo: (m) => m.repo,
  stateDir: (m) => m.stateDir,
  log: (m) => m.log,
  // The listener's settings; the daemon's own loop reads pollIntervalSeconds, unhealthyAfterFailures and lockWaitSeconds.
  "webhook.path": (m) => m.webhook.path,
  "webhook.secretFile": (m) => m.webhook.secretFile,
  "webhook.secretEnv": (m) => m.webhook.secretEnv,
  "webhook.bodyLimitBytes": (m) => m.webhook.bodyLimitBytes,
  "webhook.allowFrom": (m) => m.webhook.allowFrom,
  "webhook.duplicateWindowSeconds": (m) => m.webhook.duplicateWindowSeconds,
  "webhook.limits": (m) => m.webhook.limits,
  "webhook.statusAccess": (m) => m.webhook.statusAccess,
  "webhook.previews": (m) => m.webhook.previews,
};

export interface ManifestAtRevision {
  /** What this run applies: the revision's manifest with the restart-only settings of the running one. */
  manifest: Manifest;
  /** Restart-only keys whose value at this revision differs from the running one (a restart applies it). */
  pendingRestart: string[];
  /** What to tell about them, each value with where it comes from. */
  notes: string[];
  /** SHA-256 of the manifest's path and text at the revision (see manifestSha256). */
  sha256: string;
}

/**
 * The digest a run records of the manifest it deployed, and a start compares the work tree's file with: of
 * its path in the repository too, so that another manifest's text copied over this one is not taken for it.
 */
export const manifestSha256 = (manifestPath: string, text: Buffer | string) =>
  createHash("sha256").update(manifestPath).update("\0").update(text).digest("hex");

/**
 * Restart-only keys the host sets outside the manifest (the unit's environment, a command-line flag): key →
 * the value in force, where it comes from, and the manifest file's own value. A restart keeps them, so git's
 * value for such a key is never "pending": it is said to be overridden when git changes it from the file's.
 */
export type HostOverrides = Record<string, { value: unknown; source: string; fromFile: unknown }>;

const shown = (v: unknown) => {
  const text = JSON.stringify(v) ?? "unset";
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
};

export async function manifestAt(
  snapshot: Snapshot,
  manifestPath: string,
  running: Manifest,
  load: LoadOptions,
  overrides: HostOverrides = {},
): Promise<ManifestAtRevision> {
  const at = `${manifestPath}@${snapshot.revision.slice(0, 12)}`;
  if (!(await snapshot.has(manifestPath))) {
    throw new AgentError("CONFIG_INVALID", `${manifestPath} does not exist at commit ${snapshot.revision}`, {
      hint: "push the host manifest back; the host stays on its last good revision",
    });
  }
  const text = await snapshot.read(manifestPath);
  let next: Manifest;
  try {
    next = (await parseManifest(text.toString("utf8"), at, load)).manifest;
  } catch (err) {
    if (err instanceof AgentError && isConfigInvalid(err.code)) {
      throw new AgentError(err.code, err.message, {
        hint: `nothing was deployed from ${snapshot.revision.slice(0, 12)}; push a fixed ${manifestPath} (${err.hint ?? "see the lines above"})`,
        cause: err,
      });
    }
    throw err;
  }
  const pendingRestart: string[] = [];
  const notes: string[] = [];
  for (const [key, get] of Object.entries(RESTART_ONLY)) {
    const inGit = get(next);
    const over = overrides[key];
    if (over) {
      // Only when git changes it: an override the operator set on purpose is no news at every push.
      if (JSON.stringify(inGit) !== JSON.stringify(over.fromFile))
        notes.push(
          `${key}: ${manifestPath} sets ${shown(inGit)}, ${over.source} overrides it with ${shown(over.value)} (a restart keeps that)`,
        );
      continue;
    }
    if (JSON.stringify(inGit) === JSON.stringify(get(running))) continue;
    pendingRestart.push(key);
    notes.push(
      `${key}: ${manifestPath} changes it to ${shown(inGit)}; the agent runs with ${shown(get(running))} (its manifest file, read at start) until it is restarted`,
    );
  }
  return {
    sha256: manifestSha256(manifestPath, text),
    manifest: {
      ...next,
      host: running.host,
      listen: running.listen,
      repo: running.repo,
      stateDir: running.stateDir,
      log: running.log,
      webhook: {
        ...running.webhook,
        pollIntervalSeconds: next.webhook.pollIntervalSeconds,
        unhealthyAfterFailures: next.webhook.unhealthyAfterFailures,
        lockWaitSeconds: next.webhook.lockWaitSeconds,
      },
    },
    pendingRestart,
    notes,
  };
}
