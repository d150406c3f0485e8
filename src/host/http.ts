import { withTimeout } from "../core/with-timeout.js";
import type { EffectRecorder } from "./effects.js";
import { httpRequest } from "./http-client.js";

/**
 * One HTTP request that acts on the host's services (a signed test delivery, say), through the host layer:
 * recorded, and in a dry run only recorded. Reads that decide a plan are not requests of this kind.
 */
export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Buffer;
  /** The whole request, answer included. */
  timeoutMs: number;
  /** What the report says about it. */
  detail?: string;
}

/** The answer's status; null when the request was only recorded (dry run), as a command's `ran: false`. */
export type HttpSender = (request: HttpRequest) => Promise<{ status: number } | null>;

export function createHttpSender(opts: {
  dryRun: boolean;
  record: EffectRecorder;
  signal: AbortSignal;
}): HttpSender {
  return async (req) => {
    opts.record({ type: "request", method: req.method, url: req.url, detail: req.detail });
    if (opts.dryRun) return null;
    return withTimeout(req.timeoutMs, opts.signal, async (signal) => {
      const res = await httpRequest(req.url, {
        method: req.method,
        ...(req.headers ? { headers: req.headers } : {}),
        ...(req.body ? { body: req.body } : {}),
        signal,
        readBody: false,
      });
      return { status: res.status };
    });
  };
}
