import { AgentError, asAgentError } from "../core/errors.js";
import { unitState } from "./install-undo.js";
import {
  OLD_UNIT,
  type OldListener,
  type OldListenerHost,
  oldHooksExist,
  oldUnitState,
  readOldListener,
} from "./old-webhook.js";

/**
 * What install does with what is left of the webhook binary's unit: whether it migrates from it, only
 * disables it, or leaves it alone; and how a failed migration puts it back exactly as install found it.
 */

/**
 * What is left of the webhook binary, from systemd's answers (asked in a dry run too). Whatever would listen
 * on the port again is migrated from: webhook.service running, or enabled (the next boot starts it) while no
 * agent serves yet; enabled beside an agent that is already installed it is only disabled (its secret and URL
 * are stale: Gitea signs for the agent). Enabled with no hooks file (Debian's package as installed, kept from
 * starting by its ConditionPathExists=) or masked and stopped, it cannot start: left alone. Masked and running
 * is refused: install could not read its unit nor start it again should the install fail.
 */
export async function legacyListener(
  ctx: OldListenerHost,
  unit: string,
): Promise<{ old: OldListener | null; disableOld: boolean }> {
  const was = await oldUnitState(ctx);
  if (was.masked && was.active) {
    throw new AgentError(
      "INSTALL_FAILED",
      `${OLD_UNIT} is masked but running: install can neither read its unit (systemctl cat shows the mask) nor start it again should the install fail`,
      {
        hint: `stop it to leave it behind (systemctl stop ${OLD_UNIT}), or unmask it to migrate from it (systemctl unmask ${OLD_UNIT}); then install again`,
      },
    );
  }
  if (was.active) return { old: await readOldListener(ctx, was), disableOld: false };
  // Enabled with no hooks file (Debian's package as installed): it cannot start, and has nothing to migrate.
  if (!was.enabled || !(await oldHooksExist(ctx))) return { old: null, disableOld: false };
  const agent = await unitState(ctx.run, ctx.commands.systemctl, unit);
  if (agent.enabled || agent.active) return { old: null, disableOld: true };
  return { old: await readOldListener(ctx, was), disableOld: false };
}

/**
 * Puts the old listener back after the new unit failed in its place: the unit stopped and disabled (so it
 * does not fight for the port), webhook.service exactly as install found it (enabled, running, or both).
 * Each step is tried; says what holds now.
 */
export async function restoreOldListener(
  sc: (...args: string[]) => Promise<unknown>,
  unit: string,
  was: OldListener["was"],
): Promise<string> {
  const failures: string[] = [];
  const back = was.enabled ? ["enable", ...(was.active ? ["--now"] : [])] : ["start"];
  for (const args of [
    ["disable", "--now", unit],
    [...back, OLD_UNIT],
  ]) {
    await sc(...args).catch((err: unknown) => failures.push(asAgentError(err).message));
  }
  if (failures.length)
    return `putting ${OLD_UNIT} back failed too (${failures.join("; ")}): nothing may be listening, start it by hand`;
  if (!was.active) return `${OLD_UNIT} is enabled again (not running, as it was)`;
  return was.enabled
    ? `${OLD_UNIT} is enabled and running again`
    : `${OLD_UNIT} is running again (not enabled, as it was)`;
}
