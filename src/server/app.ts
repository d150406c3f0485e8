import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import { redact } from "../core/redact.js";
import type { Secret } from "../core/secret.js";
import { allowed, allowList } from "./allow-list.js";
import { limitConnections } from "./connections.js";
import { logDeliveries, refused } from "./deliveries.js";
import { viewRoutes } from "./view-routes.js";
import { type WebhookDeps, webhookRoute } from "./webhook-route.js";

/**
 * The HTTP layer: it verifies, filters and enqueues — nothing else. Only the webhook route reads raw
 * bytes (an encapsulated content-type parser); the HMAC is checked over exactly what Gitea signed before
 * any JSON parsing. `buildServer` does not listen, so tests use inject() and real sockets alike.
 */

export interface ServerDeps extends WebhookDeps {
  log: Logger;
  /** The bearer token for /status and /metrics (webhook.statusAccess.tokenFile), read at start. */
  statusToken?: Secret | undefined;
}

/** How long a refused oversized body is still read and dropped, so the client sees its 413 (lingering close). */
const LINGER_MS = 2000;
/**
 * How often Node checks the headers and request timeouts of open connections (its default, 30 s, let a client
 * sending a byte a second stay up to 30 s past them): each is enforced within this of its value.
 */
export const TIMEOUT_CHECK_MS = 250;

/**
 * No route declares a JSON schema (zod checks what the agent reads), so fastify never needs its ajv and
 * fast-json-stringify compilers; these factories say so if that ever changes, and keep fastify from loading
 * the defaults (build.mjs leaves them out of the bundle: start-up).
 */
const noRouteSchemas = (): never => {
  throw new Error("route schemas are not used here: requests are checked with zod");
};

export function buildServer(deps: ServerDeps): FastifyInstance {
  const { manifest, agent } = deps;
  const hook = manifest.webhook;
  const { limits } = hook;
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // One line per delivery from the handler instead of two per request (scrapes and probes stay quiet).
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request (pino builds and serialises one each time: a quarter of a signed
    // request's cost): the lines that matter carry their delivery id instead.
    childLoggerFactory: (logger) => logger,
    bodyLimit: hook.bodyLimitBytes,
    schemaController: {
      compilersFactory: { buildValidator: noRouteSchemas, buildSerializer: noRouteSchemas },
    },
    return503OnClosing: true,
    forceCloseConnections: "idle",
    requestTimeout: limits.requestTimeoutSeconds * 1000,
    connectionTimeout: limits.requestTimeoutSeconds * 1000,
    keepAliveTimeout: limits.idleTimeoutSeconds * 1000,
    http: { connectionsCheckingInterval: TIMEOUT_CHECK_MS },
  });
  limitConnections(
    app.server,
    { maxConnections: limits.maxConnections, idleTimeoutMs: limits.idleTimeoutSeconds * 1000 },
    {
      evicted: () => agent.metrics.connection("evicted"),
      refused: () => agent.metrics.connection("refused"),
    },
  );
  // Every body the daemon sends passes the one redaction point (/status carries error texts).
  app.addHook("onSend", (_req, _reply, payload, done) =>
    done(null, typeof payload === "string" ? redact(payload) : payload),
  );
  app.server.headersTimeout = limits.headersTimeoutSeconds * 1000;

  // A body announced larger than the limit is refused before it is read; the rest of it is read and dropped
  // for a moment so the client gets the 413 instead of a reset (nginx's lingering close), then the
  // connection closes.
  // Callback-style hooks on every request: an async one costs a promise per request.
  app.addHook("onRequest", (req, reply, done) => {
    if (Number(req.headers["content-length"] ?? 0) <= hook.bodyLimitBytes) return done();
    refused(
      req,
      "too_large",
      `announced ${req.headers["content-length"]} bytes, more than ${hook.bodyLimitBytes}`,
    );
    // Node would close the socket right after the response, while the client is still sending: the client
    // then gets a reset instead of its 413. Instead: send the 413, half-close, read and drop what still comes
    // for up to LINGER_MS, then close (nginx's lingering close).
    const socket = req.raw.socket;
    socket.destroySoon = function lingeringClose() {
      this.end();
      this.resume();
      const cutOff = setTimeout(() => this.destroy(), LINGER_MS);
      cutOff.unref();
      this.once("end", () => this.destroy());
      this.once("close", () => clearTimeout(cutOff));
    };
    reply.code(413).header("connection", "close").send({ error: "body too large" });
  });

  const sources = allowList(hook.allowFrom);
  if (sources) {
    app.addHook("onRequest", (req, reply, done) => {
      if (allowed(sources, req.socket.remoteAddress)) return done();
      refused(req, "forbidden", "source not in webhook.allowFrom");
      reply.code(403).send({ error: "forbidden" });
    });
  }

  logDeliveries(app, agent, deps.log, hook.path);
  app.register(webhookRoute(deps));
  app.get("/healthz", async (_req, reply) => {
    const h = agent.health();
    return reply
      .code(h.ok ? 200 : 503)
      .send(h.ok ? { status: "ok" } : { status: "unhealthy", reason: h.reason });
  });
  app.register(viewRoutes(deps));
  return app;
}
