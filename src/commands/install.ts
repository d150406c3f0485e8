import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, readFile, readlink, rename, symlink, unlink } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AgentError, asAgentError } from "../core/errors.js";
import { renderEffect } from "../deploy/report.js";
import { MIN_SECRET_LENGTH } from "../gitea/webhook-secret.js";
import { createCommandRunner } from "../host/command.js";
import type { Effect } from "../host/effects.js";
import { appendEnv } from "../host/env.js";
import { createHostFs, rooted } from "../host/host-fs.js";
import { JOBS, jobConfig } from "../jobs/index.js";
import type { Manifest } from "../manifest/schema.js";
import { HOST_IDENTITY_FILE, plannedHostIdentity } from "../secrets/identity.js";
import { openRepo } from "../source/git.js";
import { HEALTH_TIMEOUT_MS, listenerProblem, probeHost } from "./install-probe.js";
import { OLD_UNIT, type OldListener, readOldListener } from "./old-webhook.js";
import { type CommonFlags, type Resolved, resolve } from "./options.js";
import { verifyOffNotice } from "./verify-notice.js";

/**
 * `deploy-agent install --host lxcNNN`: the README's install steps for one host role, on the host it runs
 * on. Links the bin into PATH, installs the agent's unit (and the LiveKit timer or the Cinny cron file when
 * the manifest has that section), creates the state and secret directories and the webhook secret, and
 * starts the unit. On a host still running the `webhook` binary it migrates: the secret and the hook URL
 * (port and path) are taken over from the old hooks file, so Gitea needs no change, and webhook.service is
 * stopped only after the new unit has answered /healthz (on a spare loopback port; if the unit then fails
 * on the real port, webhook.service is started again). Files it did not write itself and that differ are
 * local changes: it refuses them unless --force. --dry-run prints every effect and changes nothing.
 */

export interface InstallFlags extends CommonFlags {
  host?: string | undefined;
  dryRun: boolean;
  force: boolean;
}

const UNIT_DIR = "/etc/systemd/system";
const BIN_LINK = "/usr/local/bin/deploy-agent";
const SECRET_DIR = "/etc/deploy-agent";
/** Where systemd and cron look for programs; node elsewhere needs a PATH of its own. */
const STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The agent's own checkout: the directory holding its package.json (from src/ or dist/src/). */
function agentHome(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) dir = path.dirname(dir);
  return dir;
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** Env-file lines with every value hidden: what a diff of an env file may show. */
const redactEnv = (data: Buffer | null) =>
  data
    ? Buffer.from(data.toString("utf8").replace(/^(\s*[A-Za-z_][A-Za-z0-9_]*\s*=).*$/gm, "$1<redacted>"))
    : null;

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

interface File {
  path: string;
  data: Buffer;
  mode: number;
  /** How the file shows in a diff; secrets never do. */
  display?: { before: Buffer | null; after: Buffer };
  /** Secrets are the host's: never a conflict, never recorded. */
  owned?: false;
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
  const signal = AbortSignal.timeout(10 * 60_000);
  const run = createCommandRunner({ dryRun: flags.dryRun, record, signal });
  const query = createCommandRunner({ dryRun: false, record: () => {}, signal });
  const fs = createHostFs({ root: r.root, dryRun: flags.dryRun, record, run });
  const systemctl = manifest.commands.systemctl;
  const home = agentHome();
  const unit = `deploy-agent@${host}.service`;

  const old = await readOldListener((argv) => query([...systemctl, ...argv.slice(1)]), r.under);
  const { files, secret } = await plannedFiles({ r, manifest, home, old, warnings, host });
  // The host's age identity for the repository's secrets: made once, never replaced, never shown.
  const age = await plannedHostIdentity(r.under(HOST_IDENTITY_FILE));
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
  if (age.data && flags.dryRun) warnings.push(`a new age identity would be made: ${HOST_IDENTITY_FILE}`);
  else if (age.recipient)
    warnings.push(`age recipient of ${host}: ${age.recipient} (hosts: in secrets/secrets.yaml)`);

