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
