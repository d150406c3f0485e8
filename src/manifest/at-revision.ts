import { AgentError } from "../errors.js";
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
const RESTART_ONLY: Record<string, (m: Manifest) => unknown> = {
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
};

export interface ManifestAtRevision {
  /** What this run applies: the revision's manifest with the restart-only settings of the running one. */
  manifest: Manifest;
  /** Restart-only keys whose value at this revision differs from the running one. */
  pendingRestart: string[];
}

export async function manifestAt(
  snapshot: Snapshot,
  manifestPath: string,
  running: Manifest,
  load: LoadOptions,
): Promise<ManifestAtRevision> {
  const at = `${manifestPath}@${snapshot.revision.slice(0, 12)}`;
  if (!(await snapshot.has(manifestPath))) {
    throw new AgentError("CONFIG_INVALID", `${manifestPath} does not exist at commit ${snapshot.revision}`, {
      hint: "push the host manifest back; the host stays on its last good revision",
    });
  }
  let next: Manifest;
  try {
    next = (await parseManifest((await snapshot.read(manifestPath)).toString("utf8"), at, load)).manifest;
  } catch (err) {
    if (err instanceof AgentError && (err.code === "CONFIG_INVALID" || err.code === "ENV_MISSING")) {
      throw new AgentError(err.code, err.message, {
        hint: `nothing was deployed from ${snapshot.revision.slice(0, 12)}; push a fixed ${manifestPath} (${err.hint ?? "see the lines above"})`,
        cause: err,
      });
    }
    throw err;
  }
  const pendingRestart = Object.entries(RESTART_ONLY)
    .filter(([, get]) => JSON.stringify(get(next)) !== JSON.stringify(get(running)))
    .map(([key]) => key);
  return {
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
  };
}
