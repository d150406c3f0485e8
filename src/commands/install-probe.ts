import { randomBytes } from "node:crypto";
import { fetchFailure } from "../core/fetch-failure.js";
import { withTimeout } from "../core/with-timeout.js";
import { waitHealthy } from "../host/health.js";
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

/** null when the unit at host:port is healthy and accepts the secret; otherwise what went wrong. */
export async function listenerProblem(
  host: string,
  port: number,
  hookPath: string,
  secret: string,
  signal: AbortSignal,
): Promise<string | null> {
  const base = `http://${probeHost(host)}:${port}`;
  const health = await waitHealthy(`${base}/healthz`, { timeoutMs: HEALTH_TIMEOUT_MS, signal });
  if (!health.healthy) return `GET /healthz: ${health.last}`;
  const { body, headers } = testDelivery(secret);
  try {
    const res = await withTimeout(DELIVERY_TIMEOUT_MS, signal, async (s) => {
      const r = await fetch(`${base}${hookPath}`, {
        method: "POST",
        headers,
        body: new Uint8Array(body),
        signal: s,
      });
      await r.body?.cancel();
      return r;
    });
    if (res.status >= 200 && res.status < 300) return null;
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
