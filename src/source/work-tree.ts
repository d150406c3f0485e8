import { gitError } from "./git-error.js";
import type { Repo } from "./open-repo.js";

/**
 * The clone's work tree, brought to the deployed revision after the steps (deploy/source-sync.ts
 * syncWorkTree). Apart from the fetch and the revision reads because steps never read the work tree: this is
 * the only change the agent makes to the clone's files, and it runs last.
 */

/** Paths with local modifications; they are about to be discarded by the hard reset. */
export async function dirtyPaths(repo: Repo): Promise<string[]> {
  try {
    const status = await repo.git.status(["--untracked-files=no"]);
    return status.files.map((f) => f.path);
  } catch (err) {
    throw gitError("GIT_FAILED", "git status failed", err);
  }
}

export async function resetHard(repo: Repo, revision: string): Promise<void> {
  try {
    await repo.git.reset(["--hard", revision]);
  } catch (err) {
    throw gitError("GIT_FAILED", `git reset --hard ${revision} failed`, err);
  }
}
