import type { Effect } from "../host/effects.js";
import type { RunReport, StepReport } from "./run-report.js";

/** Human rendering of run reports; `--json` prints the report objects themselves. */

const short = (rev: string | null | undefined) => (rev ? rev.slice(0, 12) : "none");
const octal = (mode: number) => `0${mode.toString(8)}`;

function indent(text: string, prefix: string): string {
  return text
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");
}

export function renderEffect(e: Effect, dryRun: boolean): string {
  const would = dryRun ? "would " : "";
  switch (e.type) {
    case "write": {
      const counts = e.patch !== undefined ? `, +${e.added} -${e.removed} lines` : "";
      const head = `${would}write ${e.path} (${e.change}, ${e.bytes} bytes, mode ${octal(e.mode)}${counts})`;
      return e.patch ? `${head}\n${indent(e.patch, "    ")}` : head;
    }
    case "validate":
      return `${would}validate the new ${e.path} with: ${e.argv.join(" ")}`;
    case "run":
      return `${would}run: ${e.argv.join(" ")}`;
    case "restore":
      return `${would}restore the previous ${e.path}`;
    case "remove":
      return `${would}remove ${e.path}`;
    case "copy":
      return `${would}copy ${e.from} to ${e.to}`;
    case "link":
      return `${would}point ${e.path} at ${e.target} (one atomic rename)`;
    case "mkdir":
      return `${would}create directory ${e.path} (mode ${octal(e.mode)})`;
    case "request":
      return `${would}${e.method} ${e.url}${e.detail ? ` (${e.detail})` : ""}`;
    case "note":
      return e.message;
  }
}

const MARK: Record<StepReport["outcome"], string> = {
  succeeded: "ok",
  failed: "FAILED",
  skipped: "skip",
  planned: "plan",
  unknown: "UNKNOWN",
};

/** Item lines, one per outcome and detail: eleven connections that failed alike are one line, not eleven. */
function itemLines(items: StepReport["items"]): string[] {
  const groups = new Map<string, string[]>();
  for (const item of items) {
    if (item.outcome === "changed") continue;
    const key = `${item.outcome}\0${item.detail ?? ""}`;
    groups.set(key, [...(groups.get(key) ?? []), item.id]);
  }
  return [...groups].map(([key, ids]) => {
    const [outcome, detail] = key.split("\0");
    return `${outcome}: ${ids.join(", ")}${detail ? `: ${detail}` : ""}`;
  });
}

function renderStep(step: StepReport, dryRun: boolean): string {
  const lines = [`[${MARK[step.outcome]}] ${step.name} (${step.kind}): ${step.message}`];
  if (!step.run) return lines[0] ?? "";
  // The plan lines say what the step set out to do; once it reported items, those say what it found.
  // A failure first: what went wrong and what to do, then what the step did on the way (diffs are long).
  if (step.error) {
    lines.push(`    error ${step.error.code}: ${step.error.message}`);
    if (step.error.hint) lines.push(`    hint: ${step.error.hint}`);
  }
  if (!step.items.length) for (const w of step.work) lines.push(`    plan: ${w}`);
  for (const e of step.effects) lines.push(indent(renderEffect(e, dryRun), "    "));
  for (const l of itemLines(step.items)) lines.push(`    ${l}`);
  lines.push(`    (${step.durationMs} ms)`);
  return lines.join("\n");
}

export function renderRun(report: RunReport): string {
  const mode = report.dryRun ? "dry run" : "run";
  const lines = [
    `deploy-agent ${mode}: host ${report.host}, revision ${short(report.revision)} (clone was at ${short(report.previousHead)})`,
  ];
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  if (report.result === "suspended" && report.suspended) {
    lines.push(
      `host suspended since ${report.suspended.since} (${report.suspended.reason}): nothing deployed; ${short(report.revision)} is remembered for deploy-agent resume`,
    );
  }
  for (const step of report.steps) lines.push(renderStep(step, report.dryRun));
  const ran = report.steps.filter((s) => s.run).length;
  const failed = report.steps.filter((s) => s.outcome === "failed").length;
  lines.push(
    `result: ${report.result} (${ran} step(s) ${report.dryRun ? "planned" : "ran"}, ${failed} failed, ${report.steps.length - ran} skipped) in ${report.durationMs} ms`,
  );
  return `${lines.join("\n")}\n`;
}

/** What `install` did, or in a dry run would do; `--json` prints it as it is. */
export interface InstallReport {
  schema: "deploy-agent/install@1";
  host: string;
  dryRun: boolean;
  effects: Effect[];
  warnings: string[];
}

export function renderInstall(report: InstallReport): string {
  const lines = [`deploy-agent install${report.dryRun ? " (dry run)" : ""}: host ${report.host}`];
  for (const e of report.effects) lines.push(indent(renderEffect(e, report.dryRun), "  "));
  for (const w of report.warnings) lines.push(`note: ${w}`);
  lines.push(
    report.dryRun
      ? "nothing changed (dry run)"
      : `deploy-agent@${report.host}.service is running and healthy`,
  );
  return `${lines.join("\n")}\n`;
}
