import { z } from "zod";
import { Secret } from "../../core/secret.js";
import type { DeployEvent } from "../events.js";
import { clip } from "./text.js";
import { TARGET_NAME, type TargetKind } from "./types.js";

/** `gitea-status`: a commit status per host (context deploy/<host>), POST /repos/{owner}/{repo}/statuses/{sha}. */
export const schema = z.strictObject({
  kind: z.literal("gitea-status"),
  name: z.string().regex(TARGET_NAME).optional(),
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

export type GiteaStatusTarget = z.output<typeof schema>;

/** The commit state of each event that sets one. */
export const COMMIT_STATE: Partial<Record<DeployEvent["event"], string>> = {
  "run.started": "pending",
  "run.succeeded": "success",
  "run.failed": "failure",
  "run.error": "error",
  // Waiting for `unpin`, which deploys it: not a failure of the commit.
  "run.held": "pending",
  // Held, then replaced by a newer tip: final, never deployed, and no fault of the commit's (README).
  "run.superseded": "warning",
};

/**
 * What makes two commit statuses of a revision the same outcome, not posted twice: the state, and for a
 * held commit the pin that holds it (a new pin, or the same one meant longer, is news the commit is told).
 */
export function statusKey(e: DeployEvent): string | undefined {
  const state = COMMIT_STATE[e.event];
  if (!state || e.event !== "run.held" || !e.pinned) return state;
  return `${state} held at ${e.pinned.revision} by ${e.pinned.by} until ${e.pinned.until}`;
}

/** Gitea keeps descriptions short. */
const DESCRIPTION_MAX = 140;

function describeRun(e: DeployEvent): string {
  if (e.event === "run.superseded")
    return clip(
      `superseded by ${(e.supersededBy ?? "a newer commit").slice(0, 12)}: never deployed on ${e.host}`,
      DESCRIPTION_MAX,
    );
  if (e.event === "run.held") {
    const p = e.pinned;
    const by = p ? ` pinned at ${p.revision.slice(0, 12)} by ${p.by} until ${p.until}` : " pinned";
    return clip(`held: ${e.host}${by}`, DESCRIPTION_MAX);
  }
  const text =
    e.event === "run.started"
      ? "deploying"
      : e.event === "run.succeeded"
        ? e.nothingToDo
          ? "nothing to deploy for this commit"
          : `deployed${e.durationMs !== undefined ? ` in ${(e.durationMs / 1000).toFixed(1)} s` : ""}`
        : `${e.step ? `${e.step}: ` : ""}${e.error ? `${e.error.code}: ${e.error.message}` : "failed"}`;
  return clip(e.pinned ? `pinned by ${e.pinned.by}: ${text}` : text, DESCRIPTION_MAX);
}

const context = (t: GiteaStatusTarget, host: string) => t.context ?? `deploy/${host}`;

export const giteaStatus: TargetKind<GiteaStatusTarget> = {
  takes: "commit-status",
  request: (t, event, host) => ({
    method: "POST",
    url: `${t.api.replace(/\/+$/, "")}/repos/${t.repository}/statuses/${event.revision}`,
    headers: { authorization: `token ${t.token.reveal()}` },
    payload: {
      state: COMMIT_STATE[event.event],
      ...(event.url ? { target_url: event.url } : {}),
      description: describeRun(event),
      context: context(t, host),
    },
  }),
  describe: (t, e, host) =>
    `would set ${t.repository}@${(e.revision ?? "").slice(0, 12)} ${context(t, host)} to ${COMMIT_STATE[e.event]}: ${describeRun(e)}`,
};
