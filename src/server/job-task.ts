import type { Logger } from "pino";
import { asAgentError, logFields } from "../core/errors.js";
import { jobConfig, type RegisteredJob } from "../jobs/index.js";
import type { hostEvent } from "../notify/events.js";
import { createContext } from "../steps/context.js";
import type { AgentMetrics } from "./metrics.js";
import type { LiveState } from "./status.js";

/**
 * A host job that watches (a call-aware restart, say) as a task of the runner, so never during a deploy: reads
 * live.manifest for its configuration, writes its result to live.jobs, its gauge and, when it acted, a notice.
 */

export interface JobTaskDeps {
  live: LiveState;
  root: string;
  dryRun: boolean;
  log: Logger;
  metrics: Pick<AgentMetrics, "jobGauge">;
  publish: (fields: Parameters<typeof hostEvent>[1]) => void;
  stop: AbortSignal;
}

export async function runJob(deps: JobTaskDeps, job: RegisteredJob): Promise<void> {
  const { live } = deps;
  const config = jobConfig(live.manifest, job);
  if (config === undefined || deps.stop.aborted) return;
  const jobLog = deps.log.child({ job: job.command });
  try {
    const ctx = createContext({
      dryRun: deps.dryRun,
      root: deps.root,
      log: jobLog,
      signal: AbortSignal.timeout(job.timeoutSeconds * 1000),
      commands: live.manifest.commands,
      record: () => {},
    });
    const result = await job.run(config, { ...ctx, force: false });
    if (result.gauge !== undefined) deps.metrics.jobGauge(job.command, result.gauge);
    live.jobs[job.command] = {
      message: result.message,
      ...(result.gauge !== undefined ? { gauge: result.gauge } : {}),
      at: new Date().toISOString(),
    };
    jobLog[result.acted ? "info" : "debug"]({ ...result }, result.message);
    if (result.acted)
      deps.publish({ event: "job.done", revision: null, step: job.command, notes: [result.message] });
  } catch (err) {
    jobLog.error(logFields(asAgentError(err)), `${job.command} failed`);
  }
}
