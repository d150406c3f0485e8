/**
 * A process for the retry tests: one call whose attempt always fails transiently, with a 60 s backoff,
 * aborted 50 ms in. Prints how long the call took to reject and with what; the process then has nothing left
 * to do, so it exits at once unless the policy left a timer behind.
 */
import { AgentError } from "../../src/core/errors.js";
import { retry } from "../../src/core/retry.js";

const stop = new AbortController();
const started = Date.now();
setTimeout(() => stop.abort(new AgentError("ABORTED", "stopping")), 50);
try {
  await retry(
    async () => {
      throw new AgentError("HTTP_UNAVAILABLE", "HTTP 503");
    },
    { policy: { attempts: 5, backoffMs: 60_000, jitter: 0 }, signal: stop.signal },
  );
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ms: Date.now() - started, code: (err as AgentError).code })}\n`);
}
