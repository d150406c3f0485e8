import { type ChildProcessByStdio, spawn } from "node:child_process";
import { statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { holdOpen } from "./objects.js";

/**
 * `git fetch --stdin`, started before the push that needs it (#15). git reads its refspecs from stdin
 * before it contacts the remote, and takes no lock while it waits, so the daemon starts the next fetch
 * process between runs (`prepare`) and a push only writes one line to it: forking the Node process
 * (2–3 ms at the daemon's size, during which `spawn` blocks the event loop) and git's own start-up are off
 * the push's path. simple-git cannot hand a process its stdin later, so this module spawns git itself.
 *
 * A waiting process read git's configuration when it started: it is replaced when a config file changed
 * since (a new remote URL, credentials). Its argv holds only the negative refspec `^refs/tags/*`, so if the
 * agent dies and the process reads end-of-file instead of a refspec, it fetches nothing.
 */

/** A fetch that takes longer is killed (simple-git's block timeout before, #13's bound). */
export const FETCH_TIMEOUT_MS = 120_000;
/** git's messages kept for the error: the last lines carry its verdict. */
const STDERR_KEPT = 4000;

export interface Fetcher {
  /** Fetches one refspec; rejects with git's own messages, or after the timeout. */
  fetch(refspec: string): Promise<void>;
  /** Starts the process the next fetch uses (the daemon, between runs). */
  prepare(): void;
  /** Ends the waiting process, if any. */
  close(): void;
}

type FetchProcess = ChildProcessByStdio<Writable, null, Readable>;

interface Waiting {
  child: FetchProcess;
  config: string;
}

/** Where git reads configuration from (git-config(1) FILES), with their modification times. */
function configStamp(dir: string, env: NodeJS.ProcessEnv): string {
  const home = env.HOME ?? os.homedir();
  const files = [
    "/etc/gitconfig",
    path.join(env.XDG_CONFIG_HOME ?? path.join(home, ".config"), "git/config"),
    path.join(home, ".gitconfig"),
    path.join(dir, ".git/config"),
  ];
  return files.map((f) => statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0).join(",");
}

export function createFetcher(
  dir: string,
  env: NodeJS.ProcessEnv,
  options: readonly string[],
  { timeoutMs = FETCH_TIMEOUT_MS } = {},
): Fetcher {
  let waiting: Waiting | null = null;

  const start = (): Waiting => {
    const child = spawn("git", ["fetch", "--stdin", ...options, "^refs/tags/*"], {
      cwd: dir,
      env,
      stdio: ["pipe", "ignore", "pipe"],
    });
    child.stdin.on("error", () => {}); // a process that died: reported by its exit
    return { child, config: configStamp(dir, env) };
  };

  const take = (): FetchProcess => {
    const w = waiting;
    waiting = null;
    const usable =
      w && w.child.exitCode === null && w.child.signalCode === null && w.config === configStamp(dir, env);
    if (usable) return w.child;
    w?.child.kill("SIGKILL");
    return start().child;
  };

  return {
    fetch(refspec) {
      if (/[\n\0]/.test(refspec)) return Promise.reject(new Error("refspec with a newline"));
      const child = take();
      holdOpen(child, true);
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr = (stderr + d.toString("utf8")).slice(-STDERR_KEPT);
      });
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill("SIGKILL");
          reject(new Error(`fatal: git fetch did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        child.once("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.once("exit", (code, signal) => {
          clearTimeout(timer);
          if (code === 0) resolve();
          else reject(new Error(stderr.trim() || `git fetch exited (${signal ?? code})`));
        });
        child.stdin.end(`${refspec}\n`);
      });
    },
    prepare() {
      if (waiting) return;
      waiting = start();
      // Waiting must not keep a process alive that has nothing else to do.
      holdOpen(waiting.child, false);
    },
    close() {
      waiting?.child.kill("SIGKILL");
      waiting = null;
    },
  };
}
