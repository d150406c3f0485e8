import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Gitea/Forgejo webhook signature verification: a pure function over bytes (after
 * @octokit/webhooks-methods). Gitea signs the exact payload bytes with HMAC-SHA256 and sends lowercase hex
 * in X-Gitea-Signature / X-Forgejo-Signature (no prefix) and "sha256=<hex>" in X-Hub-Signature-256.
 * The header format is checked strictly before any comparison; attacker input never makes this throw.
 */

const HEX64 = /^[0-9a-f]{64}$/;

export type SignatureHeaders = Record<string, string | string[] | undefined>;

/** The hex digest the request claims, or null when no usable signature header is present. */
export function claimedSignature(headers: SignatureHeaders): string | null {
  for (const name of ["x-gitea-signature", "x-forgejo-signature"]) {
    const v = headers[name];
    if (v !== undefined) return typeof v === "string" && HEX64.test(v) ? v : null;
  }
  const hub = headers["x-hub-signature-256"];
  if (typeof hub === "string" && hub.startsWith("sha256=") && HEX64.test(hub.slice(7))) return hub.slice(7);
  return null;
}

export function sign(secret: string, payload: Buffer | string): string {
  return createHmac("sha256", secret).update(payload).digest("hex");
}

/** True when `signature` (64 lowercase hex) is HMAC-SHA256(secret, payload). An empty secret never verifies. */
export function verify(secret: string, payload: Buffer, signature: string | null): boolean {
  if (!secret || signature === null || !HEX64.test(signature)) return false;
  const expected = createHmac("sha256", secret).update(payload).digest();
  return timingSafeEqual(expected, Buffer.from(signature, "hex"));
}

/** Which of the agent's secrets signed a delivery: during a rotation Gitea may sign with either. */
export type SecretRole = "current" | "next";

export interface WebhookKeys {
  current: string;
  /** Set only while a rotation is under way (webhook.nextSecretFile exists). */
  next?: string | undefined;
}

/** The primitives `matchSecret` uses; a test wraps them to count the calls. */
export interface HmacPrimitives {
  digest(secret: string, payload: Buffer): Buffer;
  equal(a: Buffer, b: Buffer): boolean;
}

const CRYPTO: HmacPrimitives = {
  digest: (secret, payload) => createHmac("sha256", secret).update(payload).digest(),
  equal: timingSafeEqual,
};

/**
 * The secret that signed `payload`, or null. While a next secret is set, both HMACs are computed and both
 * compared, always, whichever matched: the time taken never tells which one did. The results are combined
 * without branching on the first.
 */
export function matchSecret(
  keys: WebhookKeys,
  payload: Buffer,
  signature: string | null,
  crypto: HmacPrimitives = CRYPTO,
): SecretRole | null {
  if (!keys.current || signature === null || !HEX64.test(signature)) return null;
  const claimed = Buffer.from(signature, "hex");
  const current = crypto.equal(crypto.digest(keys.current, payload), claimed);
  if (!keys.next) return current ? "current" : null;
  const next = crypto.equal(crypto.digest(keys.next, payload), claimed);
  return current ? "current" : next ? "next" : null;
}
