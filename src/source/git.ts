import { type ExecFileException, execFile } from "node:child_process";
import { existsSync, readFileSync, unlinkSync } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { GitPluginError, type SimpleGit, type SimpleGitOptions, simpleGit } from "simple-git";
import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import { createFetcher, type Fetcher } from "./fetch.js";
import { createObjectReader, type ObjectReader } from "./objects.js";

/**
 * The git layer: it syncs the clone and answers "which revision, which paths changed". It knows nothing
 * about steps (Flux's source-controller split).
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

/** simple-git's block timeout and the fetch's: a git command that takes longer is killed. */
const NETWORK_TIMEOUT_MS = 120_000;
/** The clone's remotes, one name a line: more is refused, never cut. */
const REMOTES_MAX_BYTES = 1024 * 1024;

function gitError(
  code: "GIT_FAILED" | "FETCH_FAILED" | "REPO_INVALID",
  what: string,
  err: unknown,
): AgentError {
  // git's own verdict is on its "fatal:"/"error:" lines; the rest is advice.
  const lines = (err instanceof Error ? err.message : String(err))
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const verdict = lines.filter((l) => /^(fatal|error):/.test(l));
  const detail = (verdict.length ? verdict.slice(0, 2) : lines.slice(-2)).join(" ");
  return new AgentError(code, `${what}: ${sanitize(detail)}`, { cause: err });
}

/** A minimal environment for every git the agent starts: never prompt for credentials, stable (English) messages. */
export function gitEnv(): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/root",
    GIT_TERMINAL_PROMPT: "0",
    LC_ALL: "C",
  };
}

/** What a caller may add to the one way git is started. */
export interface GitOptions {
  /** Cancels the command (kills git). */
  signal?: AbortSignal | undefined;
  /** Added to the minimal environment, e.g. GNUPGHOME for verify-commit. */
  env?: Record<string, string> | undefined;
  /** Kill git after this long without output (default: the network bound). */
  timeoutMs?: number | undefined;
  /** simple-git refuses some settings unless allowed: verify-commit's own ssh program needs allowUnsafeGpgProgram. */
  unsafe?: { allowUnsafeGpgProgram?: boolean } | undefined;
}

/**
 * git in a directory, started the one way the agent starts it: simple-git, the minimal environment (gitEnv;
 * never the process's GIT_*, GNUPGHOME or the like), a timeout, cancelled by `signal`. The object reader
 * (objects.ts) and the fetch started ahead (fetch.ts) are the exceptions: both are long-lived processes fed
 * on stdin, which simple-git cannot do, and both get the same environment. Throws REPO_INVALID for a missing
 * directory (simple-git's own error is a plain Error).
 */
export function gitAt(dir: string, signal?: AbortSignal, opts: GitOptions = {}): SimpleGit {
  return simpleGitAt(dir, { ...opts, signal });
}

function simpleGitAt(dir: string, opts: GitOptions & Pick<SimpleGitOptions, "errors">): SimpleGit {
  if (!existsSync(dir)) {
    throw new AgentError("REPO_INVALID", `${dir} does not exist`, {
      hint: `clone the repository there first: git clone <url> ${dir}`,
    });
  }
  return simpleGit({
    baseDir: dir,
    timeout: { block: opts.timeoutMs ?? NETWORK_TIMEOUT_MS },
    allowEnvironment: ["GIT_TERMINAL_PROMPT"],
    ...(opts.unsafe ? { unsafe: opts.unsafe } : {}),
    ...(opts.errors ? { errors: opts.errors } : {}),
    ...(opts.signal ? { abort: opts.signal } : {}),
  }).env({ ...gitEnv(), ...opts.env });
}

export interface GitExit {
  /** null when git did not finish: killed by the timeout, the signal or another signal, or refused by simple-git. */
  exitCode: number | null;
  stdout: string;
  /** git's stderr; when it did not finish, why. */
  stderr: string;
}

/**
 * git started the one way (gitAt), for the commands whose answer is their exit code (merge-base
 * --is-ancestor, verify-commit): simple-git resolves on an exit 1 that prints nothing and rejects other
 * exits with their output only, so here every exit comes back as git gave it, and never as a rejection.
 */
export async function gitExit(dir: string, args: readonly string[], opts: GitOptions = {}): Promise<GitExit> {
  let exit: Omit<GitExit, "stdout"> = { exitCode: null, stderr: "" };
  try {
    const stdout = await simpleGitAt(dir, {
      ...opts,
      errors(error, result) {
        exit = { exitCode: result.exitCode, stderr: Buffer.concat(result.stdErr).toString("utf8") };
        // A timeout or an abort is simple-git's own error: it rejects below.
        return error instanceof GitPluginError ? error : undefined;
      },
    }).raw([...args]);
    return { ...exit, stdout };
  } catch (err) {
    if (err instanceof AgentError) throw err; // REPO_INVALID: no such directory
    return { exitCode: null, stdout: "", stderr: err instanceof Error ? err.message : String(err) };
  }
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
