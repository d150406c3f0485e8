import { AgentError } from "../core/errors.js";
import { renderEffect } from "../deploy/report.js";
import type { Effect } from "../host/effects.js";
import { jobConfig, type RegisteredJob } from "../jobs/index.js";
import { acquireLock, COMMAND_LOCK_WAIT_MS } from "../state/lock.js";
import { createContext } from "../steps/context.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

/**
 * `deploy-agent <job command>` (livekit-restart, cinny-nightly, …): runs one host job on the manifest's
 * section for it, through the same context as the steps (a dry run records instead of acting). Exit 0 when
 * the job ran (whatever it decided), 1 when it failed, 2 when the manifest has no section for it.
 */
export async function jobCommand(
  job: RegisteredJob,
  flags: CommonFlags & { dryRun: boolean; force: boolean },
  out: (t: string) => void,
): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const config = jobConfig(manifest, job);
  if (config === undefined) {
    throw new AgentError("CONFIG_INVALID", `${r.loaded.file} has no ${job.section} section`, {
      hint: `${job.command} runs on the host whose manifest has a ${job.section} section`,
    });
  }
  const log = commandLogger(flags, r, { logFile: !flags.dryRun });
  const effects: Effect[] = [];
  const ctx = {
    ...createContext({
      dryRun: flags.dryRun,
      root: r.root,
      log,
      signal: AbortSignal.timeout(job.timeoutSeconds * 1000),
      commands: manifest.commands,
      record: (e) => effects.push(e),
    }),
    force: flags.force,
  };
  // The operator's job waits its turn with the daemon's deploys, drift checks and jobs (the deploy lock).
  const lock = flags.dryRun ? null : await acquireLock(r.stateDir, COMMAND_LOCK_WAIT_MS);
  const result = await job.run(config, ctx).finally(() => lock?.release());
  log.info({ ...result }, result.message);
  if (flags.json) {
    out(
      `${JSON.stringify({ schema: `deploy-agent/${job.command}@1`, dryRun: flags.dryRun, ...result, effects }, null, 2)}\n`,
    );
    return 0;
  }
  const warnings = Array.isArray(result.warnings) ? result.warnings.map((w) => `warning: ${w}`) : [];
  const done = effects.map((e) => `  ${renderEffect(e, flags.dryRun)}`);
  out(`${[...warnings, ...(flags.dryRun ? done : []), result.message].join("\n")}\n`);
  return 0;
}
