import { z } from "zod";

/**
 * Gitea's `pull_request` delivery (X-Gitea-Event: pull_request, for its synchronized pushes too; the
 * finer X-Gitea-Event-Type says pull_request_sync), read leniently: only the fields a preview uses.
 * Gitea spells a push to the pull request's branch "synchronized"; GitHub's spelling is taken as well.
 */

export interface PullRequest {
  number: number;
  action: string;
  /** The head commit as the event names it (the preview plans what refs/pull/N/head holds when it runs). */
  head: string;
  /** The branch the pull request would merge into. */
  base: string;
}

/** Actions that make a new head to preview; the others (closed, edited, labels, reviews) do not. */
export const PREVIEW_ACTIONS: readonly string[] = ["opened", "reopened", "synchronized", "synchronize"];

/** The event names a pull request's delivery carries. */
export const PULL_REQUEST_EVENTS: readonly string[] = ["pull_request", "pull_request_sync"];

const payload = z.object({
  action: z.string().max(64),
  number: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  pull_request: z.object({
    head: z.object({ sha: z.string().regex(/^[0-9a-f]{40}(?:[0-9a-f]{24})?$/) }),
    base: z.object({ ref: z.string().max(256) }),
  }),
});

export function readPullRequest(json: unknown): PullRequest | null {
  const p = payload.safeParse(json);
  if (!p.success) return null;
  return {
    number: p.data.number,
    action: p.data.action,
    head: p.data.pull_request.head.sha,
    base: p.data.pull_request.base.ref.replace(/^refs\/heads\//, ""),
  };
}
