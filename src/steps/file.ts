import { z } from "zod";
import { CONTENT_CHECK_NAMES, CONTENT_CHECKS, type ContentCheck } from "../content/checks.js";
import { AgentError } from "../core/errors.js";
import type { FileSnapshot } from "../host/host-fs.js";
import type { StepItem } from "../state/state.js";
import { argv, fileMode, hostPath, owner, repoPath, stepCommon } from "./common.js";
import { fileDrift } from "./drift.js";
import type { StepKind } from "./types.js";

/**
 * `file`: copy one repository file to one or more host paths, atomically, with a declared mode and owner.
 * `validate` runs on the new file before it replaces the old one; `reload` runs after all targets are
 * written. If validation or a reload command fails, every target that was replaced gets its previous
 * content back (and the reload commands run again, so the service returns to the old file).
 */
export const schema = z.strictObject({
  ...stepCommon,
  kind: z.literal("file"),
  source: repoPath,
  targets: z.array(hostPath).min(1),
  mode: fileMode.optional(),
  owner: owner.optional(),
  /** A content check (src/content/checks.ts) run before anything is written, and by validate. */
  check: z.enum(CONTENT_CHECK_NAMES).optional(),
  validate: argv.optional(),
  reload: z.array(argv).default([]),
});

export type FileStep = z.infer<typeof schema>;

const octal = (mode: number) => `0${mode.toString(8)}`;

export const fileStep: StepKind<typeof schema> = {
  schema,
  sources: (step) => [step.source],
  triggers: (step) => [step.source],

  async check(step, repo) {
    if (!step.check || !repo.paths().includes(step.source)) return [];
    try {
      await checkContent(step.source, step.check, await repo.read(step.source));
      return [];
    } catch (err) {
      return [(err as Error).message];
    }
  },

  async drift(step, ctx) {
    const data = await ctx.source.read(step.source);
    return Promise.all(
      step.targets.map((t) => fileDrift(ctx, t, data, { mode: step.mode, owner: step.owner })),
    );
  },

  plan(step) {
    const lines = [
      `copy ${step.source} -> ${step.targets.join(", ")}${step.mode !== undefined ? ` (mode ${octal(step.mode)})` : ""}`,
    ];
    if (step.reload.length) lines.push(`then run: ${step.reload.map((c) => c.join(" ")).join("; ")}`);
    return lines;
  },

  async apply(step, ctx, work) {
    const data = await ctx.source.read(step.source);
    if (step.check) await checkContent(step.source, step.check, data);
    const items: StepItem[] = [];
    const replaced: FileSnapshot[] = [];
    try {
      for (const target of step.targets) {
        const { outcome, previous } = await ctx.host.write(target, data, {
          mode: step.mode,
          owner: step.owner,
          validate: step.validate,
        });
        items.push({ id: target, outcome });
        if (outcome === "changed") replaced.push(previous);
      }
      // After a change, or to finish an attempt that was cut off between its write and its reload.
      if (replaced.length || work.resume) {
        for (const command of step.reload) await ctx.run(command);
      }
    } catch (err) {
      await rollBack(step, ctx, replaced);
      throw err;
    }
    return items;
  },
};

async function rollBack(step: FileStep, ctx: Parameters<typeof fileStep.apply>[1], replaced: FileSnapshot[]) {
  if (!replaced.length) return;
  for (const snap of replaced) await ctx.host.restore(snap);
  for (const command of step.reload) {
    await ctx.run(command).catch((err: Error) => {
      ctx.log.warn({ err }, "reload after restoring the previous file failed");
    });
  }
}

export async function checkContent(name: string, check: ContentCheck, data: Buffer): Promise<void> {
  const { what, problems } = CONTENT_CHECKS[check];
  const found = await problems(data.toString("utf8"));
  if (found.length) {
    throw new AgentError("SOURCE_INVALID", `${name} is not ${what}: ${found.join("; ")}`, {
      hint: "fix the file in the repository and push again; the deployed copy was left as it was",
    });
  }
}
