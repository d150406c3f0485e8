import { type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { holdOpen, stderrTail } from "./objects.js";

/**
 * `git fetch`, started before the push that needs it. Between runs the daemon starts a small shell
 * that waits for one line, the refspec, and then becomes `git fetch` (exec, no second fork); a push writes
 * that line instead of spawning: forking the Node process (2–3 ms at the daemon's size, during which
 * `spawn` blocks the event loop) is off the push's path. git itself starts only once it has its refspec,
 * so it reads the configuration (remote URL, credentials) as it is then, and a waiting shell whose agent
 * died reads end-of-file and exits without running git. simple-git cannot hand a process its arguments
 * later, so this module spawns git itself.
 */

/** Reads the refspec, then replaces itself with git; arguments: git's options, then the remote. */
const WAIT_THEN_FETCH = 'IFS= read -r refspec || exit 0; exec git fetch "$@" "$refspec"';

/** git's messages kept for the error: the last lines carry its verdict. */
const STDERR_KEPT = 4000;

export interface Fetcher {
  /** Fetches one refspec; rejects with git's own messages, or after `timeoutMs` (the fetch is killed). */
  fetch(refspec: string): Promise<void>;
  /** Starts the process the next fetch uses (the daemon, between runs). */
  prepare(): void;
  /** Ends the waiting process, if any. */
  close(): void;
}

type FetchProcess = ChildProcessByStdio<Writable, null, Readable>;

export function createFetcher(
  dir: string,
  env: NodeJS.ProcessEnv,
  options: readonly string[],
  timeoutMs: number,
): Fetcher {
  let waiting: FetchProcess | null = null;

  const start = (): FetchProcess => {
    const child = spawn("/bin/sh", ["-c", WAIT_THEN_FETCH, "deploy-agent-fetch", ...options], {
      cwd: dir,
      env,
      stdio: ["pipe", "ignore", "pipe"],
    });
    child.stdin.on("error", () => {}); // a process that died: reported by its exit
    return child;
  };

  /** The waiting process, unless it died meanwhile; otherwise one started now (the CLI). */
  const take = (): FetchProcess => {
    const w = waiting;
    waiting = null;
    if (w && w.exitCode === null && w.signalCode === null) return w;
    return start();
  };

  return {
    fetch(refspec) {
      if (/[\n\0]/.test(refspec)) return Promise.reject(new Error("refspec with a newline"));
      const child = take();
      holdOpen(child, true);
      const stderr = stderrTail(child, STDERR_KEPT);
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
          else reject(new Error(stderr() || `git fetch exited (${signal ?? code})`));
        });
        child.stdin.end(`${refspec}\n`);
      });
    },
    prepare() {
      if (waiting) return;
      waiting = start();
      // Waiting must not keep a process alive that has nothing else to do.
      holdOpen(waiting, false);
    },
    close() {
      waiting?.kill("SIGKILL");
      waiting = null;
    },
  };
}
