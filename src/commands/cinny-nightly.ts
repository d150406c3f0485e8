import { cinnyNightly } from "../cinny/nightly.js";
import { type CommonFlags, hostJob, printJob } from "./options.js";

/**
 * `deploy-agent cinny-nightly`: build Cinny's dev branch and switch the web root to it (cron, 03:00 on
 * LXC 106). Exit 0 when built or unchanged, 1 when the build failed (the live site is untouched).
 */
export async function cinnyNightlyCommand(
  flags: CommonFlags & { dryRun: boolean; force: boolean },
  out: (t: string) => void,
): Promise<number> {
  const { r, config, log, run } = await hostJob(
    flags,
    "cinny",
    "cinny-nightly runs on LXC 106 with config/lxc106.yaml",
    3_600_000,
  );
  const result = await cinnyNightly({
    config,
    under: r.under,
    run,
    force: flags.force,
    dryRun: flags.dryRun,
    log,
  });
  log.info({ ...result }, result.message);
  printJob(flags, "deploy-agent/cinny-nightly@1", result, result.message, out);
  return 0;
}
