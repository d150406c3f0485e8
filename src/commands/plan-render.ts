import { redact } from "../core/redact.js";
import type { FileDiff, HostPlan } from "./plan-host.js";
import type { PlanCheck } from "./plan-tool-run.js";

/** A plan as people read it: text for a terminal, Markdown for a pull request comment. */

export interface PlanReport {
  schema: "deploy-agent/plan@1";
  base: string | null;
  head: string;
  ok: boolean;
  hosts: HostPlan[];
}

/** Finds the comment again on the next push; never shown. */
export const COMMENT_MARKER = "<!-- deploy-agent:plan -->";

/** Longest comment posted: Gitea keeps more, but a page of diffs past this is unreadable anyway. */
export const MAX_COMMENT_CHARS = 60_000;

const short = (rev: string | null) => (rev ? rev.slice(0, 12) : "(empty)");
const indent = (text: string, by: string) =>
  text
    .split("\n")
    .map((l) => by + l)
    .join("\n");

function diffLine(d: FileDiff): string {
  return `${d.change} ${d.path} (+${d.added} -${d.removed})`;
}

/** The failing check that names a host's failure in one line (its commit status). */
export function firstFailure(host: HostPlan): PlanCheck | undefined {
  return host.checks.find((c) => c.result === "failed");
}

export function renderText(report: PlanReport): string {
  const lines = [`plan ${short(report.base)} -> ${short(report.head)}`];
  for (const h of report.hosts) {
    lines.push("", `${h.host} (${h.manifestPath}): ${h.ok ? "ok" : "FAILED"}`);
    if (h.manifestDiff) {
      lines.push(`  manifest: ${diffLine(h.manifestDiff)}`);
      if (h.manifestDiff.patch) lines.push(indent(h.manifestDiff.patch, "    "));
    }
    if (h.pendingRestart.length)
      lines.push(`  takes effect after a restart of the agent: ${h.pendingRestart.join(", ")}`);
    for (const n of h.notes) lines.push(`  note: ${n}`);
    for (const s of h.steps) {
      lines.push(`  step ${s.name} (${s.kind}): ${s.run ? "RUNS" : "skipped"}: ${s.message}`);
      for (const w of s.work) lines.push(`    ${w}`);
      for (const d of s.diffs) {
        lines.push(`    ${diffLine(d)}`);
        if (d.patch) lines.push(indent(d.patch, "      "));
      }
      if (s.diffsLeftOut.length) lines.push(`    diffs left out: ${s.diffsLeftOut.join(", ")}`);
    }
    lines.push("  checks:");
    for (const c of h.checks)
      lines.push(`    ${c.result.padEnd(7)} ${c.name}${c.file ? ` [${c.file}]` : ""}: ${c.message}`);
  }
  const failed = report.hosts.filter((h) => !h.ok).map((h) => h.host);
  lines.push("", failed.length ? `FAILED: ${failed.join(", ")}` : "all checks passed");
  return `${lines.join("\n")}\n`;
}

/**
 * Text from the pull request (file and step names, commands, tool output) as a code span on one line:
 * Gitea renders no HTML, link or @mention inside one. Its backticks outnumber any run inside it, so the
 * text cannot close it.
 */
