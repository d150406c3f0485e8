import { isConfigInvalid } from "../core/errors.js";
import type { DriftReport } from "../deploy/drift.js";
import type { RunReport } from "../deploy/run-report.js";
import type { Manifest } from "../manifest/schema.js";
import type { NotifierStatus } from "../notify/notifier.js";
import type { LoadedState } from "../state/read-state.js";
import { orphanedSteps, stepStatuses } from "../state/state.js";
import type { Health } from "./health.js";
import type { Previews } from "./preview.js";
import { DEPLOY, type RunnerState } from "./runner.js";
import type { ServeStatus } from "./status-model.js";

/**
 * What the daemon knows between its tasks, in one object: the deploy, drift and job tasks write it, and
 * /status (statusDocument) and /healthz read it.
 */
export interface LiveState {
  /** The manifest the last run applied (the one the process started with until then). */
  manifest: Manifest;
  lastRun: (RunReport & { finishedAt: string }) | null;
  /** The error that ended the last run before its steps; null after a run that got to them. */
  lastError: { code: string; message: string; at: string } | null;
  /** Runs in a row that failed or ended in an error. */
  failuresInRow: number;
  /** Settings the applied manifest changes that take effect only after a restart. */
  pendingRestart: string[];
  /** The last result of each watching host job, by its command. */
  jobs: ServeStatus["jobs"];
  /** The last drift check (cleared step by step as runs re-apply drifted steps). */
  drift: DriftReport | null;
}

export function liveState(manifest: Manifest): LiveState {
  return {
    manifest,
    lastRun: null,
    lastError: null,
    failuresInRow: 0,
    pendingRestart: [],
    jobs: {},
    drift: null,
  };
}

/** What /status assembles from besides the live state: each part read by the caller at the time of asking. */
export interface StatusParts {
  live: LiveState;
  dryRun: boolean;
  manifestPath: string | undefined;
  state: LoadedState;
  runner: RunnerState;
  health: Health;
  previews: ReturnType<Previews["status"]>;
  notifications: NotifierStatus;
  memory: NodeJS.MemoryUsage;
}

function runSummary(r: RunReport & { finishedAt: string }): NonNullable<ServeStatus["lastRun"]> {
  return {
    revision: r.revision,
    result: r.result,
    dryRun: r.dryRun,
    durationMs: r.durationMs,
    warnings: r.warnings,
    steps: r.steps.map((s) => ({
      name: s.name,
      kind: s.kind,
      outcome: s.outcome,
      reason: s.reason,
      message: s.message,
      durationMs: s.durationMs,
      error: s.error ?? null,
      items: s.items,
    })),
    finishedAt: r.finishedAt,
  };
}

/** The /status document: pure, from the parts. */
export function statusDocument(p: StatusParts): ServeStatus {
  const { live, runner: r } = p;
  const { manifest } = live;
  const { state, problem } = p.state;
  const deploy = r.running?.task === DEPLOY ? r.running : r.waiting.find((w) => w.task === DEPLOY);
  const { rss, heapTotal, heapUsed, external } = p.memory;
  return {
    schema: "deploy-agent/serve-status@1",
    host: manifest.host,
    dryRun: p.dryRun,
    branch: manifest.repo.branch,
    deployedRevision: state.lastRun?.revision ?? null,
    suspended: state.suspended ?? null,
    pinned: state.pinned ?? null,
    jobs: live.jobs,
    configuration: {
      valid: !(live.lastError && isConfigInvalid(live.lastError.code)),
      source: p.manifestPath ? `git: ${p.manifestPath} at the deployed revision` : "file, read at start",
      pendingRestart: live.pendingRestart,
    },
    stateProblem: problem ?? null,
    health: p.health,
    // The deploy's place in the runner (as before the runner), and the runner itself: what runs, what waits.
    queue: {
      running: r.running?.task === DEPLOY,
      pending: r.waiting.some((w) => w.task === DEPLOY),
      requests: deploy?.requests ?? 0,
      reasons: deploy?.reasons ?? [],
      runsStarted: r.started[DEPLOY] ?? 0,
    },
    runner: { running: r.running, waiting: r.waiting },
    previews: p.previews,
    steps: stepStatuses(manifest.steps, state),
    orphanedSteps: orphanedSteps(manifest.steps, state),
    drift: live.drift && {
      at: live.drift.at,
      steps: live.drift.steps.map((s) => ({ ...s, items: s.items.filter((i) => i.state !== "in-sync") })),
    },
    lastRun: live.lastRun ? runSummary(live.lastRun) : null,
    lastError: live.lastError,
    notifications: p.notifications,
    process: { rss, heapTotal, heapUsed, external },
  };
}
