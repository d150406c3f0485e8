import { lstat, readdir, readFile, realpath } from "node:fs/promises";
import path from "node:path";
import picomatch from "picomatch";
import { asAgentError } from "../core/errors.js";
import { loadNextWebhookSecret, loadStatusToken, loadWebhookSecret } from "../gitea/webhook-secret.js";
import { resolveTarget } from "../source/git.js";
import { openRepo } from "../source/open-repo.js";
import { verifyRevision } from "../source/verify.js";
import { readState } from "../state/read-state.js";
import { kindOf, triggersOf } from "../steps/index.js";
import { type CommonFlags, resolve, secretSource } from "./options.js";
import { verifyOffNotice } from "./verify-notice.js";

/**
 * `deploy-agent validate`: the manifest parses and interpolates (timeouts that cannot fit inside each other
 * included), the clone is a git work tree git agrees to use, the webhook secret is there and private, every
 * repository file the manifest references exists as a regular file inside the repository, and each step
 * kind's content checks pass. Exit 2 on any problem.
 */

async function checkSource(repoDir: string, rel: string): Promise<string | null> {
  const full = path.join(repoDir, rel);
  const st = await lstat(full).catch(() => null);
  if (!st) return `${rel}: does not exist in ${repoDir}`;
  if (st.isSymbolicLink()) return `${rel}: is a symlink; the agent refuses to deploy links`;
  if (!st.isFile()) return `${rel}: is not a regular file`;
  const real = await realpath(full);
  const top = await realpath(repoDir);
  if (!real.startsWith(top + path.sep)) return `${rel}: resolves outside the repository (${real})`;
  return null;
}

async function listFiles(dir: string, base = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, base), { withFileTypes: true })) {
    if (entry.name === ".git" || entry.name === "node_modules") continue;
    const rel = base ? `${base}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out;
}

export async function validateCommand(flags: CommonFlags, out: (text: string) => void): Promise<number> {
  const r = await resolve(flags);
  const { manifest, file } = r.loaded;
  const problems: string[] = [];
  const warnings: string[] = [];
  const files = await listFiles(r.repoDir).catch(() => {
    problems.push(`repository ${r.repoDir} cannot be read`);
    return [] as string[];
  });
  // What serve and run would refuse at start: the clone (git's ownership check) and the webhook secret.
  const { remote, branch } = manifest.repo;
  const tokenFile = manifest.webhook.statusAccess?.tokenFile;
  for (const check of [
    () => openRepo(r.repoDir, remote, branch),
    () => loadWebhookSecret(secretSource(r)),
    () => loadNextWebhookSecret(secretSource(r)),
    async () => tokenFile && (await loadStatusToken(r.under(tokenFile))),
    // The revision a run would deploy now (the remote-tracking branch), as repo.verify asks.
    async () => {
      const repo = await openRepo(r.repoDir, remote, branch);
      // From where this host stands (its state, when there is one): a rewind is refused here as in a run.
      const { state } = await readState(r.stateDir, manifest.host);
      await verifyRevision(repo, manifest.repo.verify, r.under, {
        from: state.anchor ?? state.lastRun?.revision ?? null,
        to: await resolveTarget(repo),
      });
    },
  ]) {
    await check().catch((err: unknown) => {
      const e = asAgentError(err);
      problems.push(`${e.code}: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`);
    });
  }
  const steps = [];
  for (const step of manifest.steps) {
    const sources = kindOf(step).sources(step);
    for (const src of sources) {
      const problem = await checkSource(r.repoDir, src);
      if (problem) problems.push(`${file}: step ${step.name}: ${problem}`);
    }
    const check = kindOf(step).check;
    if (check) {
      const repo = { paths: () => files, read: (p: string) => readFile(path.join(r.repoDir, p)) };
      for (const problem of await check(step, repo)) problems.push(`${file}: step ${step.name}: ${problem}`);
    }
    const matches = picomatch(triggersOf(step), { dot: true });
    const covered = files.filter((f) => matches(f)).length;
    if (!covered)
      warnings.push(`${file}: step ${step.name}: paths ${triggersOf(step).join(", ")} match no file`);
    steps.push({ name: step.name, kind: step.kind, sources, files: covered });
  }
  const notice = verifyOffNotice(manifest);
  if (notice) warnings.push(notice);
  const ok = problems.length === 0;
  if (flags.json) {
    const doc = {
      schema: "deploy-agent/validate@1",
      file,
      host: manifest.host,
      ok,
      problems,
      warnings,
      steps,
    };
    out(`${JSON.stringify(doc, null, 2)}\n`);
  } else {
    const lines = [`${file}: host ${manifest.host}, ${manifest.steps.length} step(s)`];
    for (const s of steps) lines.push(`  ${s.name} (${s.kind}): ${s.files} file(s) covered`);
    for (const w of warnings) lines.push(`warning: ${w}`);
    for (const p of problems) lines.push(`error: ${p}`);
    lines.push(ok ? "valid" : `invalid: ${problems.length} problem(s)`);
    out(`${lines.join("\n")}\n`);
  }
  return ok ? 0 : 2;
}
