import { createHash } from "node:crypto";
import { lstat } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { AgentError, asAgentError } from "../core/errors.js";
import { silentLogger } from "../core/log.js";
import { agentPackage } from "../core/package.js";
import { renderInstall } from "../deploy/report.js";
import type { Effect } from "../host/effects.js";
import { rooted } from "../host/host-fs.js";
import { createHttpSender } from "../host/http.js";
import type { Manifest } from "../manifest/schema.js";
import { HOST_IDENTITY_FILE, plannedHostIdentity } from "../secrets/identity.js";
import { openRepo } from "../source/open-repo.js";
import { createContext } from "../steps/context.js";
import { hostJobs, type PlannedFile, plannedFiles, UNIT_DIR } from "./install-files.js";
import { legacyListener, restoreOldListener } from "./install-legacy.js";
import { listenerProblem } from "./install-probe.js";
import { createUndo, keepUnitState, type Undo } from "./install-undo.js";
import { OLD_UNIT, type OldListener } from "./old-webhook.js";
import { type CommonFlags, resolve } from "./options.js";
import { parseListen } from "./serve.js";
import { unitEnvironment } from "./unit-environment.js";
import { verifyOffNotice } from "./verify-notice.js";

/**
 * `deploy-agent install --host lxcNNN`: the README's install steps for one host role, on the host it runs
 * on. Links the bin into PATH, installs the agent's unit (and the LiveKit timer or the Cinny cron file when
 * the manifest has that section), creates the state and secret directories and the webhook secret, and
 * starts the unit. On a host still running the `webhook` binary it migrates: the secret and the hook URL
 * (port and path) are taken over from the old hooks file, so Gitea needs no change, and webhook.service is
 * stopped only after the new unit has answered /healthz (on a spare loopback port; if the unit then fails
 * on the real port, webhook.service is started again). Files it did not write itself and that differ are
 * local changes: it refuses them unless --force. A failure after the first change takes back every change.
 * It acts only through one context, which in a dry run records every effect instead (reads happen in both).
 */

export interface InstallFlags extends CommonFlags {
  host?: string | undefined;
  dryRun: boolean;
  force: boolean;
}

const BIN_LINK = "/usr/local/bin/deploy-agent";
const SECRET_DIR = "/etc/deploy-agent";

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

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

type InstallContext = ReturnType<typeof createContext> & {
  send: ReturnType<typeof createHttpSender>;
  /**
   * The door for putting things back (undo, webhook.service restarted): a signal of its own, so what
   * aborted the install (its timeout, the operator's Ctrl-C, a closed SSH session) does not abort that too.
   */
  back: ReturnType<typeof createContext>;
};

/** Signals that would end install at once: while it acts, they abort it and it takes its changes back. */
const INTERRUPTS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
/** How long install may act; then what is in progress is aborted and its changes taken back. */
const INSTALL_TIMEOUT_MS = 10 * 60_000;
/** Putting things back has at least this long after install's own time ran out (its bound starts with it). */
const BACK_MARGIN_MS = 5 * 60_000;

/** What install does on this host, worked out from reads before anything changes. */
interface InstallPlan {
  manifest: Manifest;
  unit: string;
  files: PlannedFile[];
  secret: string;
  old: OldListener | null;
  /** webhook.service is enabled, stopped, and the agent already serves: it is only disabled. */
  disableOld: boolean;
  binTarget: string;
  /** Hashes of the files install wrote last time (its record), updated by this install. */
  installed: Record<string, string>;
  recordFile: string;
}

