import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { isConfigInvalid } from "../core/errors.js";
import type { RunReport } from "../deploy/run-report.js";
import type { HostJob } from "../jobs/types.js";
import type { NotifierStatus } from "../notify/notifier.js";

/** What the state file says of the host's pin and suspension. */
export interface HostMarks {
  pinnedUntil?: string | undefined;
  suspendedSince?: string | undefined;
}

/** The agent's Prometheus metrics, on a registry of its own (prom-client). */
export interface AgentMetrics {
  registry: Registry;
  /** A delivery's outcome, and which webhook secret signed it (none when the signature did not hold). */
  delivery(outcome: string, secret?: "current" | "next"): void;
  run(report: RunReport): void;
  /** A notification's fate, by target name. */
  notified(target: string, result: "sent" | "failed" | "dropped"): void;
  /** Where the notify gauges read the notifier's queue and last sends, at every scrape. */
  notifier(status: () => NotifierStatus): void;
  /**
   * Where the pin and suspension gauges read the host's state at every scrape: `deploy-agent pin` and
   * `suspend` are other processes, so a run of the daemon's own would come too late.
   */
  hostMarks(read: () => Promise<HostMarks>): void;
  /** A step's drift: 1 drifted, 0 in sync (no sample while it cannot be told). */
  drift(step: string, state: "in-sync" | "drifted" | "unknown"): void;
  /** A run that ended before its steps, with its error code. */
  runError(code: string): void;
  /** Sets the gauge a host job declares (e.g. when its deferred restart was flagged). */
  jobGauge(command: string, value: number): void;
  /** A connection closed by the listener's slot limit (src/server/connections.ts). */
  connection(event: "evicted" | "refused"): void;
  /** A pull request's preview (src/server/preview.ts), by what became of it. */
  preview(result: string): void;
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
    help: "Webhook deliveries (every POST) by outcome: accepted, duplicate, ignored_branch, ignored_event, bad_signature, bad_body, unknown_path, too_large, forbidden, unsupported, method_not_allowed, shutting_down; secret: which webhook secret signed it (current, or next during a rotation), absent when none did",
    labelNames: ["outcome", "secret"],
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
    help: "Notifications by target (its name; by default its kind: gitea-status, webhook, matrix) and result (sent, failed, dropped)",
    labelNames: ["target", "result"],
    registers: [registry],
  });
  let notifier: () => NotifierStatus = () => ({ queued: 0, targets: {} });
  new Gauge({
    name: "deploy_agent_notify_queue_length",
    help: "Notifications waiting to be sent (at most notify.queueLength)",
    registers: [registry],
    collect() {
      this.set(notifier().queued);
    },
  });
  new Gauge({
    name: "deploy_agent_notify_last_success_timestamp_seconds",
    help: "When a notification last reached the target (no sample before the first)",
    labelNames: ["target"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [target, t] of Object.entries(notifier().targets)) {
        if (t.lastSuccessAt) this.set({ target }, Date.parse(t.lastSuccessAt) / 1000);
      }
    },
  });
  const driftGauge = new Gauge({
    name: "deploy_agent_drift",
    help: "1 while what is live differs from git for the step, 0 while in sync",
    labelNames: ["step"],
    registers: [registry],
  });
  let marks: () => Promise<HostMarks> = async () => ({});
  const seconds = (at: string | undefined) => (at ? Date.parse(at) / 1000 : 0);
  new Gauge({
    name: "deploy_agent_pinned_until_timestamp_seconds",
    help: "While the host is pinned (deploy-agent pin): when the pin was meant to end; 0 while it is not pinned",
    registers: [registry],
    async collect() {
      this.set(seconds((await marks()).pinnedUntil));
    },
  });
  new Gauge({
    name: "deploy_agent_suspended_since_timestamp_seconds",
    help: "When the host was suspended (deploy-agent suspend); 0 while it deploys",
    registers: [registry],
    async collect() {
      this.set(seconds((await marks()).suspendedSince));
    },
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
  const connectionsEvicted = new Counter({
    name: "deploy_agent_connections_evicted_total",
    help: "Connections without a request (slow headers, idle keep-alive) closed to make room for a new one",
    registers: [registry],
  });
  const connectionsRefused = new Counter({
    name: "deploy_agent_connections_refused_total",
    help: "Connections closed at once: a request with a body while maxConnections requests were in progress, or a new connection beyond 4 x maxConnections while every other one held a request",
    registers: [registry],
  });
  const rewritten = new Gauge({
    name: "deploy_agent_history_rewritten",
    help: "1 while the newest revision is refused because it does not descend from the last one run (repo.verify on)",
    registers: [registry],
  });
  const previews = new Counter({
    name: "deploy_agent_previews_total",
    help: "Pull request previews by result: queued, coalesced (a newer head of a waiting one), dropped (webhook.previews.maxPending waiting), success, failure, error (not posted or not planned), preempted (a deploy came first; it runs again after)",
    labelNames: ["result"],
    registers: [registry],
  });
  for (const outcome of ["accepted", "duplicate", "ignored_branch", "ignored_event", "bad_body"])
    deliveries.inc({ outcome, secret: "current" }, 0);
  deliveries.inc({ outcome: "bad_signature" }, 0);

  return {
    registry,
    hostMarks(read) {
      marks = read;
    },
    delivery: (outcome, secret) => deliveries.inc(secret ? { outcome, secret } : { outcome }),
    run(report) {
      configValid.set(1);
      unverified.set(0);
      rewritten.set(0);
      lockBlocked.set(0);
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
      if (isConfigInvalid(code)) configValid.set(0);
      if (code === "UNVERIFIED") unverified.set(1);
      if (code === "HISTORY_REWRITTEN") rewritten.set(1);
      lockBlocked.set(code === "LOCKED" ? 1 : 0);
    },
    jobGauge: (command, value) => jobGauges.get(command)?.set(value),
    preview: (result) => previews.inc({ result }),
    connection: (event) => (event === "evicted" ? connectionsEvicted : connectionsRefused).inc(),
    notified: (target, result) => notifications.inc({ target, result }),
    notifier: (status) => {
      notifier = status;
    },
    drift(step, state) {
      if (state === "unknown") driftGauge.remove({ step });
      else driftGauge.set({ step }, state === "drifted" ? 1 : 0);
    },
  };
}
