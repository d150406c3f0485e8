import { AgentError } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import { type Attempt, RetryAfterError, type RetryPolicy, rateLimitWaitMs, retry } from "../core/retry.js";
import type { Secret } from "../core/secret.js";
import { type HttpAnswer, httpRequest } from "../host/http-client.js";

/**
 * The few Matrix client-server calls the agent makes (room state get/put), with the behaviour the spec
 * asks of clients: bearer auth, 429 M_LIMIT_EXCEEDED honoured through retry_after_ms, bounded retries with
 * backoff on 5xx, network errors and timeouts (the retry policy, ../core/retry.ts), and plain-spoken
 * errors for 401 and 403.
 */

export interface MatrixClientOptions {
  homeserver: string;
  token: Secret;
  /** Attempts per request, first included. */
  maxAttempts?: number;
  requestTimeoutMs?: number;
  /** Longest rate-limit wait honoured; a longer retry_after_ms fails the request instead of stalling. */
  maxRetryAfterMs?: number;
  backoffMs?: number;
  /** The whole request, its retries and waits included. */
  deadlineMs?: number;
  /** Ends a request or a wait at once; the request rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The backoff's jitter source (tests pass a seeded one). */
  random?: () => number;
  /** Called before each request: counts for reports and tests. */
  onRequest?: (method: string, path: string) => void;
}

