/**
 * Why a fetch() or an httpRequest() failed, in a few words: undici hides the reason in `cause` (ECONNREFUSED, ENOTFOUND,
 * "bad port"), and a timeout shows only as the error's name.
 */
export function fetchFailure(err: unknown, timeoutMs?: number): string {
  const e = err as {
    name?: string;
    message?: string;
    code?: unknown;
    cause?: { code?: string; message?: string };
  };
  if (e.name === "TimeoutError") return timeoutMs ? `timed out after ${timeoutMs} ms` : "timed out";
  // node:http (host/http-client.ts) puts the code on the error itself.
  if (typeof e.code === "string" && /^E[A-Z]+$/.test(e.code)) return e.code;
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
