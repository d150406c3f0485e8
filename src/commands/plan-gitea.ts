import { fetchFailure } from "../core/fetch-failure.js";
import { redact } from "../core/redact.js";
import { Secret } from "../core/secret.js";
import { problemText, type ReadProblem, readBounded } from "../host/bounded-read.js";
import { clip } from "../notify/targets/text.js";
import type { HostPlan } from "./plan-host.js";
import { COMMENT_MARKER, firstFailure } from "./plan-render.js";

/**
 * `plan --post-gitea`: the plan on the pull request, from a Gitea Actions job. One comment, found again by
 * COMMENT_MARKER among the comments of the token's own user and edited in place (GET /user, GET
 * /repos/{owner}/{repo}/issues/{index}/comments, PATCH /repos/{owner}/{repo}/issues/comments/{id}, or POST
 * …/issues/{index}/comments the first time), and one commit status per host (POST
 * /repos/{owner}/{repo}/statuses/{sha}, context plan/<host>). Everything it cannot do is a warning: the
 * job still reports the plan's own result. Every body passes the redaction point before it leaves.
 */

export interface GiteaTarget {
  /** The API root, …/api/v1. */
  api: string;
  token: Secret;
  repository: string;
  /** The pull request's index; null on a push. */
  pr: number | null;
  /** The commit the statuses are set on. */
  sha: string | null;
  /** The pull request's page, linked from the statuses. */
  url: string | null;
}

export interface PostOptions {
  /** Each request; past it the request is abandoned. */
  timeoutMs: number;
  /** Largest answer read (the comment list of a long pull request). */
  maxResponseBytes: number;
}

export const POST_DEFAULTS: PostOptions = { timeoutMs: 10_000, maxResponseBytes: 4 * 1024 * 1024 };
/** Largest event file read (Gitea's pull_request payload with its repository objects). */
export const MAX_EVENT_BYTES = 4 * 1024 * 1024;
const DESCRIPTION_MAX = 140;

/**
 * Where to post, from what Gitea Actions gives a job: GITHUB_API_URL (or GITHUB_SERVER_URL + /api/v1; GITEA_API
 * overrides both), GITHUB_REPOSITORY, GITHUB_EVENT_NAME and the event at GITHUB_EVENT_PATH, and the token the
 * workflow passes from its secrets as GITEA_TOKEN. A reason instead when something is missing.
 */
export async function giteaTargetFromEnv(env: NodeJS.ProcessEnv): Promise<GiteaTarget | string> {
  const api = (
    env.GITEA_API ||
    env.GITHUB_API_URL ||
    (env.GITHUB_SERVER_URL ? `${env.GITHUB_SERVER_URL.replace(/\/+$/, "")}/api/v1` : "")
  ).replace(/\/+$/, "");
  const token = env.GITEA_TOKEN ?? "";
  const repository = env.GITHUB_REPOSITORY ?? "";
  if (!/^https?:\/\/[^\s]+$/.test(api))
    return "GITHUB_API_URL (or GITEA_API) is not set to the API's http(s) URL";
  if (!token) return "GITEA_TOKEN is empty: pass a token from the workflow's secrets";
  if (!/^[^/\s]+\/[^/\s]+$/.test(repository)) return "GITHUB_REPOSITORY is not owner/name";
  let event: Record<string, unknown> = {};
  if (env.GITHUB_EVENT_PATH) {
    try {
      // One descriptor, opened without blocking: a FIFO at the path would hold the job until a writer came.
      const read = await readBounded(env.GITHUB_EVENT_PATH, {
        follow: true,
        maxBytes: MAX_EVENT_BYTES,
        fail: (p) => new EventFileProblem(p),
      });
      if (!read) throw new Error("it does not exist");
      event = JSON.parse(read.data.toString("utf8")) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof EventFileProblem && err.problem.is === "too-large")
        return `the event file is larger than ${MAX_EVENT_BYTES} bytes`;
      return `the event file ${env.GITHUB_EVENT_PATH} cannot be read: ${(err as Error).message}`;
    }
  }
  const pull = (event.pull_request ?? null) as {
    number?: unknown;
    html_url?: unknown;
    head?: { sha?: unknown };
  } | null;
  const isPull = (env.GITHUB_EVENT_NAME ?? "").startsWith("pull_request") && pull !== null;
  const number = isPull ? Number(pull?.number ?? event.number) : Number.NaN;
  const sha = isPull ? pull?.head?.sha : (event.after ?? env.GITHUB_SHA);
  return {
    api,
    token: new Secret(token),
    repository,
    pr: Number.isSafeInteger(number) && number > 0 ? number : null,
    sha: typeof sha === "string" && /^[0-9a-f]{40,64}$/.test(sha) ? sha : null,
    url: isPull && typeof pull?.html_url === "string" ? pull.html_url : null,
  };
}

