/**
 * The one way to bound an outgoing call: `work` gets a signal that aborts after `ms` (reason: a
 * TimeoutError) or when `outer` aborts (its reason), and the timer and the listener on `outer` are removed
 * as soon as the work settles.
 *
 * Not `AbortSignal.any([outer, AbortSignal.timeout(ms)])`, for two reasons measured on Node 20: the timeout
 * signal inside `any` can be garbage-collected before it fires, so a hung request never times out
 * (nodejs/node#57736), and every `any` made from a long-lived signal (the step's, the daemon's) stays
 * referenced by it after it is done (nodejs/node#55351).
 */
export async function withTimeout<T>(
  ms: number,
  outer: AbortSignal | undefined,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException(`timed out after ${ms} ms`, "TimeoutError")),
    ms,
  );
  const unlink = follow(controller, outer);
  try {
    return await work(controller.signal);
  } finally {
    clearTimeout(timer);
    unlink();
  }
}

/**
 * Aborts `controller` when `outer` aborts, with its reason, until the returned function is called: what
 * `AbortSignal.any([controller.signal, outer])` would do, without `outer` keeping a reference after.
 */
export function follow(controller: AbortController, outer: AbortSignal | undefined): () => void {
  const forward = () => controller.abort(outer?.reason);
  if (outer?.aborted) forward();
  else outer?.addEventListener("abort", forward, { once: true });
  return () => outer?.removeEventListener("abort", forward);
}
