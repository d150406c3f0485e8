import { type State, unfinished } from "../state/state.js";
import { kindOf, matcherOf, type StepConfig } from "../steps/index.js";

/**
 * The planner: pure. Manifest steps × changed paths × per-step state → ordered actions, each with the
 * reason it runs or not and the files behind that reason. No fs, git or clock in here.
 */

export type PlanReason =
  | "NotSelected"
  | "Forced"
  | "NeverApplied"
  | "UnknownRevision"
  | "RetryAfterFailure"
  | "Changed"
  | "UpToDate"
  | "NoRelevantChanges";

export interface Action {
  step: StepConfig;
  run: boolean;
  reason: PlanReason;
  message: string;
  /** Repository files that triggered the step (or all it covers, when it runs for another reason). */
  files: string[];
  /** The step kind's description of the work these files cause. */
  work: string[];
  /** The last attempt did not finish: the step completes its follow-up actions even if nothing changed. */
  resume: boolean;
}

export interface PlanInput {
  steps: readonly StepConfig[];
  revision: string;
  /** Every file path at `revision`. */
  tree: readonly string[];
  state: State;
  /** Paths changed from each previously applied revision to `revision`; null: that revision is unknown. */
  changes: ReadonlyMap<string, readonly string[] | null>;
  /** `force`: steps that run whatever changed (self-healing drift). */
  options: { all: boolean; only: readonly string[]; force?: readonly string[] };
}

const short = (rev: string) => rev.slice(0, 12);

function listed(files: readonly string[], max = 5): string {
  const head = files.slice(0, max).join(", ");
  return files.length > max ? `${head} and ${files.length - max} more` : head;
}

/** Revisions the planner will ask `changes` about: every step's last applied revision. */
export function revisionsToDiff(state: State, revision: string): string[] {
  const revs = new Set<string>();
  for (const s of Object.values(state.steps)) {
    if (s.lastAppliedRevision && s.lastAppliedRevision !== revision) revs.add(s.lastAppliedRevision);
  }
  return [...revs];
}

export function plan(input: PlanInput): Action[] {
  return planOver(input, () => input.tree);
}

/**
 * `plan`, listing every file of the revision only when a step runs on all of its files (never applied,
 * --all, an unknown or failed revision): a push pays for what it changed, not for the repository's size.
 */
export async function planLazily(
  input: Omit<PlanInput, "tree">,
  paths: () => Promise<readonly string[]>,
): Promise<Action[]> {
  let needed = false;
  const actions = planOver(input, () => {
    needed = true;
    return [];
  });
  if (!needed) return actions;
  const tree = await paths();
  return planOver(input, () => tree);
}

function planOver(input: Omit<PlanInput, "tree">, tree: () => readonly string[]): Action[] {
  const { options, revision } = input;
  return input.steps.map((step): Action => {
    const matches = matcherOf(step);
    const covered = () => tree().filter((p) => matches(p));
    const resume = unfinished(input.state, step.name);
    const action = (run: boolean, reason: PlanReason, message: string, files: string[]): Action => ({
      step,
      run,
      reason,
      message,
      files,
      work: run ? kindOf(step).plan(step, { files, resume }) : [],
      resume: run && resume,
    });

    if (options.only.length && !options.only.includes(step.name)) {
      return action(false, "NotSelected", "not selected (--step)", []);
    }
    if (options.all) return action(true, "Forced", "forced (--all)", covered());
    if (options.force?.includes(step.name)) {
      return action(true, "Forced", "what is live drifted from git: re-applying (selfHeal)", covered());
    }

    const st = input.state.steps[step.name];
    const from = st?.lastAppliedRevision;
    const failed = st?.lastResult?.outcome === "failed";
    const retry = failed
      ? `; last attempt at ${short(st?.lastResult?.revision ?? "")} failed`
      : resume
        ? `; last attempt at ${short(st?.lastAttemptedRevision ?? "")} was interrupted`
        : "";
    if (!from) return action(true, "NeverApplied", `never applied on this host${retry}`, covered());

    if (from === revision) {
      return resume
        ? action(true, "RetryAfterFailure", `retrying${retry}`, covered())
        : action(false, "UpToDate", `already at ${short(revision)}`, []);
    }
    const changed = input.changes.get(from);
    if (changed === null || changed === undefined) {
      return action(
        true,
        "UnknownRevision",
        `applied revision ${short(from)} is not in the repository`,
        covered(),
      );
    }
    const files = changed.filter((p) => matches(p));
    if (files.length) return action(true, "Changed", `changed: ${listed(files)}${retry}`, files);
    if (resume) return action(true, "RetryAfterFailure", `retrying${retry}`, covered());
    return action(false, "NoRelevantChanges", `no relevant changes since ${short(from)}`, []);
  });
}
