import { setTimeout as sleep } from "node:timers/promises";
import { AgentError } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import type { Secret } from "../core/secret.js";

/**
 * The few Matrix client-server calls the agent makes (room state get/put), with the behaviour the spec
 * asks of clients: bearer auth, 429 M_LIMIT_EXCEEDED honoured through retry_after_ms, bounded retries with
 * backoff on 5xx, network errors and timeouts, and plain-spoken errors for 401 and 403.
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
  signal?: AbortSignal;
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

/** The body as text, reading no more than max bytes (the connection is dropped past it). */
async function readCapped(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > max) {
      await res.body.cancel().catch(() => {});
      throw new AgentError(
        "MATRIX_REQUEST_FAILED",
        `the homeserver's answer is larger than ${max} bytes; refused`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const statePath = (roomId: string, type: string, stateKey: string) =>
  `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`;

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
  return new AgentError("MATRIX_REQUEST_FAILED", `${what}: ${code}${said}`);
}

export function createMatrixClient(opts: MatrixClientOptions): MatrixClient {
  const base = opts.homeserver.replace(/\/+$/, "");
  const maxAttempts = opts.maxAttempts ?? 5;
  const timeoutMs = opts.requestTimeoutMs ?? 15_000;
  const maxRetryAfter = opts.maxRetryAfterMs ?? 60_000;
  const backoff = opts.backoffMs ?? 500;

  async function request(method: "GET" | "PUT", path: string, roomId: string, body?: unknown) {
    const what = roomId ? `${method} ${path.split("/").slice(0, 6).join("/")}/…` : `${method} ${path}`;
    let lastProblem = "";
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      opts.onRequest?.(method, path);
      // A timer of our own, cleared when the body is read: a signal from AbortSignal.timeout() combined
      // through AbortSignal.any() can be garbage-collected before it fires (seen under load on Node 20),
      // leaving a hung request to the step timeout.
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(new DOMException("timed out", "TimeoutError")), timeoutMs);
      let res: Response;
      let text: string;
      try {
        res = await fetch(base + path, {
          method,
          headers: {
            authorization: `Bearer ${opts.token.reveal()}`,
            ...(body !== undefined ? { "content-type": "application/json" } : {}),
          },
          body: body !== undefined ? JSON.stringify(body) : undefined,
          signal: opts.signal ? AbortSignal.any([opts.signal, timeout.signal]) : timeout.signal,
          // A redirect would turn this PUT into one against another URL, with the token: refused.
          redirect: "manual",
        });
        text = await readCapped(res, MAX_RESPONSE_BYTES);
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        lastProblem = fetchFailure(err, timeoutMs);
        await sleep(backoff * 2 ** (attempt - 1));
        continue;
      } finally {
        clearTimeout(timer);
      }
      let json: MatrixErrorBody & Record<string, unknown> = {};
      try {
        json = text ? (JSON.parse(text) as typeof json) : {};
      } catch {
        // Not JSON: a proxy's error page. The status still decides.
      }
      if (res.status >= 300 && res.status < 400) {
        throw new AgentError(
          "MATRIX_REQUEST_FAILED",
          `${what}: the homeserver redirected (HTTP ${res.status}); refusing to follow`,
          {
            hint: "point MATRIX_SERVER at the homeserver's own client-server URL",
          },
        );
      }
      if (res.ok) return json;
      if (res.status === 404 && json.errcode === "M_NOT_FOUND" && method === "GET") return null;
      if (res.status === 429) {
        const header = Number(res.headers.get("retry-after"));
        // retry_after_ms as the spec has it (an integer), tolerated as a numeric string; anything else: backoff.
        const given = Number(json.retry_after_ms);
        const wait =
          Number.isFinite(given) && given >= 0
            ? given
            : Number.isFinite(header) && header > 0
              ? header * 1000
              : backoff * 2 ** (attempt - 1);
        if (wait > maxRetryAfter) {
          throw new AgentError(
            "MATRIX_RATE_LIMITED",
            `${what}: rate limited for ${wait} ms, longer than the ${maxRetryAfter} ms the agent waits`,
          );
        }
        lastProblem = `rate limited (M_LIMIT_EXCEEDED, retry after ${wait} ms)`;
        await sleep(wait);
        continue;
      }
      if (res.status >= 500) {
        lastProblem = `HTTP ${res.status}${json.errcode ? ` ${json.errcode}` : ""}`;
        await sleep(backoff * 2 ** (attempt - 1));
        continue;
      }
      throw explain(res.status, json, what, roomId);
    }
    throw new AgentError(
      "MATRIX_UNAVAILABLE",
      `${what}: gave up after ${maxAttempts} attempt${maxAttempts === 1 ? "" : "s"} (${lastProblem})`,
      {
        hint: `check that ${base} is reachable from this host`,
      },
    );
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
