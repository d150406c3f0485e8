import http from "node:http";
import { createRequire } from "node:module";

/**
 * The daemon's own HTTP requests (Matrix, a job's metrics scrape, health probes, notices, a step's requests), on
 * node:http. Node's fetch()
 * loads undici, whose code and llhttp WebAssembly stay for the life of the process: 10-12 MiB of resident
 * memory once a request has been made, against 2 MiB for node:http (which the listener has loaded anyway).
 * Redirects are never followed; an abort rejects with the signal's reason, as fetch() does.
 */
export interface HttpAnswer {
  status: number;
  ok: boolean;
  header(name: string): string | undefined;
  /** The body as UTF-8. */
  text: string;
}

export interface HttpRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
  /**
   * false: answer with the status and headers only, and close the connection without reading the body; a
   * function: read the body only for the statuses it says yes to.
   */
  readBody?: boolean | ((status: number) => boolean);
  /** When given, the body is refused past this many bytes: the request rejects with onTooLarge's error. */
  maxBytes?: number;
  onTooLarge?: (maxBytes: number) => Error;
}

function answer(res: http.IncomingMessage, text: string): HttpAnswer {
  const status = res.statusCode ?? 0;
  return {
    status,
    ok: status >= 200 && status < 300,
    header: (name) => {
      const v = res.headers[name.toLowerCase()];
      return Array.isArray(v) ? v.join(", ") : v;
    },
    text,
  };
}

// node:https (and TLS with it) is loaded on the first https URL: a host whose requests all stay on plain HTTP
// (a homeserver on the LAN, loopback) does not carry it.
const requireLazily = createRequire(import.meta.url);
let https: typeof import("node:https") | undefined;
function httpsModule(): typeof import("node:https") {
  https ??= requireLazily("node:https") as typeof import("node:https");
  return https;
}

export function httpRequest(url: string, init: HttpRequestInit): Promise<HttpAnswer> {
  const signal = init.signal;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === "https:" ? httpsModule() : http;
    const headers = {
      ...init.headers,
      ...(init.body !== undefined ? { "content-length": String(Buffer.byteLength(init.body)) } : {}),
    };
    const req = client.request(target, { method: init.method ?? "GET", headers });
    const fail = (err: unknown) => {
      signal?.removeEventListener("abort", onAbort);
      req.destroy();
      reject(err);
    };
    const onAbort = () => fail(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err) => fail(signal?.aborted ? signal.reason : err));
    req.on("response", (res) => {
      const read =
        typeof init.readBody === "function" ? init.readBody(res.statusCode ?? 0) : init.readBody !== false;
      if (!read) {
        signal?.removeEventListener("abort", onAbort);
        res.destroy();
        resolve(answer(res, ""));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        const max = init.maxBytes;
        if (max !== undefined && size > max)
          fail(init.onTooLarge?.(max) ?? new Error(`larger than ${max} bytes`));
        else chunks.push(chunk);
      });
      res.on("error", (err) => fail(signal?.aborted ? signal.reason : err));
      res.on("end", () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(answer(res, Buffer.concat(chunks).toString("utf8")));
      });
    });
    req.end(init.body);
  });
}
