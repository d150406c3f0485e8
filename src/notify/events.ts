import type { RunReport } from "../deploy/run-report.js";
import { clip } from "./targets/text.js";

/**
 * What the agent tells the world (src/notify/notifier.ts sends it): one JSON document per event, the same
 * for every target. Texts in it have passed the redaction point; it never carries a secret.
 */
export interface DeployEvent {
  schema: "deploy-agent/event@1";
  event:
    | "run.started"
    | "run.succeeded"
    | "run.failed"
    | "run.error"
    | "run.held"
    | "run.superseded"
    | "step.rolled-back"
    | "job.done"
    | "drift.detected"
    | "history.rewritten"
    | "clone.reset-failed";
  host: string;
  revision: string | null;
  /** The commit's subject line, when known (at most SUBJECT_MAX characters). */
  subject?: string;
  /** The step (failed or rolled back), the job, or the drifted steps. */
  step?: string;
  error?: { code: string; message: string; hint?: string };
  /** Changes worth a line from the steps, e.g. "restart deferred until it is safe", "restarted <unit>". */
  notes?: string[];
  durationMs?: number;
  /** The agent's /status (manifest publicUrl). */
  url?: string;
  /** history.rewritten: the revision the host ran before one that does not descend from it. */
  previousRevision?: string;
  /**
   * The host is pinned (deploy-agent pin): the run deployed this revision, whatever the tip. For run.held,
   * the pin that holds the event's revision (the branch's tip) back.
   */
  pinned?: { revision: string; by: string; until: string; reason: string };
  /** run.superseded: the newer revision that replaced this held one (held in its turn, or deployed). */
  supersededBy?: string;
  /** How many times this failure happened since it was last sent. */
  repeats?: number;
  /** A run with nothing to do for the revision: only the commit status records it, no notice. */
  nothingToDo?: boolean;
  at: string;
}

/**
 * A commit subject is whatever its author wrote on one line, of any length: events carry at most this much
 * of it (redacted, then cut), so no target is sent, and no log line holds, megabytes of it.
 */
export const SUBJECT_MAX = 200;

type Base = Pick<DeployEvent, "host" | "revision" | "subject" | "url">;
type Fields = Omit<DeployEvent, "schema" | "host" | "at" | "url">;

/** What every event of a host carries: its name, the revision, and the link to its agent's /status. */
export function eventBase(
  manifest: { host: string; publicUrl?: string | undefined },
  revision: string | null,
  subject?: string | null,
): Base {
  return {
    host: manifest.host,
    revision,
    ...(subject ? { subject: clip(subject, SUBJECT_MAX) } : {}),
    ...(manifest.publicUrl ? { url: `${manifest.publicUrl.replace(/\/+$/, "")}/status` } : {}),
  };
}

/** One event of this host, stamped now. */
export function hostEvent(
  manifest: { host: string; publicUrl?: string | undefined },
  fields: Fields,
): DeployEvent {
  return {
    schema: "deploy-agent/event@1",
    ...eventBase(manifest, fields.revision),
    ...fields,
    at: new Date().toISOString(),
  };
}

/** An error as events carry it (the hint only when there is one). */
export function errorOf(e: {
  code: string;
  message: string;
  hint?: string | undefined;
}): DeployEvent["error"] {
  return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
}

/**
 * The events one finished run makes: its outcome, a rollback per step that put a file back, and a clone whose
 * work tree could not be reset.
 */
export function runEvents(report: RunReport, base: Base): DeployEvent[] {
  const at = new Date().toISOString();
  const events: DeployEvent[] = [];
  if (report.rewrittenFrom) {
    events.push({
      schema: "deploy-agent/event@1",
      event: "history.rewritten",
      ...base,
      previousRevision: report.rewrittenFrom,
      notes: [
        `${report.revision.slice(0, 12)} does not descend from ${report.rewrittenFrom.slice(0, 12)}, the newest revision verified here`,
      ],
      at,
    });
  }
  for (const s of report.steps) {
    if (s.effects.some((e) => e.type === "restore")) {
      events.push({
        schema: "deploy-agent/event@1",
        event: "step.rolled-back",
        ...base,
        step: s.name,
        ...(s.error ? { error: errorOf(s.error) } : {}),
        at,
      });
    }
  }
  // Warned once per run that applied a revision (a poll with nothing to do repeats the warning, not the notice):
  // until the clone is repaired, its files are not the deployed revision's.
  if (report.resetFailed && (report.result === "succeeded" || report.result === "failed")) {
    const error = errorOf(report.resetFailed);
    events.push({ schema: "deploy-agent/event@1", event: "clone.reset-failed", ...base, error, at });
  }
  // The branch's tip, verified and held back by the pin: its own commit says so (the run's outcome is the
  // pinned revision's). A suspended host deploys nothing at all: its pin is not what holds the tip.
  // The commit a pin held until a newer tip replaced it: it will never be deployed, and says so.
  if (report.superseded) {
    events.push({
      schema: "deploy-agent/event@1",
      event: "run.superseded",
      host: base.host,
      revision: report.superseded.revision,
      supersededBy: report.superseded.by,
      ...(base.url ? { url: base.url } : {}),
      at,
    });
  }
  const { pinned } = report;
  const held = pinned?.newestRevision;
  if (pinned && held && held !== report.revision && report.result !== "suspended") {
    events.push({
      schema: "deploy-agent/event@1",
      event: "run.held",
      host: base.host,
      revision: held,
      ...(base.url ? { url: base.url } : {}),
      pinned: { revision: pinned.revision, by: pinned.by, until: pinned.until, reason: pinned.reason },
      at,
    });
  }
  if (report.result === "noop") {
    events.push({ schema: "deploy-agent/event@1", event: "run.succeeded", ...base, nothingToDo: true, at });
  }
  if (report.result === "succeeded" || report.result === "failed") {
    const failed = report.steps.find((s) => s.outcome === "failed");
    const notes = report.steps.flatMap((s) =>
      s.items.flatMap((i) => (i.outcome === "changed" && i.detail ? [i.detail] : [])),
    );
    events.push({
      schema: "deploy-agent/event@1",
      event: failed ? "run.failed" : "run.succeeded",
      ...base,
      ...(pinned
        ? { pinned: { revision: pinned.revision, by: pinned.by, until: pinned.until, reason: pinned.reason } }
        : {}),
      ...(failed ? { step: failed.name } : {}),
      ...(failed?.error ? { error: errorOf(failed.error) } : {}),
      ...(notes.length ? { notes } : {}),
      durationMs: report.durationMs,
      at,
    });
  }
  return events;
}
