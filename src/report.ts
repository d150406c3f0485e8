import type { Effect } from "./effects.js";
import type { RunReport, StepReport } from "./pipeline.js";

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
    case "request":
      return `${would}${e.method} ${e.url}${e.detail ? ` (${e.detail})` : ""}`;
    case "note":
      return e.message;
  }
}

const MARK: Record<StepReport["outcome"], string> = { succeeded: "ok", failed: "FAILED", skipped: "skip" };

function renderStep(step: StepReport, dryRun: boolean): string {
  const lines = [`[${MARK[step.outcome]}] ${step.name} (${step.kind}): ${step.message}`];
  if (!step.run) return lines[0] ?? "";
  for (const w of step.work) lines.push(`    plan: ${w}`);
  for (const e of step.effects) lines.push(indent(renderEffect(e, dryRun), "    "));
  const unchanged = step.items.filter((i) => i.outcome === "unchanged").map((i) => i.id);
  if (unchanged.length) lines.push(`    unchanged: ${unchanged.join(", ")}`);
  for (const item of step.items) {
    if (item.outcome === "skipped" || item.outcome === "failed")
      lines.push(`    ${item.outcome}: ${item.id}: ${item.detail ?? ""}`);
  }
  if (step.error) {
    lines.push(`    error ${step.error.code}: ${step.error.message}`);
    if (step.error.hint) lines.push(`    hint: ${step.error.hint}`);
  }
  lines.push(`    (${step.durationMs} ms)`);
  return lines.join("\n");
}

export function renderRun(report: RunReport): string {
  const mode = report.dryRun ? "dry run" : "run";
  const lines = [
    `deploy-agent ${mode}: host ${report.host}, revision ${short(report.revision)} (clone was at ${short(report.previousHead)})`,
  ];
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  for (const step of report.steps) lines.push(renderStep(step, report.dryRun));
  const ran = report.steps.filter((s) => s.run).length;
  const failed = report.steps.filter((s) => s.outcome === "failed").length;
  lines.push(
    `result: ${report.result} (${ran} step(s) ${report.dryRun ? "planned" : "ran"}, ${failed} failed, ${report.steps.length - ran} skipped) in ${report.durationMs} ms`,
  );
  return `${lines.join("\n")}\n`;
}
