import { type ExecFileException, execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import type { SimpleGit } from "simple-git";
import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import { createFetcher, type Fetcher } from "./fetch.js";
import { gitAt, gitEnv, NETWORK_TIMEOUT_MS } from "./git-command.js";
import { gitError } from "./git-error.js";
import { createObjectReader, type ObjectReader } from "./objects.js";

/**
 * The clone: opened only once it is checked (a directory, the top of a git work tree, git may read it, it
 * has the named remote), with its long-lived git processes, and closed. Apart from what is done with it
 * (git.ts, work-tree.ts) because every refusal of a clone that a human must fix is decided here, on opening.
 */

export interface Repo {
  dir: string;
  remote: string;
  branch: string;
  git: SimpleGit;
  /** One long-lived `git cat-file --batch` for blobs, trees and commits (see objects.ts). */
  objects: ObjectReader;
  /** `git fetch`, started ahead by the daemon (see fetch.ts). */
  fetcher: Fetcher;
}

/** The clone's remotes, one name a line: more is refused, never cut. */
const REMOTES_MAX_BYTES = 1024 * 1024;

/**
 * Whether the directory is in a git work tree, and the clone's remotes, from one process (`git rev-parse
 * --show-toplevel`, then `git remote`): each process the daemon starts blocks its event loop while Node forks
 * it (5–10 ms at its size), and this is on the path of the start's first answer. No value reaches the shell's
 * command line. The top itself is not read (a path may hold a newline, which made its second line a remote):
 * a mark line says rev-parse passed. `exec`: the timeout's kill reaches `git remote`, not only the shell.
 * `failed`: set when the shell did not end well (git remote failed, the timeout, more than maxBuffer).
 */
function inTreeAndRemotes(
  dir: string,
  env: Record<string, string>,
): Promise<{ inTree: boolean; remotes: string[]; refusal: string; failed: ExecFileException | null }> {
  const command = "git rev-parse --show-toplevel >/dev/null && echo . && exec git remote";
  const options = { cwd: dir, env, timeout: NETWORK_TIMEOUT_MS, maxBuffer: REMOTES_MAX_BYTES };
  return new Promise((resolve) => {
    execFile("/bin/sh", ["-c", command], options, (err, stdout, stderr) => {
      // Without the mark, rev-parse failed and `git remote` never ran; git says why on stderr.
      const [mark, ...remotes] = stdout.split("\n");
      resolve({ inTree: mark === ".", remotes: remotes.filter(Boolean), refusal: stderr, failed: err });
    });
  });
}

/** Opens the clone, refusing anything that is not the top of a git work tree with the named remote. */
export async function openRepo(dir: string, remote: string, branch: string): Promise<Repo> {
  const isDir = await stat(dir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) {
    throw new AgentError("REPO_INVALID", `repository ${dir} does not exist or is not a directory`, {
      hint: "clone the config repository there, or pass --repo DIR",
    });
  }
  const env = gitEnv();
  const { inTree, remotes, refusal, failed } = await inTreeAndRemotes(dir, env);
  // Killed: a list cut short (more than maxBuffer) could lack the remote or end in a part of another's name;
  // a hung git (the timeout) is no verdict on the clone.
  if (failed?.code === "ERR_CHILD_PROCESS_STDIO_MAXBUFFER") {
    throw new AgentError("REPO_INVALID", `git remote in ${dir} listed more than ${REMOTES_MAX_BYTES} bytes`);
  }
  if (failed?.killed) {
    throw new AgentError("GIT_FAILED", `git in ${dir} took longer than ${NETWORK_TIMEOUT_MS} ms`);
  }
  if (!inTree && (failed?.code === 127 || failed?.code === "ENOENT")) {
    // The shell's "git: not found" (127), or no /bin/sh: no verdict on the clone.
    throw new AgentError(
      "GIT_FAILED",
      `cannot run git in ${dir}: ${sanitize(refusal.trim() || failed.message)}`,
      {
        hint: "install git, or give the unit a PATH that has it",
      },
    );
  }
  if (!inTree && /dubious ownership/.test(refusal)) {
    // git (2.35.2+) refuses a repository owned by another user; say so instead of "not a work tree".
    const owner = (await stat(dir)).uid;
    throw new AgentError(
      "REPO_INVALID",
      `git refuses ${dir}: it is owned by uid ${owner}, not by this process's uid ${process.getuid?.()} ("dubious ownership")`,
      {
        hint: `chown -R ${process.getuid?.() === 0 ? "root:root" : "$(id -u):$(id -g)"} ${dir}, or trust it: git config --system --add safe.directory ${dir}`,
      },
    );
  }
  if (!inTree) {
    throw new AgentError("REPO_INVALID", `${dir} is not a git work tree`, {
      hint: "clone the config repository there, or pass --repo DIR",
    });
  }
  if (failed) {
    // git refuses the clone's config (a bad refspec, a key without a value): a human must fix it.
    throw gitError(
      "REPO_INVALID",
      `git cannot list the remotes of ${dir}`,
      new Error(refusal || failed.message),
    );
  }
  if (!remotes.includes(remote)) {
    throw new AgentError("REPO_INVALID", `repository ${dir} has no remote named "${remote}"`, {
      hint: `git -C ${dir} remote add ${remote} <url>`,
    });
  }
  // No tag following, no submodules, no `git maintenance` child: the agent needs one branch, now.
  const fetchOptions = ["--no-tags", "--no-recurse-submodules", "--no-auto-maintenance", remote];
  return {
    dir,
    remote,
    branch,
    git: gitAt(dir),
    objects: createObjectReader(dir, env),
    fetcher: createFetcher(dir, env, fetchOptions, NETWORK_TIMEOUT_MS),
  };
}

/** Ends the clone's long-lived git processes: the object reader and a fetch waiting for its refspec. */
export function closeRepo(repo: Repo | undefined): void {
  repo?.objects.close();
  repo?.fetcher.close();
}
