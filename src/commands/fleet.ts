import { stat } from "node:fs/promises";
import path from "node:path";
import { oneLine } from "../core/printable.js";
import type { FleetStatus as AgentStatus } from "../server/status-model.js";
import { gitAt } from "../source/git-command.js";
import { type HistoryRecord, parseRecord } from "../state/history-record.js";
import { askAll, askStatus, type FleetFlags, hintLines } from "./fleet-ask.js";
import { renderRecord } from "./history.js";

export type { FleetFlags };

/**
 * `deploy-agent fleet status|history` (and `wait`, fleet-wait.ts): the whole fleet from one command, on an operator's clone of the config
 * repository. Every `config/*.yaml` names a host and its agent's `publicUrl` (fleet-ask.ts asks them).
 */

export const short = (rev: string | null | undefined) => (rev ? rev.slice(0, 12) : "—");

/**
 * What a host sent, as the text table shows it: one line each (no row of its own, no escape sequence), cut
 * (a field to FIELD_MAX, a problem or a record to LINE_MAX), so that a host's row says only what it may.
 */
const FIELD_MAX = 200;
const LINE_MAX = 600;
export const text = (s: string) => oneLine(s, FIELD_MAX);
export const line = (s: string) => oneLine(s, LINE_MAX);

function age(at: string | undefined): string {
  if (!at) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(at)) / 1000));
  return s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** How long `fleet status` waits for its fetch of the hosts' branches before it counts from what it has. */
const FETCH_TIMEOUT_MS = 15_000;

/**
 * The operator's remote-tracking refs of the hosts' branches, fetched first so "behind" is counted against
 * the remote. When the fetch fails, the refs as they are, with how old the last fetch is (FETCH_HEAD).
 */
async function branchTips(
  repo: string,
  branches: string[],
): Promise<{ tips: Map<string, string>; note: string | null }> {
  const git = gitAt(repo, AbortSignal.timeout(FETCH_TIMEOUT_MS));
  let note: string | null = null;
  const refspecs = branches.map((b) => `+refs/heads/${b}:refs/remotes/origin/${b}`);
  await git.raw(["fetch", "--quiet", "--no-tags", "origin", ...refspecs]).catch(async (err: Error) => {
    const fetched = await stat(path.join(repo, ".git", "FETCH_HEAD")).then(
      (st) => `last fetched ${age(st.mtime.toISOString())}`,
      () => "never fetched",
    );
    note = `could not fetch origin (${
      err.message
        .split("\n")
        .find((l) => /fatal|error/.test(l))
        ?.trim() ?? "git fetch failed"
    }): counting against refs ${fetched}`;
  });
  const tips = new Map<string, string>();
  for (const b of branches) {
    const tip = await gitAt(repo)
      .revparse(["--verify", "--quiet", `refs/remotes/origin/${b}^{commit}`])
      .catch(() => "");
    if (tip.trim()) tips.set(b, tip.trim());
  }
  return { tips, note };
}

/**
 * What is live on a host, step by step: "up to date" only when every step has applied the revision the
 * host last ran (a step with nothing to do for it counts as applied). Otherwise the first step that is
 * not, with its error and the revision it still has live.
 */
function liveness(s: AgentStatus): {
  upToDate: boolean;
  lagging: { step: string; live: string | null; code: string | null; message: string | null } | null;
} {
  const rev = s.deployedRevision;
  const lag = s.steps.find((st) => st.lastAppliedRevision !== rev);
  if (!rev || !lag) return { upToDate: !!rev, lagging: null };
  return {
    upToDate: false,
    lagging: {
      step: lag.name,
      live: lag.lastAppliedRevision,
      code: lag.lastResult?.outcome === "failed" ? (lag.lastResult.code ?? "failed") : null,
      message: lag.lastResult?.outcome === "failed" ? lag.lastResult.message : null,
    },
  };
}

