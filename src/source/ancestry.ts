import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import { gitExit } from "./git-command.js";
import type { Repo } from "./open-repo.js";

/**
 * Whether a revision moves the host forward: the same as the last one it ran, a descendant of it, or
 * neither (the branch was force-pushed to an older or an unrelated commit). An empty `from..to` range says
 * nothing about a rewind, so the question is asked of the history itself.
 */
export type Descent = "first" | "same" | "descends" | "rewritten";

/** Commits walked through the object reader before asking git (a push adds a handful). */
export const PARENTS_WALKED = 64;

/**
 * A commit's parents as git reads them: the `parent` lines right after the `tree` line, lines split on "\n"
 * only. Never a pattern over the whole header: a forged extra header ("gpgsig-sha256 x\rparent <oid>", which
 * the signature does not cover) would otherwise pass for a parent, and a rewind for a descendant.
 */
export function parentsOf(commit: Buffer): string[] {
  const lines = commit.toString("latin1").split("\n");
  if (!/^tree [0-9a-f]{40}([0-9a-f]{24})?$/.test(lines[0] ?? "")) return [];
  const parents: string[] = [];
  for (const line of lines.slice(1)) {
    const m = /^parent ([0-9a-f]{40}([0-9a-f]{24})?)$/.exec(line);
    if (!m) break;
    parents.push(m[1] as string);
  }
  return parents;
}

/**
 * Whether `ancestor` is in the history of `descendant` (`git merge-base --is-ancestor`: exit 0 yes, 1 no).
 * Anything else (an unknown commit, a broken repository) is GIT_FAILED.
 */
export async function isAncestor(dir: string, ancestor: string, descendant: string): Promise<boolean> {
  const res = await gitExit(dir, ["merge-base", "--is-ancestor", ancestor, descendant]);
  if (res.exitCode === 0 || res.exitCode === 1) return res.exitCode === 0;
  throw new AgentError("GIT_FAILED", `git merge-base --is-ancestor failed: ${sanitize(res.stderr.trim())}`);
}

export async function descent(repo: Repo, from: string | null, to: string): Promise<Descent> {
  if (!from) return "first";
  if (from === to) return "same";
  // Breadth first over the newest commits, without a process: nearly every push is found here.
  const seen = new Set<string>([to]);
  let frontier = [to];
  while (frontier.length && seen.size <= PARENTS_WALKED) {
    const next: string[] = [];
    for (const oid of frontier) {
      const commit = await repo.objects.read(`${oid}^{commit}`).catch(() => null);
      if (!commit) return "rewritten";
      for (const p of parentsOf(commit.data)) {
        if (p === from) return "descends";
        if (!seen.has(p)) {
          seen.add(p);
          next.push(p);
        }
      }
    }
    frontier = next;
  }
  if (!frontier.length) return "rewritten";
  // Deeper: git answers. Any failure, an unknown `from` included, counts as not descending.
  return (await isAncestor(repo.dir, from, to).catch(() => false)) ? "descends" : "rewritten";
}
