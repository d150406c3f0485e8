import { randomBytes } from "node:crypto";
import { fetchFailure } from "../core/fetch-failure.js";
import type { HttpSender } from "../host/http.js";
import { sign } from "../server/verify.js";

/**
 * What install asks of a started unit before it counts as the listener: /healthz answers 200, and a delivery
 * signed with the webhook secret Gitea uses is accepted (2xx, not 401). The delivery is a Gitea `ping`, which
 * the daemon verifies and acknowledges without deploying anything.
 */

/** How long the unit may take to answer /healthz after a (re)start. */
export const HEALTH_TIMEOUT_MS = 60_000;
/** How long the signed test delivery may take to be answered. */
export const DELIVERY_TIMEOUT_MS = 10_000;

export const probeHost = (host: string) =>
  host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "[::1]" : host.includes(":") ? `[${host}]` : host;

/** The signed test delivery: Gitea's headers, a ping body, a delivery id install alone uses. */
export function testDelivery(secret: string): { body: Buffer; headers: Record<string, string> } {
  const body = Buffer.from(
    JSON.stringify({ zen: "deploy-agent install: a signed test delivery", hook_id: 0 }, null, 2),
  );
  const sig = sign(secret, body);
  const id = `deploy-agent-install-${randomBytes(8).toString("hex")}`;
  return {
    body,
    headers: {
      "content-type": "application/json",
      "x-gitea-delivery": id,
      "x-gitea-event": "ping",
      "x-gitea-signature": sig,
    },
  };
}

/** What the probe needs of install's context: a health check and one request, both recorded. */
export interface ProbeContext {
  health(url: string, timeoutSeconds: number): Promise<{ healthy: boolean; last: string }>;
  send: HttpSender;
}

/** null when the unit at host:port is healthy and accepts the secret (or was not asked: dry run). */
export async function listenerProblem(
  ctx: ProbeContext,
  host: string,
  port: number,
  hookPath: string,
  secret: string,
): Promise<string | null> {
  const base = `http://${probeHost(host)}:${port}`;
  const health = await ctx.health(`${base}/healthz`, HEALTH_TIMEOUT_MS / 1000);
  if (!health.healthy) return `GET /healthz: ${health.last}`;
  const { body, headers } = testDelivery(secret);
  try {
    const res = await ctx.send({
      method: "POST",
      url: `${base}${hookPath}`,
      headers,
      body,
      timeoutMs: DELIVERY_TIMEOUT_MS,
      detail: "a ping signed with the webhook secret: 2xx, not 401",
    });
    if (!res || (res.status >= 200 && res.status < 300)) return null;
    const why =
      res.status === 401
        ? " (the unit does not read the webhook secret Gitea signs with)"
        : res.status === 403
          ? " (webhook.allowFrom must allow this host itself for this check)"
          : "";
    return `a delivery signed with the webhook secret got HTTP ${res.status}${why}`;
  } catch (err) {
    return `the signed test delivery to ${hookPath}: ${fetchFailure(err)}`;
  }
}
