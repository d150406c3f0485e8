import path from "node:path";
import { z } from "zod";
import type { StepItem } from "../state/state.js";
import { hostPath, repoPath, stepCommon } from "./common.js";
import { fileDrift } from "./drift.js";
import type { StepContext, StepKind } from "./types.js";

/**
 * `systemd-unit`: install a unit file, `daemon-reload`, then restart now, defer the restart (write a flag
 * file a call-aware job acts on later: killing LiveKit mid-call drops everyone), or leave it. If the reload
 * or an immediate restart fails, the previous unit file is put back and systemd reloaded again.
 */
const UNIT_NAME = /^[A-Za-z0-9@._:-]+\.(service|timer|socket|path|mount|target)$/;

/** The unit name when `unit` is not given: the source's file name. */
const defaultUnit = (source: string) => path.posix.basename(source);

export const schema = z
  .strictObject({
    ...stepCommon,
    kind: z.literal("systemd-unit"),
    source: repoPath,
    /** Unit name; default: the source's file name. */
    unit: z.string().regex(UNIT_NAME, { message: "must be a unit file name" }).optional(),
    directory: hostPath.default("/etc/systemd/system"),
    restart: z.enum(["now", "deferred", "none"]).default("now"),
    /** For `restart: deferred`: the flag file whose presence means "restart when it is safe". */
    flagFile: hostPath.optional(),
  })
  .refine((s) => s.restart !== "deferred" || s.flagFile !== undefined, {
    message: "restart: deferred needs flagFile",
    path: ["flagFile"],
  })
  // The default name too: `systemctl restart livekit` would restart livekit.service, not the file installed.
  .refine((s) => s.unit !== undefined || UNIT_NAME.test(defaultUnit(s.source)), {
    error: (i) =>
      `must be a unit file name: the source's file name "${defaultUnit(String((i.input as { source?: unknown }).source))}" is not one; set unit`,
    path: ["unit"],
  });

export type SystemdUnitStep = z.infer<typeof schema>;

const unitName = (step: SystemdUnitStep) => step.unit ?? defaultUnit(step.source);
const unitPath = (step: SystemdUnitStep) => path.posix.join(step.directory, unitName(step));

async function systemctl(ctx: StepContext, ...args: string[]) {
  await ctx.run([...ctx.commands.systemctl, ...args]);
}

export const systemdUnitStep: StepKind<typeof schema> = {
  schema,
  sources: (step) => [step.source],
  triggers: (step) => [step.source],

  plan(step) {
    const then =
      step.restart === "now"
        ? `restart ${unitName(step)}`
        : step.restart === "deferred"
          ? `flag ${step.flagFile} for a restart when no call is active`
          : "no restart";
    return [`install ${step.source} -> ${unitPath(step)}, daemon-reload, ${then}`];
  },

  async drift(step, ctx) {
    return [await fileDrift(ctx, unitPath(step), await ctx.source.read(step.source), { mode: 0o644 })];
  },

  async apply(step, ctx, work) {
    const data = await ctx.source.read(step.source);
    const target = unitPath(step);
    const { outcome, previous } = await ctx.host.write(target, data, { mode: 0o644 });
    // An unchanged unit needs nothing, unless the last attempt was cut off before its follow-ups.
    if (outcome === "unchanged" && !work.resume) return [{ id: target, outcome }];
    try {
      await systemctl(ctx, "daemon-reload");
      if (step.restart === "now") await systemctl(ctx, "restart", unitName(step));
    } catch (err) {
      if (outcome === "unchanged") throw err;
      await ctx.host.restore(previous);
      await systemctl(ctx, "daemon-reload").catch((e: Error) =>
        ctx.log.warn({ err: e }, "daemon-reload after restore failed"),
      );
      throw err;
    }
    const items: StepItem[] = [{ id: target, outcome }];
    if (step.restart === "deferred" && step.flagFile) {
      const flag = `${ctx.source.revision}\n`;
      items.push({
        id: step.flagFile,
        outcome: (await ctx.host.write(step.flagFile, Buffer.from(flag), { mode: 0o644 })).outcome,
        // Said in notices: the new unit runs only after the deferred restart.
        detail: `restart of ${unitName(step)} deferred until it is safe (${step.flagFile})`,
      });
    }
    return items;
  },
};
