import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * Real git fixtures: a bare "origin", the agent's clone of it, and a second "pusher" clone that plays the
 * developer. Built from `{ path: content }` objects with a fixed identity.
 */

const IDENTITY = {
  GIT_AUTHOR_NAME: "Test Pusher",
  GIT_AUTHOR_EMAIL: "pusher@example.test",
  GIT_COMMITTER_NAME: "Test Pusher",
  GIT_COMMITTER_EMAIL: "pusher@example.test",
  GIT_CONFIG_NOSYSTEM: "1",
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", args, {
    cwd,
    env: { ...process.env, ...IDENTITY },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** Whether `sha` names a commit of the repository at `dir` (a Gitea test server's `knows`). */
export function hasCommit(dir: string, sha: string): boolean {
  try {
    return git(dir, "cat-file", "-t", sha) === "commit";
  } catch {
    return false;
  }
}

/** A file's content, or `{ symlink: target }` to commit a link. */
export type FileSpec = string | Buffer | { symlink: string } | null;
export type Files = Record<string, FileSpec>;

export interface Fixture {
  dir: string;
  origin: string;
  clone: string;
  pusher: string;
  /** Commits the files (null deletes) on main in the pusher clone and pushes; returns the new commit. */
  push(files: Files, message?: string): string;
  /** Renames a file in one commit and pushes. */
  rename(from: string, to: string): string;
  cleanup(): void;
}

function writeFiles(root: string, files: Files): void {
  for (const [rel, spec] of Object.entries(files)) {
    const full = path.join(root, rel);
    if (spec === null) {
      rmSync(full, { force: true });
      continue;
    }
    mkdirSync(path.dirname(full), { recursive: true });
    rmSync(full, { force: true });
    if (typeof spec === "object" && !Buffer.isBuffer(spec)) symlinkSync(spec.symlink, full);
    else writeFileSync(full, spec);
  }
}

/**
 * `history`: commits on main before the initial files (made with git fast-import, so a history of
 * 10,000 commits takes a second), for benchmarks whose cost must not follow the history's length.
 */
export function makeFixture(initial: Files, options: { history?: number } = {}): Fixture {
  const dir = mkdtempSync(path.join(tmpdir(), "deploy-agent-test-"));
  const origin = path.join(dir, "origin.git");
  const pusher = path.join(dir, "pusher");
  const clone = path.join(dir, "clone");
  git(dir, "init", "--quiet", "--bare", "--initial-branch=main", origin);
  git(dir, "clone", "--quiet", origin, pusher);
  git(pusher, "checkout", "--quiet", "-B", "main");

  if (options.history) {
    const stream: string[] = [];
    for (let i = 1; i <= options.history; i++) {
      const data = `commit ${i}\n`;
      stream.push(
        "commit refs/heads/main",
        `committer ${IDENTITY.GIT_COMMITTER_NAME} <${IDENTITY.GIT_COMMITTER_EMAIL}> ${1_700_000_000 + i} +0000`,
        "data 7",
        "history",
        `M 100644 inline history.txt`,
        `data ${Buffer.byteLength(data)}`,
        data,
      );
    }
    execFileSync("git", ["fast-import", "--quiet"], { cwd: pusher, input: `${stream.join("\n")}\n` });
    git(pusher, "reset", "--quiet", "--hard", "main");
  }
  const push = (files: Files, message = "update") => {
    writeFiles(pusher, files);
    git(pusher, "add", "-A");
    git(pusher, "commit", "--quiet", "--allow-empty", "-m", message);
    git(pusher, "push", "--quiet", "--force", "origin", "main");
    return git(pusher, "rev-parse", "HEAD");
  };
  push(initial, "initial");
  git(dir, "clone", "--quiet", origin, clone);
  return {
    dir,
    origin,
    clone,
    pusher,
    push,
    rename(from, to) {
      mkdirSync(path.dirname(path.join(pusher, to)), { recursive: true });
      git(pusher, "mv", from, to);
      git(pusher, "commit", "--quiet", "-m", `rename ${from} to ${to}`);
      git(pusher, "push", "--quiet", "origin", "main");
      return git(pusher, "rev-parse", "HEAD");
    },
    // A git the killed daemon started (a fetch, the object reader) may still be writing into the clone for a
    // moment: rm retries on ENOTEMPTY instead of failing the test that ran before it.
    // A git fetch that a SIGKILLed daemon started goes on writing in the clone until it ends on its own.
    cleanup: () => rmSync(dir, { recursive: true, force: true, maxRetries: 50, retryDelay: 100 }),
  };
}
