import type { Logger } from "pino";
import type { z } from "zod";
import type { Secret } from "../core/secret.js";
import type { CommandResult, CommandRunner } from "../host/command.js";
import type { EffectRecorder } from "../host/effects.js";
import type { HostFs } from "../host/host-fs.js";
import type { Snapshot } from "../source/snapshot.js";
import type { StepItem } from "../state/state.js";

/** Where and how a step talks to a homeserver. */
export interface MatrixConfig {
  homeserver: string;
  token: Secret;
  attempts: number;
  backoffMs: number;
  timeoutMs: number;
}

/** Matrix room state as a step may use it (src/steps/context.ts). */
export interface StepMatrix {
  /** The token's user; a rejected token is MATRIX_AUTH (in a dry run too), a failure to ask UNDETERMINED. */
  whoami(): Promise<string>;
  /** The state's content, null when absent; in a dry run a failure to look is UNDETERMINED. */
  getState(room: string, type: string, key: string): Promise<Record<string, unknown> | null>;
  /** PUTs the whole content and reads it back (dry run: records the PUT). */
  replaceState(
    room: string,
    type: string,
    key: string,
    content: Record<string, unknown>,
    detail: string,
  ): Promise<void>;
}

/**
 * The only door a step has to the world (created by src/steps/context.ts). In a dry run every writer in it
 * records instead of acting; a step never asks whether it is a dry run.
 */
export interface StepContext {
  /** The revision being deployed. */
  source: Snapshot;
  host: HostFs;
  run: CommandRunner;
  /**
   * git in a clone on the host (a host path), started the agent's one way with its minimal environment
   * (source/git-command.ts), never with the process's. A dry run records it and runs nothing.
   */
  git(hostDir: string, args: readonly string[]): Promise<CommandResult>;
  record: EffectRecorder;
  log: Logger;
  /** Aborted when the step times out or the agent must stop now; every IO call gets it. */
  signal: AbortSignal;
  /** The manifest's `commands`: argv prefixes for host tools such as systemctl. */
  commands: { systemctl: readonly string[] };
  matrix(config: MatrixConfig): StepMatrix;
  /** Polls an HTTP health endpoint until 200 or the timeout. */
  health(url: string, timeoutSeconds: number): Promise<{ healthy: boolean; last: string }>;
  /**
   * Puts back what the step changed (a restart with the previous config), also once `signal` has fired:
   * `work` gets this context with a signal of its own, aborted after `timeoutSeconds` or when the agent must
   * stop now, never by the step's timeout. Bounded all the same: nothing in it runs on after that.
   */
  rollback<T>(timeoutSeconds: number, work: (ctx: Omit<StepContext, "source">) => Promise<T>): Promise<T>;
}

/** Repository content as `validate` sees it (the checkout). */
export interface RepoFiles {
  paths(): string[];
  read(path: string): Promise<Buffer>;
}

/** One target of a drift check. */
export interface DriftItem {
  id: string;
  state: "in-sync" | "drifted" | "unknown";
  detail?: string;
  /** A diff of the live content against git's (secrets left out). */
  patch?: string;
  /** Drift a run cannot put back (a link where the file was): a human must act, so no self-heal is asked. */
  stalled?: true;
}

/** What the planner hands to a step: the repository files that made it run. */
export interface StepWork {
  files: string[];
  /** The previous attempt did not finish (see `unfinished`): complete follow-up actions even if nothing changed. */
  resume: boolean;
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
  /**
   * A repository file of this step as a diff may show it, when it can carry a secret (Draupnir's token);
   * default: as it is.
   */
  shown?(step: S, data: Buffer): Buffer;
  /** Pure: one line per piece of work these files would cause. */
  plan(step: S, work: StepWork): string[];
  /**
   * What is live against what `ctx.source` (the step's applied revision) says, one item per target: read
   * only, through a context that records instead of writing.
   */
  drift?(step: S, ctx: StepContext): Promise<DriftItem[]>;
  /** Does the work (or describes it, in a dry run) and reports one item per target. */
  apply(step: S, ctx: StepContext, work: StepWork): Promise<StepItem[]>;
  /** How long its rollback (`ctx.rollback`) may run past the step's timeout; the shutdown grace counts it. */
  rollbackSeconds?(step: S): number;
  /**
   * A push says it changed files this step watches: start ahead, while the run fetches, what its apply will
   * need (a process to load). Only a head start: apply must work as well without it, and what was started
   * must end by itself when no run takes it, or when `signal` (the daemon stopping) aborts.
   */
  warm?(step: S, signal: AbortSignal): void;
}
