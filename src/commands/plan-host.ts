import path from "node:path";
import picomatch from "picomatch";
import { asAgentError } from "../core/errors.js";
import { diffSummary } from "../host/diff-summary.js";
import { RESTART_ONLY } from "../manifest/at-revision.js";
import type { Manifest } from "../manifest/schema.js";
import { type PlanReason, planLazily } from "../plan/plan.js";
import type { Snapshot } from "../source/snapshot.js";
import { emptyState } from "../state/state.js";
import { kindOf, type StepConfig, triggersOf } from "../steps/index.js";
import { tryPlanManifest } from "./plan-manifest.js";
import type { HostTools, PlanCheck } from "./plan-tool-run.js";
import { toolChecks } from "./plan-tools.js";

/**
 * One host's plan between two revisions, with no host: the manifest as `head` has it, each step's last
 * applied revision taken to be `base` (a step `base`'s manifest did not have is new), and every check that
 * needs nothing from the host. Reads git objects only; runs nothing but the checking tools (plan-tools.ts).
 */

/** Most files whose diffs one host's plan shows; the others are named. */
export const MAX_DIFFS_PER_HOST = 50;

export interface FileDiff {
  path: string;
  change: "added" | "modified" | "deleted";
  added: number;
  removed: number;
  patch?: string | undefined;
}

export interface StepPlan {
  name: string;
  kind: string;
  run: boolean;
  reason: PlanReason | "New";
  message: string;
  work: string[];
  files: string[];
  diffs: FileDiff[];
  /** Files whose diffs were left out (MAX_DIFFS_PER_HOST). */
  diffsLeftOut: string[];
}

export interface HostPlan {
  host: string;
  manifestPath: string;
  /** The manifest's own change, when it has one. */
  manifestDiff: FileDiff | null;
  pendingRestart: string[];
  placeholders: string[];
  steps: StepPlan[];
  checks: PlanCheck[];
  notes: string[];
  ok: boolean;
}

export interface Revisions {
  /** null: an empty base (a branch that did not exist). */
  base: Snapshot | null;
  head: Snapshot;
  /** Paths changed from base to head (every path of head for an empty base). */
  changed: readonly string[];
}

const short = (rev: string) => rev.slice(0, 12);

/**
 * The name a manifest that names no valid host is reported under: its file's, every character a host name
 * cannot have shown as `_` (the name reaches a commit status's context). Only a file named as a host
 * (config/<host>.yaml, that host's own) gets a valid host's name; a second manifest of one host fails the
 * plan (plan.ts).
 */
export const fileHost = (file: string) => path.posix.basename(file, ".yaml").replace(/[^a-z0-9-]/g, "_");

async function readOrNull(snap: Snapshot | null, file: string): Promise<Buffer | null> {
  if (!snap || !(await snap.has(file))) return null;
  return snap.read(file).catch(() => null);
}

async function fileDiff(
  file: string,
  before: Buffer | null,
  after: Buffer | null,
  shown: (b: Buffer) => Buffer = (b) => b,
): Promise<FileDiff> {
  const summary = await diffSummary(file, before && shown(before), after ? shown(after) : Buffer.alloc(0));
  return {
    path: file,
    change: !before ? "added" : !after ? "deleted" : "modified",
    added: summary.added,
    removed: summary.removed,
    ...(summary.patch ? { patch: summary.patch } : {}),
  };
}

export async function planHost(manifestPath: string, revs: Revisions, tools: HostTools): Promise<HostPlan> {
  const { head, base } = revs;
  const checks: PlanCheck[] = [];
  const notes: string[] = [];
  const headText = await readOrNull(head, manifestPath);
  const baseText = await readOrNull(base, manifestPath);
  const manifestDiff =
    revs.changed.includes(manifestPath) && headText ? await fileDiff(manifestPath, baseText, headText) : null;
  const at = tryPlanManifest(headText?.toString("utf8") ?? "", `${manifestPath}@${short(head.revision)}`);
  const before = baseText && tryPlanManifest(baseText.toString("utf8"), manifestPath);
  const baseManifest = before?.ok ? before.value.manifest : null;
  const plan: HostPlan = {
    host: at.ok ? at.value.manifest.host : before?.ok ? before.value.manifest.host : fileHost(manifestPath),
    manifestPath,
    manifestDiff:
      !headText && baseText && revs.changed.includes(manifestPath)
        ? await fileDiff(manifestPath, baseText, null)
        : manifestDiff,
    pendingRestart: [],
    placeholders: at.ok ? at.value.placeholders : [],
    steps: [],
    checks,
    notes,
    ok: false,
  };
  if (!headText && baseText) {
    checks.push({
      name: "manifest",
      file: manifestPath,
      result: "failed",
      message: `deleted: the agent of ${plan.host} reads its manifest from this file (remove the agent from the host first)`,
    });
    return plan;
  }
  if (!at.ok) {
    checks.push({ name: "manifest", file: manifestPath, result: "failed", message: at.problem });
    return plan;
  }
  checks.push({ name: "manifest", file: manifestPath, result: "passed", message: "valid" });
  const manifest = at.value.manifest;
  if (at.value.placeholders.length) {
    notes.push(
      `${at.value.placeholders.join(", ")} come from the host's env file${at.value.envFile ? ` (${at.value.envFile})` : ""}: placeholders stood in for them`,
    );
  }
  if (!baseText) notes.push(`${manifestPath} is new: every step runs as on a host that never ran it`);
  else if (!baseManifest) notes.push(`${manifestPath} was not valid at the base: every step counts as new`);
  if (baseManifest) {
    plan.pendingRestart = Object.entries(RESTART_ONLY)
      .filter(([, get]) => JSON.stringify(get(manifest)) !== JSON.stringify(get(baseManifest)))
      .map(([key]) => key);
  }

  plan.steps = await planSteps(manifest, baseManifest, revs, notes);
  checks.push(...(await stepChecks(manifest, head)));
  checks.push(...(await toolChecks(manifest, head, tools)));
  plan.ok = !checks.some((c) => c.result === "failed");
  return plan;
}

