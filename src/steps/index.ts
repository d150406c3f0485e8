import picomatch from "picomatch";
import { z } from "zod";
import type { StepItem } from "../state/state.js";
import { draupnirConfigStep } from "./draupnir-config.js";
import { fileStep } from "./file.js";
import { hookshotStep } from "./hookshot.js";
import { secretStep } from "./secret.js";
import { systemdUnitStep } from "./systemd-unit.js";
import type { DriftItem, RepoFiles, StepConfigBase, StepContext, StepKind, StepWork } from "./types.js";

/** The step kinds. Adding one is a file under src/steps/ and an entry here. */
const KIND_LIST = [fileStep, systemdUnitStep, draupnirConfigStep, hookshotStep, secretStep] as const;

type Schemas<T extends readonly { schema: unknown }[]> = { [K in keyof T]: T[K]["schema"] };

export const stepSchema = z.discriminatedUnion(
  "kind",
  KIND_LIST.map((k) => k.schema) as unknown as Schemas<typeof KIND_LIST>,
);

export type StepConfig = z.infer<typeof stepSchema>;

/** A kind as the pipeline sees it: any step config in, the kind's own functions behind. */
interface RegisteredKind {
  sources(step: StepConfig): string[];
  triggers(step: StepConfig): string[];
  check(step: StepConfig, repo: RepoFiles): Promise<string[]>;
  plan(step: StepConfig, work: StepWork): string[];
  shown(step: StepConfig, data: Buffer): Buffer;
  drift(step: StepConfig, ctx: StepContext): Promise<DriftItem[]>;
  apply(step: StepConfig, ctx: StepContext, work: StepWork): Promise<StepItem[]>;
  warm(step: StepConfig, signal: AbortSignal): void;
  rollbackSeconds(step: StepConfig): number;
}

function register<S extends z.ZodType<StepConfigBase>>(kind: StepKind<S>): [string, RegisteredKind] {
  // The only place a step config meets its kind's type: `kindOf` picks the kind by the config's `kind`,
  // and that config was produced by this kind's schema (the discriminated union above).
  const own = (step: StepConfig) => step as unknown as z.output<S>;
  const literal = (kind.schema as unknown as z.ZodObject<{ kind: z.ZodLiteral<string> }>).shape.kind.value;
  return [
    literal,
    {
      sources: (step) => kind.sources(own(step)),
      triggers: (step) => kind.triggers(own(step)),
      check: async (step, repo) => (kind.check ? kind.check(own(step), repo) : []),
      plan: (step, work) => kind.plan(own(step), work),
      shown: (step, data) => (kind.shown ? kind.shown(own(step), data) : data),
      drift: async (step, ctx) =>
        kind.drift
          ? kind.drift(own(step), ctx)
          : [{ id: step.name, state: "unknown", detail: `the ${literal} step kind cannot check drift` }],
      apply: (step, ctx, work) => kind.apply(own(step), ctx, work),
      warm: (step, signal) => kind.warm?.(own(step), signal),
      rollbackSeconds: (step) => kind.rollbackSeconds?.(own(step)) ?? 0,
    },
  ];
}

const KINDS = new Map<string, RegisteredKind>(KIND_LIST.map((k: StepKind) => register(k)));

export const STEP_KINDS = [...KINDS.keys()];

export function kindOf(step: StepConfig): RegisteredKind {
  const kind = KINDS.get(step.kind);
  if (!kind) throw new Error(`no step kind "${step.kind}" registered`);
  return kind;
}

/** The globs that make a step run: its own `paths`, or its kind's default. */
export function triggersOf(step: StepConfig): string[] {
  return step.paths ?? kindOf(step).triggers(step);
}

/** Whether a repository path makes the step run (its triggers; dot files included). */
export function matcherOf(step: StepConfig): (path: string) => boolean {
  return picomatch(triggersOf(step), { dot: true });
}

/**
 * Lets the steps that would run for these paths (what a push says it changed: a hint, never what is deployed)
 * start ahead of the run.
 */
export function warmSteps(steps: readonly StepConfig[], paths: readonly string[], signal: AbortSignal): void {
  if (paths.length === 0 || signal.aborted) return;
  for (const step of steps) {
    const matches = matcherOf(step);
    if (paths.some((p) => matches(p))) kindOf(step).warm(step, signal);
  }
}
