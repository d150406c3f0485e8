import type { Logger } from "pino";
import { AgentError, asAgentError, logFields } from "../core/errors.js";
import { checkDrift, type DriftReport } from "../deploy/drift.js";
import { deploy } from "../deploy/pipeline.js";
import type { RunReport } from "../deploy/run-report.js";
import { JOBS, jobConfig, type RegisteredJob } from "../jobs/index.js";
import type { HostOverrides } from "../manifest/at-revision.js";
import type { LoadOptions } from "../manifest/load.js";
import type { Manifest } from "../manifest/schema.js";
import { type DeployEvent, errorOf, eventBase, hostEvent, runEvents } from "../notify/events.js";
import { createNotifier } from "../notify/notifier.js";
import { closeRepo, openRepo, type Repo, subjectOf } from "../source/git.js";
import { type HistoryQuery, type HistoryRead, readHistory } from "../state/history.js";
import { acquireLock, type Lock, prepareLock } from "../state/lock.js";
import { orphanedSteps, readState, stepStatuses } from "../state/state.js";
import { createContext } from "../steps/context.js";
import { type AgentMetrics, createMetrics } from "./metrics.js";
import { createPreviews } from "./preview.js";
import type { PullRequest } from "./pull-request.js";
import { createRunner, DEPLOY, type Runner, type TaskHandler } from "./runner.js";
import { triggerOf } from "./trigger.js";

/**
 * The daemon's loop: one runner (runner.ts) for everything that touches the host — deploy runs, drift
 * checks with their self-heal, host jobs — a fallback poll of the remote, and what /status, /healthz and
 * /metrics report about it. The HTTP layer only verifies, filters and calls `request`.
 */

export interface AgentOptions {
  /** The manifest the process started with; runs may apply a newer one from git (manifestPath). */
  manifest: Manifest;
  /** The manifest's path in the clone: each run applies the deployed revision's manifest. */
  manifestPath?: string | undefined;
  /** Restart-only settings the host sets outside the manifest (see manifest/at-revision.ts). */
  overrides?: HostOverrides | undefined;
  load?: LoadOptions | undefined;
  repoDir: string;
  stateDir: string;
  root: string;
  dryRun: boolean;
  log: Logger;
  /** How long a run waits for a lock held by a manual `deploy-agent run` (default webhook.lockWaitSeconds). */
  lockWaitMs?: number;
  /** Delay before retrying after a transient failure (fetch, lock). */
  retryDelayMs?: number;
}

interface RunError {
  code: string;
  message: string;
  at: string;
}

export interface Agent {
  runner: Runner;
  metrics: AgentMetrics;
  request(reason: string): void;
  /** A pull request's live preview (webhook.previews), queued unless maxPending wait already. */
  preview(pr: PullRequest): "queued" | "coalesced" | "dropped";
  status(): Promise<Record<string, unknown>>;
  /** The host's deploy history (/history). */
  history(query: HistoryQuery): Promise<HistoryRead>;
  health(): { ok: boolean; reason?: string };
  /** Starts the start-up reconcile and the poll timer. */
  start(): void;
  /** Stops polling, skips the steps not yet started, waits for the running one. */
  close(): Promise<void>;
  /** Cancels the running step too (its IO is aborted): the shutdown grace period is over. */
  abort(): void;
}

const summary = (r: RunReport) => ({
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
});

