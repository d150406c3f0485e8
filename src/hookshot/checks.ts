import path from "node:path";
import { fileURLToPath } from "node:url";
import { AgentError } from "../core/errors.js";
import { endedHow, type ProcessResult, runProcess } from "../host/process.js";
import type { TransformOutput } from "./transform.js";

/**
 * Hookshot transform checks (transform.ts) run in a short-lived child process: QuickJS keeps 14–19 MiB
 * (its compiled WebAssembly) for the life of the process that ran it, even in a terminated worker thread,
 * so the daemon never loads it. One child per batch: a step's changed transforms are checked together. A push
 * that says it changed a transform starts the child ahead (warmChecks), so that Node and QuickJS load while
 * the run fetches.
 */

/** A transform's source, and the payloads (JSON text) to run it on when it compiles. */
export interface TransformJob {
  src: string;
  payloads: string[];
}

/** Why hookshot would refuse the transform (null: it would not), and each payload's output or error. */
export interface TransformVerdict {
  problem: string | null;
  runs: ({ output: TransformOutput } | { error: string })[];
}

/** The whole batch; each run is also stopped by hookshot's own 500 ms deadline inside the child. */
export const SANDBOX_TIMEOUT_MS = 60_000;
/** The child's answer (the verdicts as JSON) is refused above this. */
export const SANDBOX_OUTPUT_MAX_BYTES = 4 * 1024 * 1024;
/** The child's stderr is refused above this (it writes none unless it fails). */
const SANDBOX_STDERR_MAX_BYTES = 64 * 1024;
/** Characters of the child's stderr kept in the error when it fails. */
const STDERR_TAIL = 600;

// Bundled, this code is in dist/src/agent.cjs and build.mjs puts the child beside it; from source (tsx, the
// tests) the child is this directory's sandbox.ts and needs tsx too.
const here = fileURLToPath(import.meta.url);
const fromSource = here.endsWith(".ts");
/**
 * V8 compiles QuickJS's WebAssembly twice by default: quickly (Liftoff), then optimised (TurboFan) in the
 * background, and a process does not exit before that second compile ends. A child that lives for one batch
 * never gains from it: Liftoff alone answered one transform's check in 250 ms instead of 540 ms (the
 * answer itself 250 instead of 360 ms), and ran a busy loop twice as far within hookshot's 500 ms deadline.
 */
export const SANDBOX_NODE_FLAGS = ["--liftoff-only"] as const;
const childArgv = (): string[] => [
  ...SANDBOX_NODE_FLAGS,
  ...(fromSource
    ? ["--import", import.meta.resolve("tsx"), path.join(path.dirname(here), "sandbox.ts")]
    : [path.join(path.dirname(here), "hookshot-sandbox.js")]),
];

/** How long a child started ahead (warmChecks) waits for a batch; then it is given none and exits. */
export const SPARE_WAIT_MS = 30_000;

interface Spare {
  /** Gives the child its batch (an empty one when nobody took it in time). */
  feed(input: string): void;
  /** Cancels the child (the daemon stopping; once taken, the run's signal). */
  cancel: AbortController;
  result: Promise<ProcessResult>;
  /** Unhooks it from the daemon's stop signal. */
  taken(): void;
}

/** At most one child waits at a time. */
let spare: Spare | undefined;

/**
 * The child's whole environment: the unit's NODE_OPTIONS (its memory caps), nothing else. The daemon's holds
 * its secrets (the webhook secret, a Matrix token) and the child needs none of them.
 */
const childEnv = (): NodeJS.ProcessEnv =>
  process.env.NODE_OPTIONS === undefined ? {} : { NODE_OPTIONS: process.env.NODE_OPTIONS };

function startChild(input: string | Promise<string>, signal: AbortSignal | undefined, o: Bounds) {
  return runProcess(process.execPath, childArgv(), {
    input,
    env: childEnv(),
    timeoutMs: o.timeoutMs,
    maxBytes: { stdout: o.maxOutputBytes, stderr: SANDBOX_STDERR_MAX_BYTES },
    ...(signal ? { signal } : {}),
  });
}

