import { cinnyNightly } from "../cinny/nightly.js";
import { createCommandRunner } from "../command.js";
import { AgentError } from "../errors.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

/**
 * `deploy-agent cinny-nightly`: build Cinny's dev branch and switch the web root to it (cron, 03:00 on
 * LXC 106). Exit 0 when built or unchanged, 1 when the build failed (the live site is untouched).
 */
export async function cinnyNightlyCommand(
  flags: CommonFlags & { dryRun: boolean; force: boolean },
  out: (t: string) => void,
): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  if (!manifest.cinny) {
    throw new AgentError("CONFIG_INVALID", `${r.loaded.file} has no cinny section`, {
      hint: "cinny-nightly runs on LXC 106 with config/lxc106.yaml",
    });
  }
  const log = commandLogger(flags, r, { logFile: !flags.dryRun });
  const run = createCommandRunner({
    dryRun: flags.dryRun,
    record: () => {},
    signal: AbortSignal.timeout(3_600_000),
  });
  const result = await cinnyNightly({
    config: manifest.cinny,
    under: r.under,
    run,
    force: flags.force,
    dryRun: flags.dryRun,
    log,
  });
  log.info({ ...result }, result.message);
  out(
    flags.json
      ? `${JSON.stringify({ schema: "deploy-agent/cinny-nightly@1", dryRun: flags.dryRun, ...result }, null, 2)}\n`
      : `${result.message}\n`,
  );
  return 0;
}
