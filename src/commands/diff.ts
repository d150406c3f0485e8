import { AgentError } from "../core/errors.js";
import { checkDrift, renderDrift } from "../deploy/drift.js";
import { acquireLock, COMMAND_LOCK_WAIT_MS } from "../state/lock.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

/** `deploy-agent diff [--step NAME] [--json]`: exit 0 in sync, 1 drifted, 2 could not tell. */
export async function diffCommand(
  flags: CommonFlags & { step: string[] },
  out: (t: string) => void,
): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const unknown = flags.step.filter((s) => !manifest.steps.some((x) => x.name === s));
  if (unknown.length)
    throw new AgentError("USAGE", `no step named ${unknown.join(", ")} in ${r.loaded.file}`);
  // Read while no deploy writes: a half-applied step would show as drift.
  const lock = await acquireLock(r.stateDir, COMMAND_LOCK_WAIT_MS);
  const report = await checkDrift({
    manifest,
    repoDir: r.repoDir,
    stateDir: r.stateDir,
    root: r.root,
    log: commandLogger(flags, r, { logFile: false }),
    only: flags.step,
  }).finally(() => lock.release());
  out(flags.json ? `${JSON.stringify(report, null, 2)}\n` : renderDrift(report));
  if (report.steps.some((s) => s.state === "drifted")) return 1;
  return report.steps.some((s) => s.state === "unknown") ? 2 : 0;
}
