import { createHmac } from "node:crypto";
import { z } from "zod";
import { Secret } from "../../core/secret.js";
import { TARGET_NAME, type TargetKind } from "./types.js";

/** `webhook`: the JSON event (schema deploy-agent/event@1) POSTed to a URL, e.g. a chat bridge's generic webhook. */
export const schema = z.strictObject({
  kind: z.literal("webhook"),
  name: z.string().regex(TARGET_NAME).optional(),
  url: z.url({ protocol: /^https?$/ }),
  /** Signs the body: X-Signature: sha256=<hex HMAC-SHA256> (Flux's generic-hmac). */
  secret: z
    .string()
    .min(16)
    .transform((v) => new Secret(v))
    .optional(),
});

export type WebhookTarget = z.output<typeof schema>;

export const webhook: TargetKind<WebhookTarget> = {
  takes: "notices",
  request: (t, event) => ({ method: "POST", url: t.url, headers: {}, payload: event }),
  sign(t, body): Record<string, string> {
    if (!t.secret) return {};
    return { "x-signature": `sha256=${createHmac("sha256", t.secret.reveal()).update(body).digest("hex")}` };
  },
  describe: (t, e) => `would POST ${e.event} to ${t.url}${t.secret ? " (signed)" : ""}`,
};