  // Local changes: a file that differs from what install would write, and that install did not write.
  const recordFile = path.join(manifest.stateDir, "installed.json");
  const installed: Record<string, string> =
    JSON.parse((await fs.read(recordFile))?.toString("utf8") ?? "{}").files ?? {};
  const conflicts: string[] = [];
  for (const f of files.filter((f) => f.owned !== false)) {
    const current = await fs.read(f.path);
    if (current && !current.equals(f.data) && installed[f.path] !== sha256(current)) conflicts.push(f.path);
  }
  const binTarget = path.join(home, "dist/src/bin.js");
  const link = await lstat(r.under(BIN_LINK)).catch(() => null);
  const linkNow = link?.isSymbolicLink() ? await readlink(r.under(BIN_LINK)) : null;
  if (link && linkNow !== binTarget)
    conflicts.push(`${BIN_LINK} (${linkNow ? `links to ${linkNow}` : "not a link"})`);
  if (conflicts.length && !flags.force) {
    throw new AgentError("LOCAL_CHANGES", `local changes would be overwritten: ${conflicts.join(", ")}`, {
      hint: "look at them (deploy-agent install --dry-run shows the diff), then install again with --force",
    });
  }

  // Directories, the bin link, the files.
  const dirs = new Map<string, number>([
    [manifest.stateDir, 0o700],
    [SECRET_DIR, 0o700],
  ]);
  for (const f of files) if (!dirs.has(path.dirname(f.path))) dirs.set(path.dirname(f.path), 0o755);
  for (const [dir, mode] of dirs) {
    if (existsSync(r.under(dir))) continue;
    record({
      type: "note",
      message: `${flags.dryRun ? "would create" : "create"} directory ${dir} (mode 0${mode.toString(8)})`,
    });
    if (!flags.dryRun) await mkdir(r.under(dir), { recursive: true, mode });
  }
  if (linkNow !== binTarget) {
    record({ type: "note", message: `${flags.dryRun ? "would link" : "link"} ${BIN_LINK} -> ${binTarget}` });
    if (!flags.dryRun) {
      const tmp = `${r.under(BIN_LINK)}.deploy-agent-new`;
      await unlink(tmp).catch(() => {});
      await symlink(binTarget, tmp);
      await rename(tmp, r.under(BIN_LINK));
      await chmod(binTarget, 0o755);
    }
  }
  let unitsChanged = false;
  for (const f of files) {
    const { outcome } = await fs.write(f.path, f.data, { mode: f.mode, display: f.display });
    if (outcome === "changed" && f.path.startsWith(UNIT_DIR)) unitsChanged = true;
    if (f.owned !== false) installed[f.path] = sha256(f.data);
  }
  await fs.write(recordFile, Buffer.from(`${JSON.stringify({ files: installed }, null, 2)}\n`), {
    mode: 0o600,
  });