async function planSteps(
  manifest: Manifest,
  baseManifest: Manifest | null,
  revs: Revisions,
  notes: string[],
): Promise<StepPlan[]> {
  const { head, base } = revs;
  const baseRev = base?.revision ?? "0".repeat(40);
  const baseSteps = new Map((baseManifest?.steps ?? []).map((s) => [s.name, s]));
  // What a host that ran `base` would have recorded: every step of base's manifest applied at base.
  const state = emptyState(manifest.host);
  for (const name of baseSteps.keys()) state.steps[name] = { lastAppliedRevision: baseRev, history: [] };
  const actions = await planLazily(
    {
      steps: manifest.steps,
      revision: head.revision,
      state,
      changes: new Map([[baseRev, [...revs.changed]]]),
      options: { all: false, only: [], force: [] },
    },
    head.paths,
  );
  let budget = MAX_DIFFS_PER_HOST;
  const out: StepPlan[] = [];
  for (const action of actions) {
    const { step } = action;
    const matches = picomatch(triggersOf(step), { dot: true });
    const changedHere = revs.changed.filter((p) => matches(p));
    const isNew = !baseSteps.has(step.name);
    const was = baseSteps.get(step.name);
    if (was && !action.run && JSON.stringify(was) !== JSON.stringify(step)) {
      notes.push(
        `step ${step.name}: its settings change in the manifest but none of its files do; a host applies them the next time its files change (or with deploy-agent run --all --step ${step.name})`,
      );
    }
    const diffs: FileDiff[] = [];
    const diffsLeftOut: string[] = [];
    if (action.run) {
      const shown = (b: Buffer) => kindOf(step).shown(step, b);
      for (const file of changedHere) {
        if (budget <= 0) {
          diffsLeftOut.push(file);
          continue;
        }
        budget--;
        diffs.push(await fileDiff(file, await readOrNull(base, file), await readOrNull(head, file), shown));
      }
    }
    out.push({
      name: step.name,
      kind: step.kind,
      run: action.run,
      reason: isNew ? "New" : action.reason,
      message: isNew
        ? `new in this change: runs on all ${action.files.length} file(s) it covers`
        : action.reason === "NoRelevantChanges"
          ? "none of its files change"
          : action.message,
      work: action.work,
      files: action.files,
      diffs,
      diffsLeftOut,
    });
  }
  return out;
}

/** Sources present and regular at head, then each kind's own checks over head's files. */
async function stepChecks(manifest: Manifest, head: Snapshot): Promise<PlanCheck[]> {
  const checks: PlanCheck[] = [];
  const tree = await head.paths();
  const repo = { paths: () => tree, read: (p: string) => head.read(p) };
  for (const step of manifest.steps) {
    const sources = kindOf(step).sources(step);
    for (const src of sources) {
      try {
        await head.read(src);
      } catch (err) {
        checks.push({
          name: `${step.name}: source`,
          file: src,
          result: "failed",
          message: asAgentError(err).message,
        });
      }
    }
    const problems = await kindOf(step)
      .check(step, repo)
      .catch((err: unknown) => [asAgentError(err).message]);
    const name = `${step.name}: ${checkName(step)}`;
    for (const problem of problems) {
      const first = problem.split(/[\s:]/)[0] ?? "";
      const file = tree.includes(first) ? first : (sources[0] ?? "");
      checks.push({ name, file, result: "failed", message: problem });
    }
    if (!problems.length && hasCheck(step))
      checks.push({
        name,
        file: sources.length > 3 ? `${sources.length} files` : sources.join(", "),
        result: "passed",
        message: "passed",
      });
  }
  return checks;
}

function hasCheck(step: StepConfig): boolean {
  return (
    step.kind === "hookshot" || step.kind === "draupnir-config" || (step.kind === "file" && !!step.check)
  );
}

function checkName(step: StepConfig): string {
  switch (step.kind) {
    case "hookshot":
      return "transforms compiled and run over their fixtures";
    case "draupnir-config":
      return "Draupnir's config parsed and checked";
    case "file":
      return `content check (${step.check ?? "none"})`;
    default:
      return `${step.kind} check`;
  }
}
