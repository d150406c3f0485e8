import { isConfigInvalid } from "../core/errors.js";
import { DEPLOY, type Task } from "./runner.js";

/**
 * The health policy: when /healthz answers 503 and why (also /status's `health`). Pure: what it reads is
 * passed in, the running task's age too. The rules, first that applies wins:
 * 1. a task of the runner has run longer than its budget (it holds every deploy behind it);
 * 2. the last run could not take the deploy lock within the wait (LOCKED);
 * 3. the deploy lock cannot be taken at all (STATE_UNSAFE, LOCK_FAILED);
 * 4. the clone is unusable (REPO_INVALID);
 * 5. the configuration is invalid (a code flagged configInvalid in core/errors.ts);
 * 6. the last unhealthyAfterFailures runs failed.
 * A suspended or pinned host, drift and a failed notice are healthy: each has its own alert.
 */

export type Health = { ok: true } | { ok: false; reason: string };

export interface HealthInput {
  /** The runner's running task, how long it has run (monotonic, see Runner.runningMs) and may take. */
  running: { task: Task; runningMs: number; budgetMs: number } | null;
  /** The error that ended the last run before its steps (null after a run that got to them). */
  lastError: { code: string; message: string } | null;
  /** Runs in a row that failed or ended in an error. */
  failuresInRow: number;
  unhealthyAfterFailures: number;
  /** How long a run waits for the deploy lock. */
  lockWaitMs: number;
}

/** What a task may take beyond its own timeouts before it counts as stuck. */
export const TASK_GRACE_MS = 5 * 60_000;

/**
 * How long a task may run: a host job its timeout, anything else (a deploy, a drift check, a preview) the
 * sum of the steps' timeouts; each plus TASK_GRACE_MS.
 */
export function taskBudgetMs(
  task: Task,
  stepTimeoutsSeconds: readonly number[],
  jobTimeoutSeconds: (command: string) => number | undefined,
): number {
  const job = task.startsWith("job:") ? jobTimeoutSeconds(task.slice("job:".length)) : undefined;
  if (job !== undefined) return job * 1000 + TASK_GRACE_MS;
  return stepTimeoutsSeconds.reduce((sum, s) => sum + s * 1000, 0) + TASK_GRACE_MS;
}

export function healthOf(input: HealthInput): Health {
  const { running, lastError } = input;
  if (running && running.runningMs > running.budgetMs) {
    const what = running.task === DEPLOY ? "a deploy" : `the ${running.task} task`;
    return { ok: false, reason: `${what} has been running for ${Math.round(running.runningMs / 1000)}s` };
  }
  if (lastError?.code === "LOCKED")
    return {
      ok: false,
      reason: `the deploy lock was not free within ${input.lockWaitMs / 1000} s: ${lastError.message}`,
    };
  if (lastError?.code === "STATE_UNSAFE" || lastError?.code === "LOCK_FAILED")
    return { ok: false, reason: `the deploy lock cannot be taken: ${lastError.message}` };
  if (lastError?.code === "REPO_INVALID")
    return { ok: false, reason: `repository unusable: ${lastError.message}` };
  if (lastError && isConfigInvalid(lastError.code))
    return {
      ok: false,
      reason: `configuration invalid; nothing deployed until it is fixed: ${lastError.message}`,
    };
  if (input.failuresInRow >= input.unhealthyAfterFailures)
    return { ok: false, reason: `the last ${input.failuresInRow} deploy runs failed` };
  return { ok: true };
}
