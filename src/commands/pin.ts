import { AgentError } from "../core/errors.js";
import { isAncestor } from "../source/ancestry.js";
import { trackingRef } from "../source/git.js";
import { gitAt } from "../source/git-command.js";
import { closeRepo, openRepo } from "../source/open-repo.js";
import { findApplied } from "../state/history.js";
import { operator } from "../state/history-record.js";
import { resolve } from "./options.js";
import { type RunFlags, runCommand } from "./run.js";

/**
 * `deploy-agent pin <revision>` and `unpin`: the way back at 3 a.m. A pin deploys the revision through the
 * same pipeline as any run (its manifest, checks, health gates, rollbacks) and holds the host there: pushes
 * are still fetched, verified and remembered, but runs deploy the pinned revision until `unpin`, which
 * returns to the branch's tip at once. Both take the deploy lock: with --wait SECONDS they wait that long for a running
 * deploy, else they fail at once with LOCKED.
 */

export interface PinFlags extends RunFlags {
  reason?: string | undefined;
  /** How long the pin is meant to last (alerted on after), e.g. 24h, 90m, 2d. */
  until?: string | undefined;
  force: boolean;
}

export const DEFAULT_PIN_HOURS = 24;
/** The longest a pin may be meant to last: a forgotten pin must come to someone's attention. */
export const MAX_PIN_DAYS = 30;

const UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90m", "24h", "2d", "3600s" → milliseconds; a usage error otherwise or beyond MAX_PIN_DAYS. */
export function parseDuration(text: string): number {
  const m = new RegExp(`^(\\d{1,6})([${Object.keys(UNITS).join("")}])$`).exec(text.trim());
  const ms = m ? Number(m[1]) * (UNITS[m[2] as keyof typeof UNITS] ?? 0) : 0;
  if (!ms || ms > MAX_PIN_DAYS * UNITS.d) {
    throw new AgentError(
      "USAGE",
      `--until takes a duration like 90m, 24h or 2d (at most ${MAX_PIN_DAYS}d), not "${text}"`,
    );
  }
  return ms;
}

export async function pinCommand(flags: PinFlags, target: string, out: (t: string) => void): Promise<number> {
  const r = await resolve(flags);
  const { remote, branch } = r.loaded.manifest.repo;
  const lasts = parseDuration(flags.until ?? `${DEFAULT_PIN_HOURS}h`);
  // The revision from the clone only: a pin works while the origin is unreachable.
  const git = gitAt(r.repoDir);
  const revision = (await git.revparse(["--verify", "--quiet", `${target}^{commit}`]).catch(() => "")).trim();
  if (!revision) {
    throw new AgentError("USAGE", `${target} is not a commit in ${r.repoDir}`, {
      hint: "give a commit of the branch: deploy-agent history lists the revisions this host ran",
    });
  }
  if (!flags.force) {
    const repo = await openRepo(r.repoDir, remote, branch);
    const onBranch = await isAncestor(r.repoDir, revision, trackingRef(repo))
      .catch(() => false)
      .finally(() => closeRepo(repo));
    if (!onBranch) {
      throw new AgentError(
        "PIN_REFUSED",
        `${revision.slice(0, 12)} is not in the history of ${remote}/${branch}`,
        {
          hint: "pin a commit of the branch, or pass --force (it is still verified)",
        },
      );
    }
    if (!(await findApplied(r.stateDir, revision))) {
      throw new AgentError(
        "PIN_REFUSED",
        `this host never applied ${revision.slice(0, 12)} successfully (not in its deploy history)`,
        {
          hint: "deploy-agent history shows what it ran; pass --force to pin it anyway (it is still verified)",
        },
      );
    }
  }
  const pin = {
    revision,
    reason: flags.reason?.trim() || "no reason given",
    since: new Date().toISOString(),
    until: new Date(Date.now() + lasts).toISOString(),
    by: operator(),
  };
  if (!flags.dryRun && !flags.json)
    out(`pinning ${r.loaded.manifest.host} to ${revision.slice(0, 12)} until ${pin.until}: ${pin.reason}\n`);
  return runCommand({ ...flags, fetch: false, pin }, out, { kind: "pin", user: pin.by });
}

/**
 * `deploy-agent unpin`: whether the host is pinned is decided by the run itself, under the deploy lock; on a
 * host that is not pinned it says so, exits 0 and deploys nothing (runCommand prints that).
 */
export async function unpinCommand(flags: RunFlags, out: (t: string) => void): Promise<number> {
  return runCommand({ ...flags, unpin: true }, out, { kind: "unpin", user: operator() });
}
