import { AgentError, asAgentError } from "../core/errors.js";
import { JOBS } from "../jobs/index.js";
import type { Manifest } from "../manifest/schema.js";
import { type DeployEvent, hostEvent } from "../notify/events.js";
import { createNotifier } from "../notify/notifier.js";
import { closeRepo, openRepo, type Repo } from "../source/open-repo.js";
import { type HistoryQuery, type HistoryRead, readHistory } from "../state/history.js";
import { acquireLock, type Lock, prepareLock } from "../state/lock.js";
import { readState } from "../state/read-state.js";
import { warmSteps } from "../steps/index.js";
import { createDeployTask } from "./deploy-task.js";
import { createDriftWatch } from "./drift-watch.js";
import { type Health, healthOf, taskBudgetMs } from "./health.js";
import { runJob } from "./job-task.js";
import { type AgentMetrics, createMetrics } from "./metrics.js";
import { createPreviews } from "./preview.js";
import type { PullRequest } from "./pull-request.js";
import type { HostRunSettings } from "./run-settings.js";
import { createRunner, DEPLOY, type Runner, type Task, type TaskHandler, type Trigger } from "./runner.js";
import { createSchedule, jobTask, timing } from "./schedule.js";
import { liveState, statusDocument } from "./status.js";
import type { ServeStatus } from "./status-model.js";

/**
 * The daemon's wiring: one runner (runner.ts) for everything that touches the host — the deploy task
 * (deploy-task.ts), the drift check with its self-heal (drift-watch.ts), host jobs (job-task.ts), previews —
 * the timers that ask for them (schedule.ts), and the live state (status.ts) that /status, /healthz (health.ts)
 * and /metrics report from. The HTTP layer only verifies, filters and calls `request`.
 */

export interface AgentOptions extends HostRunSettings {
  /** The manifest the process started with; runs may apply a newer one from git (manifestPath). */
  manifest: Manifest;
  /** How long a run waits for a lock held by a manual `deploy-agent run` (default webhook.lockWaitSeconds). */
  lockWaitMs?: number;
  /** Delay before retrying after a transient failure (fetch, lock); default 30 s. */
  retryDelayMs?: number;
}

export interface Agent {
  runner: Runner;
  metrics: AgentMetrics;
  /** Asks for a deploy run. */
  request(trigger: Trigger): void;
  /** A push said it changed these files: the steps they concern may start ahead of its run. */
  warm(files: readonly string[]): void;
  /** A pull request's live preview (webhook.previews), queued unless maxPending wait already. */
  preview(pr: PullRequest): "queued" | "coalesced" | "dropped";
  status(): Promise<ServeStatus>;
  /** The host's deploy history (/history). */
  history(query: HistoryQuery): Promise<HistoryRead>;
  health(): Health;
  /** Starts the start-up reconcile and the poll timer. */
  start(): void;
  /** Stops polling, skips the steps not yet started, waits for the running one. */
  close(): Promise<void>;
  /** Cancels the running step too (its IO is aborted): the shutdown grace period is over. */
  abort(): void;
}

