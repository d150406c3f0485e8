import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { silentLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { waitHealthy } from "../src/host/health.js";
import { createMatrixClient } from "../src/matrix/client.js";
import type { DeployEvent } from "../src/notify/events.js";
import { createNotifier, notifySchema } from "../src/notify/notifier.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";

/**
 * Each client under the one retry policy, against real servers on loopback: 503 then 200, 429 with its
 * advised delay, and a server that never answers (the per-attempt timeout and the total deadline).
 */

type Answer = { status: number; headers?: Record<string, string> } | "hang";

/** A server answering each request with the next of `answers` (then 200), recording when each came. */
async function scripted(answers: Answer[]) {
  const at: number[] = [];
  const hung: ServerResponse[] = [];
  const server = createServer((req, res) => {
    at.push(Date.now());
    req.resume();
    const next = answers.shift() ?? { status: 200 };
    if (next === "hang") {
      hung.push(res);
      return;
    }
    res.writeHead(next.status, next.headers);
    res.end();
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`,
    at,
    gaps: () => at.slice(1).map((t, i) => t - (at[i] ?? 0)),
    close: () =>
      new Promise<void>((done) => {
        for (const r of hung) r.destroy();
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

describe("Matrix client under the retry policy", () => {
  const ROOM = "!room:x";
  const TOKEN = "syt_retry_clients_token";
  let hs: MatrixTestServer;
  before(async () => {
    hs = await startMatrixServer({ roomId: ROOM, users: { [TOKEN]: { userId: "@a:x", powerLevel: 100 } } });
    hs.state.set("t/k", { v: 1 });
  });
  after(() => hs.close());
  const client = (o: Parameters<typeof createMatrixClient>[0] extends infer O ? Partial<O> : never = {}) =>
    createMatrixClient({ homeserver: hs.url, token: new Secret(TOKEN), ...o });

  it("503 then 200: retried after the backoff; an abort during the backoff ends the request at once", async () => {
    hs.failNext(1, 503);
    const n = hs.requests.length;
    assert.deepEqual(await client({ backoffMs: 50 }).getState(ROOM, "t", "k"), { v: 1 });
    assert.deepEqual(
      hs.requests.slice(n).map((r) => r.status),
      [503, 200],
    );
    const [first, second] = hs.requests.slice(n);
    assert.ok((second?.at ?? 0) - (first?.at ?? 0) >= 20, "waited the jittered backoff (25 to 50 ms)");

    hs.failNext(1, 503);
    const stop = new AbortController();
    const reason = new Error("step timed out");
    setTimeout(() => stop.abort(reason), 200);
    const t = Date.now();
    await assert.rejects(
      client({ backoffMs: 30_000, signal: stop.signal }).getState(ROOM, "t", "k"),
      (e) => e === reason,
    );
    assert.ok(
      Date.now() - t < 2000,
      `ended at the abort, not after the 15 to 30 s backoff: ${Date.now() - t} ms`,
    );

    const denied = hs.requests.length;
    await assert.rejects(
      createMatrixClient({ homeserver: hs.url, token: new Secret("syt_unknown") }).whoami(),
      (e: AgentError) => e.code === "MATRIX_AUTH",
    );
    assert.equal(hs.requests.length - denied, 1, "a 401 is stalled: never retried");
  });

  it("429 M_LIMIT_EXCEEDED: retried after retry_after_ms; beyond maxRetryAfterMs or the deadline, given up at once", async () => {
    hs.rateLimit(1, 250);
    const n = hs.requests.length;
    assert.deepEqual(await client().getState(ROOM, "t", "k"), { v: 1 });
    const [first, second] = hs.requests.slice(n);
    assert.equal(first?.status, 429);
    assert.ok((second?.at ?? 0) - (first?.at ?? 0) >= 245, "waited retry_after_ms as given");

    hs.rateLimit(1, 5000);
    const m = hs.requests.length;
    await assert.rejects(
      client({ maxRetryAfterMs: 1000 }).getState(ROOM, "t", "k"),
      (e: AgentError) =>
        e.code === "MATRIX_RATE_LIMITED" &&
        /rate limited for 5000 ms, longer than the 1000 ms/.test(e.message),
    );
    assert.equal(hs.requests.length - m, 1);

    hs.rateLimit(1, 800);
    const d = hs.requests.length;
    const t = Date.now();
    await assert.rejects(
      client({ deadlineMs: 500 }).getState(ROOM, "t", "k"),
      (e: AgentError) =>
        e.code === "MATRIX_UNAVAILABLE" &&
        /gave up after 1 attempt within 500 ms \(rate limited \(M_LIMIT_EXCEEDED, retry after 800 ms\)\)/.test(
          e.message,
        ),
    );
    assert.ok(Date.now() - t < 500, "no wait that ends after the deadline");
    assert.equal(hs.requests.length - d, 1);
    hs.rateLimit(0, 0);
  });

  it("a homeserver that never answers: each attempt times out, bounded by attempts and by the deadline", async () => {
    hs.hangNext(3);
    const n = hs.requests.length;
    await assert.rejects(
      client({ maxAttempts: 3, backoffMs: 10, requestTimeoutMs: 200 }).getState(ROOM, "t", "k"),
      (e: AgentError) =>
        e.code === "MATRIX_UNAVAILABLE" &&
        /gave up after 3 attempts \(timed out after 200 ms\)$/.test(e.message),
    );
    assert.equal(hs.requests.length - n, 3);

    hs.hangNext(5);
    const m = hs.requests.length;
    const t = Date.now();
    await assert.rejects(
      client({ maxAttempts: 5, backoffMs: 10, requestTimeoutMs: 400, deadlineMs: 500 }).getState(
        ROOM,
        "t",
        "k",
      ),
      (e: AgentError) =>
        e.code === "MATRIX_UNAVAILABLE" && /within 500 ms \(timed out after \d+ ms\)$/.test(e.message),
    );
    const took = Date.now() - t;
    assert.ok(took >= 490 && took < 1500, `ended at the 500 ms deadline: ${took} ms`);
    assert.equal(hs.requests.length - m, 2, "the second attempt got what was left of the deadline");
    hs.hangNext(0);
  });
});

describe("notifier under the retry policy", () => {
  const event: DeployEvent = {
    schema: "deploy-agent/event@1",
    event: "run.succeeded",
    host: "lxctest",
    revision: "a".repeat(40),
    at: new Date().toISOString(),
  };
  const notifier = (url: string, retry = {}) =>
    createNotifier({
      config: () => notifySchema.parse({ targets: [{ kind: "webhook", url, name: "hook" }] }),
      host: "lxctest",
      log: silentLogger(),
      retry,
      random: () => 0,
    });

  it("503 then 200: delivered on the second attempt after the backoff", async () => {
    const s = await scripted([{ status: 503 }]);
    try {
      const n = notifier(s.url, { backoffMs: 80 });
      n.publish(event);
      await n.drain(5000);
      assert.equal(s.at.length, 2);
      const [gap = 0] = s.gaps();
      assert.ok(gap >= 78 && gap < 450, `the policy's backoff, 80 ms: ${gap} ms`);
      assert.ok(n.status().targets.hook?.lastSuccessAt);
      assert.equal(n.status().targets.hook?.lastFailureAt, null);
    } finally {
      await s.close();
    }
  });

  it("429: retried after its Retry-After; one longer than maxRetryAfterMs is given up at once", async () => {
    const s = await scripted([{ status: 429, headers: { "retry-after": "1" } }]);
    try {
      const n = notifier(s.url, { backoffMs: 10 });
      n.publish(event);
      await n.drain(5000);
      assert.equal(s.at.length, 2);
      const [gap = 0] = s.gaps();
      assert.ok(gap >= 990, `waited the advised second, not the backoff: ${gap} ms`);
      assert.ok(n.status().targets.hook?.lastSuccessAt);
    } finally {
      await s.close();
    }
    const long = await scripted([{ status: 429, headers: { "retry-after": "3600" } }]);
    try {
      const n = notifier(long.url);
      n.publish(event);
      await n.drain(5000);
      assert.equal(long.at.length, 1);
      assert.equal(n.status().targets.hook?.lastError, "HTTP 429");
    } finally {
      await long.close();
    }
  });

  it("a target that never answers: each attempt times out after attemptTimeoutMs, then it is given up", async () => {
    const s = await scripted(["hang", "hang"]);
    try {
      const n = notifier(s.url, { attempts: 2, backoffMs: 10, attemptTimeoutMs: 200 });
      const t = Date.now();
      n.publish(event);
      await n.drain(5000);
      const took = Date.now() - t;
      assert.equal(s.at.length, 2);
      assert.ok(took < 1500, `two 200 ms attempts, not the 10 s default: ${took} ms`);
      assert.equal(n.status().targets.hook?.lastError, "timed out after 200 ms");
    } finally {
      await s.close();
    }
  });
});

