import { AgentError, asAgentError, type ErrorCode, logFields } from "../core/errors.js";
import { follow } from "../core/with-timeout.js";
import type { Effect } from "../host/effects.js";
import type { Manifest } from "../manifest/schema.js";
import type { Action, PlanReason } from "../plan/plan.js";
import type { Snapshot } from "../source/snapshot.js";
import { recordAttempt, recordResult, recordUpToDate, type State, type StepItem } from "../state/state.js";
import { createStepContext } from "../steps/context.js";
import { kindOf } from "../steps/index.js";
import type { DeployOptions } from "./deploy-options.js";
import type { StepReport } from "./run-report.js";

/**
 * One step of a run: applied through its context under one signal (its timeout, or the agent having to stop
 * now), its result made a report only once apply has returned; or skipped, said why.
 */

export async function applyAction(
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

export function skipped(
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

/**
 * The planned actions in order. Each step's attempt is in the state before it runs (a kill mid-step resumes
 * it), its result after; once the agent has to stop, the rest are skipped and said so.
 */
export async function applyActions(
  opts: DeployOptions,
  manifest: Manifest,
  actions: Action[],
  source: { snapshot: Snapshot; revision: string },
  state: State,
  save: (options?: { durable: boolean }) => Promise<void>,
): Promise<StepReport[]> {
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
  return steps;
}
