import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Secret } from "../core/secret.js";
import type { Manifest } from "../manifest/schema.js";
import type { Agent } from "./agent.js";
import { LOGGED_NAME_MAX, refused } from "./deliveries.js";
import { PREVIEW_ACTIONS, PULL_REQUEST_EVENTS, readPullRequest } from "./pull-request.js";
import { claimedSignature, matchSecret } from "./verify.js";
import type { LiveWebhookKeys } from "./webhook-keys.js";

/**
 * The webhook route: the only one that reads raw bytes (an encapsulated content-type parser), so the HMAC is
 * checked over exactly what Gitea signed before any JSON parsing; then the push (or, with previews on, the
 * pull request) is filtered and enqueued.
 */

/** Longer delivery ids are cut: the duplicate window keeps them, so their size must not be the sender's. */
export const MAX_DELIVERY_ID = 128;
const ZERO = /^0{40}$/;

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

export interface WebhookDeps {
  manifest: Manifest;
  secret: Secret;
  agent: Agent;
  /** The current and next webhook secrets kept in step with their files (serve); else `secret` alone. */
  keys?: Pick<LiveWebhookKeys, "keys" | "verified"> | undefined;
}

/** The webhook route and its raw-bytes parser, as a plugin of their own. */
export function webhookRoute(deps: WebhookDeps) {
  const { manifest, agent } = deps;
  const hook = manifest.webhook;
  const branchRef = `refs/heads/${manifest.repo.branch}`;
  const seen = new Map<string, number>();

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

  return async (scope: FastifyInstance) => {
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
  };
}
