import { createCommandRunner } from "../command.js";
import { AgentError } from "../errors.js";
import { livekitRestart } from "../livekit/restart.js";
import { type CommonFlags, commandLogger, resolve } from "./options.js";

/**
 * `deploy-agent livekit-restart`: restart livekit-server if a restart is pending and no call is active
 * (replaces livekit-graceful-restart.sh; run by livekit-graceful-restart.timer). Exit 0 whether it
 * restarted or waited; 1 when the restart itself failed.
 */
export async function livekitRestartCommand(
  flags: CommonFlags & { dryRun: boolean },
  out: (t: string) => void,
): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  if (!manifest.livekit) {
    throw new AgentError("CONFIG_INVALID", `${r.loaded.file} has no livekit section`, {
      hint: "livekit-restart runs on LXC 151 with config/lxc151.yaml",
    });
  }
  const log = commandLogger(flags, r, { logFile: !flags.dryRun });
  const run = createCommandRunner({
    dryRun: flags.dryRun,
    record: () => {},
    signal: AbortSignal.timeout(120_000),
  });
  const decision = await livekitRestart({
    config: manifest.livekit,
    under: r.under,
    run,
    systemctl: manifest.commands.systemctl,
    dryRun: flags.dryRun,
    log,
  });
  log.info({ ...decision }, decision.reason);
  out(
    flags.json
      ? `${JSON.stringify({ schema: "deploy-agent/livekit-restart@1", dryRun: flags.dryRun, ...decision }, null, 2)}\n`
      : `${[...decision.warnings.map((w) => `warning: ${w}`), decision.reason].join("\n")}\n`,
  );
  return 0;
}
