import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { z } from "zod";

/**
 * A Gitea API test server for `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`, following Gitea's published
 * API description (swagger: operation repoCreateStatus, body CreateStatusOption with CommitStatusState
 * "pending" | "success" | "error" | "failure" | "warning"): `Authorization: token <t>` or a bearer token, else
 * 401; an unknown repository or commit 404; a body that does not fit the schema 422; 201 with the created
 * CommitStatus. It records what it accepted and counts what it refused.
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

export interface GiteaApi {
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
}): Promise<GiteaApi> {
  const statuses: GiteaStatus[] = [];
  const refused: GiteaApi["refused"] = [];
  const bodies: string[] = [];
  let id = 0;
  const server = createServer(async (req, res) => {
    const answer = (status: number, doc: unknown, reason?: string) => {
      if (reason) refused.push({ status, reason });
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(doc));
    };
    const m = /^\/api\/v1\/repos\/([^/]+\/[^/]+)\/statuses\/([0-9a-f]{40})$/.exec(req.url ?? "");
    const text = await body(req);
    bodies.push(text);
    if (req.method !== "POST" || !m) return answer(404, { message: "Not Found" }, `${req.method} ${req.url}`);
    const given = /^(?:token|Bearer) (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (given !== opts.token) return answer(401, { message: "token is required" }, "no or wrong token");
    if (m[1] !== opts.repository || !opts.knows(m[2] ?? "")) {
      return answer(404, { message: "The target couldn't be found." }, `unknown ${m[1]}@${m[2]}`);
    }
    if (!(req.headers["content-type"] ?? "").startsWith("application/json")) {
      return answer(415, { message: "content type must be JSON" }, "content type");
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return answer(400, { message: "invalid JSON" }, "invalid JSON");
    }
    const parsed = createStatusOption.safeParse(json);
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