  // The units.
  const sc = (...args: string[]) => run([...systemctl, ...args]);
  if (unitsChanged) await sc("daemon-reload");
  for (const unit of hostJobs(manifest).flatMap((job) => job.install?.enable ?? [])) {
    await sc("enable", "--now", unit);
  }
  const listen = old ? { host: old.host, port: old.port } : manifest.listen;
  const hookPath = old ? old.hookPath : manifest.webhook.path;
  /** null when the unit listening on host:port is healthy and accepts a delivery signed with the secret. */
  const problem = async (h: string, port: number): Promise<string | null> => {
    const base = `http://${probeHost(h)}:${port}`;
    record({
      type: "request",
      method: "GET",
      url: `${base}/healthz`,
      detail: `until 200, up to ${HEALTH_TIMEOUT_MS / 1000}s`,
    });
    record({
      type: "request",
      method: "POST",
      url: `${base}${hookPath}`,
      detail: "a ping signed with the webhook secret: 2xx, not 401",
    });
    return flags.dryRun ? null : listenerProblem(h, port, hookPath, secret, signal);
  };
  const hint = `journalctl -u ${unit} -n 50`;
  if (old) {
    // The unit must answer before the old listener goes: first on a spare loopback port.
    const port = await freePort();
    const check = `/run/systemd/system/${unit}.d/zz-install-check.conf`;
    record({ type: "note", message: `try ${unit} on 127.0.0.1:${port} while ${OLD_UNIT} keeps the port` });
    let trial: string | null;
    try {
      if (!flags.dryRun) {
        await mkdir(path.dirname(r.under(check)), { recursive: true });
        await fs.write(check, Buffer.from(`[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=127.0.0.1:${port}\n`), {
          mode: 0o644,
        });
      }
      await sc("daemon-reload");
      await sc("restart", unit);
      trial = await problem("127.0.0.1", port);
    } catch (err) {
      trial = asAgentError(err).message;
    } finally {
      await sc("stop", unit).catch(() => {});
      if (!flags.dryRun) await unlink(r.under(check)).catch(() => {});
      await sc("daemon-reload").catch(() => {});
    }
    if (trial) {
      throw new AgentError(
        "INSTALL_FAILED",
        `${unit} on a spare port: ${trial}; ${OLD_UNIT} was left running`,
        {
          hint,
        },
      );
    }
    // From here the old listener is stopped: any failure starts and enables it again.
    try {
      await sc("stop", OLD_UNIT);
      await sc("enable", unit);
      await sc("restart", unit);
      const why = await problem(listen.host, listen.port);
      if (why) throw new AgentError("INSTALL_FAILED", `${unit} on ${listen.host}:${listen.port}: ${why}`);
      await sc("disable", OLD_UNIT);
    } catch (err) {
      const failed = asAgentError(err).message;
      const back = await restoreOldListener(sc, unit);
      throw new AgentError("INSTALL_FAILED", `${failed}; ${back}`, { hint, cause: err });
    }
  } else {
    await sc("enable", unit);
    await sc("restart", unit);
    const why = await problem(listen.host, listen.port);
    if (why)
      throw new AgentError("INSTALL_FAILED", `${unit} on ${listen.host}:${listen.port}: ${why}`, { hint });
  }
  if (old) {
    warnings.push(
      `${OLD_UNIT} is stopped and disabled; once you trust the agent: apt-get remove webhook, and delete the old hooks file and /usr/local/bin/matrix-deploy.sh`,
    );
  }
  const notice = verifyOffNotice(manifest);
  if (notice) warnings.push(notice);

  if (flags.json) {
    out(
      `${JSON.stringify({ schema: "deploy-agent/install@1", host, dryRun: flags.dryRun, effects, warnings }, null, 2)}\n`,
    );
  } else {
    const lines = [`deploy-agent install${flags.dryRun ? " (dry run)" : ""}: host ${host}`];
    for (const e of effects) lines.push(`  ${renderEffect(e, flags.dryRun).replaceAll("\n", "\n  ")}`);
    for (const w of warnings) lines.push(`note: ${w}`);
    lines.push(flags.dryRun ? "nothing changed (dry run)" : `${unit} is running and healthy`);
    out(`${lines.join("\n")}\n`);
  }
  return 0;
}

/**
 * Puts the old listener back after the new unit failed in its place: the unit stopped and disabled (so it
 * does not fight for the port), webhook.service enabled and started. Each step is tried; says what holds now.
 */
async function restoreOldListener(
  sc: (...args: string[]) => Promise<unknown>,
  unit: string,
): Promise<string> {
  const failures: string[] = [];
  for (const args of [
    ["disable", "--now", unit],
    ["enable", "--now", OLD_UNIT],
  ]) {
    await sc(...args).catch((err: unknown) => failures.push(asAgentError(err).message));
  }
  return failures.length
    ? `putting ${OLD_UNIT} back failed too (${failures.join("; ")}): nothing may be listening, start it by hand`
    : `${OLD_UNIT} is enabled and running again`;
}

/** The host jobs this host's manifest has a section for. */
const hostJobs = (manifest: Manifest) => JOBS.filter((job) => jobConfig(manifest, job) !== undefined);

