import { asAgentError } from "../core/errors.js";
import { diffSummary } from "../host/diff-summary.js";
import type { FileSnapshot } from "../host/host-fs.js";
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
  let live: FileSnapshot;
  try {
    live = await ctx.host.snapshot(target);
  } catch (err) {
    // One target that cannot be read is that target's item, not the end of its step's report.
    return unreadable(target, err);
  }
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

/**
 * What a step's drift could not read, as its item, so one step never takes the others' report with it:
 * something other than a regular file at a target's name (a link, a directory, a FIFO put there by whoever
 * may write the directory) is drift; anything else cannot be told.
 */
export function unreadable(id: string, err: unknown): DriftItem {
  const e = asAgentError(err);
  return e.code === "TARGET_UNSAFE"
    ? { id, state: "drifted", detail: e.message, stalled: true }
    : { id, state: "unknown", detail: e.message };
}
