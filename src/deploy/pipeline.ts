import type { Logger } from "pino";
import { AgentError, asAgentError, type ErrorCode, logFields } from "../core/errors.js";
import { follow } from "../core/with-timeout.js";
import type { Effect } from "../host/effects.js";
import { rooted } from "../host/host-fs.js";
import { type HostOverrides, manifestAt } from "../manifest/at-revision.js";
import type { LoadOptions } from "../manifest/load.js";
import type { Manifest } from "../manifest/schema.js";
import { type Action, type PlanReason, planLazily, revisionsToDiff } from "../plan/plan.js";
import type { Descent } from "../source/ancestry.js";
import {
  clearStaleGitLocks,
  dirtyPaths,
  fetchBranch,
  headCommit,
  openRepo,
  type Repo,
  resetHard,
  resolveTarget,
} from "../source/git.js";
import { changedPaths, gitTrees, loadSnapshot, type Snapshot } from "../source/snapshot.js";
import { verifyRevision } from "../source/verify.js";
import type { Trigger } from "../state/history-record.js";
import { acquireLock } from "../state/lock.js";
import { readState } from "../state/read-state.js";
import {
  type Pin,
  recordAttempt,
  recordResult,
  recordUpToDate,
  type State,
  type StepItem,
  writeState,
} from "../state/state.js";
import { createStepContext } from "../steps/context.js";
import { kindOf } from "../steps/index.js";
import { type RunFacts, recordRun } from "./run-record.js";
import type { RunReport, StepReport } from "./run-report.js";

/**
 * One deploy run: sync source → plan → apply → finalize. A dry run is the same pipeline with the
 * step context in describe mode; it never resets the work tree, writes state or takes the lock.
 * Reads: the clone, the state file. Writes (real runs): the clone, targets, the state file after each step.
 */

export interface DeployOptions {
  /** The manifest the process runs with: from its file at start (host, listener, clone, state). */
  manifest: Manifest;
  /**
   * The manifest's path inside the repository, when it lives there: each run then applies the manifest of
   * the revision it deploys. Absent (a manifest outside the repository, `--config` for staging and tests):
   * `manifest` is applied as it is.
   */
  manifestPath?: string | undefined;
  /** Restart-only settings the host sets outside the manifest (serve's environment and flags). */
  overrides?: HostOverrides | undefined;
  /** How a manifest read from git is interpolated (env file, --root). */
  load?: LoadOptions | undefined;
  /**
   * Told the revision a run is about, as soon as it is known and before it is verified: a run refused or
   * ended before its steps (unsigned, history rewritten, an invalid manifest) is reported on that commit.
   */
  onRevision?: ((revision: string) => void) | undefined;
  /**
   * Told the revision a run is about to deploy (verified), before anything of it is applied; never by a
   * suspended host's run, which deploys nothing.
   */
  onStart?: ((revision: string) => void) | undefined;
  /** Told the manifest a run applies, once it validated. */
  onManifest?: ((manifest: Manifest) => void) | undefined;
  repoDir: string;
  stateDir: string;
  /** Prefix for every host path a step touches; "" for the real host. */
  root: string;
  dryRun: boolean;
  /** What started the run (push, poll, an operator…): kept in the deploy history. */
  trigger: Trigger;
  fetch: boolean;
  all: boolean;
  only: readonly string[];
  /** Steps that run whatever changed (self-healing drift). */
  force?: readonly string[] | undefined;
  lockWaitMs: number;
  log: Logger;
  /** When aborted (daemon shutdown), the running step finishes and the rest are skipped. */
  stop?: AbortSignal | undefined;
  /** When aborted (the shutdown grace period is over), the running step is cancelled too. */
  abort?: AbortSignal | undefined;
  /**
   * The operator takes a branch whose history was rewritten (`run --accept-rewrite`): with repo.verify on,
   * a revision that does not descend from the last one run is otherwise refused.
   */
  acceptRewrite?: boolean | undefined;
  /**
   * The operator's pin (`deploy-agent pin`): deploy this revision, whatever the tip, and hold the host there
   * (state.pinned, written before the steps). It is verified, never checked for descent: going back is
   * its purpose.
   */
  pin?: Pin | undefined;
  /**
   * `deploy-agent unpin`: the pin is cleared and the tip deployed. Whether there is a pin is read under the
   * deploy lock, with the state the run then changes: a host found not pinned is left as it is (nothing
   * fetched, deployed or recorded) and the run returns NotPinned, so two operators unpinning at once make one
   * unpin, never an unpin and a deploy of whatever the tip is by then.
   */
  unpin?: boolean | undefined;
  /**
   * A preview (a pull request's head, fetched apart from the branch): this revision, dry-run against the
   * host as it is. Not verified (a pull request may be unsigned) — so refused unless dryRun; the pin is
   * ignored, and no request leaves with the host's credentials (the context is offline).
   */
  preview?: string | undefined;
  /** An already opened clone (the daemon keeps one between runs); default: open and check repoDir. */
  repo?: Repo | undefined;
}