export interface MatrixClient {
  /** The state event's content, or null when the room has no such state (404 M_NOT_FOUND). */
  getState(roomId: string, type: string, stateKey: string): Promise<Record<string, unknown> | null>;
  putState(roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<string>;
  /** The token's user (GET /account/whoami). */
  whoami(): Promise<string>;
}

interface MatrixErrorBody {
  errcode?: string;
  error?: string;
  retry_after_ms?: unknown;
}

/** A room-state answer is a few KiB; a larger one is refused rather than held in memory. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * Why a room id, event type or state key cannot be a segment of a request's URL path, or null. `.` and `..`
 * are resolved away by every URL parser, encoded or not (`/state/<type>/.` is `/state/<type>/`, the state
 * key ""): the request would reach another state event.
 */
export function unsendableSegment(segment: string): string | null {
  return segment === "." || segment === ".."
    ? `"${segment}" cannot be sent in a URL path: a URL resolves it away, and the request would reach another state event`
    : null;
}

function statePath(roomId: string, type: string, stateKey: string): string {
  for (const [what, segment] of [
    ["room id", roomId],
    ["event type", type],
    ["state key", stateKey],
  ] as const) {
    const why = unsendableSegment(segment);
    if (why) throw new AgentError("MATRIX_REFUSED", `${what} ${why}`);
  }
  return `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`;
}

function explain(status: number, body: MatrixErrorBody, what: string, roomId: string): AgentError {
  const code = body.errcode ?? `HTTP ${status}`;
  const said = body.error ? `: ${body.error}` : "";
  if (status === 401) {
    return new AgentError(
      "MATRIX_AUTH",
      `${what}: the homeserver rejected the access token (${code}${said})`,
      {
        hint: "the token expired or was logged out: rotate it (README: Token rotation)",
      },
    );
  }
  if (status === 403) {
    return new AgentError("MATRIX_FORBIDDEN", `${what}: forbidden in ${roomId} (${code}${said})`, {
      hint: "the token's user must be joined to the room with a power level its power_levels allow this event at",
    });
  }
  return new AgentError("MATRIX_REFUSED", `${what}: ${code}${said}`);
}

/** The text as a JSON object, or null when it is not one (not JSON, or an array, a string, null). */
function jsonObject(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

export function createMatrixClient(opts: MatrixClientOptions): MatrixClient {
  const base = opts.homeserver.replace(/\/+$/, "");
  const policy: Partial<RetryPolicy> = {
    attempts: opts.maxAttempts ?? 5,
    attemptTimeoutMs: opts.requestTimeoutMs ?? 15_000,
    maxRetryAfterMs: opts.maxRetryAfterMs ?? 60_000,
    backoffMs: opts.backoffMs ?? 500,
    deadlineMs: opts.deadlineMs ?? 300_000,
  };

  /** One request: the answer, or an AgentError whose code's failure class tells the policy what to do. */
  async function once(
    method: "GET" | "PUT",
    path: string,
    what: string,
    roomId: string,
    body: unknown,
    a: Attempt,
  ) {
    opts.onRequest?.(method, path);
    let res: HttpAnswer;
    try {
      // Never redirected: a redirect would turn this PUT into one against another URL, with the token.
      res = await httpRequest(base + path, {
        method,
        headers: {
          authorization: `Bearer ${opts.token.reveal()}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: a.signal,
        maxBytes: MAX_RESPONSE_BYTES,
        onTooLarge: (max) =>
          new AgentError("MATRIX_REFUSED", `the homeserver's answer is larger than ${max} bytes; refused`),
      });
    } catch (err) {
      if (err instanceof AgentError) throw err;
      throw new AgentError("MATRIX_UNAVAILABLE", fetchFailure(err, a.timeoutMs));
    }
    const parsed = jsonObject(res.text);
    // Not a JSON object: a proxy's error page, or a web app at the homeserver's URL. The status still decides.
    const json: MatrixErrorBody & Record<string, unknown> = parsed ?? {};
    if (res.status >= 300 && res.status < 400) {
      throw new AgentError(
        "MATRIX_REFUSED",
        `${what}: the homeserver redirected (HTTP ${res.status}); refusing to follow`,
        {
          hint: "point MATRIX_SERVER at the homeserver's own client-server URL",
        },
      );
    }
    if (res.ok) {
      // Every answer of these endpoints is an object; anything else read as one would be empty state content.
      if (parsed) return parsed;
      throw new AgentError(
        "MATRIX_REFUSED",
        `${what}: the homeserver answered ${res.status} with no JSON object (${(res.header("content-type") ?? "no content-type").slice(0, 80)})`,
        {
          hint: "point MATRIX_SERVER at the homeserver's own client-server URL, not a web app or a proxy page",
        },
      );
    }
    if (res.status === 404 && json.errcode === "M_NOT_FOUND" && method === "GET") return null;
    if (res.status === 429) {
      const wait = rateLimitWaitMs(json.retry_after_ms, res.header("retry-after") ?? null);
      const after = wait === undefined ? "" : `, retry after ${wait} ms`;
      throw new RetryAfterError("MATRIX_RATE_LIMITED", `rate limited (M_LIMIT_EXCEEDED${after})`, wait);
    }
    if (res.status >= 500) {
      throw new AgentError(
        "MATRIX_UNAVAILABLE",
        `HTTP ${res.status}${json.errcode ? ` ${json.errcode}` : ""}`,
      );
    }
    throw explain(res.status, json, what, roomId);
  }

  async function request(method: "GET" | "PUT", path: string, roomId: string, body?: unknown) {
    const what = roomId ? `${method} ${path.split("/").slice(0, 6).join("/")}/…` : `${method} ${path}`;
    return retry((a) => once(method, path, what, roomId, body, a), {
      policy,
      signal: opts.signal,
      random: opts.random,
      giveUp: ({ last, attempts, reason }) => {
        if (reason === "retry-after" && last instanceof RetryAfterError) {
          return new AgentError(
            "MATRIX_RATE_LIMITED",
            `${what}: rate limited for ${last.retryAfterMs} ms, longer than the ${policy.maxRetryAfterMs} ms the agent waits`,
          );
        }
        const within = reason === "deadline" ? ` within ${policy.deadlineMs} ms` : "";
        return new AgentError(
          "MATRIX_UNAVAILABLE",
          `${what}: gave up after ${attempts} attempt${attempts === 1 ? "" : "s"}${within} (${last.message})`,
          { hint: `check that ${base} is reachable from this host` },
        );
      },
    });
  }

  return {
    async getState(roomId, type, stateKey) {
      return (await request("GET", statePath(roomId, type, stateKey), roomId)) as Record<
        string,
        unknown
      > | null;
    },
    async whoami() {
      const res = await request("GET", "/_matrix/client/v3/account/whoami", "");
      const user = res?.user_id;
      if (typeof user !== "string" || !user.startsWith("@")) {
        throw new AgentError("MATRIX_REQUEST_FAILED", "whoami answered without a user_id");
      }
      return user;
    },
    async putState(roomId, type, stateKey, content) {
      const res = await request("PUT", statePath(roomId, type, stateKey), roomId, content);
      return String(res?.event_id ?? "");
    },
  };
}