export async function installCommand(flags: InstallFlags, out: (text: string) => void): Promise<number> {
  const host = flags.host;
  if (!host || !/^[a-z0-9][a-z0-9-]*$/.test(host)) {
    throw new AgentError("USAGE", "install needs --host NAME, the host manifest's name (lxc151, lxc106, …)", {
      hint: "deploy-agent install --host lxc151 --dry-run",
    });
  }
  const under = rooted(flags.root ? path.resolve(flags.root) : "");
  const r = await resolve({
    ...flags,
    config: flags.config ?? under(`/opt/matrix-config/config/${host}.yaml`),
  });
  const { manifest } = r.loaded;
  if (manifest.host !== host) {
    throw new AgentError(
      "CONFIG_INVALID",
      `${r.loaded.file} is the manifest of ${manifest.host}, not ${host}`,
    );
  }
  await openRepo(r.repoDir, manifest.repo.remote, manifest.repo.branch);

  const effects: Effect[] = [];
  const warnings: string[] = [];
  const record = (e: Effect) => effects.push(e);
  const interrupted = new AbortController();
  const signal = AbortSignal.any([AbortSignal.timeout(INSTALL_TIMEOUT_MS), interrupted.signal]);
  const commands = { systemctl: manifest.commands.systemctl };
  const door = (signal: AbortSignal) =>
    createContext({ dryRun: flags.dryRun, root: r.root, log: silentLogger(), signal, commands, record });
  // The one door to the host: acting, or in a dry run recording what it would do.
  const ctx: InstallContext = {
    ...door(signal),
    send: createHttpSender({ dryRun: flags.dryRun, record, signal }),
    back: door(AbortSignal.timeout(INSTALL_TIMEOUT_MS + BACK_MARGIN_MS)),
  };

  const unit = `deploy-agent@${host}.service`;
  const { old, disableOld } = await legacyListener(ctx, unit);
  const home = agentPackage().dir;
  const { files, secret } = await plannedFiles({
    r,
    host: ctx.host,
    home,
    old,
    warnings,
    name: host,
  });
  // The host's age identity for the repository's secrets: made once, never replaced, never shown.
  const age = await plannedHostIdentity(ctx.host.resolve(HOST_IDENTITY_FILE));
  if (age.data) {
    const after = Buffer.from("<age identity, not shown>\n");
    files.push({
      path: HOST_IDENTITY_FILE,
      data: age.data,
      mode: 0o600,
      display: { before: null, after },
      owned: false,
    });
  }
  const recordFile = path.join(manifest.stateDir, "installed.json");
  const plan: InstallPlan = {
    manifest,
    unit,
    files,
    secret,
    old,
    disableOld,
    binTarget: path.join(home, "dist/src/bin.js"),
    installed: JSON.parse((await ctx.host.read(recordFile))?.toString("utf8") ?? "{}").files ?? {},
    recordFile,
  };
  await refuseLocalChanges(ctx, plan, flags.force);

  const undo = createUndo();
  // From the first change to the last undo, a signal does not end install half way: it aborts what is in
  // progress, and every change is taken back (on a migrated host webhook.service started again).
  const onInterrupt = (name: NodeJS.Signals) =>
    interrupted.abort(new AgentError("ABORTED", `install was interrupted (${name})`));
  for (const name of INTERRUPTS) process.on(name, onInterrupt);
  try {
    await writeAll(ctx, plan, undo);
    await startUnits(ctx, plan, undo);
  } catch (caught) {
    const left = await undo.run();
    // Interrupted: the error says so first (unless the message that got here says it already).
    const err =
      signal.aborted && !asAgentError(caught).message.includes(failure(ctx, ""))
        ? new AgentError("INSTALL_FAILED", failure(ctx, caught), { cause: caught })
        : caught;
    if (!left.length) throw err;
    const e = asAgentError(err);
    throw new AgentError(
      e.code,
      `${e.message}; taking the install back failed too (${left.join("; ")}): fix these by hand`,
      {
        hint: e.hint,
        cause: err,
      },
    );
  } finally {
    for (const name of INTERRUPTS) process.off(name, onInterrupt);
  }

  if (old || disableOld) {
    warnings.push(
      `${OLD_UNIT} is stopped and disabled; once you trust the agent: apt-get remove webhook, and delete the old hooks file and /usr/local/bin/matrix-deploy.sh`,
    );
  }
  // Said once the key is on the host: a dry run's new key shows as its write, its recipient would be another.
  if (age.recipient && (await ctx.host.read(HOST_IDENTITY_FILE))) {
    warnings.push(`age recipient of ${host}: ${age.recipient} (hosts: in secrets/secrets.yaml)`);
  }
  const notice = verifyOffNotice(manifest);
  if (notice) warnings.push(notice);

  const report = { schema: "deploy-agent/install@1" as const, host, dryRun: flags.dryRun, effects, warnings };
  out(flags.json ? `${JSON.stringify(report, null, 2)}\n` : renderInstall(report));
  return 0;
}