interface Bounds {
  timeoutMs: number;
  maxOutputBytes: number;
}
const DEFAULT_BOUNDS: Bounds = { timeoutMs: SANDBOX_TIMEOUT_MS, maxOutputBytes: SANDBOX_OUTPUT_MAX_BYTES };

/**
 * Starts the next check's child now, while the run fetches: Node's start and QuickJS's compile are most of
 * a check's time. The next checkTransforms within SPARE_WAIT_MS takes it; otherwise it is given an empty
 * batch and exits. Nothing happens when a child already waits.
 */
export function warmChecks(signal: AbortSignal, waitMs = SPARE_WAIT_MS): void {
  if (spare || signal.aborted) return;
  let feed: (input: string) => void = () => {};
  const input = new Promise<string>((resolve) => {
    feed = resolve;
  });
  const cancel = new AbortController();
  const self: Spare = {
    feed,
    cancel,
    result: startChild(input, cancel.signal, DEFAULT_BOUNDS),
    taken: () => {},
  };
  spare = self;
  const expire = setTimeout(() => {
    if (spare === self) spare = undefined;
    feed("[]");
  }, waitMs);
  expire.unref();
  // The daemon stopping ends a child nobody took; a taken one belongs to its run's signal.
  const onStop = () => {
    if (spare === self) spare = undefined;
    cancel.abort();
  };
  signal.addEventListener("abort", onStop, { once: true });
  self.taken = () => signal.removeEventListener("abort", onStop);
  // A child that ended before it was taken (it could not start, it crashed) is not offered.
  void self.result.finally(() => {
    clearTimeout(expire);
    signal.removeEventListener("abort", onStop);
    if (spare === self) spare = undefined;
  });
}

/** The waiting child for a batch with the default bounds, linked to the caller's signal. */
function takeSpare(jobs: string, signal: AbortSignal | undefined): Promise<ProcessResult> | undefined {
  const taken = spare;
  if (!taken) return undefined;
  spare = undefined;
  taken.taken();
  const onAbort = () => taken.cancel.abort();
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  taken.feed(jobs);
  return taken.result.finally(() => signal?.removeEventListener("abort", onAbort));
}

export async function checkTransforms(
  jobs: readonly TransformJob[],
  opts: { signal?: AbortSignal; timeoutMs?: number; maxOutputBytes?: number } = {},
): Promise<TransformVerdict[]> {
  if (jobs.length === 0) return [];
  const timeoutMs = opts.timeoutMs ?? SANDBOX_TIMEOUT_MS;
  const maxOutputBytes = opts.maxOutputBytes ?? SANDBOX_OUTPUT_MAX_BYTES;
  const input = JSON.stringify(jobs);
  const defaults = opts.timeoutMs === undefined && opts.maxOutputBytes === undefined;
  const res = await ((defaults ? takeSpare(input, opts.signal) : undefined) ??
    startChild(input, opts.signal, { timeoutMs, maxOutputBytes }));
  if (res.canceled) throw new AgentError("ABORTED", "the transform check was cancelled");
  if (res.timedOut) {
    throw new AgentError("TRANSFORM_CHECK_FAILED", `the transform check took longer than ${timeoutMs} ms`);
  }
  if (res.overflow) {
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      res.overflow === "stdout"
        ? `the transform check's answer is larger than ${maxOutputBytes} bytes`
        : `the transform check wrote more than ${SANDBOX_STDERR_MAX_BYTES} bytes to stderr`,
    );
  }
  if (res.exitCode !== 0) {
    const stderr = res.stderr.trim().slice(-STDERR_TAIL);
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      `the transform check ${endedHow(res)}${stderr ? `: ${stderr}` : ""}`,
    );
  }
  let verdicts: unknown;
  try {
    verdicts = JSON.parse(res.stdout);
  } catch {
    verdicts = undefined;
  }
  if (!Array.isArray(verdicts) || verdicts.length !== jobs.length) {
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      "the transform check answered for another set of transforms",
    );
  }
  return verdicts as TransformVerdict[];
}
