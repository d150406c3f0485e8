import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from "fastify";
import { z } from "zod";
import { asAgentError } from "../core/errors.js";
import type { Secret } from "../core/secret.js";
import type { Manifest } from "../manifest/schema.js";
import { historyDocument } from "../state/history.js";
import type { Agent } from "./agent.js";
import { allowed, allowList } from "./allow-list.js";

/** The most records one /history answer carries. */
export const MAX_HISTORY_LIMIT = 1000;

/** `/history?limit=N&step=NAME`: both optional, nothing else (a misspelt parameter is a 400, not ignored). */
const historyQuery = z.strictObject({
  limit: z
    .string()
    .regex(/^\d{1,5}$/)
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_HISTORY_LIMIT))
    .optional(),
  step: z.string().min(1).max(128).optional(),
});

/**
 * /status, /history and /metrics, in a scope of their own whose hook is the guard: it runs for whatever the
 * router sends to these routes (a query string, percent-encoding, HEAD, the absolute form), never by
 * comparing the URL's spelling.
 */
export function viewRoutes({
  manifest,
  agent,
  statusToken,
}: {
  manifest: Manifest;
  agent: Agent;
  statusToken?: Secret | undefined;
}) {
  const hook = manifest.webhook;
  return async (viewing: FastifyInstance) => {
    if (hook.statusAccess) viewing.addHook("onRequest", viewerGuard(hook.statusAccess, statusToken));
    viewing.get("/status", async () => agent.status());
    // What ran here and when.
    viewing.get("/history", async (req, reply) => {
      const query = historyQuery.safeParse(req.query);
      if (!query.success) {
        return reply
          .code(400)
          .send({ error: `limit is a whole number from 1 to ${MAX_HISTORY_LIMIT}, step a step's name` });
      }
      try {
        return historyDocument(manifest.host, await agent.history(query.data));
      } catch (err) {
        const e = asAgentError(err);
        return reply.code(500).send({ error: e.code, message: e.message });
      }
    });
    viewing.get("/metrics", async (_req, reply) => {
      const text = await agent.metrics.registry.metrics();
      return reply.type(agent.metrics.registry.contentType).send(text);
    });
  };
}

/** Who may read /status and /metrics: a source in statusAccess.allowFrom, or the bearer token. */
function viewerGuard(
  access: NonNullable<Manifest["webhook"]["statusAccess"]>,
  statusToken: Secret | undefined,
): onRequestHookHandler {
  const viewers = allowList(access.allowFrom);
  const mayView = (req: FastifyRequest) => {
    if (viewers && allowed(viewers, req.socket.remoteAddress)) return true;
    const token = statusToken?.reveal();
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (!token || !given) return false;
    // Compared as bytes: a header's characters (latin1) may encode to more bytes than they are characters,
    // and timingSafeEqual throws on buffers of different lengths.
    const a = Buffer.from(given);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b);
  };
  return (req, reply, done) => {
    if (mayView(req)) return done();
    reply.code(403).send({ error: "forbidden: see webhook.statusAccess" });
  };
}
