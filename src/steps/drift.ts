import { diffSummary } from "../host/diff-summary.js";
import { resolveOwner } from "../host/owner.js";
import type { DriftItem, StepContext } from "./types.js";

/**
 * A live file against the content, mode and owner git says it should have. The patch goes from what is live
 * to what git says; `display` hides what must not be shown (Draupnir's token).
 */
export async function fileDrift(
  ctx: StepContext,
  target: string,
  wanted: Buffer,
  options: {
    mode?: number | undefined;
    owner?: string | undefined;
    display?: (b: Buffer) => Buffer | null;
  } = {},
): Promise<DriftItem> {
  const live = await ctx.host.snapshot(target);
  if (!live.data) return { id: target, state: "drifted", detail: "missing on the host" };
  const problems: string[] = [];
  const same = live.data.equals(wanted);
  if (!same) problems.push("content differs from git");
  if (options.mode !== undefined && live.mode !== options.mode) {
    problems.push(`mode 0${live.mode.toString(8)}, git says 0${options.mode.toString(8)}`);
  }
  if (options.owner) {
    const ids = await resolveOwner(options.owner);
    if (ids.uid !== live.uid || (ids.gid !== undefined && ids.gid !== live.gid)) {
      problems.push(`owner ${live.uid}:${live.gid}, git says ${options.owner}`);
    }
  }
  if (!problems.length) return { id: target, state: "in-sync" };
  const show = options.display ?? ((b: Buffer) => b);
  const patch = same
    ? undefined
    : (await diffSummary(target, show(live.data), show(wanted) ?? Buffer.alloc(0))).patch;
  return { id: target, state: "drifted", detail: problems.join("; "), ...(patch ? { patch } : {}) };
}
