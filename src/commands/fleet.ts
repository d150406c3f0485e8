import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { simpleGit } from "simple-git";
import { parse as parseYaml } from "yaml";
import { AgentError } from "../errors.js";
import { fetchFailure } from "../fetch-failure.js";

/**
 * `deploy-agent fleet status|wait`: the whole fleet from one command, on an operator's clone of the config
 * repository. Every `config/*.yaml` names a host and its agent's `publicUrl`; each agent's /status is asked in
 * parallel with a short timeout.
 */

export interface FleetFlags {
  repo?: string | undefined;
  json: boolean;
  tokenFile?: string | undefined;
  timeoutSeconds: number;
}

const ASK_TIMEOUT_MS = 3000;

interface AgentStatus {
  deployedRevision: string | null;
  suspended: { reason: string; since: string } | null;
  lastError: { code: string; message: string } | null;
  health: { ok: boolean; reason?: string };
  lastRun: { result: string; finishedAt: string } | null;
  steps: {
    name: string;
    lastAppliedRevision: string | null;
    lastResult: { outcome: string; revision: string; code?: string; message: string } | null;
  }[];
  jobs?: Record<string, { message: string; gauge?: number }>;
}

interface Host {
  host: string;
  url: string | null;
  status: AgentStatus | null;
  problem: string | null;
}

async function hosts(repo: string): Promise<{ host: string; url: string | null }[]> {
  const dir = path.join(repo, "config");
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(".yaml")).sort();
  if (!names.length)
    throw new AgentError("USAGE", `no host manifests in ${dir}`, {
      hint: "run it in a clone of the config repository, or pass --repo DIR",
    });
  const out = [];
  for (const n of names) {
    // Only host and publicUrl are read: no ${VAR} is needed on an operator's machine.
    const doc = parseYaml(await readFile(path.join(dir, n), "utf8")) as {
      host?: unknown;
      publicUrl?: unknown;
    };
    if (typeof doc?.host !== "string") continue;
    out.push({
      host: doc.host,
      url: typeof doc.publicUrl === "string" ? doc.publicUrl.replace(/\/+$/, "") : null,
    });
  }
  return out;
}

async function ask(flags: FleetFlags, repo: string): Promise<Host[]> {
  const token = flags.tokenFile ? (await readFile(flags.tokenFile, "utf8")).trim() : undefined;
  return Promise.all(
    (await hosts(repo)).map(async ({ host, url }): Promise<Host> => {
      if (!url) return { host, url, status: null, problem: "no publicUrl in its manifest" };
      try {
        const res = await fetch(`${url}/status`, {
          signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
          headers: token ? { authorization: `Bearer ${token}` } : {},
        });
        if (!res.ok) return { host, url, status: null, problem: `unreachable: HTTP ${res.status}` };
        return { host, url, status: (await res.json()) as AgentStatus, problem: null };
      } catch (err) {
        return { host, url, status: null, problem: `unreachable: ${fetchFailure(err, ASK_TIMEOUT_MS)}` };
      }
    }),
  );
}

const short = (rev: string | null | undefined) => (rev ? rev.slice(0, 12) : "—");

function age(at: string | undefined): string {
  if (!at) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(at)) / 1000));
  return s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