/** The synced source: the revision to deploy, its content, and what changed since each applied revision. */
interface Source {
  repo: Repo;
  revision: string;
  previousHead: string | null;
  snapshot: Snapshot;
  changes: Map<string, string[] | null>;
}

/**
 * Fetch (optional), resolve origin/<branch> and what changed, all from git objects: after the fetch a push
 * spawns no process until its steps are done. Steps read git objects, never the work tree, so the
 * work tree is reset after them (`syncWorkTree`), and only once the revision's manifest is known to be
 * valid: a clone reset to an invalid manifest would keep the agent from starting again.
 */
interface Fetched {
  repo: Repo;
  /** The branch's tip, as fetched (or as the remote-tracking ref has it). */
  tip: string;
  previousHead: string | null;
}

async function fetchSource(opts: DeployOptions, warnings: string[]): Promise<Fetched> {
  const { repo: cfg } = opts.manifest;
  const repo = opts.repo ?? (await openRepo(opts.repoDir, cfg.remote, cfg.branch));
  if (!opts.dryRun) {
    // Safe only under the deploy lock, which a real run holds here.
    const stale = clearStaleGitLocks(repo);
    if (stale.length)
      warnings.push(`removed git lock files left by a killed git process: ${stale.join(", ")}`);
  }
  const [fetched, previousHead] = await Promise.all([
    opts.fetch ? fetchBranch(repo) : null,
    headCommit(repo),
  ]);
  return { repo, tip: fetched ?? (await resolveTarget(repo)), previousHead };
}

/** The revision to deploy, its content, and what changed since each revision the steps applied. */
async function sourceAt(fetched: Fetched, state: State, revision: string): Promise<Source> {
  const { repo, previousHead } = fetched;
  const froms = revisionsToDiff(state, revision);
  const trees = gitTrees(repo.objects);
  const diffs = await Promise.all(froms.map((from) => changedPaths(trees, from, revision)));
  const changes = new Map(froms.map((from, i) => [from, diffs[i] ?? null]));
  return { repo, revision, previousHead, snapshot: loadSnapshot(repo, revision, trees), changes };
}

/**
 * The clone's work tree to the deployed revision, local edits discarded (and said). Runs after the steps,
 * which read git objects only: when git cannot do it (a damaged index, a full disk), the steps have applied
 * the revision all the same, so the run is recorded as what it did and this is a warning that says how to
 * repair the clone, returned for the report (and its notice). Never throws.
 */
async function syncWorkTree(
  source: Source,
  warnings: string[],
  log: Logger,
  stepFailed: boolean,
): Promise<RunReport["resetFailed"]> {
  try {
    const dirty = await dirtyPaths(source.repo);
    if (dirty.length || source.previousHead !== source.revision)
      await resetHard(source.repo, source.revision);
    // Said once they are gone: a reset that failed discarded nothing.
    if (dirty.length) warnings.push(`discarding local edits in the clone: ${dirty.join(", ")}`);
  } catch (err) {
    const e = asAgentError(err);
    const rev = source.revision.slice(0, 12);
    const dir = source.repo.dir;
    // A bug: its stack to the journal; git's own failures are said by the warning (logged with the run's).
    if (e.code === "INTERNAL") log.error(logFields(e), "the clone's work tree could not be reset");
    const repair = `git -C ${dir} reset --hard ${rev} (if git says its index is damaged, remove ${dir}/.git/index first)`;
    warnings.push(
      `the clone's work tree could not be reset to ${rev} (${e.code}: ${e.message}); ${stepFailed ? `the steps' results at ${rev} stand as reported` : `the steps applied ${rev}, which the host runs`}: repair the clone with ${repair}; until then its files are not the deployed revision's`,
    );
    return {
      code: e.code,
      message: `the clone's work tree could not be reset to ${rev}: ${e.message}`,
      hint: repair,
    };
  }
  return undefined;
}

