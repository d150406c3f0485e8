/**
 * Why a fetch() failed, in a few words: undici hides the reason in `cause` (ECONNREFUSED, ENOTFOUND,
 * "bad port"), and a timeout shows only as the error's name.
 */
export function fetchFailure(err: unknown, timeoutMs?: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === "TimeoutError") return timeoutMs ? `timed out after ${timeoutMs} ms` : "timed out";
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
