import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../src/core/log.js";
import { createRunner, DEPLOY, MAX_REASONS, reasonOf, type Trigger } from "../src/server/runner.js";

/** The one runner: one task at a time, coalescing per task, deploys first, bounded whatever arrives. */

const push = (delivery: string): Trigger => ({ kind: "push", after: delivery, delivery });

function recording(ms = 20) {
  const log: string[] = [];
  let active = 0;
  let overlap = false;
  const handler = (task: string) => async (triggers: Trigger[], count: number) => {
    const reasons = triggers.map(reasonOf);
    active++;
    if (active > 1) overlap = true;
    log.push(`${task} start (${count}: ${reasons.join(",")})`);
    await sleep(ms);
    log.push(`${task} end`);
    active--;
  };
  return { log, handler, overlapped: () => overlap };
}

describe("runner", () => {
  it("never runs two tasks at once; a deploy asked during a drift check waits for it, then goes before the other waiting", async () => {
    const r = recording();
    const runner = createRunner((task) => r.handler(task), silentLogger());
    runner.request("drift", { kind: "interval" });
    runner.request("job:livekit-restart", { kind: "interval" });
    runner.request(DEPLOY, push("a"));
    runner.request(DEPLOY, push("b"));
    const during = runner.state();
    assert.equal(during.running?.task, "drift");
    assert.deepEqual(
      during.waiting.map((w) => w.task),
      ["job:livekit-restart", DEPLOY],
    );
    await runner.idle();
    assert.equal(r.overlapped(), false);
    assert.deepEqual(r.log, [
      "drift start (1: interval)",
      "drift end",
      "deploy start (2: push b (delivery b),push a (delivery a))",
      "deploy end",
      "job:livekit-restart start (1: interval)",
      "job:livekit-restart end",
    ]);
    assert.deepEqual(runner.state().started, { drift: 1, deploy: 1, "job:livekit-restart": 1 });
  });

  it("10,000 requests during a run cost one waiting entry with at most MAX_REASONS reasons", async () => {
    const r = recording(50);
    const runner = createRunner((task) => r.handler(task), silentLogger());
    runner.request(DEPLOY, { kind: "poll" });
    for (let i = 0; i < 10_000; i++) runner.request(DEPLOY, push(`${i}`));
    for (let i = 0; i < 10_000; i++)
      runner.request("drift", { kind: "retry", after: i % 2 ? "LOCKED" : "FETCH_FAILED" });
    const s = runner.state();
    assert.equal(s.waiting.length, 2);
    assert.equal(s.waiting[0]?.requests, 10_000);
    assert.equal(s.waiting[0]?.reasons.length, MAX_REASONS);
    assert.equal(s.waiting[0]?.reasons[0], "push 9999 (delivery 9999)", "newest first");
    assert.deepEqual(
      s.waiting[1]?.reasons,
      ["retry after LOCKED", "retry after FETCH_FAILED"],
      "the same reason kept once",
    );
    await runner.idle();
    assert.equal(r.log.filter((l) => l.startsWith("deploy start")).length, 2);
  });

  it("a task that throws does not stop the runner; close drops the waiting and waits for the running", async () => {
    const order: string[] = [];
    const runner = createRunner(
      (task) =>
        task === "job:bad"
          ? async () => {
              throw new Error("boom");
            }
          : async () => {
              await sleep(30);
              order.push(task);
            },
      silentLogger(),
    );
    runner.request("job:bad", { kind: "interval" });
    runner.request(DEPLOY, { kind: "poll" });
    await runner.idle();
    assert.deepEqual(order, [DEPLOY]);
    runner.request(DEPLOY, { kind: "poll" });
    runner.request("drift", { kind: "interval" });
    await runner.close();
    assert.deepEqual(
      order,
      [DEPLOY, DEPLOY],
      "the running deploy finished; the waiting drift check was dropped",
    );
    runner.request(DEPLOY, { kind: "poll" });
    assert.equal(runner.state().waiting.length, 0, "closed: refused");
  });
  it("a task's age is on the monotonic clock: a wall clock set back a day neither hides a stuck task nor resets it", async () => {
    let mono = 1_000;
    let finish = () => {};
    const runner = createRunner(
      () => () => new Promise<void>((done) => (finish = done)),
      silentLogger(),
      () => mono,
    );
    assert.equal(runner.runningMs(), null, "nothing runs yet");
    runner.request(DEPLOY, push("a"));
    mono += 600_000;
    mock.timers.enable({ apis: ["Date"], now: Date.now() - 86_400_000 });
    try {
      assert.equal(runner.runningMs(), 600_000);
    } finally {
      mock.timers.reset();
    }
    finish();
    await runner.idle();
    assert.equal(runner.runningMs(), null, "nothing runs any more");
  });
});