/** Why the event file was not read (bounded-read.ts's problem, in words). */
class EventFileProblem extends Error {
  constructor(readonly problem: ReadProblem) {
    super(`it ${problemText(problem, MAX_EVENT_BYTES)}`);
  }
}

class PostError extends Error {}

/** One Gitea API request, bounded by opts; the body passes the redaction point; its answer parsed. */
export async function request(
  t: GiteaTarget,
  opts: PostOptions,
  method: string,
  route: string,
  body?: unknown,
): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${t.api}${route}`, {
      method,
      redirect: "manual",
      signal: AbortSignal.timeout(opts.timeoutMs),
      headers: {
        authorization: `token ${t.token.reveal()}`,
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: redact(JSON.stringify(body)) }),
    });
  } catch (err) {
    throw new PostError(`${method} ${route}: ${fetchFailure(err, opts.timeoutMs)}`);
  }
  const text = await readCapped(res, opts.maxResponseBytes, `${method} ${route}`);
  if (res.status < 200 || res.status > 299) {
    const why = (() => {
      try {
        return String((JSON.parse(text) as { message?: unknown }).message ?? "");
      } catch {
        return "";
      }
    })();
    throw new PostError(`${method} ${route}: HTTP ${res.status}${why ? ` (${clip(why, 200)})` : ""}`);
  }
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    throw new PostError(`${method} ${route}: the answer is not JSON`);
  }
}

/** The body, or an error once it passes max bytes (the rest is not read). */
async function readCapped(res: Response, max: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      size += chunk.byteLength;
      if (size > max) {
        await res.body.cancel().catch(() => {});
        throw new PostError(`${what}: the answer is larger than ${max} bytes`);
      }
      chunks.push(Buffer.from(chunk));
    }
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The commit status of one host's plan: success, or failure naming the first failing check and its file. */
export function statusOf(host: HostPlan): { state: "success" | "failure"; description: string } {
  const failed = firstFailure(host);
  if (failed) {
    const text = `${failed.name} failed${failed.file ? ` in ${failed.file}` : ""}: ${failed.message}`;
    return { state: "failure", description: clip(text, DESCRIPTION_MAX) };
  }
  const runs = host.steps.filter((s) => s.run).length;
  return {
    state: "success",
    description: clip(
      `checks passed; ${runs ? `${runs} step(s) would run` : "nothing to deploy"}`,
      DESCRIPTION_MAX,
    ),
  };
}

/** Posts the comment and the statuses; returns the warnings for what could not be posted. */
export async function postToGitea(
  t: GiteaTarget,
  hosts: readonly HostPlan[],
  markdown: string,
  opts: PostOptions = POST_DEFAULTS,
): Promise<{ warnings: string[]; done: string[] }> {
  const warnings: string[] = [];
  const done: string[] = [];
  const repo = `/repos/${t.repository}`;
  if (t.pr !== null) {
    // The comment of an earlier push, found to be edited. Comments anyone can write (a flood, one too large
    // to read) must not freeze it at an old verdict: when they cannot be read, a new comment is posted.
    let mine: number | null = null;
    try {
      const me = (await request(t, opts, "GET", "/user")) as { login?: unknown } | null;
      const comments = (await request(t, opts, "GET", `${repo}/issues/${t.pr}/comments`)) as unknown;
      const found = (Array.isArray(comments) ? comments : []).find(
        (c: { body?: unknown; user?: { login?: unknown } }) =>
          typeof c?.body === "string" && c.body.includes(COMMENT_MARKER) && c.user?.login === me?.login,
      ) as { id?: unknown } | undefined;
      if (found && typeof found.id === "number") mine = found.id;
    } catch (err) {
      warnings.push(`could not look for the plan's comment (${(err as Error).message}): a new one is posted`);
    }
    try {
      if (mine !== null) {
        await request(t, opts, "PATCH", `${repo}/issues/comments/${mine}`, { body: markdown });
        done.push(`comment ${mine} on pull request #${t.pr} edited`);
      } else {
        const made = (await request(t, opts, "POST", `${repo}/issues/${t.pr}/comments`, {
          body: markdown,
        })) as { id?: unknown } | null;
        done.push(`comment ${String(made?.id ?? "")} on pull request #${t.pr} created`);
      }
    } catch (err) {
      warnings.push(`could not post the plan comment: ${(err as Error).message}`);
    }
  }
  if (!t.sha) {
    warnings.push("no commit to set statuses on (the event names none)");
    return { warnings, done };
  }
  for (const host of hosts) {
    const { state, description } = statusOf(host);
    try {
      await request(t, opts, "POST", `${repo}/statuses/${t.sha}`, {
        state,
        context: `plan/${host.host}`,
        description,
        ...(t.url ? { target_url: t.url } : {}),
      });
      done.push(`status plan/${host.host}: ${state}`);
    } catch (err) {
      warnings.push(`could not set the status plan/${host.host}: ${(err as Error).message}`);
    }
  }
  return { warnings, done };
}
