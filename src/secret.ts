import { inspect } from "node:util";
import { registerSecret } from "./redact.js";

const REDACTED = "[redacted]";

/**
 * A secret value (token, webhook secret). Every way of printing it — JSON, string conversion, util.inspect,
 * pino serialization — yields "[redacted]"; only `reveal()` hands out the value, at the point of use.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
    registerSecret(value);
  }

  reveal(): string {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

/** Strips URL userinfo and query strings, and bearer tokens, from free text (Flux's sanitized.go idea). */
export function sanitize(text: string): string {
  // The patterns stop at quotes and backslashes too: they run over whole JSON log lines (no spaces in them).
  return text
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s@"\\]+@/gi, "$1")
    .replace(/(\bhttps?:\/\/[^\s?#"\\]+)\?[^\s#"\\]*/gi, "$1?[redacted]")
    .replace(/(bearer\s+)[A-Za-z0-9._~+/=-]+/gi, "$1[redacted]")
    .replace(/\b(syt|mct|syr)_[A-Za-z0-9_]+/g, "[redacted]");
}
