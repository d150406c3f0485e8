import { AgentError } from "../core/errors.js";
import { fetchFailure } from "../core/fetch-failure.js";
import { RetryAfterError, retry, retryAfterHeader } from "../core/retry.js";
import { type HttpAnswer, httpRequest } from "./http-client.js";

/**
 * Polls an HTTP health endpoint until it answers the healthy status or the deadline passes, under the retry
 * policy (../core/retry.ts): every other answer is transient, polled again after a fixed interval, except a
 * 429, which is polled again after its Retry-After. An answer takes at most twice the interval (0.5 to 5 s),
 * and never past the deadline. Returns the last observation, for the failure message.
 */
export async function waitHealthy(
  url: string,
  opts: { timeoutMs: number; intervalMs?: number; healthyStatus?: number; signal?: AbortSignal },
): Promise<{ healthy: boolean; last: string }> {
  const interval = opts.intervalMs ?? 1000;
  let last = "no answer yet";
  try {
    await retry(
      async ({ signal, timeoutMs }) => {
        let res: HttpAnswer;
        try {
          res = await httpRequest(url, { signal, readBody: false });
        } catch (err) {
          last = fetchFailure(err, timeoutMs);
          throw new AgentError("HEALTH_CHECK_FAILED", last);
        }
        last = `HTTP ${res.status}`;
        if (res.status === (opts.healthyStatus ?? 200)) return;
        if (res.status === 429) {
          throw new RetryAfterError(
            "HTTP_RATE_LIMITED",
            last,
            retryAfterHeader(res.header("retry-after") ?? null),
          );
        }
        throw new AgentError("HEALTH_CHECK_FAILED", last);
      },
      {
        policy: {
          attempts: Number.POSITIVE_INFINITY,
          backoffMs: interval,
          factor: 1,
          jitter: 0,
          attemptTimeoutMs: Math.min(5000, Math.max(500, interval * 2)),
          maxRetryAfterMs: opts.timeoutMs,
          deadlineMs: opts.timeoutMs,
        },
        // The step's signal: a probe that hangs must not outlive the step's timeout.
        signal: opts.signal,
      },
    );
    return { healthy: true, last };
  } catch {
    return { healthy: false, last };
  }
}
