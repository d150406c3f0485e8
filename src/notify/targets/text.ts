import { redact } from "../../core/redact.js";

/**
 * A text cut to max characters, redacted first: a cut made before redaction could leave the first
 * characters of a secret, which redaction no longer recognises.
 */
export function clip(text: string, max: number): string {
  const clean = redact(text);
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}