/** Local changes: a file that differs from what install would write, and that install did not write. */
async function refuseLocalChanges(ctx: InstallContext, plan: InstallPlan, force: boolean): Promise<void> {
  const conflicts: string[] = [];
  for (const f of plan.files.filter((f) => f.owned !== false)) {
    const current = await ctx.host.read(f.path);
    if (current && !current.equals(f.data) && plan.installed[f.path] !== sha256(current))
      conflicts.push(f.path);
  }
  const link = await lstat(ctx.host.resolve(BIN_LINK)).catch(() => null);
  const linkNow = await ctx.host.readlink(BIN_LINK);
  if (link && linkNow !== plan.binTarget)
    conflicts.push(`${BIN_LINK} (${linkNow ? `links to ${linkNow}` : "not a link"})`);
  if (conflicts.length && !force) {
    throw new AgentError("LOCAL_CHANGES", `local changes would be overwritten: ${conflicts.join(", ")}`, {
      hint: "look at them (deploy-agent install --dry-run shows the diff), then install again with --force",
    });
  }
}

/** Directories, the bin link, the files and install's record of them; each change registers its undo. */
async function writeAll(ctx: InstallContext, plan: InstallPlan, undo: Undo): Promise<void> {
  const dirs = new Map<string, number>([
    [plan.manifest.stateDir, 0o700],
    [SECRET_DIR, 0o700],
  ]);
  for (const f of plan.files) if (!dirs.has(path.dirname(f.path))) dirs.set(path.dirname(f.path), 0o755);
  for (const [dir, mode] of dirs) {
    const { created } = await ctx.host.mkdir(dir, mode);
    if (created) undo.add("files", created, () => ctx.back.host.remove(created));
  }
  const link = await ctx.host.symlink(BIN_LINK, plan.binTarget);
  if (link.outcome === "changed") undo.add("files", BIN_LINK, () => ctx.back.host.restore(link.previous));

  let unitsChanged = false;
  // Restored unit files are systemd's again only after a reload.
  undo.add("reload", "daemon-reload", async () => unitsChanged && systemctl(ctx.back, "daemon-reload"));
  for (const f of [...plan.files, installRecord(plan)]) {
    const { outcome, previous } = await ctx.host.write(f.path, f.data, { mode: f.mode, display: f.display });
    if (outcome === "unchanged") continue;
    undo.add("files", f.path, () => ctx.back.host.restore(previous));
    if (f.path.startsWith(UNIT_DIR)) unitsChanged = true;
  }
  if (unitsChanged) await systemctl(ctx, "daemon-reload");
}

/** install's record: the hashes of the files it owns, as written now. */
function installRecord(plan: InstallPlan): PlannedFile {
  const files = { ...plan.installed };
  for (const f of plan.files) if (f.owned !== false) files[f.path] = sha256(f.data);
  return { path: plan.recordFile, data: Buffer.from(`${JSON.stringify({ files }, null, 2)}\n`), mode: 0o600 };
}

const systemctl = (ctx: Pick<InstallContext, "run" | "commands">, ...args: string[]) =>
  ctx.run([...ctx.commands.systemctl, ...args]);

/** Why install failed: what was in progress, and first that install was interrupted, when it was. */
function failure(ctx: Pick<InstallContext, "signal">, err: unknown): string {
  const message = asAgentError(err).message;
  if (!ctx.signal.aborted) return message;
  const why = asAgentError(ctx.signal.reason).message;
  return !message || message.includes(why) ? message || why : `${why}: ${message}`;
}

/** The host jobs' units, then the agent's unit, which must take Gitea's deliveries before it counts. */
async function startUnits(ctx: InstallContext, plan: InstallPlan, undo: Undo): Promise<void> {
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
