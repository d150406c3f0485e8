import { readFileSync } from "node:fs";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { gitError } from "./git-error.js";
import type { Repo } from "./open-repo.js";

/**
 * The git layer's answer to "which revision": the branch fetched into its remote-tracking ref, the commit it
 * and HEAD point at, a commit's subject. It knows nothing about steps (Flux's source-controller split); the
 * paths that changed are snapshot.ts's, the clone itself open-repo.ts's, its work tree work-tree.ts's.
 */

/**
 * A commit's subject, for notices: git's `%s`, its message's first paragraph on one line; null when it
 * cannot be read. From the object reader, not `git log`: a spawn less per push. Header lines end at
 * the first empty line (a signature's continuation lines start with a space).
 */
export async function subjectOf(repo: Repo, revision: string): Promise<string | null> {
  const commit = await repo.objects.read(`${revision}^{commit}`).catch(() => null);
  const text = commit?.data.toString("utf8") ?? "";
  const headersEnd = text.indexOf("\n\n");
  if (headersEnd < 0) return null;
  const message = text.slice(headersEnd + 2).replace(/^\s+/, "");
  return (
    message
      .split(/\n[ \t]*\n/)[0]
      ?.replace(/\s*\n\s*/g, " ")
      .trim() || null
  );
}

export function trackingRef(repo: Repo): string {
  return `refs/remotes/${repo.remote}/${repo.branch}`;
}

/**
 * Updates the remote-tracking ref only (forced, so a rewritten branch is followed). Returns the fetched
 * commit as git recorded it in FETCH_HEAD (documented output of git-fetch), saving a rev-parse per push;
 * null when it cannot be read there.
 */
export async function fetchBranch(repo: Repo): Promise<string | null> {
  try {
    await repo.fetcher.fetch(`+refs/heads/${repo.branch}:${trackingRef(repo)}`);
  } catch (err) {
    throw gitError("FETCH_FAILED", `git fetch ${repo.remote} ${repo.branch} failed`, err);
  }
  let head = "";
  try {
    head = readFileSync(path.join(repo.dir, ".git", "FETCH_HEAD"), "utf8");
  } catch {
    // unreadable: the caller resolves the tracking ref instead
  }
  return /^([0-9a-f]{40})\t\tbranch /.exec(head)?.[1] ?? null;
}

/** The commit the remote-tracking branch points at. */
export async function resolveTarget(repo: Repo): Promise<string> {
  const ref = trackingRef(repo);
  // From the object reader: `rev-parse --quiet` exits 1 printing nothing, which simple-git takes as success.
  const commit = await repo.objects.read(`${ref}^{commit}`).catch(() => null);
  if (!commit) {
    throw new AgentError("REPO_INVALID", `${ref} does not exist in ${repo.dir}`, {
      hint: "run without --no-fetch, or check the branch name in the manifest",
    });
  }
  return commit.oid;
}

export async function headCommit(repo: Repo): Promise<string | null> {
  return (await repo.objects.read("HEAD^{commit}"))?.oid ?? null;
}