describe("health probe under the retry policy", () => {
  it("503 then 200 is polled again after the interval; a 429 after its Retry-After", async () => {
    const s = await scripted([{ status: 503 }, { status: 429, headers: { "retry-after": "1" } }]);
    try {
      assert.deepEqual(await waitHealthy(s.url, { timeoutMs: 5000, intervalMs: 100 }), {
        healthy: true,
        last: "HTTP 200",
      });
      const [afterUnavailable = 0, afterLimited = 0] = s.gaps();
      assert.ok(afterUnavailable >= 98 && afterUnavailable < 900, `the interval: ${afterUnavailable} ms`);
      assert.ok(afterLimited >= 990, `the advised second: ${afterLimited} ms`);
    } finally {
      await s.close();
    }
  });

  it("a service that never answers: no attempt runs past the deadline", async () => {
    const s = await scripted(["hang", "hang", "hang"]);
    try {
      const t = Date.now();
      const res = await waitHealthy(s.url, { timeoutMs: 600, intervalMs: 1000 });
      const took = Date.now() - t;
      assert.deepEqual(res, { healthy: false, last: "timed out after 600 ms" });
      assert.ok(took < 1500, `ended at the 600 ms deadline, not the 2 s attempt timeout: ${took} ms`);
      assert.equal(s.at.length, 1);
    } finally {
      await s.close();
    }
  });
});
