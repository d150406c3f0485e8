import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { z } from "zod";
import { fetchFailure } from "../fetch-failure.js";
import { Secret } from "../secret.js";
import type { DeployEvent } from "./events.js";

/**
 * Notifications (`notify:` in the host manifest; none configured: nothing is sent). A Gitea commit status per
 * host (context deploy/<host>) and/or a JSON event POSTed to a URL, signed like Flux's generic-hmac. Sent once
 * per host, revision and outcome; a failure that repeats is sent again at most every repeatMinutes, with a
 * count; a recovery always. Publishing never waits and never throws: a bounded queue, bounded retries with
 * backoff, errors logged and counted. A deploy is never delayed or failed by a notifier.
 */

const giteaTarget = z.strictObject({
  kind: z.literal("gitea-status"),
  /** Gitea's API root, e.g. https://code.lotusguild.org/api/v1. */
  api: z.url({ protocol: /^https?$/ }),
  repository: z.string().regex(/^[^/\s]+\/[^/\s]+$/, { message: "must be owner/name" }),
  token: z
    .string()
    .min(1)
    .transform((v) => new Secret(v)),
  /** The status context; default deploy/<host>. */
  context: z.string().min(1).optional(),
});

const webhookTarget = z.strictObject({
  kind: z.literal("webhook"),
  url: z.url({ protocol: /^https?$/ }),
  /** Signs the body: X-Signature: sha256=<hex HMAC-SHA256> (Flux's generic-hmac). */
  secret: z
    .string()
    .min(16)
    .transform((v) => new Secret(v))
    .optional(),
});

export const notifySchema = z
  .strictObject({
    repeatMinutes: z.number().int().min(1).max(1440).default(60),
    queueLength: z.number().int().min(1).max(1000).default(100),
    targets: z.array(z.discriminatedUnion("kind", [giteaTarget, webhookTarget])).default([]),
  })
  .prefault({});

export type NotifyConfig = z.infer<typeof notifySchema>;
type Target = NotifyConfig["targets"][number];

export interface Notifier {
  /** Queues what the event should cause; never waits, never throws. */
  publish(event: DeployEvent): void;
  /** What publishing the event would send, one line per notice (dry runs print these). */
  describe(event: DeployEvent): string[];
  /** Resolves once the queue is empty, or after ms. */
  drain(ms: number): Promise<void>;
}

const ATTEMPTS = 3;
const TIMEOUT_MS = 10_000;
const DESCRIPTION_MAX = 140;

const STATE: Partial<Record<DeployEvent["event"], string>> = {
  "run.started": "pending",
  "run.succeeded": "success",
  "run.failed": "failure",
  "run.error": "error",
};

function describeRun(e: DeployEvent): string {
  const text =
    e.event === "run.started"
      ? "deploying"
      : e.event === "run.succeeded"
        ? e.nothingToDo
          ? "nothing to deploy for this commit"
          : `deployed${e.durationMs !== undefined ? ` in ${(e.durationMs / 1000).toFixed(1)} s` : ""}`
        : `${e.step ? `${e.step}: ` : ""}${e.error ? `${e.error.code}: ${e.error.message}` : "failed"}`;
  return text.length > DESCRIPTION_MAX ? `${text.slice(0, DESCRIPTION_MAX - 1)}…` : text;
}

interface Job {
  target: Target;
  event: DeployEvent;
}

