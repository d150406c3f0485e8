import { existsSync } from "node:fs";
import { GitPluginError, type SimpleGit, type SimpleGitOptions, simpleGit } from "simple-git";
import { AgentError } from "../core/errors.js";

/**
 * How the agent starts git: the minimal environment, and git run through simple-git with a timeout and a
 * signal. Apart from the clone (open-repo.ts) because commands, steps and jobs also start git in directories
 * that are no opened clone (a step's clone on the host, a command's checkout), with no Repo at all.
 */

/** simple-git's block timeout and the fetch's: a git command that takes longer is killed. */
export const NETWORK_TIMEOUT_MS = 120_000;

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
