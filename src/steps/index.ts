import { z } from "zod";
import { draupnirConfigStep } from "./draupnir-config.js";
import { fileStep } from "./file.js";
import { hookshotStep } from "./hookshot.js";
import { systemdUnitStep } from "./systemd-unit.js";
import type { StepKind } from "./types.js";

/** The step kinds. Adding one is a file under src/steps/ and a line in each list below. */
export const stepSchema = z.discriminatedUnion("kind", [
  fileStep.schema,
  systemdUnitStep.schema,
  draupnirConfigStep.schema,
  hookshotStep.schema,
]);

export type StepConfig = z.infer<typeof stepSchema>;

// Each kind's functions take its own config type; the lookup by `kind` below makes the pairing safe.
const KINDS: Record<StepConfig["kind"], StepKind> = {
  file: fileStep as unknown as StepKind,
  "systemd-unit": systemdUnitStep as unknown as StepKind,
  "draupnir-config": draupnirConfigStep as unknown as StepKind,
  hookshot: hookshotStep as unknown as StepKind,
};

export const STEP_KINDS = Object.keys(KINDS);

export function kindOf(step: StepConfig): StepKind {
  return KINDS[step.kind];
}

/** The globs that make a step run: its own `paths`, or its kind's default. */
export function triggersOf(step: StepConfig): string[] {
  return step.paths ?? kindOf(step).triggers(step);
}
