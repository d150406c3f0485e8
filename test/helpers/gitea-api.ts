import { createHmac, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";

/**
 * A Gitea API test server following Gitea's published API description (swagger):
 * - `POST /repos/{owner}/{repo}/statuses/{sha}` (repoCreateStatus, body CreateStatusOption with
 *   CommitStatusState "pending" | "success" | "error" | "failure" | "warning"): 201 with the CommitStatus;
 * - `GET /user` (userGetCurrent): 200 with the token's user;
 * - `GET /repos/{owner}/{repo}/issues/{index}/comments` (issueGetComments): 200 with the Comment list;
 * - `POST /repos/{owner}/{repo}/issues/{index}/comments` (issueCreateComment, body CreateIssueCommentOption
 *   `{ body }`, required): 201 with the Comment;
 * - `PATCH /repos/{owner}/{repo}/issues/comments/{id}` (issueEditComment, body EditIssueCommentOption
 *   `{ body }`, required): 200 with the Comment; another user's comment 403.
 * - `GET /repos/{owner}/{repo}/hooks/{id}` (repoGetHook): 200 with the Hook, whose config carries url and
 *   content_type, never the secret;
 * - `PATCH /repos/{owner}/{repo}/hooks/{id}` (repoEditHook, body EditHookOption: config, events, branch_filter,
 *   authorization_header, active, none required): 200 with the Hook; config.content_type other than json or
 *   form 422; as Gitea's editHook, events left out become ["push"] and branch_filter and
 *   authorization_header left out become empty;
 * - `POST /repos/{owner}/{repo}/hooks/{id}/tests` (repoTestHook): 204, and a push delivery (before = after)
 *   POSTed to the hook's url, signed with its secret in X-Gitea-Signature, as Gitea's Test Delivery.
 * `Authorization: token <t>` or a bearer token, else 401; a read-only token writes nothing (403); an unknown
 * repository, commit, issue or comment 404; a body that does not fit the schema 422. It records what it
 * accepted and counts what it refused.
 */

/** CreateStatusOption, as Gitea's swagger describes it (every field optional, typed). */
const createStatusOption = z.object({
  context: z.string().optional(),
  description: z.string().optional(),
  state: z.enum(["pending", "success", "error", "failure", "warning"]).optional(),
  target_url: z.string().optional(),
});

export interface GiteaStatus {
  sha: string;
  state: string;
  context: string;
  description: string;
  target_url: string;
}

/** EditIssueCommentOption and CreateIssueCommentOption: `body` is required (Gitea's binding:"Required"). */
const commentOption = z.object({ body: z.string().min(1) });

export interface GiteaComment {
  id: number;
  issue: number;
  body: string;
  user: { login: string };
  created_at: string;
  updated_at: string;
}

/** A repository webhook as the server keeps it (the secret is never in an answer). */
export interface GiteaHook {
  id: number;
  type: string;
  active: boolean;
  events: string[];
  branch_filter: string;
  authorization_header: string;
  config: { url: string; content_type: string; secret: string };
}

/** EditHookOption, as Gitea's swagger describes it (every field optional, typed). */
const editHookOption = z.object({
  active: z.boolean().optional(),
  authorization_header: z.string().optional(),
  branch_filter: z.string().optional(),
  config: z.record(z.string(), z.string()).optional(),
  events: z.array(z.string()).optional(),
});

export interface GiteaApi {
  hooks: GiteaHook[];
  /** The test deliveries sent: the hook's url and the answer's status. */
  tested: { url: string; status: number }[];
  comments: GiteaComment[];
  /** Adds a comment as another user (a pull request's author, say). */
  addComment(issue: number, login: string, body: string): GiteaComment;
  /** The API root, …/api/v1. */
  url: string;
  statuses: GiteaStatus[];
  /** The raw body of every request, accepted or not. */
  bodies: string[];
  refused: { status: number; reason: string }[];
  /** The newest state per sha and context. */
  latest(sha: string, context: string): string | undefined;
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export async function startGiteaApi(opts: {
  token: string;
  repository: string;
  /** The commits the repository has (unknown ones answer 404, as Gitea does). */
  knows: (sha: string) => boolean;
  /** The token's user (default deploy-bot). */
  login?: string;
  /** A token that may read but not write (403 on every write). */
  readOnlyToken?: string;
  /** The issues and pull requests the repository has (default: none). */
  issues?: readonly number[];
  /** The repository's webhooks (default: none). */
  hooks?: GiteaHook[];
  /** The commit a test delivery names (default 40 a's). */
  testCommit?: string;
}): Promise<GiteaApi> {
  const hooks = opts.hooks ?? [];
  const tested: GiteaApi["tested"] = [];
  const shown = (h: GiteaHook) => ({
    id: h.id,
    type: h.type,
    active: h.active,
    events: h.events,
    branch_filter: h.branch_filter,
    authorization_header: h.authorization_header,
    config: { url: h.config.url, content_type: h.config.content_type },
  });
  const statuses: GiteaStatus[] = [];
  const comments: GiteaComment[] = [];
  let commentId = 100;
  const login = opts.login ?? "deploy-bot";
  const comment = (issue: number, user: string, body: string): GiteaComment => {
    const now = new Date().toISOString();
    const c = { id: ++commentId, issue, body, user: { login: user }, created_at: now, updated_at: now };
    comments.push(c);
    return c;
  };
  const refused: GiteaApi["refused"] = [];
  const bodies: string[] = [];
  let id = 0;
  const server = createServer(async (req, res) => {
    const answer = (status: number, doc: unknown, reason?: string) => {
      if (reason) refused.push({ status, reason });
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(doc));
    };
    const url = req.url ?? "";
    const text = await body(req);
    bodies.push(text);
    const given = /^(?:token|Bearer) (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    const readOnly = opts.readOnlyToken !== undefined && given === opts.readOnlyToken;
    const known = given === opts.token || readOnly;
    const json = (): { ok: true; value: unknown } | { ok: false } => {
      try {
        return { ok: true, value: JSON.parse(text) };
      } catch {
        return { ok: false };
      }
    };
    const hookRoute = /^\/api\/v1\/repos\/([^/]+\/[^/]+)\/hooks\/(\d+)(\/tests)?$/.exec(url);
    if (hookRoute) {
      if (!known) return answer(401, { message: "token is required" }, "no or wrong token");
      if (hookRoute[1] !== opts.repository) return answer(404, { message: "Not Found" }, "unknown repo");
      const hook = hooks.find((h) => h.id === Number(hookRoute[2]));
      // Gitea asks for repository admin on every hook route, reading included.
      if (readOnly) return answer(403, { message: "token does not have admin access" }, "read-only token");
      if (!hook) return answer(404, { message: "The target couldn't be found." }, "unknown hook");
      if (hookRoute[3]) {
        if (req.method !== "POST") return answer(405, { message: "Method Not Allowed" }, "method");
        const sha = opts.testCommit ?? "a".repeat(40);
        const payload = JSON.stringify({
          ref: "refs/heads/main",
          before: sha,
          after: sha,
          repository: { full_name: opts.repository },
        });
        const status = await fetch(hook.config.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-gitea-event": "push",
            "x-gitea-delivery": randomUUID(),
            "x-gitea-signature": createHmac("sha256", hook.config.secret).update(payload).digest("hex"),
          },
          body: payload,
        }).then(
          (r) => r.status,
          () => 0,
        );
        tested.push({ url: hook.config.url, status });
        res.writeHead(204);
        return res.end();
      }
      if (req.method === "GET") return answer(200, shown(hook));
      if (req.method !== "PATCH") return answer(405, { message: "Method Not Allowed" }, "method");
      const doc = json();
      const parsed = doc.ok ? editHookOption.safeParse(doc.value) : null;
      if (!parsed?.success) return answer(422, { message: "invalid EditHookOption" }, "schema");
      const form = parsed.data;
      const ct = form.config?.content_type;
      if (ct !== undefined && ct !== "json" && ct !== "form")
        return answer(422, { message: "Invalid content type" }, "content type");
      if (form.config?.url !== undefined) hook.config.url = form.config.url;
      if (ct !== undefined) hook.config.content_type = ct;
      if (form.config?.secret !== undefined) hook.config.secret = form.config.secret;
      hook.events = form.events?.length ? form.events : ["push"];
      hook.branch_filter = form.branch_filter ?? "";
      hook.authorization_header = form.authorization_header ?? "";
      if (form.active !== undefined) hook.active = form.active;
      return answer(200, shown(hook));
    }
    const issueRoute = /^\/api\/v1\/repos\/([^/]+\/[^/]+)\/issues\/(\d+)\/comments$/.exec(url);
    const editRoute = /^\/api\/v1\/repos\/([^/]+\/[^/]+)\/issues\/comments\/(\d+)$/.exec(url);
    if (url === "/api/v1/user" || issueRoute || editRoute) {
      if (!known) return answer(401, { message: "token is required" }, "no or wrong token");
      if (url === "/api/v1/user") {
        if (req.method !== "GET") return answer(405, { message: "Method Not Allowed" }, "method");
        return answer(200, { id: 1, login });
      }
      const repo = (issueRoute ?? editRoute)?.[1];
      if (repo !== opts.repository) return answer(404, { message: "Not Found" }, `unknown ${repo}`);
      const index = Number((issueRoute ?? editRoute)?.[2]);
      if (issueRoute && !(opts.issues ?? []).includes(index))
        return answer(404, { message: "The target couldn't be found." }, `unknown issue ${index}`);
      if (issueRoute && req.method === "GET")
        return answer(
          200,
          comments.filter((c) => c.issue === index),
        );
      if (req.method !== (issueRoute ? "POST" : "PATCH"))
        return answer(405, { message: "Method Not Allowed" }, "method");
      if (readOnly) return answer(403, { message: "token does not have write access" }, "read-only token");
      const target = editRoute ? comments.find((c) => c.id === index) : undefined;
      if (editRoute && !target)
        return answer(404, { message: "The target couldn't be found." }, "no comment");
      if (target && target.user.login !== login)
        return answer(403, { message: "not your comment" }, "other user");
      const doc = json();
      const parsed = doc.ok ? commentOption.safeParse(doc.value) : null;
      if (!parsed?.success) return answer(422, { message: "[Body]: Required" }, "schema");
      if (target) {
        target.body = parsed.data.body;
        target.updated_at = new Date().toISOString();
        return answer(200, target);
      }
      return answer(201, comment(index, login, parsed.data.body));
    }
    const m = /^\/api\/v1\/repos\/([^/]+\/[^/]+)\/statuses\/([0-9a-f]{40})$/.exec(url);
    if (req.method !== "POST" || !m) return answer(404, { message: "Not Found" }, `${req.method} ${req.url}`);
    if (!known) return answer(401, { message: "token is required" }, "no or wrong token");
    if (readOnly) return answer(403, { message: "token does not have write access" }, "read-only token");
    if (m[1] !== opts.repository || !opts.knows(m[2] ?? "")) {
      return answer(404, { message: "The target couldn't be found." }, `unknown ${m[1]}@${m[2]}`);
    }
    if (!(req.headers["content-type"] ?? "").startsWith("application/json")) {
      return answer(415, { message: "content type must be JSON" }, "content type");
    }
    const doc = json();
    if (!doc.ok) return answer(400, { message: "invalid JSON" }, "invalid JSON");
    const parsed = createStatusOption.safeParse(doc.value);
    if (!parsed.success) return answer(422, { message: z.prettifyError(parsed.error) }, "schema");
    const s = {
      sha: m[2] ?? "",
      state: parsed.data.state ?? "pending",
      context: parsed.data.context ?? "default",
      description: parsed.data.description ?? "",
      target_url: parsed.data.target_url ?? "",
    };
    statuses.push(s);
    answer(201, {
      id: ++id,
      status: s.state,
      context: s.context,
      description: s.description,
      target_url: s.target_url,
      created_at: new Date().toISOString(),
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`,
    statuses,
    comments,
    hooks,
    tested,
    addComment: comment,
    bodies,
    refused,
    latest: (sha, context) => statuses.filter((s) => s.sha === sha && s.context === context).at(-1)?.state,
    close: () =>
      new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
