import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { HostJob } from "../jobs/types.js";
import type { RunReport } from "../pipeline.js";

/** The agent's Prometheus metrics, on a registry of its own (prom-client). */
export interface AgentMetrics {
  registry: Registry;
  delivery(outcome: string): void;
  run(report: RunReport): void;
  /** A notification's fate, by target kind. */
  notified(target: string, result: "sent" | "failed" | "dropped"): void;
  /** A step's drift: 1 drifted, 0 in sync (no sample while it cannot be told). */
  drift(step: string, state: "in-sync" | "drifted" | "unknown"): void;
  /** A run that ended before its steps, with its error code. */
  runError(code: string): void;
  /** Sets the gauge a host job declares (e.g. when LiveKit's pending restart was flagged). */
  jobGauge(command: string, value: number): void;
}

/** `queueDepth` is read at every scrape: runs in progress or pending, from the queue itself. */
export function createMetrics(
  host: string,
  jobs: readonly Pick<HostJob, "command" | "gauge">[],
  queueDepth: () => number,
): AgentMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ host });
  collectDefaultMetrics({ register: registry, prefix: "deploy_agent_" });
  const deliveries = new Counter({
    name: "deploy_agent_webhook_deliveries_total",
    help: "Webhook deliveries by outcome (accepted, duplicate, ignored, unauthorized, bad_request, too_large, forbidden, unsupported)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const runs = new Counter({
    name: "deploy_agent_runs_total",
    help: "Deploy runs by result (succeeded, failed, noop, error)",
    labelNames: ["result"],
    registers: [registry],
  });
  const stepRuns = new Counter({
    name: "deploy_agent_step_runs_total",
    help: "Step runs by step and result",
    labelNames: ["step", "result"],
    registers: [registry],
  });
  const stepDuration = new Histogram({
    name: "deploy_agent_step_duration_seconds",
    help: "Duration of step runs",
    labelNames: ["step"],
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
    registers: [registry],
  });
  const stepItems = new Counter({
    name: "deploy_agent_step_items_total",
    help: "Per-file (per-target, per-connection) outcomes of step runs",
    labelNames: ["step", "outcome"],
    registers: [registry],
  });
  const lastSuccess = new Gauge({
    name: "deploy_agent_last_success_timestamp_seconds",
    help: "When the last run that succeeded (or had nothing to do) finished",
    registers: [registry],
  });
  const deployed = new Gauge({
    name: "deploy_agent_deployed_commit_info",
    help: "The commit the last finished run deployed (value 1)",
    labelNames: ["revision"],
    registers: [registry],
  });
  new Gauge({
    name: "deploy_agent_queue_depth",
    help: "Deploy runs in progress or pending (0-2)",
    registers: [registry],
    collect() {
      this.set(queueDepth());
    },
  });
  const jobGauges = new Map(
    jobs.flatMap((job) =>
      job.gauge
        ? [[job.command, new Gauge({ name: job.gauge.name, help: job.gauge.help, registers: [registry] })]]
        : [],
    ),
  );
  const configValid = new Gauge({
    name: "deploy_agent_config_valid",
    help: "1 while the host manifest of the newest revision is valid; 0 while a pushed manifest is invalid (nothing is deployed)",
    registers: [registry],
  });
  configValid.set(1);
  const notifications = new Counter({
    name: "deploy_agent_notifications_total",
    help: "Notifications by target kind (gitea-status, webhook) and result (sent, failed, dropped)",
    labelNames: ["target", "result"],
    registers: [registry],
  });
  const driftGauge = new Gauge({
    name: "deploy_agent_drift",
    help: "1 while what is live differs from git for the step, 0 while in sync",
    labelNames: ["step"],
    registers: [registry],
  });
  const suspendedSince = new Gauge({
    name: "deploy_agent_suspended_since_timestamp_seconds",
    help: "When the host was suspended (deploy-agent suspend); 0 while it deploys",
    registers: [registry],
  });
  const lockBlocked = new Gauge({
    name: "deploy_agent_lock_blocked",
    help: "1 while the last run could not get the deploy lock within webhook.lockWaitSeconds (LOCKED)",
    registers: [registry],
  });
  const unverified = new Gauge({
    name: "deploy_agent_revision_unverified",
    help: "1 while the newest revision is refused because its commits are not signed by a trusted key",
    registers: [registry],
  });
  for (const outcome of ["accepted", "duplicate", "ignored", "unauthorized"]) deliveries.inc({ outcome }, 0);

  return {
    registry,
    delivery: (outcome) => deliveries.inc({ outcome }),
    run(report) {
      configValid.set(1);
      unverified.set(0);
      lockBlocked.set(0);
      suspendedSince.set(report.suspended ? Date.parse(report.suspended.since) / 1000 : 0);
      runs.inc({ result: report.result });
      for (const s of report.steps.filter((x) => x.run)) {
        stepRuns.inc({ step: s.name, result: s.outcome });
        stepDuration.observe({ step: s.name }, s.durationMs / 1000);
        for (const item of s.items) stepItems.inc({ step: s.name, outcome: item.outcome });
      }
      if (report.result !== "failed") lastSuccess.set(Date.now() / 1000);
      if (report.result !== "suspended") {
        deployed.reset();
        deployed.set({ revision: report.revision }, 1);
      }
    },
    runError(code) {
      runs.inc({ result: "error" });
      if (code === "CONFIG_INVALID" || code === "ENV_MISSING") configValid.set(0);
      if (code === "UNVERIFIED") unverified.set(1);
      lockBlocked.set(code === "LOCKED" ? 1 : 0);
    },
    jobGauge: (command, value) => jobGauges.get(command)?.set(value),
    notified: (target, result) => notifications.inc({ target, result }),
    drift(step, state) {
      if (state === "unknown") driftGauge.remove({ step });
      else driftGauge.set({ step }, state === "drifted" ? 1 : 0);
    },
  };
}
