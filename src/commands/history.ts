import { historyDocument, readHistory } from "../state/history.js";
import type { HistoryRecord } from "../state/history-record.js";
import { type CommonFlags, resolve } from "./options.js";

/** `deploy-agent history [--limit N] [--step NAME] [--json]`: what ran on this host, newest first. */

export interface HistoryFlags extends CommonFlags {
  limit: number;
  step?: string | undefined;
}

const short = (rev: string | null) => (rev ? rev.slice(0, 12) : "—");

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`;
}

function triggerText(r: HistoryRecord): string {
  const t = r.trigger;
  switch (t.kind) {
    case "push":
      return `push (delivery ${t.delivery})`;
    case "self-heal":
      return `self-heal ${t.steps.join(", ")}`;
    case "retry":
      return `retry after ${t.after}`;
    case "manual":
    case "resume":
    case "pin":
      return `${t.kind === "manual" ? r.event : t.kind} by ${t.user}`;
    default:
      return t.kind;
  }
}

/**
 * One line: time, trigger (and who), revision (and the one before), result, failing step and code, duration.
 * Its texts' line breaks and tabs are spaces: a record read from a file (a hand edit, an older agent) never
 * prints a line that reads as another record.
 */
export function renderRecord(r: HistoryRecord): string {
  return recordText(r).replace(/[\n\t]/g, " ");
}

function recordText(r: HistoryRecord): string {
  const time = r.at.replace("T", " ").replace(/\.\d+Z$/, "Z");
  if (r.event !== "run") {
    const why = r.reason ? `: ${r.reason}` : "";
    return `${time}  ${triggerText(r)}${why} (at ${short(r.revision)})`;
  }
  const revs =
    r.previousRevision && r.previousRevision !== r.revision
      ? `${short(r.revision)} (was ${short(r.previousRevision)})`
      : short(r.revision);
  const failure = r.error ? `: ${r.error.step ? `${r.error.step} ` : ""}${r.error.code}` : "";
  const verified = r.verified ? ", verified" : "";
  return `${time}  ${triggerText(r)}  ${revs}  ${r.result}${failure}${verified}  ${seconds(r.durationMs)}`;
}

export async function historyCommand(flags: HistoryFlags, out: (text: string) => void): Promise<number> {
  const r = await resolve(flags);
  const read = await readHistory(r.stateDir, { limit: flags.limit, step: flags.step });
  const host = r.loaded.manifest.host;
  if (flags.json) {
    out(`${JSON.stringify(historyDocument(host, read), null, 2)}\n`);
    return 0;
  }
  const lines = [`history of ${host} (${read.file}), newest first`];
  if (read.skipped) lines.push(`warning: ${read.skipped} invalid line(s) skipped (a torn write, corruption)`);
  if (read.truncated)
    lines.push(
      "warning: the file goes on past the reader's bound (its newest 128 MiB): older lines not read",
    );
  if (!read.records.length)
    lines.push(flags.step ? `no run of step ${flags.step} recorded` : "nothing recorded yet");
  for (const rec of read.records) lines.push(renderRecord(rec));
  out(`${lines.join("\n")}\n`);
  return 0;
}
