import path from "node:path";
import { parse as parseYaml } from "yaml";
import { AgentError, asAgentError } from "../core/errors.js";
import { gitAt, gitEnv } from "../source/git-command.js";
import { createObjectReader } from "../source/objects.js";
import { changedPaths, gitTrees, loadSnapshot, type Snapshot } from "../source/snapshot.js";
import { giteaTargetFromEnv, postToGitea } from "./plan-gitea.js";
import { fileHost, type HostPlan, planHost } from "./plan-host.js";
import { type PlanReport, renderFailure, renderMarkdown, renderText } from "./plan-render.js";
import type { HostTools } from "./plan-tool-run.js";
import { hostTools } from "./plan-tools.js";

/**
 * `deploy-agent plan --from BASE --to HEAD`: what every host (or one) would do if HEAD were pushed onto a
 * host that runs BASE, and every check that needs no host — in a clone, on any machine, before the merge.
 * Reads git objects only: no host path, env file, network or secret; the only programs it starts are git
 * and the checking tools (plan-tools.ts). With --post-gitea it also puts the plan on the pull request.
 * Exit 0 every check passed, 1 a check failed, 2 usage.
 */

export interface PlanFlags {
  repo?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  host?: string | undefined;
  all: boolean;
  json: boolean;
  markdown: boolean;
  postGitea: boolean;
}

/** A revision as git names it; never an option, never a line break (it goes to git cat-file --batch). */
const REV = /^[A-Za-z0-9._/@{}^~:+-]{1,200}$/;
const EMPTY = /^0{40}$|^0{64}$/;

function usage(message: string): AgentError {
  return new AgentError("USAGE", message, {
    hint: "deploy-agent plan --from <base> --to <head> [--host NAME | --all] [--json | --markdown] [--post-gitea]",
  });
}

/** The host manifests in a revision: config/*.yaml that name a host (or do not parse, which the plan reports). */
async function manifestsAt(snap: Snapshot): Promise<{ file: string; host: string }[]> {
  const files = (await snap.paths()).filter((p) => /^config\/[^/]+\.yaml$/.test(p)).sort();
  const out: { file: string; host: string }[] = [];
  for (const file of files) {
    let doc: unknown;
    try {
      doc = parseYaml((await snap.read(file)).toString("utf8"));
    } catch {
      out.push({ file, host: fileHost(file) });
      continue;
    }
    const host = (doc as { host?: unknown } | null)?.host;
    if (typeof host === "string") out.push({ file, host });
  }
  return out;
}

/**
 * Two manifests naming one host fail both: a host has one manifest and one commit status, and a second
 * file could otherwise post a green plan/<host> over the real one's red.
 */
function failSharedHosts(hosts: HostPlan[]): void {
  for (const h of hosts) {
    const others = hosts.filter((o) => o !== h && o.host === h.host).map((o) => o.manifestPath);
    if (!others.length) continue;
    h.checks.push({
      name: "manifest: one per host",
      file: h.manifestPath,
      result: "failed",
      message: `${others.join(", ")} names host ${h.host} too: a host has one manifest`,
    });
    h.ok = false;
  }
}

export async function buildPlan(flags: PlanFlags, tools: HostTools = hostTools()): Promise<PlanReport> {
  if (flags.host && flags.all) throw usage("--host and --all exclude each other");
  if (flags.json && flags.markdown) throw usage("--json and --markdown exclude each other");
  if (!flags.from)
    throw usage("--from <base> is required (the revision the hosts run now, e.g. origin/main)");
  const to = flags.to ?? "HEAD";
  for (const rev of [flags.from, to])
    if (!REV.test(rev) || rev.startsWith("-")) throw usage(`"${rev}" is not a revision`);
  const dir = path.resolve(flags.repo ?? ".");
  await gitAt(dir)
    .revparse(["--show-toplevel"])
    .catch(() => {
      throw new AgentError("REPO_INVALID", `${dir} is not a git work tree`, {
        hint: "run it in a clone of the config repository, or pass --repo DIR",
      });
    });
  const objects = createObjectReader(dir, gitEnv());
  try {
    const commit = async (rev: string) => {
      const o = await objects.read(`${rev}^{commit}`);
      if (!o) throw usage(`${rev} is not a commit in ${dir} (fetch it first?)`);
      return o.oid;
    };
    const trees = gitTrees(objects);
    const repo = { dir, objects };
    const headRev = await commit(to);
    const baseRev = EMPTY.test(flags.from) ? null : await commit(flags.from);
    const head = loadSnapshot(repo, headRev, trees);
    const base = baseRev ? loadSnapshot(repo, baseRev, trees) : null;
    const changed = baseRev ? ((await changedPaths(trees, baseRev, headRev)) ?? []) : await head.paths();
    // A manifest the change deletes is planned too: its host's agent loses it.
    const atHead = await manifestsAt(head);
    const gone = base ? (await manifestsAt(base)).filter((b) => !atHead.some((m) => m.file === b.file)) : [];
    let manifests = [...atHead, ...gone];
    if (!manifests.length)
      throw usage(`no host manifests (config/*.yaml naming a host) at ${headRev.slice(0, 12)}`);
    if (flags.host) {
      const wanted = manifests.filter(
        (m) => m.host === flags.host || path.posix.basename(m.file, ".yaml") === flags.host,
      );
      if (!wanted.length)
        throw usage(
          `no host ${flags.host} at ${headRev.slice(0, 12)} (hosts: ${manifests.map((m) => m.host).join(", ") || "none"})`,
        );
      manifests = wanted;
    }
    const hosts: HostPlan[] = [];
    for (const m of manifests) hosts.push(await planHost(m.file, { base, head, changed }, tools));
    failSharedHosts(hosts);
    return {
      schema: "deploy-agent/plan@1",
      base: baseRev,
      head: headRev,
      ok: hosts.every((h) => h.ok),
      hosts,
    };
  } finally {
    objects.close();
  }
}

export async function planCommand(
  flags: PlanFlags,
  out: (text: string) => void,
  err: (text: string) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let report: PlanReport;
  try {
    report = await buildPlan(flags);
  } catch (e) {
    // The comment of an earlier head must not go on saying its checks passed.
    if (flags.postGitea) await post(env, [], renderFailure(asAgentError(e)), err);
    throw e;
  }
  const markdown = flags.markdown || flags.postGitea ? renderMarkdown(report) : "";
  if (flags.json) out(`${JSON.stringify(report, null, 2)}\n`);
  else if (flags.markdown) out(markdown);
  else out(renderText(report));
  if (flags.postGitea) await post(env, report.hosts, markdown, err);
  return report.ok ? 0 : 1;
}

/** Fails soft: a plan that cannot be posted is still the job's result. */
async function post(
  env: NodeJS.ProcessEnv,
  hosts: HostPlan[],
  markdown: string,
  warn: (text: string) => void,
): Promise<void> {
  const target = await giteaTargetFromEnv(env);
  if (typeof target === "string") return warn(`warning: not posted to Gitea: ${target}\n`);
  const { warnings, done } = await postToGitea(target, hosts, markdown);
  for (const d of done) warn(`posted: ${d}\n`);
  for (const w of warnings) warn(`warning: ${w}\n`);
}
