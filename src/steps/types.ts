import type { Logger } from "pino";
import type { z } from "zod";
import type { CommandRunner } from "../command.js";
import type { EffectRecorder } from "../effects.js";
import type { HostFs } from "../host-fs.js";
import type { Snapshot } from "../source/snapshot.js";
import type { StepItem } from "../state.js";

/** The only door a step has to the world; in a dry run every writer in it describes instead of acting. */
export interface StepContext {
  dryRun: boolean;
  /** The revision being deployed. */
  source: Snapshot;
  host: HostFs;
  run: CommandRunner;
  record: EffectRecorder;
  log: Logger;
  /** Aborted when the step times out; long operations pass it on. */
  signal: AbortSignal;
  /** The manifest's `commands`: argv prefixes for host tools such as systemctl. */
  commands: { systemctl: readonly string[] };
}

/** Repository content as `validate` sees it (the checkout). */
export interface RepoFiles {
  paths(): string[];
  read(path: string): Promise<Buffer>;
}

/** What the planner hands to a step: the repository files that made it run. */
export interface StepWork {
  files: string[];
}

export interface StepConfigBase {
  kind: string;
  name: string;
  paths?: string[] | undefined;
  timeoutSeconds: number;
}

/** One deploy step kind: its manifest schema, and pure planning apart from effectful apply. */
export interface StepKind<
  Schema extends z.ZodType<StepConfigBase> = z.ZodType<StepConfigBase>,
  S = z.output<Schema>,
> {
  schema: Schema;
  /** Repository files the step reads; `validate` checks they exist at HEAD. */
  sources(step: S): string[];
  /** Globs that make the step run when `paths` is not given. */
  triggers(step: S): string[];
  /** Kind-specific checks for `validate` against the repository content; returns problems. */
  check?(step: S, repo: RepoFiles): Promise<string[]>;
  /** Pure: one line per piece of work these files would cause. */
  plan(step: S, work: StepWork): string[];
  /** Does the work (or describes it, in a dry run) and reports one item per target. */
  apply(step: S, ctx: StepContext, work: StepWork): Promise<StepItem[]>;
}
