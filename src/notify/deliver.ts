import { AgentError } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import { redact } from "../core/redact.js";
import {
  RetryAfterError,
  type RetryOptions,
  type RetryPolicy,
  rateLimitWaitMs,
  retry,
} from "../core/retry.js";
import { type HttpAnswer, httpRequest } from "../host/http-client.js";
import type { DeployEvent } from "./events.js";
import { kindOf, type Target } from "./targets/index.js";

/**
 * One notice on its way out: the target kind's request, its body serialized, redacted and then signed, sent
 * under the retry policy. Apart from the notifier (./notifier.ts), which decides what goes where and when and
 * keeps the queue: this is the only place a notice's bytes are made and leave.
 */

/** Each notice's retries: 3 attempts of 10 s each, backoff from 500 ms, at most 60 s in all. */
export const NOTIFY_RETRY: Partial<RetryPolicy> = {
  attempts: 3,
  attemptTimeoutMs: 10_000,
  backoffMs: 500,
  maxRetryAfterMs: 30_000,
  deadlineMs: 60_000,
};

/** The most of a 429's body read for its retry_after_ms. */
const RATE_LIMIT_BODY_MAX = 64 * 1024;

/** Matrix's `retry_after_ms` in a 429's JSON body, as it is given (rateLimitWaitMs reads it). */
function retryAfterMsOf(body: string): unknown {
  try {
    return (JSON.parse(body) as { retry_after_ms?: unknown } | null)?.retry_after_ms;
  } catch {
    return undefined;
  }
}

/** Resolves once the target took the notice; throws the AgentError of the last attempt otherwise. */
export async function deliver(
  target: Target,
  event: DeployEvent,
  host: string,
  retryOptions: Pick<RetryOptions, "policy" | "random">,
): Promise<void> {
  const kind = kindOf(target);
  const request = kind.request(target, event, host);
  const body = redact(JSON.stringify(request.payload));
  const headers = { "content-type": "application/json", ...request.headers, ...kind.sign?.(target, body) };
  await retry(async ({ signal, timeoutMs }) => {
    let res: HttpAnswer;
    try {
      // Never redirected, as before (fetch's redirect: "manual"): node:http does not follow.
      res = await httpRequest(request.url, {
        method: request.method,
        headers,
        body,
        signal,
        // Only a 429's body is read (bounded): Matrix says how long to wait in it.
        readBody: (status) => status === 429,
        maxBytes: RATE_LIMIT_BODY_MAX,
      });
    } catch (err) {
      throw new AgentError("HTTP_UNAVAILABLE", fetchFailure(err, timeoutMs));
    }
    if (res.ok) return;
    const problem = `HTTP ${res.status}`;
    if (res.status === 429) {
      throw new RetryAfterError(
        "HTTP_RATE_LIMITED",
        problem,
        rateLimitWaitMs(retryAfterMsOf(res.text), res.header("retry-after") ?? null),
      );
    }
    // Any other 3xx or 4xx: the request itself is wrong, and retrying cannot help.
    throw new AgentError(res.status >= 500 ? "HTTP_UNAVAILABLE" : "HTTP_REFUSED", problem);
  }, retryOptions);
}