async function applyAction(
  opts: DeployOptions,
  manifest: Manifest,
  action: Action,
  snapshot: Snapshot,
  lastAttempt: string,
): Promise<StepReport> {
  const { step } = action;
  const log = opts.log.child({ step: step.name });
  const effects: Effect[] = [];
  const record = (e: Effect) => effects.push(e);
  // One signal per step: its timeout, or the agent having to stop now. Every IO call of the step gets it,
  // and the step's result is recorded only once apply has returned: nothing it started runs on after.
  const timeout = new AbortController();
  const timer = setTimeout(
    () =>
      timeout.abort(
        new AgentError("STEP_TIMEOUT", `step ${step.name} timed out after ${step.timeoutSeconds}s`),
      ),
    step.timeoutSeconds * 1000,
  );
  const unfollow = follow(timeout, opts.abort);
  const signal = timeout.signal;
  const ctx = createStepContext({
    dryRun: opts.dryRun,
    root: opts.root,
    source: snapshot,
    log,
    signal,
    stopNow: opts.abort,
    commands: manifest.commands,
    record,
    offline: !!opts.preview,
  });
  const started = Date.now();
  log.info({ reason: action.reason, files: action.files.length }, action.message);
  if (action.resume) record({ type: "note", message: `${lastAttempt}: its follow-up actions run again` });
  const base = {
    name: step.name,
    kind: step.kind,
    run: true,
    reason: action.reason,
    message: action.message,
  };
  const report = { ...base, files: action.files, work: action.work, effects };
  const failedWith = (
    code: ErrorCode,
    message: string,
    hint: string | undefined,
    items: StepItem[],
  ): StepReport => {
    const durationMs = Date.now() - started;
    log.error({ code, err: message, durationMs }, "step failed");
    return { ...report, outcome: "failed", error: { code, message, hint }, items, durationMs };
  };
  try {
    const items = await kindOf(step).apply(step, ctx, { files: action.files, resume: action.resume });
    if (signal.aborted) throw signal.reason;
    const failed = items.filter((i) => i.outcome === "failed");
    if (failed.length) {
      const why = failed.map((i) => `${i.id}: ${i.detail}`).join("; ");
      return failedWith(
        "ITEMS_FAILED",
        `${failed.length} of ${items.length} failed: ${why}`,
        undefined,
        items,
      );
    }
    const durationMs = Date.now() - started;
    const changed = items.filter((i) => i.outcome === "changed").length;
    const unknown = items.filter((i) => i.outcome === "unknown").length;
    if (!opts.dryRun) {
      log.info({ durationMs, changed }, "step succeeded");
      return { ...report, outcome: "succeeded", items, durationMs };
    }
    log.info(
      { durationMs, wouldChange: changed, unknown },
      unknown ? "step planned, but what it would do could not all be determined" : "step planned",
    );
    return { ...report, outcome: unknown ? "unknown" : "planned", items, durationMs };
  } catch (err) {
    // Whatever apply threw once aborted (a killed command, a cancelled request), the abort is the cause.
    const e = asAgentError(signal.aborted ? signal.reason : err);
    // A bug: its stack to the journal (the report and notices carry the code and message only).
    if (e.code === "INTERNAL") log.error(logFields(e), "step crashed");
    return failedWith(e.code, e.message, e.hint, []);
  } finally {
    clearTimeout(timer);
    unfollow();
  }
}

function skipped(
  action: Action,
  reason: PlanReason | "Stopped" | "Suspended" = action.reason,
  message = action.message,
): StepReport {
  const { step } = action;
  return {
    name: step.name,
    kind: step.kind,
    run: false,
    reason,
    message,
    files: action.files,
    work: [],
    outcome: "skipped",
    items: [],
    effects: [],
    durationMs: 0,
  };
}

/** What an unpin did on a host it found not pinned (under the deploy lock): nothing. `unpin --json` prints it. */
export interface NotPinned {
  schema: "deploy-agent/unpin@1";
  host: string;
  pinned: false;
}