export async function fleetStatusCommand(flags: FleetFlags, out: (t: string) => void): Promise<number> {
  const repo = path.resolve(flags.repo ?? ".");
  const asked = await askStatus(flags);
  const { tips, note } = await branchTips(repo, [...new Set(asked.map((h) => h.branch))]);
  const git = gitAt(repo);
  const rows = await Promise.all(
    asked.map(async (h) => {
      const rev = h.status?.deployedRevision ?? null;
      const tip = tips.get(h.branch) ?? null;
      const subject = rev
        ? await git.raw(["log", "-1", "--format=%s", "--end-of-options", rev]).then(
            (s) => s.trim(),
            () => "",
          )
        : "";
      const behind =
        rev && tip
          ? await git.raw(["rev-list", "--count", "--end-of-options", `${rev}..${tip}`]).then(
              (n) => Number(n.trim()),
              () => null,
            )
          : null;
      const live = h.status ? liveness(h.status) : null;
      const failing = h.status?.steps.find((s) => s.lastResult?.outcome === "failed");
      const jobs = Object.entries(h.status?.jobs ?? {})
        .filter(([, j]) => (j.gauge ?? 0) > 0)
        .map(([name, j]) => `${text(name)}: ${text(j.message)}`);
      return {
        host: h.host,
        url: h.url,
        branch: h.branch,
        tip,
        reachable: h.status !== null,
        problem: h.problem,
        code: h.code,
        deployed: rev,
        subject,
        behind,
        upToDate: !!live?.upToDate && behind === 0,
        lagging: live?.lagging ?? null,
        lastRun: h.status?.lastRun
          ? { result: h.status.lastRun.result, at: h.status.lastRun.finishedAt }
          : null,
        failing: failing ? { step: failing.name, code: failing.lastResult?.code ?? null } : null,
        lastError: h.status?.lastError ?? null,
        suspended: h.status?.suspended ?? null,
        pinned: h.status?.pinned ?? null,
        jobs,
      };
    }),
  );
  if (flags.json) {
    out(`${JSON.stringify({ schema: "deploy-agent/fleet@2", fetch: note, hosts: rows }, null, 2)}\n`);
  } else {
    const lines = [...new Set(rows.map((r) => `${r.branch} at ${short(r.tip)}`))].map(
      (b) => `fleet: origin/${b}`,
    );
    if (note) lines.push(`warning: ${note}`);
    for (const r of rows) {
      if (!r.reachable) {
        lines.push(`${r.host.padEnd(8)} ${r.code}: ${line(r.problem ?? "")}`);
        continue;
      }
      const lag = r.lagging;
      const parts = [
        `${short(r.deployed)}${r.subject ? ` “${text(r.subject)}”` : ""}`,
        lag
          ? `NOT LIVE: ${text(lag.step)} still at ${short(lag.live)}${lag.code ? ` (${text(lag.code)}: ${text(lag.message ?? "")})` : " (not applied yet)"}`
          : r.behind === null
            ? "behind unknown"
            : r.behind === 0
              ? "up to date"
              : `${r.behind} behind`,
        r.lastRun ? `last run ${text(r.lastRun.result)} ${age(r.lastRun.at)}` : "",
        r.failing && r.failing.step !== lag?.step
          ? `FAILING ${text(r.failing.step)}${r.failing.code ? ` (${text(r.failing.code)})` : ""}`
          : "",
        r.lastError ? `error ${text(r.lastError.code)}` : "",
        r.suspended ? `SUSPENDED since ${r.suspended.since}: ${text(r.suspended.reason)}` : "",
        r.pinned
          ? `PINNED at ${short(r.pinned.revision)} by ${text(r.pinned.by)} until ${r.pinned.until}: ${text(r.pinned.reason)}`
          : "",
        ...r.jobs,
      ].filter(Boolean);
      lines.push(`${r.host.padEnd(8)} ${parts.join("; ")}`);
    }
    out(`${[...lines, ...hintLines(rows)].join("\n")}\n`);
  }
  return rows.every((r) => r.reachable && !r.failing && !r.lastError && !r.lagging) ? 0 : 1;
}

/**
 * `fleet history [--limit N]`: each host's last N records (its /history), merged newest first and cut to N.
 * What a host sends is checked record by record; a host that cannot be asked is named with its URL.
 */
export async function fleetHistoryCommand(
  flags: FleetFlags & { limit: number },
  out: (t: string) => void,
): Promise<number> {
  const asked = await askAll(flags, `/history?limit=${flags.limit}`);
  const records: (HistoryRecord & { host: string })[] = [];
  const hostsSeen = asked.map((h) => {
    const doc = h.answer as { records?: unknown } | null;
    const got = Array.isArray(doc?.records) ? doc.records.map(parseRecord) : [];
    for (const r of got) if (r) records.push({ ...r, host: h.host });
    return {
      host: h.host,
      url: h.url,
      reachable: h.answer !== null,
      problem: h.problem,
      code: h.code,
      invalid: got.filter((r) => !r).length,
    };
  });
  records.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  const newest = records.slice(0, flags.limit);
  if (flags.json) {
    out(
      `${JSON.stringify({ schema: "deploy-agent/fleet-history@1", hosts: hostsSeen, records: newest }, null, 2)}\n`,
    );
  } else {
    const lines = hostsSeen.flatMap((h) => [
      ...(h.problem ? [`${h.host.padEnd(8)} ${h.code}: ${line(h.problem)}`] : []),
      ...(h.invalid ? [`${h.host.padEnd(8)} warning: ${h.invalid} record(s) it sent are not records`] : []),
    ]);
    if (!newest.length) lines.push("no runs recorded");
    for (const r of newest) lines.push(`${r.host.padEnd(8)} ${line(renderRecord(r))}`);
    out(`${[...lines, ...hintLines(hostsSeen)].join("\n")}\n`);
  }
  return hostsSeen.every((h) => h.reachable) ? 0 : 1;
}
