import { livekitRestart } from "../livekit/restart.js";
import { type CommonFlags, hostJob, printJob } from "./options.js";

/**
 * `deploy-agent livekit-restart`: restart livekit-server if a restart is pending and no call is active
 * (replaces livekit-graceful-restart.sh; run by livekit-graceful-restart.timer). Exit 0 whether it
 * restarted or waited; 1 when the restart itself failed.
 */
export async function livekitRestartCommand(
  flags: CommonFlags & { dryRun: boolean },
  out: (t: string) => void,
): Promise<number> {
  const { r, config, log, run } = await hostJob(
    flags,
    "livekit",
    "livekit-restart runs on LXC 151 with config/lxc151.yaml",
    120_000,
  );
  const systemctl = r.loaded.manifest.commands.systemctl;
  const decision = await livekitRestart({
    config,
    under: r.under,
    run,
    systemctl,
    dryRun: flags.dryRun,
    log,
  });
  log.info({ ...decision }, decision.reason);
  const text = [...decision.warnings.map((w) => `warning: ${w}`), decision.reason].join("\n");
  printJob(flags, "deploy-agent/livekit-restart@1", decision, text, out);
  return 0;
}
