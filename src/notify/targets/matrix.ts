import { randomBytes } from "node:crypto";
import { z } from "zod";
import { Secret } from "../../core/secret.js";
import type { DeployEvent } from "../events.js";
import { clip } from "./text.js";
import { TARGET_NAME, type TargetKind } from "./types.js";

/**
 * `matrix`: each notice as an m.notice in a room, PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/
 * {txnId} with the user's access token. The txnId is made once per notice, so a retried request is not
 * posted twice (the homeserver answers a known txnId with the first event).
 */
export const schema = z.strictObject({
  kind: z.literal("matrix"),
  name: z.string().regex(TARGET_NAME).optional(),
  homeserver: z.url({ protocol: /^https?$/ }),
  /** The room's id (!opaque:server), not an alias. */
  room: z.string().regex(/^![^:\s]+:\S+$/, { message: "must be a room id: !opaque:server" }),
  token: z
    .string()
    .min(1)
    .transform((v) => new Secret(v)),
});

export type MatrixTarget = z.output<typeof schema>;

/** A message stays readable in a client; the event's texts are bounded already. */
const BODY_MAX = 4000;

/** What a notice's headline is made of besides the event: the commit as shown, and "again (n×)". */
interface Shown {
  commit: string;
  again: string;
}

/** Each event's headline: a table, so that a new event kind without one does not compile. */
const HEADLINES: Record<DeployEvent["event"], (e: DeployEvent, s: Shown) => string> = {
  "run.succeeded": (e, { commit }) =>
    `✅ ${e.host} deployed ${commit || "the newest commit"}${e.durationMs !== undefined ? ` in ${(e.durationMs / 1000).toFixed(1)} s` : ""}`,
  "run.failed": (e, { commit, again }) =>
    `❌ ${e.host}: ${e.step ?? "a step"} failed${again}${commit ? ` at ${commit}` : ""}`,
  "run.error": (e, { commit, again }) => `⚠️ ${e.host} could not deploy${commit ? ` ${commit}` : ""}${again}`,
  "run.started": (e, { commit }) => `⏳ ${e.host} deploying ${commit || "the newest commit"}`,
  "run.held": (e, { commit }) => `⏸️ ${e.host}: ${commit || "the newest commit"} held by the pin`,
  "run.superseded": (e, { commit }) =>
    `⏭️ ${e.host}: ${commit || "a held commit"} superseded by ${(e.supersededBy ?? "a newer one").slice(0, 12)}, never deployed`,
  "step.rolled-back": (e, { commit }) =>
    `↩️ ${e.host}: ${e.step ?? "a step"} rolled back${commit ? ` at ${commit}` : ""}`,
  "job.done": (e) => `🔁 ${e.host}: ${e.notes?.[0] ?? `${e.step ?? "a job"} done`}`,
  "history.rewritten": (e, { commit }) =>
    `⏪ ${e.host}: the branch's history was rewritten, deployed${commit ? ` ${commit}` : ""}`,
  "clone.reset-failed": (e, { commit }) =>
    `⚠️ ${e.host}: deployed${commit ? ` ${commit}` : ""}, but its clone could not be reset to it`,
  "drift.detected": (e) => `🧭 ${e.host}: ${e.step ?? "a step"} differs from git`,
};

/** The notice's text: one headline, then the details that are known. */
export function noticeText(e: DeployEvent): string {
  const rev = (e.revision ?? "").slice(0, 12);
  const commit = rev ? `${rev}${e.subject ? ` “${e.subject}”` : ""}` : "";
  const problem = e.error ? `${e.error.code}: ${e.error.message}` : "";
  const again = e.repeats ? ` again (${e.repeats + 1}×)` : "";
  const headline = HEADLINES[e.event](e, { commit, again });
  const pin = e.pinned
    ? [
        `📌 pinned at ${e.pinned.revision.slice(0, 12)} by ${e.pinned.by} until ${e.pinned.until}: ${e.pinned.reason}`,
      ]
    : [];
  const lines = [
    headline,
    ...(problem ? [problem] : []),
    ...(e.error?.hint ? [`hint: ${e.error.hint}`] : []),
    ...pin,
    ...(e.event !== "job.done" ? (e.notes ?? []) : []),
    ...(e.url ? [e.url] : []),
  ];
  return clip(lines.join("\n"), BODY_MAX);
}

export const matrix: TargetKind<MatrixTarget> = {
  takes: "notices",
  request: (t, event) => ({
    method: "PUT",
    url: `${t.homeserver.replace(/\/+$/, "")}/_matrix/client/v3/rooms/${encodeURIComponent(t.room)}/send/m.room.message/${`deploy-agent.${Date.now()}.${randomBytes(6).toString("hex")}`}`,
    headers: { authorization: `Bearer ${t.token.reveal()}` },
    // An empty m.mentions: "@room" or a user's id or name in a commit subject or an error pings nobody
    // (with it, the spec's legacy body-matching push rules do not apply).
    payload: { msgtype: "m.notice", body: noticeText(event), "m.mentions": {} },
  }),
  describe: (t, e) => `would post to ${t.room}: ${noticeText(e).split("\n")[0]}`,
};
