import { AgentError } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import { sanitize } from "../core/redact.js";
import type { Secret } from "../core/secret.js";
import { clip } from "../notify/targets/text.js";

/**
 * Gives a Gitea repository webhook a new secret through Gitea's API. Gitea never returns a hook's secret,
 * and its edit (PATCH /repos/{owner}/{repo}/hooks/{id}, EditHookOption) resets what the request leaves out:
 * no `events` means push only, no `branch_filter` and `authorization_header` mean none. So the hook is read
 * first (GET, repoGetHook) and written back whole: `config` with its url, content_type and the new secret,
 * and its events, branch filter, authorization header and active flag as they were. Then Gitea is asked
 * for a test delivery (POST …/hooks/{id}/tests, repoTestHook), which it signs with the new secret.
 */

export interface HookRef {
  /** The API root, …/api/v1. */
  api: string;
  repository: string;
  id: number;
}

/** Each request; past it the request is abandoned. */
export const GITEA_TIMEOUT_MS = 10_000;
/** Largest answer read (one hook). */
export const GITEA_MAX_RESPONSE_BYTES = 256 * 1024;

/**
 * The hook a `--hook` value names: the page of the hook in Gitea's settings
 * (https://gitea.example/owner/repo/settings/hooks/7, as the browser shows it) or its API URL
 * (…/api/v1/repos/owner/repo/hooks/7).
 */
export function parseHookRef(value: string): HookRef {
  const api = /^(https?:\/\/[^\s?#]+?\/api\/v1)\/repos\/([^/\s?#]+\/[^/\s?#]+)\/hooks\/(\d{1,12})\/?$/.exec(
    value,
  );
  const page = /^(https?:\/\/[^\s?#]+?)\/([^/\s?#]+\/[^/\s?#]+)\/settings\/hooks\/(\d{1,12})\/?$/.exec(value);
  const m = api ?? page;
  if (!m?.[1] || !m[2] || !m[3]) {
    throw new AgentError(
      "USAGE",
      `--hook ${JSON.stringify(clip(value, 200))} names no Gitea repository hook`,
      {
        hint: "give the hook's page: https://<gitea>/<owner>/<repo>/settings/hooks/<id> (Settings → Webhooks → the hook)",
      },
    );
  }
  return { api: api ? m[1] : `${m[1]}/api/v1`, repository: m[2], id: Number(m[3]) };
}

interface GiteaHook {
  id: number;
  type?: string;
  active?: boolean;
  events?: string[];
  branch_filter?: string;
  authorization_header?: string;
  config?: Record<string, string>;
}

function failed(what: string, status: number | null, message: string): AgentError {
  const hint =
    status === 401
      ? "the Gitea token is missing or wrong (GITEA_TOKEN or --token-file)"
      : status === 403
        ? "the token's user must be an administrator of the repository (write:repository scope)"
        : status === 404
          ? "no such hook in that repository: check the hook's page in Settings → Webhooks"
          : "nothing was changed in Gitea unless the message says so; run it again, or follow the steps without --hook";
  return new AgentError("GITEA_HOOK_FAILED", `${what}: ${message}`, { hint });
}

async function call(
  ref: HookRef,
  token: Secret,
  method: string,
  route: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const what = `${method} ${ref.api}/repos/${ref.repository}/hooks/${ref.id}${route}`;
  let res: Response;
  try {
    res = await fetch(`${ref.api}/repos/${ref.repository}/hooks/${ref.id}${route}`, {
      method,
      redirect: "manual",
      signal: AbortSignal.timeout(GITEA_TIMEOUT_MS),
      headers: {
        authorization: `token ${token.reveal()}`,
        accept: "application/json",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      // Not through the redaction point: the new secret is what this request carries to Gitea.
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw failed(what, null, fetchFailure(err, GITEA_TIMEOUT_MS));
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.byteLength;
    if (size > GITEA_MAX_RESPONSE_BYTES) {
      await res.body?.cancel().catch(() => {});
      throw failed(what, res.status, `the answer is larger than ${GITEA_MAX_RESPONSE_BYTES} bytes`);
    }
    chunks.push(Buffer.from(chunk));
  }
  const text = Buffer.concat(chunks).toString("utf8");
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (res.status < 200 || res.status > 299) {
    const message = String((json as { message?: unknown } | null)?.message ?? "");
    throw failed(
      what,
      res.status,
      `HTTP ${res.status}${message ? ` (${clip(sanitize(message), 200)})` : ""}`,
    );
  }
  return { status: res.status, json };
}

/** Gives the hook `secret`, keeping everything else it has; then asks Gitea for a test delivery. */
export async function setHookSecret(
  ref: HookRef,
  token: Secret,
  secret: Secret,
): Promise<{ url: string; tested: string | null }> {
  const hook = (await call(ref, token, "GET", "")).json as GiteaHook | null;
  const url = hook?.config?.url;
  const contentType = hook?.config?.content_type;
  if (!url || !contentType) {
    throw failed(`GET hook ${ref.id}`, 200, "the answer has no config.url and config.content_type");
  }
  if (hook?.type && !["gitea", "forgejo", "gogs"].includes(hook.type)) {
    throw failed(`hook ${ref.id}`, 200, `it is a ${hook.type} hook, not a Gitea one`);
  }
  await call(ref, token, "PATCH", "", {
    config: { url, content_type: contentType, secret: secret.reveal() },
    ...(hook?.events?.length ? { events: hook.events } : {}),
    ...(hook?.branch_filter !== undefined ? { branch_filter: hook.branch_filter } : {}),
    ...(hook?.authorization_header !== undefined ? { authorization_header: hook.authorization_header } : {}),
    ...(hook?.active !== undefined ? { active: hook.active } : {}),
  });
  const tested = await call(ref, token, "POST", "/tests").then(
    () => null,
    (err: AgentError) => err.message,
  );
  return { url, tested };
}