/** Every file install writes for this host role, with its content. */
async function plannedFiles(o: {
  r: Resolved;
  manifest: Manifest;
  home: string;
  old: OldListener | null;
  warnings: string[];
  host: string;
}): Promise<{ files: File[]; secret: string }> {
  const { r, manifest, home, old } = o;
  const nodeDir = path.dirname(process.execPath);
  const nodePath = STANDARD_PATH.split(":").includes(nodeDir) ? null : `${nodeDir}:${STANDARD_PATH}`;
  const ours = async (name: string) => readFile(path.join(home, "systemd", name));
  const unitFile = async (name: string): Promise<File[]> => [
    { path: `${UNIT_DIR}/${name}`, data: await ours(name), mode: 0o644 },
    ...(nodePath && name.endsWith(".service")
      ? [
          {
            path: `${UNIT_DIR}/${name}.d/node-path.conf`,
            data: Buffer.from(`[Service]\nEnvironment=PATH=${nodePath}\n`),
            mode: 0o644,
          },
        ]
      : []),
  ];
  const files: File[] = await unitFile("deploy-agent@.service");
  // What the host's jobs need: their units (a timer for LiveKit's restart), their cron files (Cinny's build).
  for (const job of hostJobs(manifest)) {
    for (const name of job.install?.units ?? []) files.push(...(await unitFile(name)));
    const cron = job.install?.cron;
    if (cron) {
      const text = (await ours(cron.file)).toString("utf8");
      files.push({
        path: cron.as,
        data: Buffer.from(nodePath ? text.replace(/^PATH=.*$/m, `PATH=${nodePath}`) : text),
        mode: 0o644,
      });
    }
  }
  if (
    old &&
    (old.port !== manifest.listen.port ||
      old.host !== manifest.listen.host ||
      old.hookPath !== manifest.webhook.path)
  ) {
    files.push({
      path: `${UNIT_DIR}/deploy-agent@${o.host}.service.d/listen.conf`,
      data: Buffer.from(
        `# Kept from the webhook binary this host ran before, so Gitea's webhook URL stays the same.\n[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=${old.host}:${old.port}\nEnvironment=DEPLOY_AGENT_WEBHOOK_PATH=${old.hookPath}\n`,
      ),
      mode: 0o644,
    });
  }

  // The webhook secret: kept when there is one (only its file's mode is fixed), else the old listener's,
  // else a new random one. Never shown, never recorded as install's own.
  const { secretEnv, secretFile } = manifest.webhook;
  const secretPath = secretEnv ? manifest.envFile : secretFile;
  if (!secretPath) {
    throw new AgentError(
      "CONFIG_INVALID",
      `webhook.secretEnv ${secretEnv} is set but the manifest names no envFile`,
      {
        hint: "name the env file (envFile:), or use webhook.secretFile",
      },
    );
  }
  const existing = (await readFile(r.under(secretPath)).catch(() => null)) ?? Buffer.alloc(0);
  // What serve will use (it trims), and what Gitea signs with when webhook.service is being replaced.
  const current = (secretEnv ? r.loaded.env[secretEnv] : existing.toString("utf8"))?.trim() || undefined;
  const hint = `set the webhook secret (${secretEnv ? `${secretEnv} in ${secretPath}` : secretPath}) to the one Gitea signs with, or stop and disable ${OLD_UNIT} by hand; then install again`;
  if (old?.secret && !current) {
    if (old.secret !== old.secret.trim() || old.secret.length < MIN_SECRET_LENGTH) {
      throw new AgentError(
        "SECRET_UNUSABLE",
        `the old hooks file's secret ${old.secret !== old.secret.trim() ? "begins or ends with whitespace, which the agent trims" : `is shorter than the ${MIN_SECRET_LENGTH} characters the agent requires`}`,
        { hint: `change it in Gitea and ${secretPath} together (openssl rand -hex 32)` },
      );
    }
  }
  if (current && old?.secret && current !== old.secret) {
    throw new AgentError(
      "SECRET_UNUSABLE",
      `the configured webhook secret differs from the one ${OLD_UNIT} checks: Gitea's deliveries would be refused`,
      { hint },
    );
  }
  const secret = current ?? old?.secret ?? randomBytes(32).toString("hex");
  if (!current && !old?.secret) {
    o.warnings.push(`a new webhook secret was made; give Gitea the same one (it is in ${secretPath})`);
  }
  let data = existing;
  if (!current && secretEnv) {
    data = Buffer.from(appendEnv(existing.toString("utf8"), secretEnv, secret));
  } else if (!current) {
    data = Buffer.from(`${secret}\n`);
  }
  files.push({
    path: secretPath,
    data,
    mode: 0o600,
    display: secretEnv
      ? { before: redactEnv(existing), after: redactEnv(data) ?? Buffer.alloc(0) }
      : { before: null, after: Buffer.from("<webhook secret, not shown>\n") },
    owned: false,
  });
  return { files, secret };
}
