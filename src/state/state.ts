import { mkdirSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import { writeFileAtomic } from "../host/atomic-write.js";

/**
 * Per-step deploy state, recorded the Flux way: `lastAttemptedRevision` when a step starts,
 * `lastAppliedRevision` only after it succeeded, and the last result with a short history.
 * The file is rewritten atomically after every step, so a crash leaves the last consistent picture.
 */

const itemSchema = z.strictObject({
  id: z.string(),
  outcome: z.enum(["changed", "unchanged", "failed", "skipped", "unknown"]),
  detail: z.string().optional(),
});

const resultSchema = z.strictObject({
  outcome: z.enum(["succeeded", "failed"]),
  revision: z.string(),
  /** Why, for people: Succeeded or StepFailed (as Flux's reasons). */
  reason: z.string(),
  /** The error's stable code (src/core/errors.ts) when it failed. */
  code: z.string().optional(),
  message: z.string(),
  at: z.string(),
  durationMs: z.number(),
  items: z.array(itemSchema).default([]),
});

export const stepStateSchema = z.strictObject({
  lastAttemptedRevision: z.string().optional(),
  /** When the last attempt started: recorded before the step's first effect. */
  lastAttemptedAt: z.string().optional(),
  lastAppliedRevision: z.string().optional(),
  lastResult: resultSchema.optional(),
  history: z.array(resultSchema).default([]),
});

const runSummarySchema = z.strictObject({
  revision: z.string(),
  result: z.enum(["succeeded", "failed", "noop"]),
  at: z.string(),
  durationMs: z.number(),
  /**
   * SHA-256 of the host manifest's path and text at `revision` (a manifest inside the clone): a start
   * compares the work tree's file with it, and reads git only when they differ.
   */
  manifestSha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});

export const stateSchema = z.strictObject({
  version: z.literal(1),
  host: z.string(),
  steps: z.record(z.string(), stepStateSchema),
  lastRun: runSummarySchema.optional(),
  /**
   * The newest revision of the branch verified here: a push must descend from it (repo.verify on). A pin
   * goes back without moving it, so a force push to a revision between the pin and it is still refused.
   */
  anchor: z.string().optional(),
  /**
   * Set by `deploy-agent pin`: runs deploy this revision whatever the tip (remembered in newestRevision)
   * until `unpin`. `until` is when the pin was meant to end (an alert fires after it), not an expiry.
   */
  pinned: z
    .strictObject({
      revision: z.string(),
      reason: z.string(),
      since: z.string(),
      until: z.string(),
      by: z.string(),
      newestRevision: z.string().optional(),
    })
    .optional(),
  /** Set by `deploy-agent suspend`: runs verify and remember the newest revision, and deploy nothing. */
  suspended: z
    .strictObject({ reason: z.string(), since: z.string(), newestRevision: z.string().optional() })
    .optional(),
});

export type State = z.infer<typeof stateSchema>;
export type StepState = z.infer<typeof stepStateSchema>;
export type StepResult = z.infer<typeof resultSchema>;
export type StepItem = z.infer<typeof itemSchema>;
export type RunSummary = z.infer<typeof runSummarySchema>;
export type Pin = NonNullable<State["pinned"]>;

const HISTORY_LENGTH = 10;
export const STATE_FILE = "state.json";

export function emptyState(host: string): State {
  return { version: 1, host, steps: {} };
}

/** A state directory that cannot be written (full disk, a directory where the file should be). */
export function stateWriteError(file: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  return new AgentError("STATE_WRITE_FAILED", `cannot write ${file}: ${code || (err as Error).message}`, {
    hint:
      code === "ENOSPC"
        ? "the disk is full: free space, then the next run retries"
        : `check ${path.dirname(file)} (a directory where a file belongs, permissions)`,
    cause: err,
  });
}

/**
 * `durable: false` for the intent written before a step: a killed agent must find it, and the page cache
 * keeps it for that; after a power loss the services start again anyway and read what the step wrote.
 */
export async function writeState(stateDir: string, state: State, options = { durable: true }): Promise<void> {
  const file = path.join(stateDir, STATE_FILE);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, redact(`${JSON.stringify(state, null, 2)}\n`), {
      mode: 0o600,
      durable: options.durable,
    });
  } catch (err) {
    throw stateWriteError(file, err);
  }
}

/** Records a finished step: the applied revision moves only on success. */
export function recordResult(state: State, step: string, result: StepResult): void {
  const prev = state.steps[step] ?? { history: [] };
  state.steps[step] = {
    ...prev,
    lastAttemptedRevision: result.revision,
    lastAppliedRevision: result.outcome === "succeeded" ? result.revision : prev.lastAppliedRevision,
    lastResult: result,
    history: [result, ...prev.history].slice(0, HISTORY_LENGTH),
  };
}

/** Records the intent to run a step, before its first effect. */
export function recordAttempt(state: State, step: string, revision: string): void {
  const prev = state.steps[step] ?? { history: [] };
  state.steps[step] = { ...prev, lastAttemptedRevision: revision, lastAttemptedAt: new Date().toISOString() };
}

/**
 * Whether the step's last attempt may have left work half done: it was cut off before its result was
 * recorded (kill, power loss), or it failed. Its retry then completes the follow-up actions (reload,
 * daemon-reload, restart, flag) even when the files are already equal.
 */
export function unfinished(state: State, step: string): boolean {
  const s = state.steps[step];
  if (s?.lastResult?.outcome === "failed") return true;
  if (!s?.lastAttemptedAt) return false;
  return !s.lastResult || s.lastResult.at < s.lastAttemptedAt;
}

/** A step none of whose files changed is as current as the new revision; its history is not touched. */
export function recordUpToDate(state: State, step: string, revision: string): void {
  const prev = state.steps[step];
  if (prev) state.steps[step] = { ...prev, lastAppliedRevision: revision };
}

/**
 * Steps the state knows that the manifest no longer has (removed or renamed): their state is kept, in case
 * the step comes back, and reported instead of silently dropped.
 */
export function orphanedSteps(steps: readonly { name: string }[], state: State) {
  const names = new Set(steps.map((s) => s.name));
  return Object.entries(state.steps)
    .filter(([name]) => !names.has(name))
    .map(([name, s]) => ({
      name,
      lastAppliedRevision: s.lastAppliedRevision ?? null,
      lastResult: s.lastResult ?? null,
    }));
}

/** Per step of the manifest, what the state says (null where it says nothing): for `status` and `/status`. */
export function stepStatuses(steps: readonly { name: string; kind: string }[], state: State) {
  return steps.map((step) => {
    const s = state.steps[step.name];
    return {
      name: step.name,
      kind: step.kind,
      lastAppliedRevision: s?.lastAppliedRevision ?? null,
      lastAttemptedRevision: s?.lastAttemptedRevision ?? null,
      lastResult: s?.lastResult ?? null,
    };
  });
}
