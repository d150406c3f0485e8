const MAX_PATCH_LINES = 60;
const MAX_DIFF_BYTES = 512 * 1024;
/** Most changed lines a diff is computed for; beyond, a rewrite is summarised. */
export const MAX_EDIT_LENGTH = 2000;
/** Most time one diff may hold the event loop (the liveness probe must answer within 100 ms). */
export const DIFF_TIMEOUT_MS = 50;

export interface DiffSummary {
  added: number;
  removed: number;
  patch?: string;
}

function isText(buf: Buffer): boolean {
  return !buf.subarray(0, 8000).includes(0);
}

/** Line counts and a capped unified diff between the current and the new content of a file. */
export async function diffSummary(name: string, before: Buffer | null, after: Buffer): Promise<DiffSummary> {
  const old = before ?? Buffer.alloc(0);
  if (!isText(old) || !isText(after) || old.length + after.length > MAX_DIFF_BYTES) {
    return { added: 0, removed: 0 };
  }
  // Loaded on the first write or drift: an idle daemon does not carry it.
  const { structuredPatch } = await import("diff");
  const patch = structuredPatch(name, name, old.toString("utf8"), after.toString("utf8"), "", "", {
    context: 2,
    // Bounded work on the event loop: a rewrite of thousands of lines would otherwise block it for minutes
    // (O(N·D)); past either bound the diff is left out and only its size is reported.
    maxEditLength: MAX_EDIT_LENGTH,
    timeout: DIFF_TIMEOUT_MS,
  });
  if (!patch)
    return { added: 0, removed: 0, patch: `diff not shown: more than ${MAX_EDIT_LENGTH} lines differ` };
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
