import { structuredPatch } from "diff";

const MAX_PATCH_LINES = 60;
const MAX_DIFF_BYTES = 512 * 1024;

export interface DiffSummary {
  added: number;
  removed: number;
  patch?: string;
}

function isText(buf: Buffer): boolean {
  return !buf.subarray(0, 8000).includes(0);
}

/** Line counts and a capped unified diff between the current and the new content of a file. */
export function diffSummary(name: string, before: Buffer | null, after: Buffer): DiffSummary {
  const old = before ?? Buffer.alloc(0);
  if (!isText(old) || !isText(after) || old.length + after.length > MAX_DIFF_BYTES) {
    return { added: 0, removed: 0 };
  }
  const patch = structuredPatch(name, name, old.toString("utf8"), after.toString("utf8"), "", "", {
    context: 2,
  });
  let added = 0;
  let removed = 0;
  const lines: string[] = [];
  for (const hunk of patch.hunks) {
    lines.push(`@@ -${hunk.oldStart},${hunk.oldLines} +${hunk.newStart},${hunk.newLines} @@`);
    for (const line of hunk.lines) {
      if (line.startsWith("+")) added++;
      else if (line.startsWith("-")) removed++;
      lines.push(line);
    }
  }
  const shown = lines.slice(0, MAX_PATCH_LINES);
  if (lines.length > shown.length) shown.push(`… ${lines.length - shown.length} more diff lines`);
  return { added, removed, patch: shown.join("\n") };
}
