import { randomUUID, timingSafeEqual } from "node:crypto";
import { BlockList, isIPv4 } from "node:net";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
  type onRequestHookHandler,
} from "fastify";
import type { Logger } from "pino";
import { z } from "zod";
import { asAgentError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import type { Secret } from "../core/secret.js";
import type { Manifest, Subnet } from "../manifest/schema.js";
import { historyDocument } from "../state/history.js";
import type { Agent } from "./agent.js";
import { limitConnections } from "./connections.js";
import { PREVIEW_ACTIONS, PULL_REQUEST_EVENTS, readPullRequest } from "./pull-request.js";
import { claimedSignature, matchSecret, type SecretRole } from "./verify.js";
import type { LiveWebhookKeys } from "./webhook-keys.js";

/**
 * The HTTP layer: it verifies, filters and enqueues — nothing else. Only the webhook route reads raw
 * bytes (an encapsulated content-type parser); the HMAC is checked over exactly what Gitea signed before
 * any JSON parsing. `buildServer` does not listen, so tests use inject() and real sockets alike.
 */

export interface ServerDeps {
  manifest: Manifest;
  secret: Secret;
  agent: Agent;
  log: Logger;
  /** The bearer token for /status and /metrics (webhook.statusAccess.tokenFile), read at start. */
  statusToken?: Secret | undefined;
  /** The current and next webhook secrets kept in step with their files (serve); else `secret` alone. */
  keys?: Pick<LiveWebhookKeys, "keys" | "verified"> | undefined;
}

/** Longer delivery ids are cut: the duplicate window keeps them, so their size must not be the sender's. */
export const MAX_DELIVERY_ID = 128;
/** How long a refused oversized body is still read and dropped, so the client sees its 413 (lingering close). */
const LINGER_MS = 2000;
/**
 * How often Node checks the headers and request timeouts of open connections (its default, 30 s, let a client
 * sending a byte a second stay up to 30 s past them): each is enforced within this of its value.
 */
export const TIMEOUT_CHECK_MS = 250;

const ZERO = /^0{40}$/;

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
 * No route declares a JSON schema (zod checks what the agent reads), so fastify never needs its ajv and
 * fast-json-stringify compilers; these factories say so if that ever changes, and keep fastify from loading
 * the defaults (build.mjs leaves them out of the bundle: start-up).
 */
const noRouteSchemas = (): never => {
  throw new Error("route schemas are not used here: requests are checked with zod");
};

/** Only what the agent reads from a push; everything else Gitea sends is ignored. */
const pushSchema = z.object({
  ref: z.string(),
  before: z.string(),
  after: z.string(),
  repository: z.object({ full_name: z.string() }).partial().optional(),
});

/** Files of a push's commits read for the hint below; a push listing more is read up to here. */
export const PUSHED_FILES_MAX = 1000;

/**
 * The files a push says its commits touched (Gitea lists them per commit): a hint to start steps ahead; none
 * when the list is not of that shape. Read by hand, not with zod: a signed body of 300,000 non-strings made
 * zod collect as many issues (271 MiB, 1.2 s) or overflow the stack.
 */
function pushedFiles(json: unknown): string[] {
  const commits = (json as { commits?: unknown } | null)?.commits;
  if (!Array.isArray(commits)) return [];
  const files = new Set<string>();
  let read = 0;
  for (const commit of commits) {
    if (typeof commit !== "object" || commit === null || Array.isArray(commit)) return [];
    for (const key of ["added", "removed", "modified"] as const) {
      const list = (commit as Record<string, unknown>)[key];
      if (list === undefined) continue;
      if (!Array.isArray(list)) return [];
      for (const file of list) {
        if (read++ === PUSHED_FILES_MAX) return [...files];
        if (typeof file !== "string") return [];
        files.add(file);
      }
    }
  }
  return [...files];
}

const header = (req: FastifyRequest, ...names: string[]) => {
  for (const n of names) {
    const v = req.headers[n];
    if (typeof v === "string" && v !== "") return v;
  }
  return undefined;
};

/**
 * Every POST is a delivery and leaves exactly one log line and one count, whatever became of it. The outcome
 * the handler or a hook decided, else the one its status says (fastify answered before any handler ran).
 */
const OUTCOME_BY_STATUS: Record<number, string> = {
  400: "bad_body",
  401: "bad_signature",
  403: "forbidden",
  404: "unknown_path",
  405: "method_not_allowed",
  413: "too_large",
  415: "unsupported",
  503: "shutting_down",
};
/** An unknown path is logged this long at most (the sender chooses it). */
const LOGGED_PATH_MAX = 64;
/** An event name or ref is logged and answered this long at most (headers are not signed; a ref is a body's). */
const LOGGED_NAME_MAX = 256;

interface Delivery {
  outcome: string;
  reason?: string;
  id?: string;
  event?: string;
  ref?: string;
  /** Which secret signed it (only once the signature holds). */
  secret?: SecretRole;
}

declare module "fastify" {
  interface FastifyRequest {
    delivery?: Delivery;
  }
}

const refused = (req: FastifyRequest, outcome: string, reason: string) => {
  req.delivery = { ...req.delivery, outcome, reason };
};

function allowList(subnets: readonly Subnet[]): BlockList | null {
  if (!subnets.length) return null;
  const list = new BlockList();
  for (const s of subnets) list.addSubnet(s.address, s.prefix, s.family);
  return list;
}

function allowed(list: BlockList, address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  return isIPv4(v4) ? list.check(v4, "ipv4") : list.check(address, "ipv6");
}

export function buildServer(deps: ServerDeps): FastifyInstance {
  const { manifest, agent } = deps;
  const hook = manifest.webhook;
  const branchRef = `refs/heads/${manifest.repo.branch}`;
  const seen = new Map<string, number>();
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

  /** Acknowledges a delivery id once per window; true when it was seen before. */
  function duplicate(id: string): boolean {
    const now = Date.now();
    const window = hook.duplicateWindowSeconds * 1000;
    for (const [k, at] of seen) {
      if (now - at <= window && seen.size < 10_000) break;
      seen.delete(k);
    }
    if (seen.has(id) && now - (seen.get(id) ?? 0) <= window) return true;
    seen.set(id, now);
    return false;
  }

  async function receive(req: FastifyRequest, reply: FastifyReply) {
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    // With the form content type Gitea signs the JSON inside `payload`, not the form body. Media types are
    // case-insensitive (RFC 9110).
    const form = (req.headers["content-type"] ?? "")
      .toLowerCase()
      .startsWith("application/x-www-form-urlencoded");
    const signed = form
      ? Buffer.from(new URLSearchParams(raw.toString("utf8")).get("payload") ?? "", "utf8")
      : raw;
    const claimed = claimedSignature(req.headers);
    const keys = deps.keys ? await deps.keys.keys() : { current: deps.secret.reveal() };
    let secret = matchSecret(keys, signed, claimed);
    // Refused by the keys in memory: a secret written a moment ago may not have been heard of yet.
    if (!secret && claimed && deps.keys) {
      const now = await deps.keys.keys("look");
      if (now !== keys) secret = matchSecret(now, signed, claimed);
    }
    if (!secret) {
      refused(req, "bad_signature", "signature missing or invalid");
      return reply.code(401).send({ error: "signature missing or invalid" });
    }
    // Named only once the signature holds: before that the id and event are the sender's words.
    const delivery = (
      header(req, "x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery", "x-github-delivery") ??
      randomUUID()
    ).slice(0, MAX_DELIVERY_ID);
    // The headers are not signed: what of them is logged or answered is cut to a bound.
    const event = header(req, "x-gitea-event", "x-forgejo-event", "x-gogs-event", "x-github-event")?.slice(
      0,
      LOGGED_NAME_MAX,
    );
    req.delivery = { outcome: "accepted", id: delivery, event: event ?? "(none)", secret };
    deps.keys?.verified(secret, delivery);
    const ignore = (outcome: string, why: string) => {
      refused(req, outcome, why);
      return reply.code(202).send({ ignored: why, delivery });
    };
    /** A pull request's delivery (webhook.previews on): a live preview of its head, queued. */
    function preview(id: string) {
      let body: unknown;
      try {
        body = JSON.parse(signed.toString("utf8"));
      } catch {
        refused(req, "bad_body", "body is not valid JSON");
        return reply.code(400).send({ error: "body is not valid JSON", delivery: id });
      }
      const pr = readPullRequest(body);
      if (!pr) {
        refused(
          req,
          "bad_body",
          "not a pull request payload: action, number and pull_request.head.sha are required",
        );
        return reply.code(400).send({ error: "not a pull request payload", delivery: id });
      }
      req.delivery = { ...req.delivery, outcome: "accepted", ref: `refs/pull/${pr.number}/head` };
      if (!PREVIEW_ACTIONS.includes(pr.action))
        return ignore("ignored_event", `pull request ${pr.action.slice(0, 64)}: no new head to preview`);
      if (pr.base !== manifest.repo.branch)
        return ignore(
          "ignored_branch",
          `pull request into ${pr.base.slice(0, 64)}, not ${manifest.repo.branch}`,
        );
      if (duplicate(id)) {
        refused(req, "duplicate", "delivery id seen within webhook.duplicateWindowSeconds");
        return reply.code(202).send({ duplicate: true, delivery: id });
      }
      const result = agent.preview(pr);
      if (result === "dropped") {
        refused(
          req,
          "preview_dropped",
          `${hook.previews.maxPending} previews wait already (webhook.previews.maxPending)`,
        );
        return reply
          .code(202)
          .send({ dropped: `${hook.previews.maxPending} previews wait already`, delivery: id });
      }
      req.delivery.reason = `preview #${pr.number} ${pr.head.slice(0, 12)} ${result}`;
      return reply.code(202).send({ preview: pr.number, [result]: true, delivery: id, head: pr.head });
    }
    if (hook.previews.enabled && event && PULL_REQUEST_EVENTS.includes(event)) return preview(delivery);
    if (event !== "push") return ignore("ignored_event", `event ${event ?? "(none)"} is not a push`);
    let json: unknown;
    try {
      json = JSON.parse(signed.toString("utf8"));
    } catch {
      refused(req, "bad_body", "body is not valid JSON");
      return reply.code(400).send({ error: "body is not valid JSON", delivery });
    }
    const push = pushSchema.safeParse(json);
    if (!push.success) {
      refused(req, "bad_body", "not a push payload: ref, before and after are required");
      return reply
        .code(400)
        .send({ error: "not a push payload: ref, before and after are required", delivery });
    }
    const { ref, before, after } = push.data;
    req.delivery.ref = ref.slice(0, LOGGED_NAME_MAX);
    const shownRef = ref.slice(0, LOGGED_NAME_MAX);
    if (ref.startsWith("refs/tags/")) return ignore("ignored_branch", `tag ${shownRef.slice(10)}`);
    if (ref !== branchRef) return ignore("ignored_branch", `ref ${shownRef} is not ${branchRef}`);
    if (ZERO.test(after)) return ignore("ignored_branch", `${branchRef} was deleted`);
    if (duplicate(delivery)) {
      refused(req, "duplicate", "delivery id seen within webhook.duplicateWindowSeconds");
      return reply.code(202).send({ duplicate: true, delivery });
    }
    req.delivery.reason =
      before === after ? "test delivery: reconciling" : `push ${before.slice(0, 12)}..${after.slice(0, 12)}`;
    agent.request({ kind: "push", after, delivery });
    agent.warm(pushedFiles(json));
    return reply.code(202).send({ queued: true, delivery, after });
  }

  /** The one line and the count of a delivery (every POST), when its answer has gone. */
  const said = new WeakSet<FastifyRequest>();
  // A POST that ends without an answer (the client went away mid-body) has no onResponse: its line here.
  app.addHook("onRequestAbort", (req, done) => {
    if (req.method !== "POST" || said.has(req)) return done();
    said.add(req);
    agent.metrics.delivery("aborted");
    deps.log.warn(
      { outcome: "aborted", reason: "the client closed the connection before the answer", ip: req.ip },
      "delivery",
    );
    done();
  });
  app.addHook("onResponse", (req, reply, done) => {
    if (req.method !== "POST" || said.has(req)) return done();
    said.add(req);
    const d = req.delivery ?? {
      outcome: OUTCOME_BY_STATUS[reply.statusCode] ?? `http_${reply.statusCode}`,
      reason: `HTTP ${reply.statusCode}`,
    };
    agent.metrics.delivery(d.outcome, d.secret);
    const path = req.url.split("?")[0] ?? "";
    const fields = {
      delivery: d.id,
      event: d.event,
      ref: d.ref,
      outcome: d.outcome,
      // Not `secret`: that key is redacted on every line (log.ts), whatever it holds.
      signedWith: d.secret,
      reason: d.reason,
      status: reply.statusCode,
      ip: req.ip,
      ...(path === hook.path ? {} : { path: JSON.stringify(path.slice(0, LOGGED_PATH_MAX)) }),
    };
    const routine = d.outcome === "accepted" || d.outcome === "duplicate" || d.outcome.startsWith("ignored");
    deps.log[routine ? "info" : "warn"](fields, "delivery");
    done();
  });

  app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(
      ["application/json", "application/x-www-form-urlencoded"],
      { parseAs: "buffer", bodyLimit: hook.bodyLimitBytes },
      (_req, body, done) => done(null, body),
    );
    scope.post(hook.path, receive);
    scope.route({
      method: ["GET", "PUT", "DELETE", "PATCH"],
      url: hook.path,
      handler: async (_req, reply) =>
        reply.code(405).header("allow", "POST").send({ error: "method not allowed" }),
    });
  });

  app.get("/healthz", async (_req, reply) => {
    const h = agent.health();
    return reply
      .code(h.ok ? 200 : 503)
      .send(h.ok ? { status: "ok" } : { status: "unhealthy", reason: h.reason });
  });
  // /status, /history and /metrics live in a scope of their own whose hook is the guard: it runs for whatever
  // the router sends to these routes (a query string, percent-encoding, HEAD, the absolute form), never by
  // comparing the URL's spelling.
  app.register(async (viewing) => {
    if (hook.statusAccess) viewing.addHook("onRequest", viewerGuard(hook.statusAccess, deps.statusToken));
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
  });
  return app;
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
    return (
      !!token &&
      !!given &&
      given.length === token.length &&
      timingSafeEqual(Buffer.from(given), Buffer.from(token))
    );
  };
  return (req, reply, done) => {
    if (mayView(req)) return done();
    reply.code(403).send({ error: "forbidden: see webhook.statusAccess" });
  };
}
