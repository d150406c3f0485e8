import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { sign } from "../../src/server/verify.js";
import { PROJECT } from "./agent.js";

/** Gitea push deliveries as the real sender builds them (see test/fixtures/gitea/headers.md). */

export const FIXTURE_SECRET = "s3cr3t";

export function giteaFixture(name: string): Buffer {
  return readFileSync(path.join(PROJECT, "test/fixtures/gitea", name));
}

/** A push body like Gitea's (json.MarshalIndent, 2 spaces, no trailing newline). */
export function pushBody(fields: { ref?: string; before?: string; after: string }): Buffer {
  const body = {
    ref: fields.ref ?? "refs/heads/main",
    before: fields.before ?? "0".repeat(40),
    after: fields.after,
    commits: [],
    total_commits: 0,
    repository: { full_name: "LotusGuild/matrix" },
  };
  return Buffer.from(JSON.stringify(body, null, 2));
}

/**
 * A push to `ref` as Gitea really sends it: test/fixtures/gitea/push-main.json (about 6.6 KB, with its
 * commits, pusher and repository objects) with the given ref and commits, re-indented as Gitea does.
 */
export function realPushBody(fields: { ref?: string; before?: string; after: string }): Buffer {
  const body = JSON.parse(giteaFixture("push-main.json").toString("utf8")) as Record<string, unknown>;
  Object.assign(body, { ref: fields.ref ?? "refs/heads/main", after: fields.after });
  if (fields.before) body.before = fields.before;
  return Buffer.from(JSON.stringify(body, null, 2));
}

/** Every header Gitea sets on a delivery, signed with `secret`. */
export function giteaHeaders(
  body: Buffer,
  secret: string,
  event = "push",
  delivery: string = randomUUID(),
): Record<string, string> {
  const sig = secret ? sign(secret, body) : "";
  return {
    "content-type": "application/json",
    "user-agent": "Go-http-client/1.1",
    "x-gitea-delivery": delivery,
    "x-gitea-event": event,
    "x-gitea-event-type": event,
    "x-gitea-signature": sig,
    "x-github-delivery": delivery,
    "x-github-event": event,
    "x-gogs-delivery": delivery,
    "x-gogs-event": event,
    "x-gogs-signature": sig,
    "x-hub-signature-256": `sha256=${sig}`,
  };
}
