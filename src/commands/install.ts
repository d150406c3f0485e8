import path from "node:path";
import { AgentError, asAgentError } from "../core/errors.js";
import { renderInstall } from "../deploy/report.js";
import type { Effect } from "../host/effects.js";
import { rooted } from "../host/host-fs.js";
import { HOST_IDENTITY_FILE } from "../secrets/identity.js";
import { openRepo } from "../source/open-repo.js";
import { createInstallContext, failure } from "./install-context.js";
import { planInstall } from "./install-plan.js";
import { createUndo } from "./install-undo.js";
import { startUnits } from "./install-units.js";
import { refuseLocalChanges, writeAll } from "./install-write.js";
import { OLD_UNIT } from "./old-webhook.js";
import { type CommonFlags, resolve } from "./options.js";
import { verifyOffNotice } from "./verify-notice.js";

/**
 * `deploy-agent install --host lxcNNN`: the README's install steps for one host role, on the host it runs
 * on. Links the bin into PATH, installs the agent's unit (and the LiveKit timer or the Cinny cron file when
 * the manifest has that section), creates the state and secret directories and the webhook secret, and
 * starts the unit. On a host still running the `webhook` binary it migrates: the secret and the hook URL
 * (port and path) are taken over from the old hooks file, so Gitea needs no change, and webhook.service is
 * stopped only after the new unit has answered /healthz (on a spare loopback port; if the unit then fails
 * on the real port, webhook.service is started again). Files it did not write itself and that differ are
 * local changes: it refuses them unless --force. A failure after the first change takes back every change.
 * It acts only through one context, which in a dry run records every effect instead (reads happen in both).
 * Its stages: plan (install-plan), refuse local changes and write (install-write), start units (install-units).
 */

export interface InstallFlags extends CommonFlags {
  host?: string | undefined;
  dryRun: boolean;
  force: boolean;
}

/** Signals that would end install at once: while it acts, they abort it and it takes its changes back. */
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

export async function installCommand(flags: InstallFlags, out: (text: string) => void): Promise<number> {
  const host = flags.host;
  if (!host || !/^[a-z0-9][a-z0-9-]*$/.test(host)) {
    throw new AgentError("USAGE", "install needs --host NAME, the host manifest's name (lxc151, lxc106, …)", {
      hint: "deploy-agent install --host lxc151 --dry-run",
    });
  }
  const under = rooted(flags.root ? path.resolve(flags.root) : "");
  const r = await resolve({
    ...flags,
    config: flags.config ?? under(`/opt/matrix-config/config/${host}.yaml`),
  });
  const { manifest } = r.loaded;
  if (manifest.host !== host) {
    throw new AgentError(
      "CONFIG_INVALID",
      `${r.loaded.file} is the manifest of ${manifest.host}, not ${host}`,
    );
  }
  await openRepo(r.repoDir, manifest.repo.remote, manifest.repo.branch);

  const effects: Effect[] = [];
  const warnings: string[] = [];
  const interrupted = new AbortController();
  const ctx = createInstallContext({
    dryRun: flags.dryRun,
    root: r.root,
    systemctl: manifest.commands.systemctl,
    record: (e: Effect) => effects.push(e),
    interrupted: interrupted.signal,
  });

  const plan = await planInstall(ctx, r, host, warnings);
  await refuseLocalChanges(ctx, plan, flags.force);

  const undo = createUndo();
  // From the first change to the last undo, a signal does not end install half way: it aborts what is in
  // progress, and every change is taken back (on a migrated host webhook.service started again).
  const onInterrupt = (name: NodeJS.Signals) =>
    interrupted.abort(new AgentError("ABORTED", `install was interrupted (${name})`));
  for (const name of INTERRUPTS) process.on(name, onInterrupt);
  try {
    await writeAll(ctx, plan, undo);
    await startUnits(ctx, plan, undo);
  } catch (caught) {
    const left = await undo.run();
    // Interrupted: the error says so first (unless the message that got here says it already).
    const err =
      ctx.signal.aborted && !asAgentError(caught).message.includes(failure(ctx, ""))
        ? new AgentError("INSTALL_FAILED", failure(ctx, caught), { cause: caught })
        : caught;
    if (!left.length) throw err;
    const e = asAgentError(err);
    throw new AgentError(
      e.code,
      `${e.message}; taking the install back failed too (${left.join("; ")}): fix these by hand`,
      {
        hint: e.hint,
        cause: err,
      },
    );
  } finally {
    for (const name of INTERRUPTS) process.off(name, onInterrupt);
  }

  if (plan.old || plan.disableOld) {
    warnings.push(
      `${OLD_UNIT} is stopped and disabled; once you trust the agent: apt-get remove webhook, and delete the old hooks file and /usr/local/bin/matrix-deploy.sh`,
    );
  }
  // Said once the key is on the host: a dry run's new key shows as its write, its recipient would be another.
  if (plan.ageRecipient && (await ctx.host.read(HOST_IDENTITY_FILE))) {
    warnings.push(`age recipient of ${host}: ${plan.ageRecipient} (hosts: in secrets/secrets.yaml)`);
  }
  const notice = verifyOffNotice(manifest);
  if (notice) warnings.push(notice);

  const report = { schema: "deploy-agent/install@1" as const, host, dryRun: flags.dryRun, effects, warnings };
  out(flags.json ? `${JSON.stringify(report, null, 2)}\n` : renderInstall(report));
  return 0;
}
