import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";

/**
 * One process, run to its end with its output captured within bounds: the host commands' runner and the
 * transform checks' child process use it. On node:child_process directly: execa, which did this before, cost
 * the daemon 2 MiB at idle once loaded and about 7 ms of CPU per command run (measured under the benchmark).
 */

/** After SIGTERM (timeout, cancel, output over its bound), a process that has not ended gets SIGKILL. */
export const KILL_GRACE_MS = 5000;

/** After the process exits, how long a child it left behind (a daemon it started) may hold its stdout or stderr. */
export const STREAMS_AFTER_EXIT_MS = 2000;

export interface ProcessOptions {
  /**
   * Written to stdin, which is then closed (empty when absent). A promise: the process starts now and gets
   * its input when it is known (a child that loads its code meanwhile); `timeoutMs` counts from then.
   */
  input?: string | Promise<string>;
  /** The whole environment (not added to this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Bytes kept per stream; one more byte ends the process (`overflow`). */
  maxBytes: { stdout: number; stderr: number };
  /** SIGTERM to SIGKILL (KILL_GRACE_MS). */
  graceMs?: number;
  /** Drop one final newline of stdout, stderr and all, as a shell's `$(…)` does. */
  stripFinalNewline?: boolean;
  /** Descriptors of this process the child gets as its 3, 4, …: `/proc/self/fd/3` in the child. */
  fds?: readonly number[];
}

export interface ProcessResult {
  /** null when the process ended by a signal or never started. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr interleaved as they arrived. */
  all: string;
  /** Why the process could not be started (e.g. `spawn nginx ENOENT`). */
  startError?: string;
  timedOut: boolean;
  canceled: boolean;
  /** The stream that passed its bound. */
  overflow?: "stdout" | "stderr";
}

/** How a process that did not exit 0 ended, in words: `failed: <why it could not start>`, `was killed by SIGTERM`, `exited with code 3`. */
export function endedHow(r: Pick<ProcessResult, "startError" | "signal" | "exitCode">): string {
  if (r.startError !== undefined) return `failed: ${r.startError}`;
  return r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`;
}

const strip = (s: string) => (s.endsWith("\r\n") ? s.slice(0, -2) : s.endsWith("\n") ? s.slice(0, -1) : s);

/** libuv reports a missing working directory as the command's ENOENT: say which is missing. */
function startError(err: NodeJS.ErrnoException, cwd: string | undefined): string {
  return err.code === "ENOENT" && cwd !== undefined && !existsSync(cwd)
    ? `${err.message}: the working directory ${cwd} does not exist`
    : err.message;
}

export function runProcess(file: string, args: readonly string[], o: ProcessOptions): Promise<ProcessResult> {
  const text = (chunks: Buffer[]) => {
    const s = Buffer.concat(chunks).toString("utf8");
    return o.stripFinalNewline ? strip(s) : s;
  };
  const ended = (partial: Partial<ProcessResult>): ProcessResult => ({
    exitCode: null,
    signal: null,
    stdout: "",
    stderr: "",
    all: "",
    timedOut: false,
    canceled: false,
    ...partial,
  });
  if (o.signal?.aborted) return Promise.resolve(ended({ canceled: true }));

  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      cwd: o.cwd,
      env: o.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe", ...(o.fds ?? [])],
    });
  } catch (err) {
    // A NUL byte in an argument or the environment: node refuses it at once, quoting the value (a secret?).
    return Promise.resolve(ended({ startError: (err as Error).message.replace(/\. Received .*$/s, "") }));
  }
  return new Promise((resolve) => {
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], all: [] as Buffer[] };
    const size = { stdout: 0, stderr: 0 };
    let timedOut = false;
    let canceled = false;
    let overflow: ProcessResult["overflow"];
    let forceKill: NodeJS.Timeout | undefined;
    let done = false;

    const exited = () => child.exitCode !== null || child.signalCode !== null;
    // A process that left a child of its own holding its stdout or stderr (`cmd &`, a daemon it started) has
    // exited, but its streams stay open: stopping it, or STREAMS_AFTER_EXIT_MS, ends the wait for them.
    const release = () => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    };
    const stop = () => {
      // Not started (its 'error' is still to come): node's kill() would signal our own process group.
      if (child.pid === undefined) return;
      if (exited()) return release();
      if (forceKill) return;
      child.kill("SIGTERM");
      forceKill = setTimeout(() => child.kill("SIGKILL"), o.graceMs ?? KILL_GRACE_MS);
    };
    let afterExit: NodeJS.Timeout | undefined;
    child.on("exit", () => {
      if (timedOut || canceled || overflow) release();
      else afterExit = setTimeout(release, STREAMS_AFTER_EXIT_MS);
    });
    const onAbort = () => {
      canceled = true;
      stop();
    };
    let timer: NodeJS.Timeout | undefined;
    o.signal?.addEventListener("abort", onAbort, { once: true });

    const finish = (result: ProcessResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(forceKill);
      clearTimeout(afterExit);
      o.signal?.removeEventListener("abort", onAbort);
      resolve(result);
    };

    child.on("error", (err) => {
      // No pid: it never started (ENOENT, EACCES). Otherwise a kill failed; 'close' still follows.
      if (child.pid === undefined) finish(ended({ startError: startError(err, o.cwd) }));
    });
    // Out of file descriptors (EMFILE), node gives up before it makes the pipes: only 'error' follows.
    const { stdin, stdout, stderr } = child;
    if (!stdin || !stdout || !stderr) return;

    for (const [name, stream] of [["stdout", stdout] as const, ["stderr", stderr] as const]) {
      stream.on("data", (chunk: Buffer) => {
        if (overflow) return;
        size[name] += chunk.length;
        if (size[name] > o.maxBytes[name]) {
          overflow = name;
          stop();
          return;
        }
        out[name].push(chunk);
        out.all.push(chunk);
      });
    }
    // A command that does not read its stdin closes the pipe under us (EPIPE): not an error of the command.
    stdin.on("error", () => {});
    const write = (input: string) => {
      if (done) return;
      stdin.end(input);
      if (o.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          stop();
        }, o.timeoutMs);
      }
    };
    if (typeof o.input === "object") o.input.then(write, () => write(""));
    else write(o.input ?? "");

    child.on("close", (exitCode, signal) =>
      finish({
        exitCode,
        signal,
        stdout: text(out.stdout),
        stderr: text(out.stderr),
        all: text(out.all),
        timedOut,
        canceled,
        ...(overflow ? { overflow } : {}),
      }),
    );
  });
}
