import type { ErrorCode } from "../core/errors.js";
import type { Effect } from "../host/effects.js";
import type { PlanReason } from "../plan/plan.js";
import type { Pin, StepItem } from "../state/state.js";

/**
 * What a deploy run reports (`--json`, history, notices, metrics): its own module, so the layers that read a
 * report (notify, the run record, the server) need not import the pipeline that makes it.
 */

export interface StepReport {
  name: string;
  kind: string;
  run: boolean;
  reason: PlanReason | "Stopped" | "Suspended";
  message: string;
  files: string[];
  work: string[];
  /** A dry run's steps are "planned", or "unknown" when part of what they would do could not be determined. */
  outcome: "succeeded" | "failed" | "skipped" | "planned" | "unknown";
  error?: { code: ErrorCode; message: string; hint?: string | undefined } | undefined;
  items: StepItem[];
  effects: Effect[];
  durationMs: number;
}

export interface RunReport {
  schema: "deploy-agent/run@1";
  host: string;
  dryRun: boolean;
  revision: string;
  previousHead: string | null;
  /** Dry runs end "planned" or "undetermined" (a step could not tell what it would do), never "succeeded". */
  result: "succeeded" | "failed" | "noop" | "planned" | "undetermined" | "suspended";
  /** The host was suspended on purpose (deploy-agent suspend): since when and why. */
  suspended: { reason: string; since: string } | null;
  /** The host is pinned (deploy-agent pin): runs deploy this revision, whatever the tip. */
  pinned: Pin | null;
  /**
   * The revision a pin held (its newest) until this run found a newer tip, held in its turn or deployed by
   * unpin: it will never be deployed. Absent when none was replaced.
   */
  superseded?: { revision: string; by: string } | undefined;
  /** The last revision run before this one, when this one does not descend from it (a rewritten branch). */
  rewrittenFrom: string | null;
  /** Settings the revision's manifest changes that take effect only after a restart. */
  pendingRestart: string[];
  warnings: string[];
  /** The clone's work tree could not be reset to the revision after the steps (also among the warnings). */
  resetFailed?: { code: ErrorCode; message: string; hint: string } | undefined;
  steps: StepReport[];
  durationMs: number;
}
