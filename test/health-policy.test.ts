import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isConfigInvalid } from "../src/core/errors.js";
import { type HealthInput, healthOf, TASK_GRACE_MS, taskBudgetMs } from "../src/server/health.js";

/** The health policy, rule by rule: what turns /healthz 503 and the reason it gives. */

const healthy: HealthInput = {
  running: null,
  lastError: null,
  failuresInRow: 0,
  unhealthyAfterFailures: 3,
  lockWaitMs: 120_000,
};
const error = (code: string) => ({ ...healthy, lastError: { code, message: `${code} happened` } });

describe("health policy", () => {
  it("nothing wrong: healthy, without a reason", () => {
    assert.deepEqual(healthOf(healthy), { ok: true });
  });

  it("a task past its budget holds every deploy behind it: unhealthy, the task and its age named", () => {
    const deploy = { task: "deploy" as const, runningMs: 61_000, budgetMs: 60_000 };
    assert.deepEqual(healthOf({ ...healthy, running: deploy }), {
      ok: false,
      reason: "a deploy has been running for 61s",
    });
    assert.deepEqual(healthOf({ ...healthy, running: { ...deploy, task: "job:livekit-restart" } }), {
      ok: false,
      reason: "the job:livekit-restart task has been running for 61s",
    });
    assert.deepEqual(
      healthOf({ ...healthy, running: { ...deploy, runningMs: 60_000 } }),
      { ok: true },
      "at the budget",
    );
  });

  it("the lock was not free within the wait (LOCKED): the wait named", () => {
    assert.deepEqual(healthOf(error("LOCKED")), {
      ok: false,
      reason: "the deploy lock was not free within 120 s: LOCKED happened",
    });
  });

  it("the lock cannot be taken at all (STATE_UNSAFE, LOCK_FAILED)", () => {
    for (const code of ["STATE_UNSAFE", "LOCK_FAILED"])
      assert.deepEqual(healthOf(error(code)), {
        ok: false,
        reason: `the deploy lock cannot be taken: ${code} happened`,
      });
  });

  it("the clone is unusable (REPO_INVALID)", () => {
    assert.deepEqual(healthOf(error("REPO_INVALID")), {
      ok: false,
      reason: "repository unusable: REPO_INVALID happened",
    });
  });

  it("the configuration is invalid: every code the table flags, and only those", () => {
    for (const code of ["CONFIG_INVALID", "ENV_MISSING"]) {
      assert.equal(isConfigInvalid(code), true, code);
      assert.deepEqual(healthOf(error(code)), {
        ok: false,
        reason: `configuration invalid; nothing deployed until it is fixed: ${code} happened`,
      });
    }
    for (const code of ["FETCH_FAILED", "UNVERIFIED", "USAGE", "__proto__", "toString", "NOT_A_CODE"]) {
      assert.equal(isConfigInvalid(code), false, code);
    }
    assert.deepEqual(
      healthOf(error("FETCH_FAILED")),
      { ok: true },
      "one error before the steps is not yet unhealthy",
    );
  });

  it("the last unhealthyAfterFailures runs failed, and not one fewer", () => {
    assert.deepEqual(healthOf({ ...healthy, failuresInRow: 2 }), { ok: true });
    assert.deepEqual(healthOf({ ...healthy, failuresInRow: 3 }), {
      ok: false,
      reason: "the last 3 deploy runs failed",
    });
  });

  it("the first rule that applies wins: a stuck task before the lock, the lock before the failures", () => {
    const all = {
      ...error("LOCKED"),
      failuresInRow: 9,
      running: { task: "drift" as const, runningMs: 10_000, budgetMs: 1000 },
    };
    assert.match((healthOf(all) as { reason: string }).reason, /^the drift task has been running/);
    assert.match(
      (healthOf({ ...all, running: null }) as { reason: string }).reason,
      /^the deploy lock was not free/,
    );
  });

  it("a task's budget: a host job its timeout, anything else the steps' timeouts, each plus the grace", () => {
    const jobs = (command: string) => (command === "livekit-restart" ? 30 : undefined);
    assert.equal(taskBudgetMs("job:livekit-restart", [60, 120], jobs), 30_000 + TASK_GRACE_MS);
    assert.equal(taskBudgetMs("deploy", [60, 120], jobs), 180_000 + TASK_GRACE_MS);
    assert.equal(taskBudgetMs("drift", [60, 120], jobs), 180_000 + TASK_GRACE_MS);
    assert.equal(taskBudgetMs("preview:7", [], jobs), TASK_GRACE_MS);
    assert.equal(
      taskBudgetMs("job:unknown", [60], jobs),
      60_000 + TASK_GRACE_MS,
      "an unknown job: the steps'",
    );
  });
});
