import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { AgentError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import { Secret } from "../core/secret.js";
import { loadStatusToken } from "../gitea/webhook-secret.js";
import type { HostOverrides } from "../manifest/at-revision.js";
import { type Manifest, webhookPath } from "../manifest/schema.js";
import { createAgent } from "../server/agent.js";
import { buildServer } from "../server/app.js";
import { watchWebhookKeys } from "../server/webhook-keys.js";
import { kindOf } from "../steps/index.js";
import { type CommonFlags, resolveDeployed, secretSource } from "./options.js";

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

/**
 * Host-local settings from the environment, which `deploy-agent install` sets in a unit drop-in when a
 * migrated host keeps the old webhook binary's port and hook path (so Gitea needs no change):
 * DEPLOY_AGENT_LISTEN (HOST:PORT, as --listen) and DEPLOY_AGENT_WEBHOOK_PATH.
 */
function withHostOverrides(manifest: Manifest): Manifest {
  const value = process.env.DEPLOY_AGENT_WEBHOOK_PATH;
  if (value === undefined) return manifest;
  const parsed = webhookPath.safeParse(value);
  if (!parsed.success) {
    throw new AgentError(
      "CONFIG_INVALID",
      `DEPLOY_AGENT_WEBHOOK_PATH="${value}" is not an absolute URL path`,
      {
        hint: "e.g. /hooks/matrix-deploy",
      },
    );
  }
  return { ...manifest, webhook: { ...manifest.webhook, path: parsed.data } };
}

export function parseListen(
  value: string | undefined,
  manifest: Pick<Manifest, "listen">,
): { host: string; port: number } {
  if (value === undefined) return manifest.listen;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port < 0 || port > 65535) {
    throw new AgentError("USAGE", `--listen (or DEPLOY_AGENT_LISTEN) takes HOST:PORT, not "${value}"`, {
      hint: "e.g. --listen 127.0.0.1:9500 or --listen [::1]:9500",
    });
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

/**
 * Resolves on the first SIGTERM or SIGINT. The handlers stay for the life of the process: with `once`, a
 * handler a library adds (signal-exit's) would find itself alone and re-raise the signal, killing the daemon
 * in the middle of a step.
 */
function signals(log: Logger): Promise<string> {
  return new Promise((done) => {
    let first: string | undefined;
    const on = (signal: string) => {
      if (first) {
        log.warn({ signal }, "already shutting down; the running step is finishing");
        return;
      }
      first = signal;
      done(signal);
    };
    process.on("SIGTERM", on);
    process.on("SIGINT", on);
  });
}

/** Binding the listener, with the reasons an operator meets on a real host said plainly. */
async function listenOn(app: FastifyInstance, listen: { host: string; port: number }): Promise<string> {
  try {
    return await app.listen(listen);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const at = `${listen.host}:${listen.port}`;
    if (code === "EADDRINUSE") {
      throw new AgentError("LISTEN_FAILED", `${at} is already in use by another process`, {
        hint: `see who holds it: ss -ltnp 'sport = :${listen.port}' (webhook.service, before migrating?)`,
      });
    }
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EACCES") {
      throw new AgentError("CONFIG_INVALID", `cannot listen on ${at} (${code})`, {
        hint: "fix listen.host/listen.port in the manifest or --listen",
      });
    }
    throw err;
  }
}

/** What the start-up (src/start.ts) did with V8's code cache: "off" when started without one (from source). */
const codeCache = () =>
  (globalThis as Record<symbol, unknown>)[Symbol.for("deploy-agent.code-cache")] ?? "off";

export async function serveCommand(flags: ServeFlags): Promise<number> {
  const r = await resolveDeployed(flags);
  const manifest = withHostOverrides(r.loaded.manifest);
  const listenFrom =
    flags.listen !== undefined
      ? "--listen"
      : process.env.DEPLOY_AGENT_LISTEN !== undefined
        ? "DEPLOY_AGENT_LISTEN (the unit's environment)"
        : null;
  const listen = parseListen(flags.listen ?? process.env.DEPLOY_AGENT_LISTEN, manifest);
  // What the host sets outside the manifest stays across restarts: git's value for it is never pending.
  const overrides: HostOverrides = {
    ...(listenFrom
      ? { listen: { value: listen, source: listenFrom, fromFile: r.loaded.manifest.listen } }
      : {}),
    ...(process.env.DEPLOY_AGENT_WEBHOOK_PATH !== undefined
      ? {
          "webhook.path": {
            value: manifest.webhook.path,
            source: "DEPLOY_AGENT_WEBHOOK_PATH (the unit's environment)",
            fromFile: r.loaded.manifest.webhook.path,
          },
        }
      : {}),
  };
  const tokenFile = manifest.webhook.statusAccess?.tokenFile;
  const statusToken = tokenFile ? await loadStatusToken(r.under(tokenFile)) : undefined;
  const logFile = manifest.log.file ? r.under(manifest.log.file) : undefined;
  const log = createLogger({
    level: flags.logLevel ?? manifest.log.level,
    fd: 1,
    file: logFile,
    json: flags.json,
  });
  if (r.note) log.warn(r.note);
  const webhookKeys = await watchWebhookKeys(secretSource(r), r.stateDir, log);
  const agent = createAgent({
    manifest,
    manifestPath: r.manifestPath,
    overrides,
    load: r.load,
    repoDir: r.repoDir,
    stateDir: r.stateDir,
    root: r.root,
    dryRun: flags.dryRun,
    log,
  });
  const secret = new Secret(webhookKeys.initial.current);
  const app = buildServer({ manifest, secret, agent, log, statusToken, keys: webhookKeys });
  const address = await listenOn(app, listen);
  log.info(
    {
      address,
      host: manifest.host,
      path: manifest.webhook.path,
      dryRun: flags.dryRun,
      codeCache: codeCache(),
    },
    "listening",
  );
  agent.start();

  const why = await (flags.shutdown ?? signals(log));
  log.info({ signal: why }, "shutting down: no new deliveries, the running step finishes");
  // The running step ends by itself within its timeout (and its rollback's, after it); this is the backstop
  // if it does not: the step is cancelled, and if even that does not end it, the process exits without
  // recording it as applied.
  const longest = manifest.steps.map((s) => s.timeoutSeconds + kindOf(s).rollbackSeconds(s));
  const graceMs = (Math.max(...longest) + 10) * 1000;
  const grace = setTimeout(() => {
    log.error("shutdown grace period over: cancelling the running step");
    agent.abort();
    setTimeout(() => process.exit(1), 5000).unref();
  }, graceMs);
  grace.unref();
  await app.close();
  webhookKeys.close();
  await agent.close();
  clearTimeout(grace);
  log.info("stopped");
  return 0;
}
