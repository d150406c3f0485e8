import type { z } from "zod";
import type { StepConfig } from "../steps/index.js";
import { cinnyNightlyJob } from "./cinny-nightly.js";
import { livekitRestartJob } from "./livekit-restart.js";
import type { HostJob, JobContext, JobResult } from "./types.js";

/** A job as the rest of the agent sees it: its section's config arrives as parsed by its own schema. */
export interface RegisteredJob extends Omit<HostJob, "run" | "check" | "watchSeconds"> {
  check(config: unknown, steps: readonly StepConfig[]): { path: (string | number)[]; message: string }[];
  watchSeconds(config: unknown): number;
  run(config: unknown, ctx: JobContext): Promise<JobResult>;
}

function register<S extends z.ZodType>(job: HostJob<S>): RegisteredJob {
  // The only place a section's config meets its type: it was produced by `job.schema` (see jobSections).
  const typed = (config: unknown) => config as z.output<S>;
  return {
    ...job,
    check: (config, steps) => job.check?.(typed(config), steps) ?? [],
    watchSeconds: (config) => job.watchSeconds?.(typed(config)) ?? 0,
    run: (config, ctx) => job.run(typed(config), ctx),
  };
}

/** The host jobs. Adding one is a file under src/jobs/ and a line here; manifest, CLI, daemon and install follow. */
export const JOBS: readonly RegisteredJob[] = [register(livekitRestartJob), register(cinnyNightlyJob)];

/** The manifest keys of the jobs, each optional: a host role has the sections of the jobs it runs. */
export const jobSections: Record<string, z.ZodOptional<z.ZodType>> = Object.fromEntries(
  JOBS.map((job) => [job.section, job.schema.optional()]),
);

/** The job's config in a manifest, or undefined when the host does not run it. */
export function jobConfig(manifest: Record<string, unknown>, job: RegisteredJob): unknown {
  return manifest[job.section];
}

export function jobByCommand(command: string): RegisteredJob | undefined {
  return JOBS.find((j) => j.command === command);
}
