import { asAgentError, logFields } from "../core/errors.js";
import { deploy } from "../deploy/pipeline.js";
import type { Manifest } from "../manifest/schema.js";
import { type DeployEvent, errorOf, eventBase, type hostEvent, runEvents } from "../notify/events.js";
import { subjectOf } from "../source/git.js";
import type { Repo } from "../source/open-repo.js";
import { prepareLock } from "../state/lock.js";
import type { DriftWatch } from "./drift-watch.js";
import type { AgentMetrics } from "./metrics.js";
import type { HostRunSettings } from "./run-settings.js";
import { DEPLOY, historyTrigger, type Runner, reasonOf, type TaskHandler } from "./runner.js";
import type { LiveState } from "./status.js";

/**
 * The deploy task: one run of the pipeline for the triggers it stands for. Writes the run's outcome to the
 * live state (lastRun, lastError, failuresInRow, pendingRestart, the manifest in force), the metrics and the
 * notices; after a failure before the steps that is not stalled, asks for a retry after retryDelayMs.
 */

export interface DeployTaskDeps extends HostRunSettings {
  live: LiveState;
  /** The manifest the process started with: each run applies the deployed revision's from it. */
  manifest: Manifest;
  lockWaitMs: () => number;
  retryDelayMs: number;
  metrics: Pick<AgentMetrics, "run" | "runError">;
  drift: Pick<DriftWatch, "applied" | "takeHealing">;
  send: (event: DeployEvent) => void;
  publish: (fields: Parameters<typeof hostEvent>[1]) => void;
  /** The daemon's clone, opened and checked once; dropped after a failure before the steps. */
  repo: () => Promise<Repo>;
  dropRepo: () => void;
  runner: () => Runner;
  /** A run applied a manifest (the new one in force). */
  manifestApplied: (m: Manifest) => void;
  stop: AbortSignal;
  abort: AbortSignal;
}

export interface DeployTask {
  run: TaskHandler;
  /** Cancels a pending retry. */
  close(): void;
}

export function createDeployTask(deps: DeployTaskDeps): DeployTask {
  const { live } = deps;
  let retryTimer: NodeJS.Timeout | undefined;

  async function run(...[triggers, count]: Parameters<TaskHandler>): Promise<void> {
    const runLog = deps.log.child({
      run: count === 1 && triggers[0] ? reasonOf(triggers[0]) : `${count} requests`,
    });
    let revision: string | null = null;
    try {
      const repo = await deps.repo();
      const report = await deploy({
        repo,
        onRevision: (rev) => {
          revision = rev;
        },
        onStart: (rev) => {
          revision = rev;
          deps.publish({ event: "run.started", revision: rev });
        },
        manifest: deps.manifest,
        manifestPath: deps.manifestPath,
        overrides: deps.overrides,
        load: deps.load,
        onManifest: deps.manifestApplied,
        repoDir: deps.repoDir,
        stateDir: deps.stateDir,
        root: deps.root,
        dryRun: deps.dryRun,
        trigger: historyTrigger(triggers),
        fetch: true,
        all: false,
        only: [],
        force: deps.drift.takeHealing(),
        lockWaitMs: deps.lockWaitMs(),
        log: runLog,
        stop: deps.stop,
        abort: deps.abort,
      });
      live.lastRun = { ...report, finishedAt: new Date().toISOString() };
      live.pendingRestart = report.pendingRestart;
      live.lastError = null;
      live.failuresInRow = report.result === "failed" ? live.failuresInRow + 1 : 0;
      deps.metrics.run(report);
      deps.drift.applied(report);
      // The subject only for a run that says something (a poll with nothing to do costs no extra git call).
      const subject = ["succeeded", "failed"].includes(report.result)
        ? await subjectOf(repo, report.revision)
        : null;
      for (const event of runEvents(report, eventBase(live.manifest, report.revision, subject)))
        deps.send(event);
      // The next push's fetch, started now that nothing waits (fetch.ts).
      if (!deps.stop.aborted) repo.fetcher.prepare();
      if (!deps.stop.aborted && !deps.dryRun) prepareLock(deps.stateDir);
    } catch (err) {
      const e = asAgentError(err);
      deps.dropRepo();
      live.lastError = { code: e.code, message: e.message, at: new Date().toISOString() };
      live.failuresInRow++;
      deps.metrics.runError(e.code);
      runLog.error(logFields(e), "deploy run failed before its steps");
      deps.publish({ event: "run.error", revision, error: errorOf(e) });
      if (e.failure !== "stalled" && !deps.stop.aborted) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(
          () => deps.runner().request(DEPLOY, { kind: "retry", after: e.code }),
          deps.retryDelayMs,
        );
        retryTimer.unref();
      }
    }
  }

  return { run, close: () => clearTimeout(retryTimer) };
}
