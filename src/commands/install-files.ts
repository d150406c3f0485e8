import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { MIN_SECRET_LENGTH } from "../gitea/webhook-secret.js";
import { appendEnv, hideEnvValues } from "../host/env.js";
import type { HostFs } from "../host/host-fs.js";
import { JOBS, jobConfig } from "../jobs/index.js";
import type { Manifest } from "../manifest/schema.js";
import { OLD_UNIT, type OldListener } from "./old-webhook.js";
import type { Resolved } from "./options.js";

/**
 * What install writes for a host role, worked out before anything is written (reads only): the agent's
 * units and drop-ins, the host jobs' units and cron files, the listen drop-in that keeps webhook.service's
 * URL, and the webhook secret (kept, taken over from the old hooks file, or new).
 */

export const UNIT_DIR = "/etc/systemd/system";
/** Where systemd and cron look for programs; node elsewhere needs a PATH of its own. */
const STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface PlannedFile {
  path: string;
  data: Buffer;
  mode: number;
  /** How the file shows in a diff; secrets never do. */
  display?: { before: Buffer | null; after: Buffer };
  /** Secrets are the host's: never a conflict, never recorded. */
  owned?: false;
}

/** An env file with every value hidden, each whole as dotenv or systemd reads it: what a diff may show. */
const redactEnv = (data: Buffer | null) => (data ? Buffer.from(hideEnvValues(data.toString("utf8"))) : null);

/** The host jobs this host's manifest has a section for. */
export const hostJobs = (manifest: Manifest) => JOBS.filter((job) => jobConfig(manifest, job) !== undefined);

/** Every file install writes for this host role, with its content, and the webhook secret Gitea signs with. */
export async function plannedFiles(o: {
  r: Resolved;
  host: Pick<HostFs, "read">;
  home: string;
  old: OldListener | null;
  warnings: string[];
  name: string;
}): Promise<{ files: PlannedFile[]; secret: string }> {
  const { r, home, old } = o;
  const { manifest } = r.loaded;
  const nodeDir = path.dirname(process.execPath);
  const nodePath = STANDARD_PATH.split(":").includes(nodeDir) ? null : `${nodeDir}:${STANDARD_PATH}`;
  const ours = async (name: string) => readFile(path.join(home, "systemd", name));
  const unitFile = async (name: string): Promise<PlannedFile[]> => [
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
  const files: PlannedFile[] = await unitFile("deploy-agent@.service");
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
      path: `${UNIT_DIR}/deploy-agent@${o.name}.service.d/listen.conf`,
      data: Buffer.from(
        `# Kept from the webhook binary this host ran before, so Gitea's webhook URL stays the same.\n[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=${old.host}:${old.port}\nEnvironment=DEPLOY_AGENT_WEBHOOK_PATH=${old.hookPath}\n`,
      ),
      mode: 0o644,
    });
  }
  const secret = await plannedSecret({ ...o, files });
  return { files, secret };
}

/**
 * The webhook secret: kept when there is one (only its file's mode is fixed), else the old listener's, else a
 * new random one. Never shown, never recorded as install's own. Its file is added to `files`.
 */
async function plannedSecret(o: {
  r: Resolved;
  host: Pick<HostFs, "read">;
  old: OldListener | null;
  warnings: string[];
  files: PlannedFile[];
}): Promise<string> {
  const { r, old } = o;
  const { secretEnv, secretFile } = r.loaded.manifest.webhook;
  const secretPath = secretEnv ? r.loaded.manifest.envFile : secretFile;
  if (!secretPath) {
    throw new AgentError(
      "CONFIG_INVALID",
      `webhook.secretEnv ${secretEnv} is set but the manifest names no envFile`,
      {
        hint: "name the env file (envFile:), or use webhook.secretFile",
      },
    );
  }
  const existing = (await o.host.read(secretPath)) ?? Buffer.alloc(0);
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
  o.files.push({
    path: secretPath,
    data,
    mode: 0o600,
    display: secretEnv
      ? { before: redactEnv(existing), after: redactEnv(data) ?? Buffer.alloc(0) }
      : { before: null, after: Buffer.from("<webhook secret, not shown>\n") },
    owned: false,
  });
  return secret;
}
