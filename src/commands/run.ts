import { AgentError } from "../errors.js";
import { deploy } from "../pipeline.js";
import { renderRun } from "../report.js";
import { STEP_KINDS } from "../steps/index.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

export interface RunFlags extends CommonFlags {
  dryRun: boolean;
  all: boolean;
  step: string[];
  fetch: boolean;
  waitSeconds: number;
}

/** `deploy-agent run`: one deploy (or, with --dry-run, its description). Exit 1 when a step failed. */
export async function runCommand(flags: RunFlags, out: (text: string) => void): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const names = manifest.steps.map((s) => s.name);
  const unknown = flags.step.filter((s) => !names.includes(s));
  if (unknown.length) {
    throw new AgentError("USAGE", `no step named ${unknown.join(", ")} in ${r.loaded.file}`, {
      hint: `steps: ${names.join(", ")} (kinds known: ${STEP_KINDS.join(", ")})`,
    });
  }
  const log = commandLogger(flags, r, { logFile: !flags.dryRun });
  const report = await deploy({
    manifest,
    manifestPath: r.manifestPath,
    load: r.load,
    repoDir: r.repoDir,
    stateDir: r.stateDir,
    root: r.root,
    dryRun: flags.dryRun,
    fetch: flags.fetch,
    all: flags.all,
    only: flags.step,
    lockWaitMs: flags.waitSeconds * 1000,
    log,
  });
  out(flags.json ? `${JSON.stringify(report, null, 2)}\n` : renderRun(report));
  // Suspended: nothing was deployed, which is not what `run` was asked for.
  return report.result === "failed" || report.result === "suspended" ? 1 : 0;
}
