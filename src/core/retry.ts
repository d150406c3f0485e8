import { setTimeout as sleep } from "node:timers/promises";
import { AgentError, asAgentError, type ErrorCode } from "./errors.js";
import { withTimeout } from "./with-timeout.js";

/**
 * The one retry policy every client uses (Matrix, notifier, health probe). The error's failure class from the
 * code table decides, never the call site: stalled is thrown at once; waiting is retried as-is after the
 * delay the server advised; transient is retried after an exponential backoff with jitter. Each attempt has
 * its own timeout, the whole call a deadline, and one abort signal ends an attempt or a wait at once (no
 * timer is left behind).
 */

export interface RetryPolicy {
  /** Attempts in all, the first included (Infinity: until the deadline). */
  attempts: number;
  /** The first backoff wait after a transient failure. */
  backoffMs: number;
  /** Each further wait is this many times the one before (1: a fixed interval). */
  factor: number;
  /** No backoff wait is longer. */
  maxBackoffMs: number;
  /** Each backoff wait is shortened by up to this fraction, at random (0: none), so clients spread out. */
  jitter: number;
  /** An attempt not settled by then is aborted and counts as a transient failure. */
  attemptTimeoutMs: number;
  /** The longest server-advised wait honoured; a longer one ends the call at once rather than stall it. */
  maxRetryAfterMs: number;
  /** The whole call, attempts and waits together: no attempt runs past it and no wait ends after it. */
  deadlineMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = {
  attempts: 3,
  backoffMs: 500,
  factor: 2,
  maxBackoffMs: 60_000,
  jitter: 0.5,
  attemptTimeoutMs: 10_000,
  maxRetryAfterMs: 60_000,
  deadlineMs: 120_000,
};

/** A failure that says when to try again (HTTP 429's Retry-After, Matrix's retry_after_ms). */
export class RetryAfterError extends AgentError {
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, retryAfterMs: number | undefined) {
    super(code, message);
    this.retryAfterMs = retryAfterMs;
  }
}

/** Why a call stopped retrying: out of attempts, out of time, or told to wait longer than it may. */
export interface GiveUp {
  last: AgentError;
  attempts: number;
  reason: "attempts" | "deadline" | "retry-after";
  elapsedMs: number;
}

export interface RetryOptions {
  policy?: Partial<RetryPolicy> | undefined;
  /** Ends the attempt or the wait in progress; the call rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
  /** A number in [0, 1) per backoff wait, for the jitter (tests pass a seeded one). */
  random?: (() => number) | undefined;
  /** The error the call fails with when it stops retrying; by default the last attempt's. */
  giveUp?: ((g: GiveUp) => AgentError) | undefined;
  /** Before each wait: what failed and how long the call waits. */
  onRetry?: ((e: AgentError, attempt: number, waitMs: number) => void) | undefined;
}

export interface Attempt {
  signal: AbortSignal;
  /** 1 for the first. */
  attempt: number;
  /** This attempt's timeout (the policy's, or less when the deadline is nearer). */
  timeoutMs: number;
}

/** The backoff wait after the nth failed attempt, before jitter. */
export function backoffMs(p: RetryPolicy, n: number): number {
  return Math.min(p.maxBackoffMs, p.backoffMs * p.factor ** (n - 1));
}

/**
 * Runs `attempt` until it succeeds or the policy stops it. Anything thrown that is not an AgentError is a
 * bug (INTERNAL, stalled) and is not retried.
 */
export async function retry<T>(attempt: (a: Attempt) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const p: RetryPolicy = { ...DEFAULT_RETRY, ...opts.policy };
  const { signal } = opts;
  const random = opts.random ?? Math.random;
  const started = Date.now();
  const deadline = started + p.deadlineMs;
  const stop = (last: AgentError, attempts: number, reason: GiveUp["reason"]) =>
    (opts.giveUp ?? ((g: GiveUp) => g.last))({ last, attempts, reason, elapsedMs: Date.now() - started });

  for (let n = 1; ; n++) {
    signal?.throwIfAborted();
    const timeoutMs = Math.max(1, Math.min(p.attemptTimeoutMs, deadline - Date.now()));
    let last: AgentError;
    try {
      return await withTimeout(timeoutMs, signal, (s) => attempt({ signal: s, attempt: n, timeoutMs }));
    } catch (err) {
      signal?.throwIfAborted();
      last = asAgentError(err);
    }
    if (last.failure === "stalled") throw last;
    const advised =
      last.failure === "waiting" && last instanceof RetryAfterError ? last.retryAfterMs : undefined;
    if (advised !== undefined && advised > p.maxRetryAfterMs) throw stop(last, n, "retry-after");
    if (n >= p.attempts) throw stop(last, n, "attempts");
    const wait = advised ?? Math.round(backoffMs(p, n) * (1 - p.jitter * random()));
    if (Date.now() + wait > deadline) throw stop(last, n, "deadline");
    opts.onRetry?.(last, n, wait);
    // The promise timer is cleared when the signal aborts: nothing is left to keep the process alive.
    await sleep(wait, undefined, { signal }).catch(() => signal?.throwIfAborted());
  }
}

/** Retry-After (RFC 9110): delay-seconds or an HTTP-date, in ms from now; undefined when absent or unreadable. */
export function retryAfterHeader(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) || !/[a-z]/i.test(text) ? undefined : Math.max(0, at - now);
}

/**
 * How long a 429 asks to wait: Matrix's `retry_after_ms` (an integer, tolerated as a numeric string), else
 * the Retry-After header; undefined when neither says.
 */
export function rateLimitWaitMs(retryAfterMs: unknown, header: string | null): number | undefined {
  const ms =
    typeof retryAfterMs === "number" || (typeof retryAfterMs === "string" && /^\d+$/.test(retryAfterMs))
      ? Number(retryAfterMs)
      : Number.NaN;
  return Number.isFinite(ms) && ms >= 0 ? ms : retryAfterHeader(header);
}
