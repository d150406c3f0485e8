import { setTimeout as sleep } from "node:timers/promises";
import { fetchFailure } from "../core/fetch-failure.js";

/**
 * Polls an HTTP health endpoint until it answers the healthy status or the deadline passes.
 * Returns the last observation, for the failure message.
 */
export async function waitHealthy(
  url: string,
  opts: { timeoutMs: number; intervalMs?: number; healthyStatus?: number; signal?: AbortSignal },
): Promise<{ healthy: boolean; last: string }> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 1000;
  let last = "no answer yet";
  for (;;) {
    try {
      const res = await fetch(url, {
        // The step's signal too: a probe that hangs must not outlive the step's timeout.
        signal: opts.signal
          ? AbortSignal.any([opts.signal, AbortSignal.timeout(Math.min(5000, Math.max(500, interval * 2)))])
          : AbortSignal.timeout(Math.min(5000, Math.max(500, interval * 2))),
      });
      await res.body?.cancel();
      last = `HTTP ${res.status}`;
      if (res.status === (opts.healthyStatus ?? 200)) return { healthy: true, last };
    } catch (err) {
      last = fetchFailure(err);
    }
    if (Date.now() + interval > deadline || opts.signal?.aborted) return { healthy: false, last };
    await sleep(interval, undefined, { signal: opts.signal }).catch(() => {});
  }
}