export function createAgent(opts: AgentOptions): Agent {
  const { log } = opts;
  const live = liveState(opts.manifest);
  const metrics = createMetrics(live.manifest.host, JOBS, () => {
    const q = runner.state();
    return (q.running?.task === DEPLOY ? 1 : 0) + (q.waiting.some((w) => w.task === DEPLOY) ? 1 : 0);
  });
  const stop = new AbortController();
  const abortNow = new AbortController();
  const notifier = createNotifier({
    config: () => live.manifest.notify,
    host: live.manifest.host,
    log,
    stateDir: opts.stateDir,
    count: (target, result) => metrics.notified(target, result),
  });
  metrics.notifier(() => notifier.status());
  metrics.hostMarks(async () => {
    const { state } = await readState(opts.stateDir, live.manifest.host);
    return { pinnedUntil: state.pinned?.until, suspendedSince: state.suspended?.since };
  });
  /** Events of a daemon in --dry-run are logged, never sent. */
  function send(event: DeployEvent) {
    if (opts.dryRun) log.debug({ notices: notifier.describe(event) }, "would notify");
    else notifier.publish(event);
  }
  const publish = (fields: Parameters<typeof hostEvent>[1]) => send(hostEvent(live.manifest, fields));
  const lockWaitMs = () => opts.lockWaitMs ?? live.manifest.webhook.lockWaitSeconds * 1000;

  // The clone, opened and checked once; dropped after any failure before the steps, so the next run checks again.
  let clone: Repo | undefined;
  const repo = async () => {
    clone ??= await openRepo(opts.repoDir, live.manifest.repo.remote, live.manifest.repo.branch);
    return clone;
  };
  const dropRepo = () => {
    closeRepo(clone);
    clone = undefined;
  };

  const schedule = createSchedule(() => runner);
  let started = false;
  const drift = createDriftWatch({
    ...opts,
    live,
    metrics,
    publish,
    repo,
    runner: () => runner,
    stop: stop.signal,
  });
  const deployTask = createDeployTask({
    ...opts,
    live,
    lockWaitMs,
    retryDelayMs: opts.retryDelayMs ?? 30_000,
    metrics,
    drift,
    send,
    publish,
    repo,
    dropRepo,
    runner: () => runner,
    manifestApplied: (m) => {
      const reschedule = timing(m) !== timing(live.manifest);
      live.manifest = m;
      if (reschedule && started) schedule.start(m);
    },
    stop: stop.signal,
    abort: abortNow.signal,
  });

  /**
   * A task other than a deploy (which takes it itself) under the host's deploy lock: the runner orders the
   * daemon's own work, the lock orders it with `deploy-agent run` and the other commands on the host.
   */
  const locked =
    (what: string, work: () => Promise<void>): TaskHandler =>
    async () => {
      if (opts.dryRun) return work();
      let lock: Lock;
      try {
        lock = await acquireLock(opts.stateDir, lockWaitMs());
      } catch (err) {
        const e = asAgentError(err);
        log.warn({ code: e.code, err: e.message }, `${what} skipped: the host is busy`);
        return;
      }
      try {
        await work();
      } finally {
        await lock.release();
        // It took the lock readied for the next push: ready another, or that push forks flock itself.
        if (!stop.signal.aborted) prepareLock(opts.stateDir);
      }
    };
  const jobDeps = { ...opts, live, metrics, publish, stop: stop.signal };
  const tasks = new Map<Task, TaskHandler>([
    [DEPLOY, deployTask.run],
    ["drift", locked("drift check", drift.check)],
    ...JOBS.map((job): [Task, TaskHandler] => [
      jobTask(job),
      locked(job.command, () => runJob(jobDeps, job)),
    ]),
  ]);
  const previews = createPreviews({
    ...opts,
    startManifest: opts.manifest,
    manifest: () => live.manifest,
    metrics,
    runner: () => runner,
    repo,
    stop: stop.signal,
  });
  const runner = createRunner((task) => tasks.get(task) ?? previews.handlerOf(task), log);

  function health(): Health {
    const { running } = runner.state();
    const m = live.manifest;
    return healthOf({
      running: running && {
        task: running.task,
        runningMs: runner.runningMs() ?? 0,
        budgetMs: taskBudgetMs(
          running.task,
          m.steps.map((s) => s.timeoutSeconds),
          (command) => JOBS.find((j) => j.command === command)?.timeoutSeconds,
        ),
      },
      lastError: live.lastError,
      failuresInRow: live.failuresInRow,
      unhealthyAfterFailures: m.webhook.unhealthyAfterFailures,
      lockWaitMs: lockWaitMs(),
    });
  }

  return {
    runner,
    metrics,
    request: (trigger) => runner.request(DEPLOY, trigger),
    warm: (files) => warmSteps(live.manifest.steps, files, stop.signal),
    preview: (pr) => previews.request(pr),
    history: (query) => readHistory(opts.stateDir, query),
    health,

    start() {
      started = true;
      runner.request(DEPLOY, { kind: "start-up", task: "deploy" });
      // At start (after the start-up reconcile: deploys go first), then every drift.intervalSeconds.
      if (live.manifest.drift.intervalSeconds > 0)
        runner.request("drift", { kind: "start-up", task: "drift" });
      schedule.start(live.manifest);
    },

    async status() {
      return statusDocument({
        live,
        dryRun: opts.dryRun,
        manifestPath: opts.manifestPath,
        state: await readState(opts.stateDir, live.manifest.host),
        runner: runner.state(),
        health: health(),
        previews: previews.status(),
        notifications: notifier.status(),
        memory: process.memoryUsage(),
      });
    },

    abort() {
      abortNow.abort(new AgentError("ABORTED", "the agent was stopping and its grace period ran out"));
    },

    async close() {
      schedule.stop();
      deployTask.close();
      stop.abort();
      await runner.close();
      closeRepo(clone);
      await notifier.drain(5000);
    },
  };
}