function code(text: string): string {
  const line = text.replace(/\s*[\r\n]\s*/g, " ");
  if (!line) return "";
  const longest = Math.max(0, ...[...line.matchAll(/`+/g)].map((m) => m[0].length));
  const ticks = "`".repeat(longest + 1);
  const pad = line.startsWith("`") || line.endsWith("`") ? " " : "";
  return `${ticks}${pad}${line}${pad}${ticks}`;
}

/** The same in a table cell, where a pipe, even inside a code span, would end the cell. */
const cell = (text: string) => code(text).replaceAll("|", "\\|");

/** A fence longer than any run of backticks inside, so a patch cannot close it. */
function fenced(lang: string, text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  const fence = "`".repeat(longest + 1);
  return `${fence}${lang}\n${text}\n${fence}`;
}

const ICON = { passed: "✅", failed: "❌", skipped: "⏭️" } as const;

function hostMarkdown(h: HostPlan, withDiffs: boolean): string {
  const out = [`### ${h.ok ? "✅" : "❌"} ${code(h.host)} — ${code(h.manifestPath)}`];
  if (h.manifestDiff) out.push(`The manifest changes: ${code(diffLine(h.manifestDiff))}.`);
  if (h.pendingRestart.length)
    out.push(`Takes effect after a restart of the agent: ${h.pendingRestart.map(code).join(", ")}.`);
  for (const n of h.notes) out.push(`> ${code(n)}`);
  if (h.steps.length) {
    out.push("", "| step | kind | runs | why | what it would do |", "| --- | --- | --- | --- | --- |");
    for (const s of h.steps)
      out.push(
        `| ${cell(s.name)} | ${cell(s.kind)} | ${s.run ? "**yes**" : "no"} | ${cell(s.message)} | ${cell(s.work.join("; "))} |`,
      );
  }
  // Files past the diffs a host shows are named all the same: a change must not hide behind many others.
  for (const s of h.steps)
    if (s.diffsLeftOut.length)
      out.push(
        "",
        `Not diffed for ${code(s.name)} (past the diffs shown per host): ${s.diffsLeftOut.map(code).join(", ")}.`,
      );
  out.push("", "| check | file | result |", "| --- | --- | --- |");
  for (const c of h.checks)
    out.push(`| ${cell(c.name)} | ${cell(c.file)} | ${ICON[c.result]} ${cell(c.message)} |`);
  const diffs = [...(h.manifestDiff ? [h.manifestDiff] : []), ...h.steps.flatMap((s) => s.diffs)];
  if (diffs.length) {
    if (withDiffs) {
      const body = diffs.map((d) => `${diffLine(d)}\n${d.patch ?? "(no text diff)"}`).join("\n\n");
      out.push(
        "",
        `<details><summary>Diffs (${diffs.length} file(s))</summary>`,
        "",
        fenced("diff", body),
        "",
        "</details>",
      );
    } else out.push("", `Diffs of ${diffs.length} file(s) left out to keep this comment short.`);
  }
  return out.join("\n");
}

/** A plan without a failure: how many checks did not run (a tool missing, a file only the host has). */
function skipped(report: PlanReport): string {
  const n = report.hosts.flatMap((h) => h.checks).filter((c) => c.result === "skipped").length;
  return n ? `Every check that ran passed; ${n} did not run here (⏭️ below).` : "Every check passed.";
}

/**
 * The pull request comment: the marker, a table per host and collapsible diffs. Past MAX_COMMENT_CHARS the
 * diffs are left out, and past it still the text is cut: the comment always fits.
 */
export function renderMarkdown(report: PlanReport, max = MAX_COMMENT_CHARS): string {
  const head = [
    COMMENT_MARKER,
    `## Deploy preview: \`${short(report.base)}\` → \`${short(report.head)}\``,
    report.ok
      ? skipped(report)
      : `Failed: ${report.hosts
          .filter((h) => !h.ok)
          .map((h) => code(h.host))
          .join(", ")}.`,
    "",
  ].join("\n");
  // Redacted before any cut: a cut secret is no longer recognised.
  const full = redact(head + report.hosts.map((h) => hostMarkdown(h, true)).join("\n\n"));
  if (full.length <= max) return `${full}\n`;
  const note = `\n\n_Diffs left out: the comment would pass ${max} characters. \`deploy-agent plan --from ${short(report.base)} --to ${short(report.head)}\` in a clone shows them._\n`;
  const brief = redact(head + report.hosts.map((h) => hostMarkdown(h, false)).join("\n\n") + note);
  if (brief.length <= max) return brief;
  // Cut at a line's end: a code span never spans lines, so none is left open for the rest to render.
  const cut = "\n\n_…cut to fit the comment._\n";
  return brief.slice(0, Math.max(0, brief.lastIndexOf("\n", max - cut.length))) + cut;
}

/** The comment when no plan could be made: it replaces an earlier head's, which no longer holds. */
export function renderFailure(error: { code: string; message: string }): string {
  return `${redact(
    [
      COMMENT_MARKER,
      "## Deploy preview: no plan for this head",
      "",
      `The plan could not be made: ${code(`${error.code}: ${error.message}`)}.`,
      "Nothing was checked; `deploy-agent plan` in a clone says the same with its hint.",
    ].join("\n"),
  )}\n`;
}
