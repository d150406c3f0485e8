import type { Logger } from "pino";
import { request as giteaRequest, POST_DEFAULTS } from "../commands/plan-gitea.js";
import { AgentError, asAgentError, isConfigInvalid, logFields } from "../core/errors.js";
import { follow } from "../core/with-timeout.js";
import { checkDrift, type DriftReport } from "../deploy/drift.js";
import { deploy } from "../deploy/pipeline.js";
import type { RunReport } from "../deploy/run-report.js";
import type { LoadOptions } from "../manifest/load.js";
import type { Manifest } from "../manifest/schema.js";
import type { GiteaStatusTarget } from "../notify/targets/gitea-status.js";
import { clip } from "../notify/targets/text.js";
import type { Repo } from "../source/open-repo.js";
import type { AgentMetrics } from "./metrics.js";
import type { PullRequest } from "./pull-request.js";
import type { HostRunSettings } from "./run-settings.js";
import { DEPLOY, type Runner, type Task, type TaskHandler } from "./runner.js";

/**
 * Live previews: a pull request's head, dry-run by the host against what is live, as the commit status
 * preview/<host>. One runner task per pull request (`preview:<n>`: a newer head replaces a waiting one),
 * at most webhook.previews.maxPending waiting, deploys first — a deploy asked for while a preview runs
 * stops it, and the preview runs again after. The head is fetched into a ref of the agent's own
 * (refs/deploy-agent/preview/<n>, removed after), never the tracking branch or the work tree; the dry run
 * applies nothing, runs no command, takes no lock, writes no state, and sends no request with the host's
 * credentials (pipeline.ts `preview`). The status names steps and counts, never host content.
 */

export const PREVIEW_TASK = "preview:";
const previewTask = (number: number): Task => `${PREVIEW_TASK}${number}` as const;
/** Gitea keeps a status's description short. */
const DESCRIPTION_MAX = 140;
/** How often a running preview looks whether a deploy waits. */
const PREEMPT_CHECK_MS = 100;

export interface PreviewDeps extends HostRunSettings {
  /** The manifest the process started with (as runs get it) and the one in force now. */
  startManifest: Manifest;
  manifest: () => Manifest;
  metrics: Pick<AgentMetrics, "preview">;
  runner: () => Runner;
  /** The daemon's clone (opened once, shared with deploys: the runner serialises them). */
  repo: () => Promise<Repo>;
  /** Aborted when the daemon stops. */
  stop: AbortSignal;
}

export interface Previews {
  /** Queues a preview of the pull request; what became of the request. */
  request(pr: PullRequest): "queued" | "coalesced" | "dropped";
  /** The runner's handler for a preview task. */
  handlerOf(task: Task): TaskHandler | undefined;
  status(): { pending: number; maxPending: number; last: PreviewResult[] };
}

export interface PreviewResult {
  number: number;
  revision: string | null;
  state: "success" | "failure" | "error";
  description: string;
  posted: boolean;
  at: string;
}

/** Results kept for /status. */
const KEPT = 10;