export function deploy(opts: DeployOptions & { unpin?: false | undefined }): Promise<RunReport>;
export function deploy(opts: DeployOptions): Promise<RunReport | NotPinned>;
export async function deploy(opts: DeployOptions): Promise<RunReport | NotPinned> {
  if (opts.preview && !opts.dryRun)
    throw new AgentError("INTERNAL", "a preview revision is never applied: it is not verified");
  const started = Date.now();
  const warnings: string[] = [];
  // The deploy history: what a real run did, or how far it got before it threw. A dry run records nothing.
  const facts: RunFacts = {
    started,
    host: opts.manifest.host,
    trigger: opts.trigger,
    revision: null,
    previousRevision: null,
    verified: false,
    applied: false,
    bounds: opts.manifest.history,
  };
  const remember = async (outcome: Parameters<typeof recordRun>[2], locked: boolean) => {
    if (!opts.dryRun) await recordRun(opts.stateDir, facts, outcome, { locked, log: opts.log });
  };
  const lock = opts.dryRun
    ? null
    : await acquireLock(opts.stateDir, opts.lockWaitMs, (holder) =>
        opts.log.warn({ holder }, "waiting for the deploy lock held by another run"),
      ).catch(async (error: unknown) => {
        // Only a lock another run holds is recorded: the directory passed its safety check. An unsafe state
        // directory (STATE_UNSAFE) is never written to, nor created, not even for the history.
        if (error instanceof AgentError && error.code === "LOCKED") await remember({ error }, false);
        throw error;
      });
  opts.log.debug("syncing the source");
  try {
    const loaded = await readState(opts.stateDir, opts.manifest.host);
    if (loaded.problem) warnings.push(`state unusable: ${loaded.problem}`);
    const { state } = loaded;
    if (opts.unpin && !state.pinned) {
      // Decided under the lock, before anything is fetched: unpin is not a way to deploy.
      if (loaded.problem) opts.log.warn(`state unusable, no pin found in it: ${loaded.problem}`);
      opts.log.info("not pinned: nothing to unpin, nothing deployed");
      return { schema: "deploy-agent/unpin@1", host: opts.manifest.host, pinned: false };
    }
    if (state.suspended && (opts.pin || opts.unpin)) {
      // The operator's command refused, before any commit is looked at: none is at fault, none is marked.
      facts.revision = opts.pin?.revision ?? null;
      throw new AgentError("PIN_REFUSED", `${opts.manifest.host} is suspended (${state.suspended.reason})`, {
        hint: "deploy-agent resume first; a suspended host deploys nothing, and its pin (if any) stays as it is",
      });
    }
    const from = state.lastRun?.revision ?? null;
    facts.previousRevision = from;
    // How far the branch has come on this host: a pin goes back, the anchor never does, so a push must
    // still descend from the newest revision verified here (a pin to B must not let a push of C undo D).
    const anchor = state.anchor ?? from;
    // Kept from now on: a pin's run never moves it, and a state written before anchors were must not
    // let the pinned revision become the point a later push is checked against.
    if (anchor) state.anchor = anchor;
    // The history says the anchor as the state file has it (what the next run checks against): the tip
    // verified by a run that ends before it writes the state is not one.
    facts.anchor = state.anchor;
    const save = async (options?: { durable: boolean }) => {
      await writeState(opts.stateDir, state, options);
      facts.anchor = state.anchor;
    };
    const fetched = await fetchSource(opts, warnings);
    // Known before it is verified: a refused revision is recorded with it.
    facts.revision = opts.preview ?? opts.pin?.revision ?? fetched.tip;
    if (!opts.preview) opts.onRevision?.(facts.revision);
    const under = rooted(opts.root);
    const { verify } = opts.manifest.repo;
    let revision = fetched.tip;
    let moved: Descent = "same";
    // The revision a pin held until a newer verified tip replaced it (held in its turn, or deployed by unpin).
    let superseded: RunReport["superseded"];
    const replaced = (by: string) => {
      const was = state.pinned?.newestRevision;
      if (was && was !== by && was !== state.pinned?.revision) superseded = { revision: was, by };
    };
    if (opts.preview) {
      // A pull request's head, only ever planned in the dry context: not verified, never applied.
      revision = opts.preview;
    } else if (opts.pin) {
      // Going back on purpose: the revision itself is verified, never checked for descent.
      await verifyRevision(fetched.repo, verify, under, { from: opts.pin.revision, to: opts.pin.revision });
      revision = opts.pin.revision;
    } else {
      const pinned = opts.unpin ? undefined : state.pinned;
      try {
        // Before anything of the revision is used, its own manifest included.
        moved = await verifyRevision(fetched.repo, verify, under, {
          from: anchor,
          to: fetched.tip,
          acceptRewrite: opts.acceptRewrite,
        });
        state.anchor = fetched.tip;
        if (pinned || opts.unpin) replaced(fetched.tip);
        if (pinned) pinned.newestRevision = fetched.tip;
      } catch (err) {
        // A pinned host keeps running its pin when the tip is refused: that is what a pin is for.
        if (!pinned || !(err instanceof AgentError)) throw err;
        warnings.push(
          `the branch's tip ${fetched.tip.slice(0, 12)} is refused (${err.code}: ${err.message}); the pinned revision runs`,
        );
      }
      if (pinned) {
        // The pinned revision is verified again at every run (a key revoked since is a key revoked now). The
        // run is about it from here: refused, it is its commit that says so, not the tip's, which passed.
        facts.revision = pinned.revision;
        opts.onRevision?.(pinned.revision);
        await verifyRevision(fetched.repo, verify, under, { from: pinned.revision, to: pinned.revision });
        revision = pinned.revision;
        warnings.push(
          `pinned at ${pinned.revision.slice(0, 12)} by ${pinned.by} until ${pinned.until} (${pinned.reason})${pinned.newestRevision ? `: ${pinned.newestRevision.slice(0, 12)} is remembered for unpin` : ""}`,
        );
      }
    }
    if (opts.unpin) delete state.pinned;
    facts.verified = verify.mode !== "off";
    const rewrittenFrom = moved === "rewritten" ? anchor : null;
    facts.revision = revision;
    const source = await sourceAt(fetched, state, revision);
    if (rewrittenFrom) {
      warnings.push(
        `history rewritten: ${source.revision.slice(0, 12)} does not descend from ${rewrittenFrom.slice(0, 12)}, the newest revision verified on this host (${opts.acceptRewrite ? "accepted by the operator" : "deployed because repo.verify is off"})`,
      );
    }
    const { suspended } = state;
    if (suspended && !opts.dryRun) {
      // Verified and remembered; deployed on resume.
      state.suspended = { ...suspended, newestRevision: source.revision };
      await save();
      const durationMs = Date.now() - started;
      opts.log.info(
        { revision: source.revision, since: suspended.since, reason: suspended.reason },
        "suspended: nothing deployed; the newest revision is remembered for resume",
      );
      const report: RunReport = {
        schema: "deploy-agent/run@1",
        host: opts.manifest.host,
        dryRun: false,
        revision: source.revision,
        previousHead: source.previousHead,
        result: "suspended",
        pinned: state.pinned ?? null,
        rewrittenFrom,
        ...(superseded ? { superseded } : {}),
        suspended: { reason: suspended.reason, since: suspended.since },
        pendingRestart: [],
        warnings,
        steps: [],
        durationMs,
      };
      await remember({ report }, true);
      return report;
    }
    if (suspended)
      warnings.push(
        `host suspended since ${suspended.since} (${suspended.reason}): a run deploys nothing until resume`,
      );
    const { manifest, pendingRestart, notes, sha256 } = opts.manifestPath
      ? await manifestAt(source.snapshot, opts.manifestPath, opts.manifest, opts.load ?? {}, opts.overrides)
      : { manifest: opts.manifest, pendingRestart: [] as string[], notes: [] as string[], sha256: undefined };
    if (opts.pin) {
      // The revision's own repo settings (verify among them) would be the host's after a restart, since the
      // clone then holds its manifest: a pin must not weaken how the host verifies.
      if (pendingRestart.includes("repo")) {
        throw new AgentError(
          "PIN_REFUSED",
          `the manifest at ${opts.pin.revision.slice(0, 12)} has other repo settings (repo.verify among them) than this host runs with`,
          { hint: "pin a revision whose manifest has the same repo section, or push a fix instead" },
        );
      }
      // The pin is recorded before any step runs: a kill -9 mid-run converges to it. Whatever the run's
      // result, it holds: said, so that a failed pin is not taken for no pin. The branch's newest revision
      // verified here (the one the host ran, unless a pin held it already) is held from now on, and its
      // commit is told so: its "deployed" is no longer what the host runs.
      const held = state.pinned?.newestRevision ?? state.anchor;
      state.pinned = { ...opts.pin, ...(held && held !== opts.pin.revision ? { newestRevision: held } : {}) };
      warnings.push(
        `pinned at ${opts.pin.revision.slice(0, 12)} until ${opts.pin.until}, whatever this run's result: pushes are held; deploy-agent unpin returns to the branch's tip`,
      );
      if (!opts.dryRun) {
        await save();
        facts.pin = "set";
      }
    } else if (opts.unpin && !opts.dryRun) {
      await save();
      facts.pin = "cleared";
    }
    // Only now is the run about to deploy: a suspended host's run deploys nothing, and a refused pin is
    // not a deploy, so neither says "deploying".
    opts.onStart?.(source.revision);
    opts.onManifest?.(manifest);
    facts.bounds = manifest.history;
    // Said once per revision (its first run here), not at every poll; /status keeps the pending keys.
    if (state.lastRun?.revision !== source.revision) warnings.push(...notes);
    const actions = await planLazily(
      {
        steps: manifest.steps,
        revision: source.revision,
        state,
        changes: source.changes,
        options: { all: opts.all, only: opts.only, force: opts.force ?? [] },
      },
      source.snapshot.paths,
    );

    const steps: StepReport[] = [];
    for (const action of actions) {
      if (!action.run) {
        if (action.reason === "NoRelevantChanges" && !opts.dryRun)
          recordUpToDate(state, action.step.name, source.revision);
        steps.push(skipped(action));
        continue;
      }
      if (opts.stop?.aborted) {
        steps.push(skipped(action, "Stopped", "skipped: the agent is shutting down"));
        continue;
      }
      // Said as it was: a failure is clean, a cut-off attempt (kill, power loss) may have left work half done.
      const lastAttempt =
        state.steps[action.step.name]?.lastResult?.outcome === "failed"
          ? "the last attempt failed"
          : "the last attempt did not finish";
      if (!opts.dryRun) {
        recordAttempt(state, action.step.name, source.revision);
        await save({ durable: false });
      }
      const report = await applyAction(opts, manifest, action, source.snapshot, lastAttempt);
      steps.push(report);
      if (!opts.dryRun) {
        recordResult(state, action.step.name, {
          outcome: report.outcome === "succeeded" ? "succeeded" : "failed",
          revision: source.revision,
          // Flux-style reason for people; the error's stable code apart, for machines.
          reason: report.outcome === "succeeded" ? "Succeeded" : "StepFailed",
          ...(report.error ? { code: report.error.code } : {}),
          message: report.error?.message ?? action.message,
          at: new Date().toISOString(),
          durationMs: report.durationMs,
          items: report.items,
        });
        await save();
      }
    }

    const ran = steps.filter((s) => s.run);
    const outcome = ran.some((s) => s.outcome === "failed") ? "failed" : ran.length ? "succeeded" : "noop";
    const resetFailed = opts.dryRun
      ? undefined
      : await syncWorkTree(source, warnings, opts.log, outcome === "failed");
    const result: RunReport["result"] =
      !opts.dryRun || outcome !== "succeeded"
        ? outcome
        : ran.some((s) => s.outcome === "unknown")
          ? "undetermined"
          : "planned";
    const durationMs = Date.now() - started;
    if (!opts.dryRun) {
      state.lastRun = {
        revision: source.revision,
        result: outcome,
        at: new Date().toISOString(),
        durationMs,
        ...(sha256 ? { manifestSha256: sha256 } : {}),
      };
      await save();
    }
    for (const w of warnings) opts.log.warn(w);
    // A run with nothing to do is routine (every poll, every unrelated push): debug, not info.
    opts.log[result === "noop" ? "debug" : "info"](
      { revision: source.revision, result, durationMs, dryRun: opts.dryRun },
      "run finished",
    );
    const report: RunReport = {
      schema: "deploy-agent/run@1",
      host: opts.manifest.host,
      dryRun: opts.dryRun,
      revision: source.revision,
      previousHead: source.previousHead,
      pinned: state.pinned ?? null,
      rewrittenFrom,
      ...(superseded ? { superseded } : {}),
      suspended: suspended ? { reason: suspended.reason, since: suspended.since } : null,
      pendingRestart,
      result,
      warnings,
      ...(resetFailed ? { resetFailed } : {}),
      steps,
      durationMs,
    };
    facts.applied = manifest.steps.every((s) => state.steps[s.name]?.lastAppliedRevision === source.revision);
    await remember({ report }, true);
    return report;
  } catch (error) {
    await remember({ error }, true);
    throw error;
  } finally {
    await lock?.release();
  }
}