export function createNotifier(opts: {
  config: () => NotifyConfig;
  host: string;
  log: Logger;
  /** Counts every send by target kind and result (sent, failed, dropped). */
  count?: (target: string, result: "sent" | "failed" | "dropped") => void;
  now?: () => number;
}): Notifier {
  const now = opts.now ?? Date.now;
  const queue: Job[] = [];
  let working: Promise<void> | null = null;
  /** The last outcome sent (run.succeeded/failed/error), for repeats and recoveries. */
  let last: { event: DeployEvent["event"]; revision: string | null; sentAt: number; repeats: number } | null =
    null;
  /** Gitea states already posted, per revision (bounded). */
  const posted = new Map<string, string>();

  const count = (target: Target, result: "sent" | "failed" | "dropped") => opts.count?.(target.kind, result);

  /** Which targets the event goes to, after the once-per-revision-and-outcome and repeat rules. */
  function route(event: DeployEvent): { targets: Target[]; event: DeployEvent } {
    const targets = opts.config().targets;
    const state = STATE[event.event];
    const gitea = targets.filter((t) => t.kind === "gitea-status");
    const hooks = targets.filter((t) => t.kind === "webhook");
    if (event.event === "run.started") {
      return { targets: event.revision && posted.get(event.revision) === undefined ? gitea : [], event };
    }
    if (!state) return { targets: hooks, event };
    const giteaNow = event.revision && posted.get(event.revision) !== state ? gitea : [];
    if (event.nothingToDo) return { targets: giteaNow, event };
    const failure = event.event !== "run.succeeded";
    if (!failure) {
      const news = !last || last.event !== event.event || last.revision !== event.revision;
      return { targets: [...giteaNow, ...(news ? hooks : [])], event };
    }
    if (last && last.event === event.event && now() - last.sentAt < opts.config().repeatMinutes * 60_000) {
      return { targets: giteaNow, event };
    }
    const repeats = last && last.event === event.event ? last.repeats : 0;
    return { targets: [...giteaNow, ...hooks], event: repeats ? { ...event, repeats } : event };
  }

  function rememberPosted(event: DeployEvent) {
    const state = STATE[event.event];
    if (!event.revision || !state) return;
    posted.set(event.revision, state);
    while (posted.size > 50) posted.delete(posted.keys().next().value as string);
  }

  function remember(event: DeployEvent, sentHooks: boolean) {
    const state = STATE[event.event];
    rememberPosted(event);
    if (event.event === "run.started" || !state) return;
    if (sentHooks) last = { event: event.event, revision: event.revision, sentAt: now(), repeats: 0 };
    else if (last && last.event === event.event) last.repeats++;
  }

  async function send(job: Job): Promise<void> {
    const { target, event } = job;
    const headers: Record<string, string> = { "content-type": "application/json" };
    let url: string;
    let body: string;
    if (target.kind === "gitea-status") {
      url = `${target.api.replace(/\/+$/, "")}/repos/${target.repository}/statuses/${event.revision}`;
      headers.authorization = `token ${target.token.reveal()}`;
      body = JSON.stringify({
        state: STATE[event.event],
        ...(event.url ? { target_url: event.url } : {}),
        description: describeRun(event),
        context: target.context ?? `deploy/${opts.host}`,
      });
    } else {
      url = target.url;
      body = JSON.stringify(event);
      if (target.secret) {
        headers["x-signature"] =
          `sha256=${createHmac("sha256", target.secret.reveal()).update(body).digest("hex")}`;
      }
    }
    const request = { url, headers, body };
    let problem = "";
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        const res = await fetch(request.url, {
          method: "POST",
          headers: request.headers,
          body: request.body,
          redirect: "manual",
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        await res.body?.cancel();
        if (res.ok) {
          count(target, "sent");
          return;
        }
        problem = `HTTP ${res.status}`;
        if (res.status < 500 && res.status !== 429) break; // the request itself is wrong: retrying cannot help
      } catch (err) {
        problem = fetchFailure(err, TIMEOUT_MS);
      }
      if (attempt < ATTEMPTS) await sleep(500 * 2 ** (attempt - 1));
    }
    count(target, "failed");
    opts.log.warn({ target: target.kind, event: event.event, problem }, "notification not delivered");
  }

  async function work() {
    for (let job = queue.shift(); job; job = queue.shift()) await send(job);
    working = null;
  }

  return {
    publish(event) {
      try {
        const routed = route(event);
        if (event.nothingToDo) rememberPosted(event);
        else
          remember(
            event,
            routed.targets.some((t) => t.kind === "webhook"),
          );
        for (const target of routed.targets) {
          if (queue.length >= opts.config().queueLength) {
            const dropped = queue.shift();
            if (dropped) count(dropped.target, "dropped");
          }
          queue.push({ target, event: routed.event });
        }
        working ??= work();
      } catch (err) {
        opts.log.error({ err }, "notification not queued");
      }
    },
    describe(event) {
      const { targets, event: e } = route(event);
      return targets.map((t) =>
        t.kind === "gitea-status"
          ? `would set ${t.repository}@${(e.revision ?? "").slice(0, 12)} ${t.context ?? `deploy/${opts.host}`} to ${STATE[e.event]}: ${describeRun(e)}`
          : `would POST ${e.event} to ${t.url}${t.secret ? " (signed)" : ""}`,
      );
    },
    async drain(ms) {
      // An unref'd bound: with nothing to send, a ref'd timer kept a stopping daemon alive for all of it.
      await Promise.race([working ?? Promise.resolve(), sleep(ms, undefined, { ref: false })]);
    },
  };
}
