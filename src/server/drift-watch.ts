import type { Logger } from "pino";
import { asAgentError, logFields } from "../core/errors.js";
import { checkDrift, type DriftReport } from "../deploy/drift.js";
import type { RunReport } from "../deploy/run-report.js";
import type { hostEvent } from "../notify/events.js";
import type { Repo } from "../source/open-repo.js";
import type { AgentMetrics } from "./metrics.js";
import { DEPLOY, type Runner } from "./runner.js";
import type { LiveState } from "./status.js";

/**
 * The drift task: compares what is live with git (reads live.manifest, writes live.drift), says so in the
 * metric and a notice when the set of drifted steps changes, and asks the runner for a deploy that
 * re-applies the drifted steps with selfHeal.
 */

export interface DriftWatchDeps {
  live: LiveState;
  repoDir: string;
  stateDir: string;
  root: string;
  dryRun: boolean;
  log: Logger;
  metrics: Pick<AgentMetrics, "drift">;
  publish: (fields: Parameters<typeof hostEvent>[1]) => void;
  repo: () => Promise<Repo>;
  runner: () => Runner;
  stop: AbortSignal;
}

export interface DriftWatch {
  /** The drift task's work. */
  check(): Promise<void>;
  /** A run's applied steps are in sync now (the evidence is the run itself, not the next check). */
  applied(report: RunReport): void;
  /** The steps the next run re-applies because they drifted (selfHeal); taken once. */
  takeHealing(): string[];
}

export function createDriftWatch(deps: DriftWatchDeps): DriftWatch {
  const { live, log } = deps;
  let driftKey = "";
  const healing: string[] = [];
  /** The steps the metric has a sample for: one the manifest no longer has loses its sample. */
  let sampled = new Set<string>();

  /** The metric, and the notice when the set of drifted steps changed, from a drift report; the drifted steps. */
  function said(report: DriftReport) {
    const now = new Set(report.steps.map((s) => s.name));
    // A step removed or renamed since the last report is no longer checked: its last sample (a drifted 1)
    // would stay, and DeployAgentDrift fire, for a step that does not exist.
    for (const name of sampled) if (!now.has(name)) deps.metrics.drift(name, "unknown");
    sampled = now;
    for (const s of report.steps) deps.metrics.drift(s.name, s.state);
    const drifted = report.steps.filter((s) => s.state === "drifted");
    const key = drifted.map((s) => s.name).join(", ");
    if (key && key !== driftKey) deps.publish({ event: "drift.detected", revision: null, step: key });
    driftKey = key;
    return drifted;
  }

  return {
    async check() {
      if (deps.stop.aborted) return;
      try {
        live.drift = await checkDrift({
          manifest: live.manifest,
          repoDir: deps.repoDir,
          stateDir: deps.stateDir,
          root: deps.root,
          log,
          repo: await deps.repo(),
        });
        const drifted = said(live.drift);
        if (drifted.length) log.warn({ steps: drifted.map((s) => s.name) }, "what is live drifted from git");
        // A step is healed for drift a run can put back; one whose only drift is stalled would fail the same way
        // at every check, and a host with drift is not an unhealthy agent.
        const heal = drifted.filter(
          (s) =>
            live.manifest.steps.find((x) => x.name === s.name)?.selfHeal &&
            s.items.some((i) => i.state === "drifted" && !i.stalled),
        );
        if (heal.length && !deps.dryRun) {
          healing.push(...heal.map((s) => s.name));
          deps.runner().request(DEPLOY, { kind: "self-heal", steps: heal.map((s) => s.name) });
        }
      } catch (err) {
        log.error(logFields(asAgentError(err)), "drift check failed");
      }
    },

    applied(report) {
      // A step that was just applied is what git says at that revision: its drift is over now, not at the
      // next check (the alert would fire on a host that is in sync).
      if (!live.drift || report.dryRun) return;
      const applied = new Set(report.steps.filter((s) => s.outcome === "succeeded").map((s) => s.name));
      if (!applied.size) return;
      live.drift = {
        ...live.drift,
        steps: live.drift.steps.map((s) =>
          applied.has(s.name) && s.state !== "in-sync"
            ? {
                ...s,
                revision: report.revision,
                state: "in-sync",
                items: [
                  { id: s.name, state: "in-sync", detail: `re-applied at ${report.revision.slice(0, 12)}` },
                ],
              }
            : s,
        ),
      };
      said(live.drift);
    },

    takeHealing: () => healing.splice(0),
  };
}