export function createAgent(opts: AgentOptions): Agent {
  const { log } = opts;
  /** The manifest the last run applied (the one the process started with until then). */
  let manifest = opts.manifest;
  let pendingRestart: string[] = [];
  const metrics = createMetrics(manifest.host, JOBS, () => {
    const q = runner.state();
    return (q.running?.task === DEPLOY ? 1 : 0) + (q.waiting.some((w) => w.task === DEPLOY) ? 1 : 0);
  });
  const stop = new AbortController();
  const abortNow = new AbortController();
  let lastReport: (RunReport & { finishedAt: string }) | null = null;
  let lastError: RunError | null = null;
  let failuresInRow = 0;
  let pollTimer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  const jobTimers: NodeJS.Timeout[] = [];
  const notifier = createNotifier({
    config: () => manifest.notify,
    host: manifest.host,
    log,
    count: (target, result) => metrics.notified(target, result),
  });
  metrics.notifier(() => notifier.status());
  metrics.hostMarks(async () => {
    const { state } = await readState(opts.stateDir, manifest.host);
    return { pinnedUntil: state.pinned?.until, suspendedSince: state.suspended?.since };
  });
  /** Events of a daemon in --dry-run are logged, never sent. */
  function send(event: DeployEvent) {
    if (opts.dryRun) log.debug({ notices: notifier.describe(event) }, "would notify");
    else notifier.publish(event);
  }
  const publish = (fields: Parameters<typeof hostEvent>[1]) => send(hostEvent(manifest, fields));
  let driftKey = "";
  /** The last result of each watching job, for /status (and fleet status). */
  const jobResults: Record<string, { message: string; gauge?: number; at: string }> = {};
  let driftTimer: NodeJS.Timeout | undefined;
  let lastDrift: DriftReport | null = null;
  /** Steps to re-apply on the next run because they drifted (selfHeal). */
  const healing: string[] = [];

  /** The metric, and the notice when the set of drifted steps changed, from a drift report; the drifted steps. */
  function driftSaid(report: DriftReport) {
    for (const s of report.steps) metrics.drift(s.name, s.state);
    const drifted = report.steps.filter((s) => s.state === "drifted");
    const key = drifted.map((s) => s.name).join(", ");
    if (key && key !== driftKey) publish({ event: "drift.detected", revision: null, step: key });
    driftKey = key;
    return drifted;
  }

  /**
   * A step that was just applied is what git says at that revision: its drift is over now, not at the next
   * check (the alert would fire on a host that is in sync). The evidence is the run itself.
   */
  function clearAppliedDrift(report: RunReport) {
    if (!lastDrift || report.dryRun) return;
    const applied = new Map(report.steps.filter((s) => s.outcome === "succeeded").map((s) => [s.name, s]));
    if (!applied.size) return;
    lastDrift = {
      ...lastDrift,
      steps: lastDrift.steps.map((s) =>
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
    driftSaid(lastDrift);
  }

  /** Compares what is live with git; steps with selfHeal that drifted are re-applied by the next run. */
  async function driftCheck() {
    if (stop.signal.aborted) return;
    try {
      repo ??= await openRepo(opts.repoDir, manifest.repo.remote, manifest.repo.branch);
      lastDrift = await checkDrift({
        manifest,
        repoDir: opts.repoDir,
        stateDir: opts.stateDir,
        root: opts.root,
        log,
        repo,
      });
      const drifted = driftSaid(lastDrift);
      if (drifted.length) log.warn({ steps: drifted.map((s) => s.name) }, "what is live drifted from git");
      const heal = drifted.filter((s) => manifest.steps.find((x) => x.name === s.name)?.selfHeal);
      if (heal.length && !opts.dryRun) {
        healing.push(...heal.map((s) => s.name));
        runner.request(DEPLOY, `self-heal ${heal.map((s) => s.name).join(", ")}`);
      }
    } catch (err) {
      const e = asAgentError(err);
      log.error(logFields(e), "drift check failed");
    }
  }

  /** A host job that watches (a deferred restart): a task of the runner, so never during a deploy. */
  async function runJob(job: RegisteredJob) {
    const config = jobConfig(manifest, job);
    if (config === undefined || stop.signal.aborted) return;
    const jobLog = log.child({ job: job.command });
    try {
      const ctx = createContext({
        dryRun: opts.dryRun,
        root: opts.root,
        log: jobLog,
        signal: AbortSignal.timeout(job.timeoutSeconds * 1000),
        commands: manifest.commands,
        record: () => {},
      });
      const result = await job.run(config, { ...ctx, force: false });
      if (result.gauge !== undefined) metrics.jobGauge(job.command, result.gauge);
      jobResults[job.command] = {
        message: result.message,
        ...(result.gauge !== undefined ? { gauge: result.gauge } : {}),
        at: new Date().toISOString(),
      };
      jobLog[result.acted ? "info" : "debug"]({ ...result }, result.message);
      if (result.acted)
        publish({ event: "job.done", revision: null, step: job.command, notes: [result.message] });
    } catch (err) {
      const e = asAgentError(err);
      jobLog.error(logFields(e), `${job.command} failed`);
    }
  }

  // The clone, opened and checked once; dropped after any failure before the steps, so the next run checks again.
  let repo: Repo | undefined;

  async function runOnce(reasons: string[], count: number): Promise<void> {
    const runLog = log.child({ run: count === 1 ? reasons[0] : `${count} requests` });
    let revision: string | null = null;
    try {
      repo ??= await openRepo(opts.repoDir, manifest.repo.remote, manifest.repo.branch);
      const report = await deploy({
        repo,
        onStart: (rev) => {
          revision = rev;
          publish({ event: "run.started", revision: rev });
        },
        manifest: opts.manifest,
        manifestPath: opts.manifestPath,
        overrides: opts.overrides,
        load: opts.load,
        onManifest: (m) => {
          const reschedule = timing(m) !== timing(manifest);
          manifest = m;
          if (reschedule && started) schedule();
        },
        repoDir: opts.repoDir,
        stateDir: opts.stateDir,
        root: opts.root,
        dryRun: opts.dryRun,
        trigger: triggerOf(reasons),
        fetch: true,
        all: false,
        only: [],
        force: healing.splice(0),
        lockWaitMs: opts.lockWaitMs ?? manifest.webhook.lockWaitSeconds * 1000,
        log: runLog,
        stop: stop.signal,
        abort: abortNow.signal,
      });
      lastReport = { ...report, finishedAt: new Date().toISOString() };
      pendingRestart = report.pendingRestart;
      lastError = null;
      failuresInRow = report.result === "failed" ? failuresInRow + 1 : 0;
      metrics.run(report);
      clearAppliedDrift(report);
      // The subject only for a run that says something (a poll with nothing to do costs no extra git call).
      const subject = ["succeeded", "failed"].includes(report.result)
        ? await subjectOf(repo, report.revision)
        : null;
      for (const event of runEvents(report, eventBase(manifest, report.revision, subject))) send(event);
      // The next push's fetch, started now that nothing waits (fetch.ts).
      if (!stop.signal.aborted) repo.fetcher.prepare();
      if (!stop.signal.aborted && !opts.dryRun) prepareLock(opts.stateDir);
    } catch (err) {
      const e = asAgentError(err);
      closeRepo(repo);
      repo = undefined;
      lastError = { code: e.code, message: e.message, at: new Date().toISOString() };
      failuresInRow++;
      metrics.runError(e.code);
      runLog.error(logFields(e), "deploy run failed before its steps");
      publish({
        event: "run.error",
        revision,
        error: errorOf(e),
      });
      if (e.failure !== "stalled" && !stop.signal.aborted) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(
          () => runner.request(DEPLOY, `retry after ${e.code}`),
          opts.retryDelayMs ?? 30_000,
        );
        retryTimer.unref();
      }
    }
  }

  const JOB_TASK = "job:";
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
        lock = await acquireLock(opts.stateDir, opts.lockWaitMs ?? manifest.webhook.lockWaitSeconds * 1000);
      } catch (err) {
        const e = asAgentError(err);
        log.warn({ code: e.code, err: e.message }, `${what} skipped: the host is busy`);
        return;
      }
      try {
        await work();
      } finally {
        await lock.release();
      }
    };
  const tasks = new Map<string, TaskHandler>([
    [DEPLOY, runOnce],
    ["drift", locked("drift check", driftCheck)],
    ...JOBS.map((job): [string, TaskHandler] => [
      `${JOB_TASK}${job.command}`,
      locked(job.command, () => runJob(job)),
    ]),
  ]);
  const previews = createPreviews({
    ...opts,
    startManifest: opts.manifest,
    manifest: () => manifest,
    metrics,
    runner: () => runner,
    repo: async () => {
      repo ??= await openRepo(opts.repoDir, manifest.repo.remote, manifest.repo.branch);
      return repo;
    },
    stop: stop.signal,
  });
  const runner = createRunner((task) => tasks.get(task) ?? previews.handlerOf(task), log);

  /** The loop's timers follow the manifest in force: a pushed poll interval applies on the next run. */
  let started = false;
  const watchEvery = (m: Manifest, job: RegisteredJob) => {
    const config = jobConfig(m, job);
    return config === undefined ? 0 : job.watchSeconds(config);
  };
  const timing = (m: Manifest) =>
    [m.webhook.pollIntervalSeconds, m.drift.intervalSeconds, ...JOBS.map((job) => watchEvery(m, job))].join(
      "/",
    );
  function schedule() {
    clearInterval(pollTimer);
    clearInterval(driftTimer);
    for (const t of jobTimers.splice(0)) clearInterval(t);
    if (manifest.drift.intervalSeconds > 0) {
      driftTimer = setInterval(
        () => runner.request("drift", "interval"),
        manifest.drift.intervalSeconds * 1000,
      );
      driftTimer.unref();
    }
    const every = manifest.webhook.pollIntervalSeconds;
    if (every > 0) {
      pollTimer = setInterval(() => runner.request(DEPLOY, "poll"), every * 1000);
      pollTimer.unref();
    }
    for (const job of JOBS) {
      const seconds = watchEvery(manifest, job);
      if (seconds <= 0) continue;
      const timer = setInterval(
        () => runner.request(`${JOB_TASK}${job.command}`, "interval"),
        seconds * 1000,
      );
      timer.unref();
      jobTimers.push(timer);
    }
  }

  return {
    runner,
    metrics,
    request: (reason) => runner.request(DEPLOY, reason),
    preview: (pr) => previews.request(pr),
    history: (query) => readHistory(opts.stateDir, query),

    start() {
      started = true;
      runner.request(DEPLOY, "start-up reconcile");
      // At start (after the start-up reconcile: deploys go first), then every drift.intervalSeconds.
      if (manifest.drift.intervalSeconds > 0) runner.request("drift", "start-up");
      schedule();
    },

    health() {
      const { running } = runner.state();
      const stepBudgetMs = manifest.steps.reduce((sum, s) => sum + s.timeoutSeconds * 1000, 0) + 5 * 60_000;
      // Any task of the runner, not only a deploy: a stuck drift check or job holds every deploy behind it.
      const job = JOBS.find((j) => running?.task === `job:${j.command}`);
      const budgetMs = job ? job.timeoutSeconds * 1000 + 5 * 60_000 : stepBudgetMs;
      const runningMs = running ? Date.now() - Date.parse(running.since) : 0;
      if (running && runningMs > budgetMs) {
        const what = running.task === DEPLOY ? "a deploy" : `the ${running.task} task`;
        return { ok: false, reason: `${what} has been running for ${Math.round(runningMs / 1000)}s` };
      }
      if (lastError?.code === "LOCKED")
        return {
          ok: false,
          reason: `the deploy lock was not free within ${(opts.lockWaitMs ?? manifest.webhook.lockWaitSeconds * 1000) / 1000} s: ${lastError.message}`,
        };
      if (lastError?.code === "STATE_UNSAFE" || lastError?.code === "LOCK_FAILED")
        return { ok: false, reason: `the deploy lock cannot be taken: ${lastError.message}` };
      if (lastError?.code === "REPO_INVALID")
        return { ok: false, reason: `repository unusable: ${lastError.message}` };
      if (lastError?.code === "CONFIG_INVALID" || lastError?.code === "ENV_MISSING")
        return {
          ok: false,
          reason: `configuration invalid; nothing deployed until it is fixed: ${lastError.message}`,
        };
      if (failuresInRow >= manifest.webhook.unhealthyAfterFailures) {
        return { ok: false, reason: `the last ${failuresInRow} deploy runs failed` };
      }
      return { ok: true };
    },

    async status() {
      const { state, problem } = await readState(opts.stateDir, manifest.host);
      const r = runner.state();
      const deploy = r.running?.task === DEPLOY ? r.running : r.waiting.find((w) => w.task === DEPLOY);
      return {
        schema: "deploy-agent/serve-status@1",
        host: manifest.host,
        dryRun: opts.dryRun,
        branch: manifest.repo.branch,
        deployedRevision: state.lastRun?.revision ?? null,
        suspended: state.suspended ?? null,
        pinned: state.pinned ?? null,
        jobs: jobResults,
        configuration: {
          valid: !(lastError?.code === "CONFIG_INVALID" || lastError?.code === "ENV_MISSING"),
          source: opts.manifestPath
            ? `git: ${opts.manifestPath} at the deployed revision`
            : "file, read at start",
          pendingRestart,
        },
        stateProblem: problem ?? null,
        health: this.health(),
        // The deploy's place in the runner (as before the runner), and the runner itself: what runs, what waits.
        queue: {
          running: r.running?.task === DEPLOY,
          pending: r.waiting.some((w) => w.task === DEPLOY),
          requests: deploy?.requests ?? 0,
          reasons: deploy?.reasons ?? [],
          runsStarted: r.started[DEPLOY] ?? 0,
        },
        runner: { running: r.running, waiting: r.waiting },
        previews: previews.status(),
        steps: stepStatuses(manifest.steps, state),
        orphanedSteps: orphanedSteps(manifest.steps, state),
        drift: lastDrift && {
          at: lastDrift.at,
          steps: lastDrift.steps.map((s) => ({ ...s, items: s.items.filter((i) => i.state !== "in-sync") })),
        },
        lastRun: lastReport ? { ...summary(lastReport), finishedAt: lastReport.finishedAt } : null,
        lastError,
        notifications: notifier.status(),
        process: (({ rss, heapTotal, heapUsed, external }) => ({ rss, heapTotal, heapUsed, external }))(
          process.memoryUsage(),
        ),
      };
    },

    abort() {
      abortNow.abort(new AgentError("ABORTED", "the agent was stopping and its grace period ran out"));
    },

    async close() {
      clearInterval(pollTimer);
      clearInterval(driftTimer);
      for (const t of jobTimers.splice(0)) clearInterval(t);
      clearTimeout(retryTimer);
      stop.abort();
      await runner.close();
      closeRepo(repo);
      await notifier.drain(5000);
    },
  };
}
