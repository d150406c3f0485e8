import { JOBS, jobConfig, type RegisteredJob } from "../jobs/index.js";
import type { Manifest } from "../manifest/schema.js";
import { DEPLOY, type Runner, type Task } from "./runner.js";

/**
 * The daemon's timers: the fallback poll, the drift check and each watching host job ask the runner for
 * their task at the intervals of the manifest in force (a pushed interval applies from the run that
 * applied it).
 */

export const jobTask = (job: RegisteredJob): Task => `job:${job.command}`;

const watchEvery = (m: Manifest, job: RegisteredJob) => {
  const config = jobConfig(m, job);
  return config === undefined ? 0 : job.watchSeconds(config);
};

/** What the timers depend on: a manifest with the same timing keeps them running as they are. */
export const timing = (m: Manifest) =>
  [m.webhook.pollIntervalSeconds, m.drift.intervalSeconds, ...JOBS.map((job) => watchEvery(m, job))].join(
    "/",
  );

export interface Schedule {
  /** (Re)starts every timer from the manifest's intervals. */
  start(m: Manifest): void;
  stop(): void;
}

export function createSchedule(runner: () => Runner): Schedule {
  const timers: NodeJS.Timeout[] = [];
  const every = (seconds: number, task: Task, trigger: Parameters<Runner["request"]>[1]) => {
    if (seconds <= 0) return;
    const timer = setInterval(() => runner().request(task, trigger), seconds * 1000);
    timer.unref();
    timers.push(timer);
  };
  const stop = () => {
    for (const t of timers.splice(0)) clearInterval(t);
  };
  return {
    start(m) {
      stop();
      every(m.drift.intervalSeconds, "drift", { kind: "interval" });
      every(m.webhook.pollIntervalSeconds, DEPLOY, { kind: "poll" });
      for (const job of JOBS) every(watchEvery(m, job), jobTask(job), { kind: "interval" });
    },
    stop,
  };
}
