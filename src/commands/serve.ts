import { readFile, stat } from "node:fs/promises";
import { AgentError } from "../errors.js";
import { createLogger } from "../log.js";
import type { Manifest } from "../manifest/schema.js";
import { Secret } from "../secret.js";
import { createAgent } from "../server/agent.js";
import { buildServer } from "../server/app.js";
import { type CommonFlags, type Resolved, resolve } from "./options.js";

/**
 * `deploy-agent serve`: the long-running webhook daemon that replaces the `webhook` binary. Verifies and
 * enqueues Gitea pushes, reconciles at start-up, polls as a fallback, and on SIGTERM/SIGINT stops
 * accepting, lets the running step finish and exits 0.
 */

export interface ServeFlags extends CommonFlags {
  dryRun: boolean;
  listen?: string | undefined;
  /** Resolves when the daemon should shut down; default: SIGTERM or SIGINT. */
  shutdown?: Promise<unknown>;
}

const SHUTDOWN_GRACE_MS = 120_000;

/** The webhook secret from the env variable the manifest names, or from its secret file. Never empty. */
async function loadSecret(manifest: Manifest, r: Resolved): Promise<Secret> {
  const { secretEnv, secretFile } = manifest.webhook;
  const hint = `put it in ${secretEnv ? `${secretEnv} (env file or environment)` : `${secretFile} (mode 0600)`}; it must match the Gitea webhook's secret`;
  let value: string | undefined;
  if (secretEnv) {
    value = r.loaded.env[secretEnv];
  } else {
    const file = r.under(secretFile);
    const st = await stat(file).catch(() => null);
    if (st && (st.mode & 0o077) !== 0) {
      throw new AgentError(
        "CONFIG_INVALID",
        `webhook secret file ${file} is readable by others (mode 0${(st.mode & 0o777).toString(8)})`,
        {
          hint: `chmod 600 ${file}`,
        },
      );
    }
    value = st ? await readFile(file, "utf8") : undefined;
  }
  const secret = value?.trim();
  if (!secret) throw new AgentError("CONFIG_INVALID", "refusing to start without a webhook secret", { hint });
  return new Secret(secret);
}

function parseListen(value: string | undefined, manifest: Manifest): { host: string; port: number } {
  if (value === undefined) return manifest.listen;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port < 0 || port > 65535) {
    throw new AgentError("USAGE", `--listen takes HOST:PORT, not "${value}"`, {
      hint: "e.g. --listen 127.0.0.1:9500 or --listen [::1]:9500",
    });
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

function signals(): Promise<string> {
  return new Promise((done) => {
    process.once("SIGTERM", () => done("SIGTERM"));
    process.once("SIGINT", () => done("SIGINT"));
  });
}

export async function serveCommand(flags: ServeFlags): Promise<number> {
  const r = await resolve(flags);
  const { manifest } = r.loaded;
  const listen = parseListen(flags.listen, manifest);
  const secret = await loadSecret(manifest, r);
  const logFile = manifest.log.file ? r.under(manifest.log.file) : undefined;
  const log = createLogger({
    level: flags.logLevel ?? manifest.log.level,
    fd: 1,
    file: logFile,
    json: flags.json,
  });
  const agent = createAgent({
    manifest,
    repoDir: r.repoDir,
    stateDir: r.stateDir,
    root: r.root,
    dryRun: flags.dryRun,
    log,
  });
  const app = buildServer({ manifest, secret, agent, log });
  const address = await app.listen(listen);
  log.info({ address, host: manifest.host, path: manifest.webhook.path, dryRun: flags.dryRun }, "listening");
  agent.start();

  const why = await (flags.shutdown ?? signals());
  log.info({ signal: why }, "shutting down: no new deliveries, the running step finishes");
  const grace = setTimeout(() => {
    log.error(
      "shutdown grace period over; exiting with the step still running (its state was not recorded as applied)",
    );
    process.exit(1);
  }, SHUTDOWN_GRACE_MS);
  grace.unref();
  await app.close();
  await agent.close();
  clearTimeout(grace);
  log.info("stopped");
  return 0;
}
