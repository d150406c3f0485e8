import { createServer } from "node:net";
import path from "node:path";
import { AgentError, asAgentError } from "../core/errors.js";
import { failure, type InstallContext, systemctl } from "./install-context.js";
import { hostJobs } from "./install-files.js";
import { restoreOldListener } from "./install-legacy.js";
import type { InstallPlan } from "./install-plan.js";
import { listenerProblem } from "./install-probe.js";
import { keepUnitState, type Undo } from "./install-undo.js";
import { OLD_UNIT } from "./old-webhook.js";
import { parseListen } from "./serve.js";
import { unitEnvironment } from "./unit-environment.js";

/**
 * Install's last stage, once its files are written: the host jobs' units and the agent's unit started, the
 * agent's only counted once it takes a signed delivery; on a migrated host first on a spare loopback port,
 * then in webhook.service's place, which is put back when that fails. Apart from the command because the
 * hand-over from the old listener is the one part of install with an order of its own to keep.
 */

/** The host jobs' units, then the agent's unit, which must take Gitea's deliveries before it counts. */
export async function startUnits(ctx: InstallContext, plan: InstallPlan, undo: Undo): Promise<void> {
  const sc = (...args: string[]) => systemctl(ctx, ...args);
  for (const unit of hostJobs(plan.manifest).flatMap((job) => job.install?.enable ?? [])) {
    await keepUnitState(undo, ctx.back.run, ctx.commands.systemctl, unit);
    await sc("enable", "--now", unit);
  }
  const { unit, old, secret } = plan;
  // Not migrating now: where systemd has the unit listen (a migration's listen.conf, kept, says it).
  const env = old ? {} : await unitEnvironment(ctx, unit);
  const listen = old
    ? { host: old.host, port: old.port }
    : parseListen(env.DEPLOY_AGENT_LISTEN, plan.manifest);
  const hookPath = old ? old.hookPath : (env.DEPLOY_AGENT_WEBHOOK_PATH ?? plan.manifest.webhook.path);
  const hint = `journalctl -u ${unit} -n 50`;
  if (!old) {
    await keepUnitState(undo, ctx.back.run, ctx.commands.systemctl, unit);
    await sc("enable", unit);
    await sc("restart", unit);
    const why = await listenerProblem(ctx, listen.host, listen.port, hookPath, secret);
    if (why)
      throw new AgentError(
        "INSTALL_FAILED",
        failure(ctx, `${unit} on ${listen.host}:${listen.port}: ${why}`),
        {
          hint,
        },
      );
    if (plan.disableOld) {
      undo.add("units", OLD_UNIT, () => systemctl(ctx.back, "enable", OLD_UNIT));
      await sc("disable", OLD_UNIT);
    }
    return;
  }
  // The unit must answer before the old listener goes: first on a spare loopback port.
  const trial = await trialOnSparePort(ctx, unit, hookPath, secret);
  if (trial) {
    throw new AgentError(
      "INSTALL_FAILED",
      failure(
        ctx,
        `${unit} on a spare port: ${trial}; ${OLD_UNIT} was left ${old.was.active ? "running" : "as it was"}`,
      ),
      {
        hint,
      },
    );
  }
  // From here the old listener is stopped: any failure puts it back as it was (enabled, running).
  try {
    if (old.was.active) await sc("stop", OLD_UNIT);
    await sc("enable", unit);
    await sc("restart", unit);
    const why = await listenerProblem(ctx, listen.host, listen.port, hookPath, secret);
    if (why) throw new AgentError("INSTALL_FAILED", `${unit} on ${listen.host}:${listen.port}: ${why}`);
    if (old.was.enabled) await sc("disable", OLD_UNIT);
  } catch (err) {
    const failed = failure(ctx, err);
    const back = await restoreOldListener((...args) => systemctl(ctx.back, ...args), unit, old.was);
    throw new AgentError("INSTALL_FAILED", `${failed}; ${back}`, { hint, cause: err });
  }
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => done(port));
    });
  });
}

/**
 * The unit started on a spare loopback port (a runtime drop-in) while webhook.service keeps the real one;
 * stopped and the drop-in removed again whatever happens. null when it took a signed delivery.
 */
async function trialOnSparePort(
  ctx: InstallContext,
  unit: string,
  hookPath: string,
  secret: string,
): Promise<string | null> {
  const port = await freePort();
  const check = `/run/systemd/system/${unit}.d/zz-install-check.conf`;
  ctx.record({ type: "note", message: `try ${unit} on 127.0.0.1:${port} while ${OLD_UNIT} keeps the port` });
  let made: string | null = null;
  try {
    made = (await ctx.host.mkdir(path.dirname(check), 0o755)).created;
    const dropIn = `[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=127.0.0.1:${port}\n`;
    await ctx.host.write(check, Buffer.from(dropIn), { mode: 0o644 });
    await systemctl(ctx, "daemon-reload");
    await systemctl(ctx, "restart", unit);
    return await listenerProblem(ctx, "127.0.0.1", port, hookPath, secret);
  } catch (err) {
    return asAgentError(err).message;
  } finally {
    await systemctl(ctx.back, "stop", unit).catch(() => {});
    await ctx.back.host.remove(made ?? check).catch(() => {});
    await systemctl(ctx.back, "daemon-reload").catch(() => {});
  }
}
