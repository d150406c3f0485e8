import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";

/**
 * git's failure as a typed error: its verdict lines, cleaned, under the caller's code. Apart from where git
 * is started because the callers that map its failures (opening the clone, the fetch, the work tree's reset)
 * each start git their own way, and all of them say what git said the same way.
 */
export function gitError(
  code: "GIT_FAILED" | "FETCH_FAILED" | "REPO_INVALID",
  what: string,
  err: unknown,
): AgentError {
  // git's own verdict is on its "fatal:"/"error:" lines; the rest is advice.
  const lines = (err instanceof Error ? err.message : String(err))
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const verdict = lines.filter((l) => /^(fatal|error):/.test(l));
  const detail = (verdict.length ? verdict.slice(0, 2) : lines.slice(-2)).join(" ");
  return new AgentError(code, `${what}: ${sanitize(detail)}`, { cause: err });
}
