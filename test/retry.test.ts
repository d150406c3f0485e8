import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { getEventListeners } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { AgentError } from "../src/core/errors.js";
import {
  backoffMs,
  DEFAULT_RETRY,
  type GiveUp,
  RetryAfterError,
  retry,
  retryAfterHeader,
} from "../src/core/retry.js";
import { withTimeout } from "../src/core/with-timeout.js";
import { PROJECT } from "./helpers/agent.js";
import { seededRandom } from "./helpers/seeded.js";

/** The retry policy on its own: each bound reached exactly, the classes, abort and the timers it leaves. */

const transient = () => new AgentError("HTTP_UNAVAILABLE", "HTTP 503");
const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

/** An attempt function that fails with each of `errors` in turn (then succeeds), recording when it ran. */
function scripted(errors: AgentError[]) {
  const at: number[] = [];
  const fn = async () => {
    at.push(Date.now());
    const e = errors.shift();
    if (e) throw e;
    return "done";
  };
  return { fn, at };
}

describe("retry policy", () => {
  it("transient: exactly `attempts` attempts, exponential backoff with seeded jitter, then the last error", async () => {
    const seeded = seededRandom("RETRY_JITTER_SEED");
    const draws: number[] = [];
    const random = () => {
      const r = seeded();
      draws.push(r);
      return r;
    };
    const { fn, at } = scripted(Array.from({ length: 10 }, transient));
    const waits: number[] = [];
    let gaveUp: GiveUp | undefined;
    const policy = { attempts: 4, backoffMs: 40, factor: 2, jitter: 0.5 };
    await assert.rejects(
      retry(fn, {
        policy,
        random,
        onRetry: (_e, _n, ms) => waits.push(ms),
        giveUp: (g) => {
          gaveUp = g;
          return new AgentError("MATRIX_UNAVAILABLE", `gave up after ${g.attempts}`);
        },
      }),
      /^AgentError: gave up after 4$/,
    );
    assert.equal(at.length, 4, "exactly the bound");
    assert.equal(gaveUp?.reason, "attempts");
    assert.equal(gaveUp?.last.message, "HTTP 503");
    assert.equal(waits.length, 3, "no wait after the last attempt");
    waits.forEach((ms, i) => {
      const base = 40 * 2 ** i;
      assert.ok(ms >= base / 2 && ms <= base, `wait ${ms} within [${base / 2}, ${base}]`);
      // The draws alone decide the waits: the printed seed replays them.
      assert.equal(ms, Math.round(base * (1 - 0.5 * (draws[i] ?? Number.NaN))));
      assert.ok((at[i + 1] ?? 0) - (at[i] ?? 0) >= ms - 2, "waited before the next attempt");
    });
  });

  it("the backoff doubles up to maxBackoffMs and no further; the defaults are the documented ones", () => {
    const p = { ...DEFAULT_RETRY, backoffMs: 500, maxBackoffMs: 3000 };
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((n) => backoffMs(p, n)),
      [500, 1000, 2000, 3000, 3000],
    );
    assert.deepEqual(DEFAULT_RETRY, {
      attempts: 3,
      backoffMs: 500,
      factor: 2,
      maxBackoffMs: 60_000,
      jitter: 0.5,
      attemptTimeoutMs: 10_000,
      maxRetryAfterMs: 60_000,
      deadlineMs: 120_000,
    });
  });

  it("stalled errors are thrown at once as they are, never retried; a non-AgentError is INTERNAL", async () => {
    const refused = new AgentError("HTTP_REFUSED", "HTTP 400");
    const { fn, at } = scripted([refused]);
    let called = false;
    const mark = () => {
      called = true;
      return transient();
    };
    await assert.rejects(
      retry(fn, { policy: { attempts: 5 }, giveUp: mark, onRetry: mark }),
      (e) => e === refused,
    );
    assert.equal(at.length, 1);
    assert.equal(called, false, "neither a retry nor a give-up");
    let calls = 0;
    await assert.rejects(
      retry(
        async () => {
          calls++;
          throw new TypeError("a bug");
        },
        { policy: { attempts: 5 } },
      ),
      (e: AgentError) => e.code === "INTERNAL" && e.message === "a bug",
    );
    assert.equal(calls, 1);
  });

  it("the total deadline: no wait ends after it, and no attempt runs past it", async () => {
    const { fn, at } = scripted(Array.from({ length: 100 }, transient));
    let gaveUp: GiveUp | undefined;
    const t = Date.now();
    await assert.rejects(
      retry(fn, {
        policy: { attempts: Number.POSITIVE_INFINITY, backoffMs: 100, factor: 1, jitter: 0, deadlineMs: 350 },
        giveUp: (g) => {
          gaveUp = g;
          return g.last;
        },
      }),
      /HTTP 503/,
    );
    assert.equal(gaveUp?.reason, "deadline");
    assert.equal(at.length, 4, "attempts at 0, 100, 200 and 300 ms; the next would start after 350");
    assert.ok(Date.now() - t < 350, `gave up before the deadline: ${Date.now() - t} ms`);

    // A hanging attempt gets the time left, not the whole attemptTimeoutMs.
    const given: number[] = [];
    const t2 = Date.now();
    await assert.rejects(
      retry(
        ({ signal, timeoutMs }) => {
          given.push(timeoutMs);
          return new Promise((_, reject) =>
            signal.addEventListener("abort", () =>
              reject(new AgentError("HTTP_UNAVAILABLE", (signal.reason as Error).message)),
            ),
          );
        },
        { policy: { attempts: 5, attemptTimeoutMs: 10_000, deadlineMs: 300 } },
      ),
      /timed out after 300 ms/,
    );
    assert.deepEqual(given, [300]);
    const took = Date.now() - t2;
    assert.ok(took >= 290 && took < 1500, `ended at the deadline: ${took} ms`);
  });

  it("waiting: retried as-is after the advised delay (no jitter, no doubling); none advised: the backoff", async () => {
    const limited = (ms: number | undefined) => new RetryAfterError("HTTP_RATE_LIMITED", "HTTP 429", ms);
    const { fn, at } = scripted([limited(120), limited(120), limited(undefined)]);
    const waits: number[] = [];
    assert.equal(
      await retry(fn, {
        policy: { attempts: 4, backoffMs: 30, jitter: 0.5 },
        random: () => 0.99,
        onRetry: (_e, _n, ms) => waits.push(ms),
      }),
      "done",
    );
    assert.deepEqual(waits, [120, 120, Math.round(30 * 2 ** 2 * (1 - 0.5 * 0.99))]);
    assert.ok((at[1] ?? 0) - (at[0] ?? 0) >= 118 && (at[2] ?? 0) - (at[1] ?? 0) >= 118);
  });

  it("an advised delay is capped: longer than maxRetryAfterMs ends the call at once", async () => {
    const { fn, at } = scripted([new RetryAfterError("HTTP_RATE_LIMITED", "HTTP 429", 5000)]);
    let gaveUp: GiveUp | undefined;
    const t = Date.now();
    await assert.rejects(
      retry(fn, {
        policy: { attempts: 5, maxRetryAfterMs: 4999 },
        giveUp: (g) => {
          gaveUp = g;
          return g.last;
        },
      }),
      /HTTP 429/,
    );
    assert.equal(at.length, 1);
    assert.equal(gaveUp?.reason, "retry-after");
    assert.ok(Date.now() - t < 1000);
    // At the cap itself it is honoured.
    const exact = scripted([new RetryAfterError("HTTP_RATE_LIMITED", "HTTP 429", 150)]);
    assert.equal(await retry(exact.fn, { policy: { maxRetryAfterMs: 150 } }), "done");
    assert.ok((exact.at[1] ?? 0) - (exact.at[0] ?? 0) >= 148);
  });

  it("abort during a backoff wait: rejects at once with the signal's reason and leaves no timer", async () => {
    const stop = new AbortController();
    const before = timers();
    const t = Date.now();
    const call = retry(
      async () => {
        setImmediate(() => stop.abort(new AgentError("ABORTED", "stopping")));
        throw transient();
      },
      { policy: { attempts: 5, backoffMs: 60_000, jitter: 0 }, signal: stop.signal },
    );
    await assert.rejects(call, (e: AgentError) => e.code === "ABORTED" && e.message === "stopping");
    assert.ok(Date.now() - t < 1000, `returned promptly: ${Date.now() - t} ms`);
    assert.equal(timers(), before, "the backoff's timer was cleared");
  });

  it("abort in a short-lived process: the call returns at once and the process exits, no timer keeps it", async () => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(PROJECT, "test/helpers/retry-abort-child.ts")],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let printedAt = 0;
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      printedAt ||= Date.now();
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const code = await new Promise<number | null>((done) => child.on("exit", (c) => done(c)));
    clearTimeout(killer);
    const exitedAfter = Date.now() - printedAt;
    assert.equal(code, 0, "exited on its own");
    const res = JSON.parse(out) as { ms: number; code: string };
    assert.equal(res.code, "ABORTED");
    assert.ok(res.ms < 1000, `the call rejected ${res.ms} ms after it began (abort at 50 ms)`);
    assert.ok(
      exitedAfter < 2000,
      `the process exited ${exitedAfter} ms after the call (the backoff was 60 s)`,
    );
  });

  it("abort during an attempt: the attempt's signal aborts with the same reason", async () => {
    const stop = new AbortController();
    const reason = new AgentError("STEP_TIMEOUT", "step timed out");
    setTimeout(() => stop.abort(reason), 30);
    let seen: unknown;
    await assert.rejects(
      retry(
        ({ signal }) =>
          new Promise((_, reject) =>
            signal.addEventListener("abort", () => {
              seen = signal.reason;
              reject(transient());
            }),
          ),
        { policy: { attempts: 5, attemptTimeoutMs: 10_000 }, signal: stop.signal },
      ),
      (e) => e === reason,
    );
    assert.equal(seen, reason);
    await assert.rejects(
      retry(async () => "never", { signal: stop.signal }),
      (e) => e === reason,
      "an aborted signal: no attempt",
    );
  });

  it("Retry-After: delay-seconds or an HTTP-date; anything else is no advice", () => {
    const now = Date.parse("2026-12-06T07:00:00Z");
    assert.equal(retryAfterHeader("120", now), 120_000);
    assert.equal(retryAfterHeader(" 0 ", now), 0);
    assert.equal(retryAfterHeader("Sun, 06 Dec 2026 07:00:30 GMT", now), 30_000);
    assert.equal(retryAfterHeader("Sun, 06 Dec 2026 06:00:00 GMT", now), 0, "a date past: now");
    for (const bad of [null, "", "-1", "1.5", "soon", "12abc"])
      assert.equal(retryAfterHeader(bad, now), undefined, String(bad));
  });
});

describe("withTimeout", () => {
  it("leaves no listener on a long-lived signal and no timer behind", async () => {
    const daemon = new AbortController();
    const before = timers();
    for (let i = 0; i < 1000; i++) await withTimeout(60_000, daemon.signal, async () => i);
    assert.equal(getEventListeners(daemon.signal, "abort").length, 0);
    assert.equal(timers(), before);
  });

  it("times out a hung request even while the garbage collector runs (AbortSignal.any with .timeout does not)", {
    timeout: 20_000,
  }, async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const server = createServer(() => {}); // never answers
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const collecting = setInterval(gc, 20);
    try {
      const daemon = new AbortController();
      for (let i = 0; i < 3; i++) {
        const t = Date.now();
        await assert.rejects(
          withTimeout(200, daemon.signal, (signal) => fetch(url, { signal })),
          (e: Error) => e.name === "TimeoutError" && e.message === "timed out after 200 ms",
        );
        assert.ok(Date.now() - t < 1500, `timed out after ${Date.now() - t} ms`);
      }
    } finally {
      clearInterval(collecting);
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});
