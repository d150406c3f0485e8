import path from "node:path";
import { fileURLToPath } from "node:url";
import { AgentError } from "../core/errors.js";
import type { TransformOutput } from "./transform.js";

/**
 * Hookshot transform checks (transform.ts) run in a short-lived child process: QuickJS keeps 14–19 MiB
 * (its compiled WebAssembly) for the life of the process that ran it, even in a terminated worker thread,
 * so the daemon never loads it. One child per batch: a step's changed transforms are checked together.
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
/** Characters of the child's stderr kept in the error when it fails. */
const STDERR_TAIL = 600;

// Bundled, this code is in dist/src/bin.js and build.mjs puts the child beside it; from source (tsx, the
// tests) the child is this directory's sandbox.ts and needs tsx too.
const here = fileURLToPath(import.meta.url);
const fromSource = here.endsWith(".ts");
const childArgv = (): string[] =>
  fromSource
    ? ["--import", import.meta.resolve("tsx"), path.join(path.dirname(here), "sandbox.ts")]
    : [path.join(path.dirname(here), "hookshot-sandbox.js")];

export async function checkTransforms(
  jobs: readonly TransformJob[],
  opts: { signal?: AbortSignal; timeoutMs?: number; maxOutputBytes?: number } = {},
): Promise<TransformVerdict[]> {
  if (jobs.length === 0) return [];
  const { execa } = await import("execa");
  const res = await execa(process.execPath, childArgv(), {
    input: JSON.stringify(jobs),
    reject: false,
    timeout: opts.timeoutMs ?? SANDBOX_TIMEOUT_MS,
    maxBuffer: { stdout: opts.maxOutputBytes ?? SANDBOX_OUTPUT_MAX_BYTES, stderr: 64 * 1024 },
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    stripFinalNewline: false,
  });
  if (res.isCanceled) throw new AgentError("ABORTED", "the transform check was cancelled");
  if (res.timedOut) {
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      `the transform check took longer than ${opts.timeoutMs ?? SANDBOX_TIMEOUT_MS} ms`,
    );
  }
  if (res.isMaxBuffer) {
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      `the transform check's answer is larger than ${opts.maxOutputBytes ?? SANDBOX_OUTPUT_MAX_BYTES} bytes`,
    );
  }
  if (res.failed) {
    const stderr = String(res.stderr).trim().slice(-STDERR_TAIL);
    throw new AgentError(
      "TRANSFORM_CHECK_FAILED",
      `the transform check ${res.exitCode !== undefined ? `exited with code ${res.exitCode}` : `failed: ${res.shortMessage}`}${stderr ? `: ${stderr}` : ""}`,
    );
  }
  let verdicts: unknown;
  try {
    verdicts = JSON.parse(String(res.stdout));
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
