import { createHash } from "node:crypto";
import { lstat } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { type InstallContext, systemctl } from "./install-context.js";
import { type PlannedFile, UNIT_DIR } from "./install-files.js";
import type { InstallPlan } from "./install-plan.js";
import type { Undo } from "./install-undo.js";

/**
 * Install's writes: first the check that they overwrite no local change (a file that differs and that, by
 * install's record of the hashes it wrote, install did not write), then the directories, the bin link, the
 * files and the record itself, each change registering its undo. Apart from the command, which only orders
 * the stages; the record's hashing lives here alone.
 */

const BIN_LINK = "/usr/local/bin/deploy-agent";
const SECRET_DIR = "/etc/deploy-agent";

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** Local changes: a file that differs from what install would write, and that install did not write. */
export async function refuseLocalChanges(
  ctx: InstallContext,
  plan: InstallPlan,
  force: boolean,
): Promise<void> {
  const conflicts: string[] = [];
  for (const f of plan.files.filter((f) => f.owned !== false)) {
    const current = await ctx.host.read(f.path);
    if (current && !current.equals(f.data) && plan.installed[f.path] !== sha256(current))
      conflicts.push(f.path);
  }
  const link = await lstat(ctx.host.resolve(BIN_LINK)).catch(() => null);
  const linkNow = await ctx.host.readlink(BIN_LINK);
  if (link && linkNow !== plan.binTarget)
    conflicts.push(`${BIN_LINK} (${linkNow ? `links to ${linkNow}` : "not a link"})`);
  if (conflicts.length && !force) {
    throw new AgentError("LOCAL_CHANGES", `local changes would be overwritten: ${conflicts.join(", ")}`, {
      hint: "look at them (deploy-agent install --dry-run shows the diff), then install again with --force",
    });
  }
}

/** Directories, the bin link, the files and install's record of them; each change registers its undo. */
export async function writeAll(ctx: InstallContext, plan: InstallPlan, undo: Undo): Promise<void> {
  const dirs = new Map<string, number>([
    [plan.manifest.stateDir, 0o700],
    [SECRET_DIR, 0o700],
  ]);
  for (const f of plan.files) if (!dirs.has(path.dirname(f.path))) dirs.set(path.dirname(f.path), 0o755);
  for (const [dir, mode] of dirs) {
    const { created } = await ctx.host.mkdir(dir, mode);
    if (created) undo.add("files", created, () => ctx.back.host.remove(created));
  }
  const link = await ctx.host.symlink(BIN_LINK, plan.binTarget);
  if (link.outcome === "changed") undo.add("files", BIN_LINK, () => ctx.back.host.restore(link.previous));

  let unitsChanged = false;
  // Restored unit files are systemd's again only after a reload.
  undo.add("reload", "daemon-reload", async () => unitsChanged && systemctl(ctx.back, "daemon-reload"));
  for (const f of [...plan.files, installRecord(plan)]) {
    const { outcome, previous } = await ctx.host.write(f.path, f.data, { mode: f.mode, display: f.display });
    if (outcome === "unchanged") continue;
    undo.add("files", f.path, () => ctx.back.host.restore(previous));
    if (f.path.startsWith(UNIT_DIR)) unitsChanged = true;
  }
  if (unitsChanged) await systemctl(ctx, "daemon-reload");
}

/** install's record: the hashes of the files it owns, as written now. */
function installRecord(plan: InstallPlan): PlannedFile {
  const files = { ...plan.installed };
  for (const f of plan.files) if (f.owned !== false) files[f.path] = sha256(f.data);
  return { path: plan.recordFile, data: Buffer.from(`${JSON.stringify({ files }, null, 2)}\n`), mode: 0o600 };
}
