import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyInstance } from "fastify";
import { createLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { loadManifest } from "../src/manifest/load.js";
import { type Agent, createAgent } from "../src/server/agent.js";
import { buildServer } from "../src/server/app.js";
import { sign } from "../src/server/verify.js";
import { readState } from "../src/state/read-state.js";
import { writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { FIXTURE_SECRET, giteaFixture, giteaHeaders, pushBody } from "./helpers/gitea.js";

const SECRET = "whsec-recognisable-Secret-value-42";

interface Daemon {
  url: string;
  app: FastifyInstance;
  agent: Agent;
  root: string;
  stateDir: string;
  logs: string[];
  post(
    body: Buffer | string,
    headers: Record<string, string>,
  ): Promise<{ status: number; json: Record<string, unknown>; text: string }>;
}

let fx: Fixture;
let daemon: Daemon;

async function startDaemon(
  webhook: Record<string, unknown> = {},
  secret = SECRET,
  dryRun = false,
): Promise<Daemon> {
  const manifestFile = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0, ...webhook },
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        reload: [["sh", "-c", 'sleep "${SLOW_SECONDS:-0}"']],
      },
    ],
  });
  const { manifest } = await loadManifest(manifestFile, { processEnv: {} });
  const root = path.join(fx.dir, "root");
  const stateDir = path.join(fx.dir, "state");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
  const logs: string[] = [];
  const log = createLogger({ level: "debug", fd: 1, stream: { write: (line: string) => logs.push(line) } });
  const agent = createAgent({
    manifest,
    repoDir: fx.clone,
    stateDir,
    root,
    dryRun,
    log,
    retryDelayMs: 100,
  });
  const app = buildServer({ manifest, secret: new Secret(secret), agent, log });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  const post = async (body: Buffer | string, headers: Record<string, string>) => {
    const res = await fetch(`${url}/hooks/deploy`, {
      method: "POST",
      headers,
      body: new Uint8Array(Buffer.from(body)),
    });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, json, text };
  };
  return { url, app, agent, root, stateDir, logs, post };
}

const page = () => readFileSync(path.join(daemon.root, "var/www/index.html"), "utf8");
const head = () => git(fx.pusher, "rev-parse", "HEAD");

beforeEach(async () => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  daemon = await startDaemon();
});
afterEach(async () => {
  delete process.env.SLOW_SECONDS;
  await daemon.app.close();
  await daemon.agent.close();
  fx.cleanup();
});

