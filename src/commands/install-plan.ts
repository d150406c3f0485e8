import path from "node:path";
import { agentPackage } from "../core/package.js";
import type { Manifest } from "../manifest/schema.js";
import { HOST_IDENTITY_FILE, plannedHostIdentity } from "../secrets/identity.js";
import type { InstallContext } from "./install-context.js";
import { type PlannedFile, plannedFiles } from "./install-files.js";
import { legacyListener } from "./install-legacy.js";
import type { OldListener } from "./old-webhook.js";
import type { Resolved } from "./options.js";

/**
 * What install does on this host, worked out from reads before anything changes (in a dry run too): what is
 * left of the webhook binary, the files to write, the host's age identity, and install's record of what it
 * wrote last time. Apart from the command so that the stages that act on the plan can take its type.
 */

export interface InstallPlan {
  manifest: Manifest;
  unit: string;
  files: PlannedFile[];
  secret: string;
  old: OldListener | null;
  /** webhook.service is enabled, stopped, and the agent already serves: it is only disabled. */
  disableOld: boolean;
  binTarget: string;
  /** Hashes of the files install wrote last time (its record), updated by this install. */
  installed: Record<string, string>;
  recordFile: string;
  /** The host's age recipient, to be said once the identity is on the host. */
  ageRecipient: string | undefined;
}

/** The plan for host role `name`; what the operator must hear of it goes to `warnings`. */
export async function planInstall(
  ctx: InstallContext,
  r: Resolved,
  name: string,
  warnings: string[],
): Promise<InstallPlan> {
  const { manifest } = r.loaded;
  const unit = `deploy-agent@${name}.service`;
  const { old, disableOld } = await legacyListener(ctx, unit);
  const home = agentPackage().dir;
  const { files, secret } = await plannedFiles({ r, host: ctx.host, home, old, warnings, name });
  // The host's age identity for the repository's secrets: made once, never replaced, never shown.
  const age = await plannedHostIdentity(ctx.host.resolve(HOST_IDENTITY_FILE));
  if (age.data) {
    const after = Buffer.from("<age identity, not shown>\n");
    files.push({
      path: HOST_IDENTITY_FILE,
      data: age.data,
      mode: 0o600,
      display: { before: null, after },
      owned: false,
    });
  }
  const recordFile = path.join(manifest.stateDir, "installed.json");
  return {
    manifest,
    unit,
    files,
    secret,
    old,
    disableOld,
    binTarget: path.join(home, "dist/src/bin.js"),
    installed: JSON.parse((await ctx.host.read(recordFile))?.toString("utf8") ?? "{}").files ?? {},
    recordFile,
    ageRecipient: age.recipient,
  };
}
