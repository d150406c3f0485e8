import type { z } from "zod";
import type { StepConfig } from "../steps/index.js";
import type { StepContext } from "../steps/types.js";

/**
 * A host job: work a host role does apart from deploying a push (LiveKit's call-aware restart, Cinny's
 * nightly build). Like a step kind it is one file with its zod schema and a function that touches the world
 * only through the context; registered in src/jobs/index.ts, it becomes a manifest section, a
 * `deploy-agent <command>`, and, if it watches, a timer in `serve`: no other code knows it by name.
 */

export interface JobContext extends Omit<StepContext, "source"> {
  /** `--force`: do the work even if nothing changed. */
  force: boolean;
}

export interface JobResult {
  /** One line for people and logs. */
  message: string;
  /** The job's gauge (see `gauge`), when it has one. */
  gauge?: number;
  /** It changed something (restarted, built): logged at info, not debug. */
  acted?: boolean;
  [key: string]: unknown;
}

export interface HostJob<Schema extends z.ZodType = z.ZodType, C = z.output<Schema>> {
  /** `deploy-agent <command>`. */
  command: string;
  /** The manifest key holding its config. */
  section: string;
  schema: Schema;
  /** One line for the usage text. */
  summary: string;
  timeoutSeconds: number;
  /** Problems this config has with the rest of the manifest, at key paths relative to the manifest. */
  check?(config: C, steps: readonly StepConfig[]): { path: (string | number)[]; message: string }[];
  /** How often `serve` runs it between deploys (seconds; 0: never). */
  watchSeconds?(config: C): number;
  /** A gauge `serve` exports from each result's `gauge`. */
  gauge?: { name: string; help: string };
  /** What `deploy-agent install` puts in place for a host that runs it, from the agent's systemd/ folder. */
  install?: { units?: string[]; enable?: string[]; cron?: { file: string; as: string } };
  run(config: C, ctx: JobContext): Promise<JobResult>;
}
