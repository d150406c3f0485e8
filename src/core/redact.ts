/**
 * The one redaction point for every text that leaves the process: log lines (pino's streamWrite hook), HTTP
 * bodies (an onSend hook), the state file, and the CLI's stdout and stderr. It replaces every secret value the
 * process knows — each `Secret` registers itself, and so do env-file values whose names say they are secret —
 * in plain and JSON-escaped form, then strips URL credentials, query strings and bearer/Matrix tokens.
 */

const known = new Set<string>();
let ordered: string[] = [];

/** Values shorter than this are not matched: they would blank ordinary words. */
export const MIN_LENGTH = 6;

export function registerSecret(value: string): void {
  // A value of several lines (a key in PEM armour) may reach a text one line at a time.
  if (value.includes("\n")) for (const line of value.split("\n")) registerSecret(line.trim());
  if (value.length < MIN_LENGTH || known.has(value)) return;
  known.add(value);
  const escaped = JSON.stringify(value).slice(1, -1);
  if (escaped !== value) known.add(escaped);
  ordered = [...known].sort((a, b) => b.length - a.length);
}

/** Env-file variables whose names mark them as secret (MATRIX_TOKEN, WEBHOOK_SECRET, …). */
export const SECRET_NAME = /TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY/i;

export function redact(text: string): string {
  let out = text;
  for (const s of ordered) if (out.includes(s)) out = out.split(s).join("[redacted]");
  return sanitize(out);
}

/** Strips URL userinfo and query strings, and bearer tokens, from free text (Flux's sanitized.go idea). */
export function sanitize(text: string): string {
  // The patterns stop at quotes and backslashes too: they run over whole JSON log lines (no spaces in them).
  // None backtracks over the rest of the text (a commit subject of "a.a.a.…" or "http://http://…" made them
  // quadratic): userinfo is whatever follows any "://" up to an "@" (the scheme before it, of any length or
  // glued to a word, is left as it is), and the query is an optional part after a greedy run.
  return text
    .replace(/:\/\/[^/\s@"\\]+@/g, "://")
    .replace(/(\bhttps?:\/\/[^\s?#"\\]+)(\?[^\s#"\\]*)?/gi, (all, url: string, query?: string) =>
      query ? `${url}?[redacted]` : all,
    )
    .replace(/(bearer\s+)[A-Za-z0-9._~+/=-]+/gi, "$1[redacted]")
    .replace(/\b(syt|mct|syr)_[A-Za-z0-9_]+/g, "[redacted]");
}
