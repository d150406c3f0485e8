import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import type { Agent } from "./agent.js";
import type { SecretRole } from "./verify.js";

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
export const LOGGED_NAME_MAX = 256;

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

/** A delivery refused or ignored: its outcome and why, for its one line. */
export const refused = (req: FastifyRequest, outcome: string, reason: string) => {
  req.delivery = { ...req.delivery, outcome, reason };
};

/** Each delivery's one log line and count, once its answer has gone (or its client went away). */
export function logDeliveries(app: FastifyInstance, agent: Agent, log: Logger, hookPath: string): void {
  /** The one line and the count of a delivery (every POST), when its answer has gone. */
  const said = new WeakSet<FastifyRequest>();
  // A POST that ends without an answer (the client went away mid-body) has no onResponse: its line here.
  app.addHook("onRequestAbort", (req, done) => {
    if (req.method !== "POST" || said.has(req)) return done();
    said.add(req);
    agent.metrics.delivery("aborted");
    log.warn(
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
      ...(path === hookPath ? {} : { path: JSON.stringify(path.slice(0, LOGGED_PATH_MAX)) }),
    };
    const routine = d.outcome === "accepted" || d.outcome === "duplicate" || d.outcome.startsWith("ignored");
    log[routine ? "info" : "warn"](fields, "delivery");
    done();
  });
}