describe("webhook daemon", () => {
  it("a signed push deploys the new commit; the 202 comes before the deploy", async () => {
    const rev = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const body = pushBody({ after: rev });
    const res = await daemon.post(body, giteaHeaders(body, SECRET, "push", "delivery-1"));
    assert.equal(res.status, 202);
    assert.deepEqual(res.json, { queued: true, delivery: "delivery-1", after: rev });
    await daemon.agent.runner.idle();
    assert.equal(page(), "<p>v2</p>\n");
    const { state } = await readState(daemon.stateDir, "lxctest");
    assert.equal(state.steps.landing?.lastAppliedRevision, rev);
  });

  it("accepts Gitea's real fixture bytes with the fixture signature, and rejects them re-serialized", async () => {
    await daemon.app.close();
    await daemon.agent.close();
    daemon = await startDaemon({}, FIXTURE_SECRET);
    const body = giteaFixture("push-main.json");
    const headers = giteaHeaders(body, FIXTURE_SECRET, "push", "6d1f5e3a-1c0b-4b1e-9a8e-0f4c2b7d9e11");
    assert.equal(
      headers["x-gitea-signature"],
      "2e07779b772b9e1d327603e67c8fc0b8ddf24536fa27da254dade8d10690ab91",
    );
    assert.equal((await daemon.post(body, headers)).status, 202);
    const reserialized = JSON.stringify(JSON.parse(body.toString("utf8")), null, 2);
    const res = await daemon.post(reserialized, headers);
    assert.equal(res.status, 401);
    assert.equal(res.text.includes("refs/heads/main"), false, "no body echo");
  });

  it("answers every rejection with the exact status and queues nothing", async () => {
    const body = pushBody({ after: head() });
    const good = giteaHeaders(body, SECRET);
    const sig = good["x-gitea-signature"] ?? "";
    const without = (...names: string[]) =>
      Object.fromEntries(Object.entries(good).filter(([k]) => !names.includes(k)));
    const cases: [string, Buffer | string, Record<string, string>, number][] = [
      [
        "no signature headers",
        body,
        without("x-gitea-signature", "x-gogs-signature", "x-hub-signature-256"),
        401,
      ],
      ["wrong secret", body, giteaHeaders(body, "not-the-secret"), 401],
      ["empty signature (hook without secret)", body, giteaHeaders(body, ""), 401],
      ["upper-case hex", body, { ...good, "x-gitea-signature": sig.toUpperCase() }, 401],
      ["sha256= prefix on X-Gitea-Signature", body, { ...good, "x-gitea-signature": `sha256=${sig}` }, 401],
      ["truncated hex", body, { ...good, "x-gitea-signature": sig.slice(0, 63) }, 401],
      ["changed body", Buffer.concat([body, Buffer.from(" ")]), good, 401],
      ["text/plain", body, { ...good, "content-type": "text/plain" }, 415],
      [
        "body over the limit",
        Buffer.alloc(1024 * 1024 + 1, 0x20),
        giteaHeaders(Buffer.alloc(1024 * 1024 + 1, 0x20), SECRET),
        413,
      ],
      [
        "malformed JSON, correctly signed",
        "{ not json",
        giteaHeaders(Buffer.from("{ not json"), SECRET),
        400,
      ],
      ["JSON that is not a push", "[1,2]", giteaHeaders(Buffer.from("[1,2]"), SECRET), 400],
    ];
    const before = daemon.agent.runner.state().started.deploy ?? 0;
    for (const [name, b, h, status] of cases) {
      const res = await daemon.post(b, h);
      assert.equal(res.status, status, name);
    }
    assert.equal((await fetch(`${daemon.url}/hooks/deploy`)).status, 405);
    assert.equal((await fetch(`${daemon.url}/hooks/other`, { method: "POST" })).status, 404);
    assert.equal(daemon.agent.runner.state().started.deploy ?? 0, before, "nothing queued");
  });

  it("verifies X-Hub-Signature-256 alone, and form-encoded bodies over the JSON Gitea signed", async () => {
    const body = pushBody({ after: head() });
    const hubOnly = Object.fromEntries(
      Object.entries(giteaHeaders(body, SECRET)).filter(
        ([k]) => !["x-gitea-signature", "x-gogs-signature"].includes(k),
      ),
    );
    assert.equal((await daemon.post(body, hubOnly)).status, 202);
    const form = `payload=${encodeURIComponent(body.toString("utf8"))}`;
    const formHeaders = {
      ...giteaHeaders(body, SECRET),
      "content-type": "application/x-www-form-urlencoded",
    };
    assert.equal((await daemon.post(form, formHeaders)).status, 202);
    const signedOverForm = {
      ...formHeaders,
      "x-gitea-signature": sign(SECRET, form),
      "x-hub-signature-256": `sha256=${sign(SECRET, form)}`,
    };
    assert.equal((await daemon.post(form, signedOverForm)).status, 401);
  });

  it("ignores other events, branches, tags and branch deletions with 202 and a reason", async () => {
    const rev = head();
    const cases: [Buffer, string, RegExp][] = [
      [pushBody({ after: rev }), "delete", /event delete is not a push/],
      [pushBody({ after: rev }), "create", /event create is not a push/],
      [
        pushBody({ ref: "refs/heads/feature/x", after: rev }),
        "push",
        /ref refs\/heads\/feature\/x is not refs\/heads\/main/,
      ],
      [pushBody({ ref: "refs/tags/v1.4.0", after: rev }), "push", /tag v1\.4\.0/],
      [pushBody({ after: "0".repeat(40), before: rev }), "push", /refs\/heads\/main was deleted/],
      [giteaFixture("push-other-branch.json"), "push", /is not refs\/heads\/main/],
      [giteaFixture("push-tag.json"), "push", /tag v1\.4\.0/],
    ];
    const before = daemon.agent.runner.state().started.deploy ?? 0;
    for (const [body, event, why] of cases) {
      const res = await daemon.post(body, giteaHeaders(body, SECRET, event));
      assert.equal(res.status, 202);
      assert.match(String(res.json.ignored), why);
    }
    assert.equal(daemon.agent.runner.state().started.deploy ?? 0, before);
  });

  it("cuts a delivery id at 128 characters: ids that differ only past it are one delivery", async () => {
    await daemon.agent.runner.idle();
    const body = pushBody({ after: head() });
    const long = (tail: string) => giteaHeaders(body, SECRET, "push", `${"d".repeat(128)}${tail}`);
    const first = await daemon.post(body, long("-one"));
    assert.equal((first.json as { delivery: string }).delivery, "d".repeat(128));
    await daemon.agent.runner.idle();
    const second = await daemon.post(body, long("-two"));
    assert.equal((second.json as { duplicate?: boolean }).duplicate, true);
  });

  it("acknowledges a duplicate delivery id without running again; a replay with a new id runs", async () => {
    await daemon.agent.runner.idle();
    const body = pushBody({ after: head() });
    const headers = giteaHeaders(body, SECRET, "push", "same-id");
    const first = daemon.agent.runner.state().started.deploy ?? 0;
    assert.equal((await daemon.post(body, headers)).status, 202);
    await daemon.agent.runner.idle();
    const dup = await daemon.post(body, headers);
    assert.deepEqual(dup.json, { duplicate: true, delivery: "same-id" });
    await daemon.agent.runner.idle();
    assert.equal(daemon.agent.runner.state().started.deploy ?? 0, first + 1);
    await daemon.post(body, giteaHeaders(body, SECRET, "push", "replayed-new-id"));
    await daemon.agent.runner.idle();
    assert.equal(daemon.agent.runner.state().started.deploy ?? 0, first + 2);
  });

  it("coalesces a burst of 200 concurrent pushes during a slow deploy into a bounded number of runs", async () => {
    await daemon.agent.runner.idle();
    // 200 connections at once: above the default cap of 64, which the abuse suite covers.
    await daemon.app.close();
    await daemon.agent.close();
    daemon = await startDaemon({ limits: { maxConnections: 256 } });
    process.env.SLOW_SECONDS = "1";
    let last = "";
    for (let i = 0; i < 3; i++) last = fx.push({ "landing/index.html": `<p>burst ${i}</p>\n` });
    const started = daemon.agent.runner.state().started.deploy ?? 0;
    const bodies = Array.from({ length: 200 }, () => pushBody({ after: last }));
    const results = await Promise.all(bodies.map((b) => daemon.post(b, giteaHeaders(b, SECRET))));
    assert.ok(results.every((r) => r.status === 202));
    const during = await (await fetch(`${daemon.url}/metrics`)).text();
    assert.match(during, /deploy_agent_queue_depth\{host="lxctest"\} 2/, "one run in progress, one pending");
    await daemon.agent.runner.idle();
    const runs = (daemon.agent.runner.state().started.deploy ?? 0) - started;
    assert.ok(runs >= 1 && runs <= 2, `200 pushes made ${runs} runs`);
    assert.equal(daemon.logs.join("").includes("index.lock"), false, "no git lock errors");
    assert.equal(page(), "<p>burst 2</p>\n");
    const { state } = await readState(daemon.stateDir, "lxctest");
    assert.equal(state.steps.landing?.lastAppliedRevision, last);
  });

  it("catches up at start-up with pushes made while it was down", async () => {
    await daemon.agent.runner.idle();
    await daemon.app.close();
    await daemon.agent.close();
    const rev = fx.push({ "landing/index.html": "<p>missed</p>\n" });
    daemon = await startDaemon();
    daemon.agent.start();
    await sleep(50);
    await daemon.agent.runner.idle();
    assert.equal(page(), "<p>missed</p>\n");
    assert.equal((await readState(daemon.stateDir, "lxctest")).state.steps.landing?.lastAppliedRevision, rev);
  });

  it("reports /healthz, /status and Prometheus /metrics without secrets", async () => {
    daemon.agent.start();
    await sleep(50);
    await daemon.agent.runner.idle();
    await daemon.post("x", { "content-type": "application/json", "x-gitea-signature": "0".repeat(64) });
    const health = await fetch(`${daemon.url}/healthz`);
    assert.equal(health.status, 200);
    const status = (await (await fetch(`${daemon.url}/status`)).json()) as Record<string, unknown>;
    assert.equal(status.host, "lxctest");
    assert.equal(status.deployedRevision, head());
    assert.equal((status.lastRun as { result: string }).result, "succeeded");
    const metrics = await (await fetch(`${daemon.url}/metrics`)).text();
    for (const line of metrics.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      assert.match(
        line,
        // Prometheus's text format: name, labels, value, an optional timestamp, and nothing else on the line.
        /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)( -?\d+)?$/,
        line,
      );
    }
    assert.match(
      metrics,
      /deploy_agent_webhook_deliveries_total\{outcome="bad_signature",host="lxctest"\} 1/,
    );
    assert.match(metrics, /deploy_agent_runs_total\{result="succeeded",host="lxctest"\} 1/);
    assert.match(metrics, /deploy_agent_step_duration_seconds_count\{host="lxctest",step="landing"\} 1/);
    assert.ok(
      metrics
        .split("\n")
        .some(
          (l) =>
            l.startsWith("deploy_agent_step_items_total{") &&
            l.includes('step="landing"') &&
            l.includes('outcome="changed"') &&
            l.endsWith("} 1"),
        ),
      "per-item outcome counted",
    );
    assert.match(metrics, /deploy_agent_deployed_commit_info\{revision="[0-9a-f]{40}",host="lxctest"\} 1/);
    assert.match(metrics, /deploy_agent_process_resident_memory_bytes/);
    assert.match(metrics, /deploy_agent_queue_depth\{host="lxctest"\} 0/);
    const everything = [JSON.stringify(status), metrics, ...daemon.logs].join("\n");
    assert.equal(everything.includes(SECRET), false, "secret absent from status, metrics and logs");
  });

  it("turns /healthz 503 after repeated failed runs", async () => {
    await daemon.agent.runner.idle();
    for (let i = 0; i < 3; i++) {
      fx.push({ "landing/index.html": null });
      daemon.agent.request({ kind: "poll" });
      await daemon.agent.runner.idle();
      fx.push({ "landing/other.html": `${i}` });
    }
    const res = await fetch(`${daemon.url}/healthz`);
    assert.equal(res.status, 503);
    assert.match(((await res.json()) as { reason: string }).reason, /the last 3 deploy runs failed/);
  });

  it("serve --dry-run verifies and plans but applies nothing", async () => {
    await daemon.app.close();
    await daemon.agent.close();
    daemon = await startDaemon({}, SECRET, true);
    const rev = fx.push({ "landing/index.html": "<p>staged</p>\n" });
    const body = pushBody({ after: rev });
    assert.equal((await daemon.post(body, giteaHeaders(body, SECRET, "push"))).status, 202);
    assert.equal((await daemon.post(body, giteaHeaders(body, "wrong"))).status, 401);
    await daemon.agent.runner.idle();
    const status = (await (await fetch(`${daemon.url}/status`)).json()) as {
      dryRun: boolean;
      lastRun: { dryRun: boolean; steps: { outcome: string }[] };
    };
    assert.equal(status.dryRun, true);
    assert.equal(status.lastRun.dryRun, true);
    assert.equal(status.lastRun.steps[0]?.outcome, "planned");
    assert.throws(() => page(), "nothing written");
    assert.equal((await readState(daemon.stateDir, "lxctest")).state.lastRun, undefined, "no state written");
    assert.notEqual(git(fx.clone, "rev-parse", "HEAD"), rev, "the clone was not reset");
  });

  it("refuses sources outside allowFrom with 403 before reading the body", async () => {
    await daemon.app.close();
    await daemon.agent.close();
    daemon = await startDaemon({ allowFrom: ["10.10.10.0/24"] });
    const body = pushBody({ after: head() });
    assert.equal((await daemon.post(body, giteaHeaders(body, SECRET))).status, 403);
    await daemon.app.close();
    await daemon.agent.close();
    daemon = await startDaemon({ allowFrom: ["127.0.0.0/8"] });
    assert.equal((await daemon.post(body, giteaHeaders(body, SECRET))).status, 202);
  });
});
