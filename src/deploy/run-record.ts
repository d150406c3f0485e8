import type { Logger } from "pino";
import { asAgentError } from "../core/errors.js";
import { appendHistory, compactionText, type HistoryBounds } from "../state/history.js";
import type { HistoryRecord, Trigger } from "../state/history-record.js";
import type { RunReport } from "./run-report.js";

/**
 * What the deploy history keeps of one run, gathered as the pipeline goes: a run that throws is recorded
 * as far as it got (its revision once known, whether it was verified), with its error code.
 */
export interface RunFacts {
  started: number;
  host: string;
  trigger: Trigger;
  revision: string | null;
  previousRevision: string | null;
  verified: boolean;
  /** Every step of the manifest had applied the revision when the run ended. */
  applied: boolean;
  /** The bounds of the manifest in force (the revision's own once it is known). */
  bounds: HistoryBounds;
  /** The newest revision of the branch verified here as the run leaves it (known once the state is read). */
  anchor?: string | undefined;
  /** A pin or unpin written to the state before the run ended, whatever came after. */
  pin?: "set" | "cleared" | undefined;
}

export function runRecord(
  facts: RunFacts,
  outcome: { report: RunReport } | { error: unknown },
): HistoryRecord {
  const base = {
    v: 1 as const,
    at: new Date().toISOString(),
    host: facts.host,
    event: "run" as const,
    trigger: facts.trigger,
    revision: facts.revision,
    previousRevision: facts.previousRevision,
    verified: facts.verified,
    ...(facts.anchor ? { anchor: facts.anchor } : {}),
    ...(facts.pin ? { pin: facts.pin } : {}),
    durationMs: Date.now() - facts.started,
  };
  if ("error" in outcome) {
    const e = asAgentError(outcome.error);
    return {
      ...base,
      result: "error",
      applied: false,
      error: { code: e.code, message: e.message },
      steps: [],
    };
  }
  const { report } = outcome;
  const ran = report.steps.filter((s) => s.run);
  const failed = ran.find((s) => s.outcome === "failed");
  return {
    ...base,
    result: report.result === "suspended" ? "suspended" : (report.result as "succeeded" | "failed" | "noop"),
    applied: facts.applied,
    error: failed?.error
      ? { code: failed.error.code, message: failed.error.message, step: failed.name }
      : null,
    steps: ran.map((s) => ({
      name: s.name,
      outcome: s.outcome,
      ...(s.error ? { code: s.error.code } : {}),
      durationMs: s.durationMs,
    })),
    durationMs: report.durationMs,
  };
}

/** Appends the run's record; a history that cannot be written is a warning, never a failed deploy. */
export async function recordRun(
  stateDir: string,
  facts: RunFacts,
  outcome: { report: RunReport } | { error: unknown },
  options: { locked: boolean; log: Logger },
): Promise<void> {
  try {
    await appendHistory(stateDir, runRecord(facts, outcome), {
      bounds: facts.bounds,
      locked: options.locked,
      // Lines that were not records are corruption: said as a warning; records past the bounds are routine.
      onCompact: (c) =>
        c.invalid
          ? options.log.warn({ compaction: c }, compactionText(c))
          : options.log.info({ compaction: c }, compactionText(c)),
    });
  } catch (err) {
    const e = asAgentError(err);
    options.log.warn({ code: e.code, err: e.message }, "could not record the run in the deploy history");
  }
}