export async function fleetStatusCommand(flags: FleetFlags, out: (t: string) => void): Promise<number> {
  const repo = path.resolve(flags.repo ?? ".");
  const git = simpleGit({ baseDir: repo });
  const tip = await git
    .revparse(["--verify", "--quiet", "origin/main^{commit}"])
    .catch(() => git.revparse(["HEAD"]));
  const rows = await Promise.all(
    (await ask(flags, repo)).map(async (h) => {
      const rev = h.status?.deployedRevision ?? null;
      const subject = rev
        ? await git.raw(["log", "-1", "--format=%s", rev]).then(
            (s) => s.trim(),
            () => "",
          )
        : "";
      const behind = rev
        ? await git.raw(["rev-list", "--count", `${rev}..${tip.trim()}`]).then(
            (n) => Number(n.trim()),
            () => null,
          )
        : null;
      const failing = h.status?.steps.find((s) => s.lastResult?.outcome === "failed");
      const jobs = Object.entries(h.status?.jobs ?? {})
        .filter(([, j]) => (j.gauge ?? 0) > 0)
        .map(([name, j]) => `${name}: ${j.message}`);
      return {
        host: h.host,
        reachable: h.status !== null,
        problem: h.problem,
        deployed: rev,
        subject,
        behind,
        lastRun: h.status?.lastRun
          ? { result: h.status.lastRun.result, at: h.status.lastRun.finishedAt }
          : null,
        failing: failing ? { step: failing.name, code: failing.lastResult?.code ?? null } : null,
        lastError: h.status?.lastError ?? null,
        suspended: h.status?.suspended ?? null,
        jobs,
      };
    }),
  );
  if (flags.json) {
    out(`${JSON.stringify({ schema: "deploy-agent/fleet@1", tip: tip.trim(), hosts: rows }, null, 2)}\n`);
  } else {
    const lines = [`fleet at ${short(tip.trim())} (origin/main)`];
    for (const r of rows) {
      if (!r.reachable) {
        lines.push(`${r.host.padEnd(8)} ${r.problem}`);
        continue;
      }
      const parts = [
        `${short(r.deployed)}${r.subject ? ` “${r.subject}”` : ""}`,
        r.behind === null ? "" : r.behind === 0 ? "up to date" : `${r.behind} behind`,
        r.lastRun ? `last run ${r.lastRun.result} ${age(r.lastRun.at)}` : "",
        r.failing ? `FAILING ${r.failing.step}${r.failing.code ? ` (${r.failing.code})` : ""}` : "",
        r.lastError ? `error ${r.lastError.code}` : "",
        r.suspended ? `SUSPENDED since ${r.suspended.since}: ${r.suspended.reason}` : "",
        ...r.jobs,
      ].filter(Boolean);
      lines.push(`${r.host.padEnd(8)} ${parts.join("; ")}`);
    }
    out(`${lines.join("\n")}\n`);
  }
  return rows.every((r) => r.reachable && !r.failing && !r.lastError) ? 0 : 1;
}

/** Done when every step of the host has applied the revision (a step with nothing to do for it counts). */
function laggard(h: Host, rev: string): string | null {
  if (!h.status) return h.problem ?? "unreachable";
  const behind = h.status.steps.filter((s) => s.lastAppliedRevision !== rev);
  if (!behind.length) return null;
  const failed = behind.find((s) => s.lastResult?.outcome === "failed" && s.lastResult.revision === rev);
  if (failed)
    return `${failed.name} failed (${failed.lastResult?.code ?? "failed"}: ${failed.lastResult?.message ?? ""})`;
  if (h.status.suspended) return `suspended: ${h.status.suspended.reason}`;
  if (h.status.lastError) return `${h.status.lastError.code}: ${h.status.lastError.message}`;
  return `still at ${short(h.status.deployedRevision)} (${behind.map((s) => s.name).join(", ")} not applied yet)`;
}

export async function fleetWaitCommand(
  flags: FleetFlags,
  target: string,
  out: (t: string) => void,
): Promise<number> {
  const repo = path.resolve(flags.repo ?? ".");
  const rev = (
    await simpleGit({ baseDir: repo })
      .revparse(["--verify", `${target}^{commit}`])
      .catch(() => "")
  ).trim();
  if (!rev) throw new AgentError("USAGE", `fleet wait: ${target} is not a commit in ${repo}`);
  const deadline = Date.now() + flags.timeoutSeconds * 1000;
  for (;;) {
    const waiting = (await ask(flags, repo)).flatMap((h) => {
      const why = laggard(h, rev);
      return why ? [`${h.host}: ${why}`] : [];
    });
    if (!waiting.length) {
      out(`every host runs ${short(rev)}\n`);
      return 0;
    }
    if (Date.now() >= deadline) {
      out(
        `not every host runs ${short(rev)} after ${flags.timeoutSeconds}s:\n${waiting.map((w) => `  ${w}`).join("\n")}\n`,
      );
      return 1;
    }
    await sleep(1000);
  }
}
