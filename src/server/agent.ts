import type { Logger } from "pino";
import { checkDrift, type DriftReport } from "../drift.js";
import { AgentError, asAgentError } from "../errors.js";
import { JOBS, jobConfig, type RegisteredJob } from "../jobs/index.js";
import { prepareLock } from "../lock.js";
import type { LoadOptions } from "../manifest/load.js";
import type { Manifest } from "../manifest/schema.js";
import { type DeployEvent, errorOf, eventBase, hostEvent, runEvents } from "../notify/events.js";
import { createNotifier } from "../notify/notifier.js";
import { deploy, type RunReport } from "../pipeline.js";
import { closeRepo, openRepo, type Repo, subjectOf } from "../source/git.js";
import { orphanedSteps, readState, stepStatuses } from "../state.js";
import { createContext } from "../steps/context.js";
import { type AgentMetrics, createMetrics } from "./metrics.js";
import { createQueue, type DeployQueue } from "./queue.js";

/**
 * The daemon's loop: a coalescing queue of deploy runs, a fallback poll of the remote, and what /status,
 * /healthz and /metrics report about it. The HTTP layer only verifies, filters and calls `request`.
 */

export interface AgentOptions {
  /** The manifest the process started with; runs may apply a newer one from git (manifestPath). */
  manifest: Manifest;
  /** The manifest's path in the clone: each run applies the deployed revision's manifest. */
  manifestPath?: string | undefined;
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
  queue: DeployQueue;
  metrics: AgentMetrics;
  request(reason: string): void;
  status(): Promise<Record<string, unknown>>;
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
    const q = queue.state();
    return (q.running ? 1 : 0) + (q.pending ? 1 : 0);
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

  /** Compares what is live with git; steps with selfHeal that drifted are re-applied by the next run. */
  async function driftTick() {
    if (queue.state().running || stop.signal.aborted) return;
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
      for (const s of lastDrift.steps) metrics.drift(s.name, s.state);
      const drifted = lastDrift.steps.filter((s) => s.state === "drifted");
      if (drifted.length) log.warn({ steps: drifted.map((s) => s.name) }, "what is live drifted from git");
      const key = drifted.map((s) => s.name).join(", ");
      if (key && key !== driftKey) publish({ event: "drift.detected", revision: null, step: key });
      driftKey = key;
      const heal = drifted.filter((s) => manifest.steps.find((x) => x.name === s.name)?.selfHeal);
      if (heal.length && !opts.dryRun) {
        healing.push(...heal.map((s) => s.name));
        queue.request(`self-heal ${heal.map((s) => s.name).join(", ")}`);
      }
    } catch (err) {
      const e = asAgentError(err);
      log.error({ code: e.code, err: e.message }, "drift check failed");
    }
  }

  const jobsBusy = new Set<string>();

  /** A host job that watches (LiveKit's restart): run between deploys, never during one. */
  async function jobTick(job: RegisteredJob) {
    const config = jobConfig(manifest, job);
    if (config === undefined || jobsBusy.has(job.command) || queue.state().running) return;
    jobsBusy.add(job.command);
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
      jobLog.error({ code: e.code, err: e.message }, `${job.command} failed`);
    } finally {
      jobsBusy.delete(job.command);
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
      runLog.error({ code: e.code, err: e.message }, "deploy run failed before its steps");
      publish({
        event: "run.error",
        revision,
        error: errorOf(e),
      });
      if (e.failure !== "stalled" && !stop.signal.aborted) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(() => queue.request(`retry after ${e.code}`), opts.retryDelayMs ?? 30_000);
        retryTimer.unref();
      }
    }
  }

  const queue = createQueue(runOnce, log);

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
      driftTimer = setInterval(() => void driftTick(), manifest.drift.intervalSeconds * 1000);
      driftTimer.unref();
    }
    const every = manifest.webhook.pollIntervalSeconds;
    if (every > 0) {
      pollTimer = setInterval(() => queue.request("poll"), every * 1000);
      pollTimer.unref();
    }
    for (const job of JOBS) {
      const seconds = watchEvery(manifest, job);
      if (seconds <= 0) continue;
      const timer = setInterval(() => void jobTick(job), seconds * 1000);
      timer.unref();
      jobTimers.push(timer);
    }
  }

  return {
    queue,
    metrics,
    request: (reason) => queue.request(reason),

    start() {
      started = true;
      queue.request("start-up reconcile");
      schedule();
      // At start (once the start-up reconcile is done), then every drift.intervalSeconds.
      void queue.idle().then(driftTick);
    },

    health() {
      const q = queue.state();
      const stepBudgetMs = manifest.steps.reduce((sum, s) => sum + s.timeoutSeconds * 1000, 0) + 5 * 60_000;
      if (q.runningSince && Date.now() - q.runningSince > stepBudgetMs) {
        return {
          ok: false,
          reason: `a deploy has been running for ${Math.round((Date.now() - q.runningSince) / 1000)}s`,
        };
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
      const q = queue.state();
      return {
        schema: "deploy-agent/serve-status@1",
        host: manifest.host,
        dryRun: opts.dryRun,
        branch: manifest.repo.branch,
        deployedRevision: state.lastRun?.revision ?? null,
        suspended: state.suspended ?? null,
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
        queue: {
          running: q.running,
          pending: q.pending,
          requests: q.requests,
          reasons: q.reasons,
          runsStarted: q.runsStarted,
        },
        steps: stepStatuses(manifest.steps, state),
        orphanedSteps: orphanedSteps(manifest.steps, state),
        drift: lastDrift && {
          at: lastDrift.at,
          steps: lastDrift.steps.map((s) => ({ ...s, items: s.items.filter((i) => i.state !== "in-sync") })),
        },
        lastRun: lastReport ? { ...summary(lastReport), finishedAt: lastReport.finishedAt } : null,
        lastError,
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
      await queue.close();
      closeRepo(repo);
      await notifier.drain(5000);
    },
  };
}
