import { unlinkSync } from "node:fs";
import path from "node:path";
import type { Repo } from "./open-repo.js";

/**
 * The sweep of git's stale lock files, before a real run's fetch. Apart from the git commands because it
 * starts no git: it is plain unlinks, and safe only under the deploy lock, which its callers hold.
 */

/**
 * Lock files a git process leaves behind when it is killed mid-command (kill -9, power loss). Only the
 * agent runs git in its clone, and only while it holds the deploy lock, so whatever it finds is stale.
 */
export function clearStaleGitLocks(repo: Repo): string[] {
  const gitDir = path.join(repo.dir, ".git");
  const candidates = [
    "index.lock",
    "HEAD.lock",
    "shallow.lock",
    "packed-refs.lock",
    `refs/heads/${repo.branch}.lock`,
    `refs/remotes/${repo.remote}/${repo.branch}.lock`,
  ];
  // Synchronously: six unlinks that nearly always find nothing, on a push's path before its fetch; a
  // thread-pool round trip each would cost more than the syscalls (see writeFileAtomic).
  return candidates
    .filter((rel) => {
      try {
        unlinkSync(path.join(gitDir, rel));
        return true;
      } catch {
        return false;
      }
    })
    .map((rel) => `.git/${rel}`);
}