export function createPreviews(deps: PreviewDeps): Previews {
  const last: PreviewResult[] = [];
  const waitingPreviews = () =>
    deps
      .runner()
      .state()
      .waiting.filter((w) => w.task.startsWith(PREVIEW_TASK)).length;

  async function run(number: number): Promise<void> {
    const log = deps.log.child({ preview: number });
    const runner = deps.runner();
    const ref = `refs/deploy-agent/preview/${number}`;
    // A deploy asked for meanwhile stops the preview; it is asked for again, after the deploy.
    const preempt = new AbortController();
    const watch = setInterval(() => {
      if (runner.state().waiting.some((w) => w.task === DEPLOY)) preempt.abort();
    }, PREEMPT_CHECK_MS);
    const unfollow = follow(preempt, deps.stop);
    const stop = preempt.signal;
    let repo: Repo | undefined;
    let revision: string | null = null;
    let result: Omit<PreviewResult, "posted" | "at" | "number" | "revision">;
    try {
      repo = await deps.repo();
      try {
        await repo.fetcher.fetch(`+refs/pull/${number}/head:${ref}`);
      } catch (err) {
        throw new AgentError(
          "FETCH_FAILED",
          `git fetch refs/pull/${number}/head failed: ${(err as Error).message}`,
        );
      }
      revision = (await repo.objects.read(`${ref}^{commit}`))?.oid ?? null;
      if (!revision) throw new AgentError("FETCH_FAILED", `refs/pull/${number}/head is not a commit`);
      const report = await deploy({
        manifest: deps.startManifest,
        manifestPath: deps.manifestPath,
        overrides: deps.overrides,
        load: previewLoad(deps),
        repo,
        repoDir: deps.repoDir,
        stateDir: deps.stateDir,
        root: deps.root,
        dryRun: true,
        preview: revision,
        trigger: { kind: "manual", user: "preview" },
        fetch: false,
        all: false,
        only: [],
        lockWaitMs: 0,
        log,
        stop,
        abort: stop,
      });
      if (stop.aborted) {
        deps.metrics.preview("preempted");
        if (!deps.stop.aborted) runner.request(previewTask(number), { kind: "after-deploy" });
        log.info("preview stopped for a deploy; it runs again after it");
        return;
      }
      const drift = await checkDrift({
        manifest: deps.manifest(),
        repoDir: deps.repoDir,
        stateDir: deps.stateDir,
        root: deps.root,
        log,
        repo,
      }).catch(() => null);
      result = describe(report, drift);
    } catch (err) {
      const e = asAgentError(err);
      log.warn(logFields(e), "preview failed before its steps");
      // What the pull request broke is a failure; what the host could not do (fetch, git) an error.
      const theirs = isConfigInvalid(e.code);
      result = { state: theirs ? "failure" : "error", description: `${e.code}: ${e.message}` };
    } finally {
      clearInterval(watch);
      unfollow();
      if (repo) {
        await repo.git.raw(["update-ref", "-d", ref]).catch(() => {});
        if (!deps.stop.aborted) repo.fetcher.prepare();
      }
    }
    const description = clip(result.description, DESCRIPTION_MAX);
    const posted = revision ? await post(revision, result.state, description, log) : false;
    deps.metrics.preview(posted ? result.state : "error");
    log.info({ revision, state: result.state, description, posted }, "preview");
    last.unshift({ number, revision, ...result, description, posted, at: new Date().toISOString() });
    last.length = Math.min(last.length, KEPT);
  }

  /** The commit status, through the configured gitea-status target's API and token; none: logged only. */
  async function post(sha: string, state: string, description: string, log: Logger): Promise<boolean> {
    const manifest = deps.manifest();
    const target = manifest.notify.targets.find((t): t is GiteaStatusTarget => t.kind === "gitea-status");
    const context = `preview/${manifest.host}`;
    if (!target || deps.dryRun) {
      log.info(
        { context, state, description },
        deps.dryRun ? "would set the preview status" : "no gitea-status target: the preview is logged only",
      );
      return false;
    }
    try {
      await giteaRequest(
        {
          api: target.api.replace(/\/+$/, ""),
          token: target.token,
          repository: target.repository,
          pr: null,
          sha,
          url: null,
        },
        POST_DEFAULTS,
        "POST",
        `/repos/${target.repository}/statuses/${sha}`,
        { state, context, description },
      );
      return true;
    } catch (err) {
      log.warn({ err: (err as Error).message }, "the preview status could not be set");
      return false;
    }
  }

  return {
    request(pr) {
      const runner = deps.runner();
      const task = previewTask(pr.number);
      const result = runner.state().waiting.some((w) => w.task === task)
        ? "coalesced"
        : waitingPreviews() >= deps.startManifest.webhook.previews.maxPending
          ? "dropped"
          : "queued";
      if (result !== "dropped")
        runner.request(task, { kind: "pull-request", number: pr.number, action: pr.action, head: pr.head });
      deps.metrics.preview(result);
      return result;
    },
    handlerOf(task) {
      if (!task.startsWith(PREVIEW_TASK)) return undefined;
      const number = Number(task.slice(PREVIEW_TASK.length));
      if (!Number.isSafeInteger(number) || number <= 0) return undefined;
      return () => run(number);
    },
    status: () => ({
      pending: waitingPreviews(),
      maxPending: deps.startManifest.webhook.previews.maxPending,
      last: last.map((r) => ({ ...r })),
    }),
  };
}

/**
 * The running manifest's env file, whatever the pull request's manifest names: a pull request must not
 * make the host read another file for its `${VAR}`s.
 */
function previewLoad(deps: PreviewDeps): LoadOptions {
  const load = deps.load ?? {};
  if (load.envFile !== undefined) return load;
  const own = deps.startManifest.envFile;
  return { ...load, envFile: own ? (load.root ?? "") + own : "" };
}

/**
 * What the dry run says, short: the steps that would change something (with counts), the first failure,
 * and where the host drifted from git. Only step names and numbers: never a host path or content.
 */
export function describe(
  report: RunReport,
  drift: DriftReport | null,
): Omit<PreviewResult, "posted" | "at" | "number" | "revision"> {
  const drifted = (drift?.steps ?? []).filter((s) => s.state === "drifted").map((s) => s.name);
  const driftText = drifted.length ? `; drifted here: ${drifted.join(", ")}` : "";
  const failed = report.steps.find((s) => s.outcome === "failed");
  if (failed) {
    const why = failed.error ? `${failed.error.code}: ${failed.error.message}` : "failed";
    return { state: "failure", description: `${failed.name}: ${why}${driftText}` };
  }
  const changing = report.steps
    .filter((s) => s.run)
    .map((s) => {
      const changed = s.items.filter((i) => i.outcome === "changed").length;
      const unknown = s.items.filter((i) => i.outcome === "unknown").length;
      return { name: s.name, changed, unknown };
    })
    .filter((s) => s.changed || s.unknown);
  const what = changing.length
    ? `would change ${changing
        .map(
          (s) =>
            `${s.name} (${s.changed} item${s.changed === 1 ? "" : "s"}${s.unknown ? `, ${s.unknown} unknown` : ""})`,
        )
        .join(", ")}`
    : "nothing would change on this host";
  return { state: "success", description: `${what}${driftText}` };
}
