import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { afterEach, beforeEach, describe, it } from "node:test";
import { stringify } from "yaml";
import { makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";

const ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
const TOKEN = "syt_ZGVwbG95_recognisableSecretToken_1a2b3c";
const TYPE = "uk.half-shot.matrix-hookshot.generic.hook";
const transform = (label: string) =>
  `result = { version: "v2", plain: "${label}: " + data.text, msgtype: "m.notice" };\n`;

let fx: Fixture;
let hs: MatrixTestServer;

function agentFor(extra: Record<string, unknown> = {}, token = TOKEN) {
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "hookshot",
        kind: "hookshot",
        homeserver: hs.url,
        room: ROOM,
        token,
        transforms: { "grafana.js": null, "proxmox.js": "Proxmox VE" },
        retry: { attempts: 5, backoffMs: 20 },
        ...extra,
      },
    ],
  });
  return makeAgent(fx.dir, fx.clone, manifestFile);
}

function connection(key: string) {
  return hs.state.get(`${TYPE}/${key}`);
}

beforeEach(async () => {
  fx = makeFixture({
    "hookshot/grafana.js": transform("grafana"),
    "hookshot/proxmox.js": transform("pve"),
    "README.md": "x\n",
  });
  hs = await startMatrixServer({
    roomId: ROOM,
    users: {
      [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 },
      low: { userId: "@member:x", powerLevel: 0 },
    },
  });
  hs.state.set(`${TYPE}/grafana`, {
    name: "grafana",
    hookId: "df4a1302-2d62-4a01-b858-fb56f4d3781a",
    transformationFunction: "old",
  });
  hs.state.set(`${TYPE}/Proxmox VE`, {
    name: "Proxmox VE",
    hookId: "9b3eafe5-7689-4011-addd-c466e524661d",
    waitForComplete: true,
  });
});
afterEach(async () => {
  await hs.close();
  fx.cleanup();
});

describe("hookshot step", () => {
  it("pushes changed transforms into the existing connections, keeping every other key", async () => {
    const report = await agentFor().run();
    assert.equal(report.result, "succeeded", JSON.stringify(stepOf(report, "hookshot").error));
    assert.deepEqual(connection("grafana"), {
      name: "grafana",
      hookId: "df4a1302-2d62-4a01-b858-fb56f4d3781a",
      transformationFunction: transform("grafana"),
    });
    assert.deepEqual(connection("Proxmox VE"), {
      name: "Proxmox VE",
      hookId: "9b3eafe5-7689-4011-addd-c466e524661d",
      waitForComplete: true,
      transformationFunction: transform("pve"),
    });
    assert.equal(hs.writes(), 2);
    assert.ok(
      hs.requests.some((r) => r.path.includes("/Proxmox%20VE")),
      "state key with a space is URL-encoded",
    );
  });

  it("writes only what changed, and nothing for an unrelated push or an equal function", async () => {
    const agent = agentFor();
    await agent.run();
    fx.push({ "README.md": "unrelated\n" });
    let requests = hs.requests.length;
    await agent.run();
    assert.equal(hs.requests.length, requests, "no Matrix call for a push that touches no transform");
    fx.push({ "hookshot/grafana.js": transform("grafana v2") });
    const report = await agent.run();
    assert.equal(hs.writes(), 3);
    assert.deepEqual(
      stepOf(report, "hookshot").items.map((i) => [i.id, i.outcome]),
      [["hookshot/grafana.js -> grafana", "changed"]],
    );
    requests = hs.requests.length;
    const forced = await agent.run({ all: true });
    assert.equal(hs.writes(), 3, "equal functions are not written again");
    assert.ok(stepOf(forced, "hookshot").items.every((i) => i.outcome === "unchanged"));
    assert.equal(hs.requests.length - requests, 2, "one GET per transform");
  });

  it("never creates a connection that does not exist", async () => {
    hs.state.delete(`${TYPE}/Proxmox VE`);
    const report = await agentFor().run();
    const step = stepOf(report, "hookshot");
    assert.equal(step.outcome, "failed");
    assert.equal(step.error?.code, "ITEMS_FAILED");
    assert.match(
      step.error?.message ?? "",
      /no hookshot connection "Proxmox VE" in !Gtt.*create the webhook in hookshot first/,
    );
    assert.equal(connection("Proxmox VE"), undefined);
    assert.equal(
      connection("grafana")?.transformationFunction,
      transform("grafana"),
      "the other transform still deploys",
    );
  });

  it("refuses transforms hookshot could not run, before any request", async () => {
    fx.push({
      "hookshot/grafana.js": "result = { version: 'v2', plain: ",
      "hookshot/proxmox.js": `let result = { version: "v2", plain: "x" };\n`,
    });
    const before = hs.requests.length;
    const step = stepOf(await agentFor().run(), "hookshot");
    assert.equal(step.outcome, "failed");
    assert.match(
      step.error?.message ?? "",
      /grafana\.js -> grafana: does not compile in hookshot's QuickJS: SyntaxError/,
    );
    assert.match(
      step.error?.message ?? "",
      /proxmox\.js -> Proxmox VE: declares `result` with var\/let\/const/,
    );
    assert.equal(hs.requests.length, before);
    assert.equal(connection("grafana")?.transformationFunction, "old");
  });

  it("honours 429 retry_after_ms and retries 5xx, then succeeds without duplicate writes", async () => {
    hs.rateLimit(2, 300);
    const report = await agentFor({ concurrency: 1 }).run();
    assert.equal(report.result, "succeeded");
    const [first, second, third] = hs.requests;
    assert.equal(first?.status, 429);
    assert.ok((second?.at ?? 0) - (first?.at ?? 0) >= 290, "waited retry_after_ms before retrying");
    assert.ok((third?.at ?? 0) - (second?.at ?? 0) >= 290);
    hs.failNext(2, 502);
    fx.push({ "hookshot/grafana.js": transform("again") });
    const again = await agentFor({ concurrency: 1 }).run();
    assert.equal(again.result, "succeeded");
    assert.equal(hs.writes(), 3);
  });

  it("gives up after bounded retries when the homeserver keeps failing", async () => {
    hs.failNext(100, 503);
    const step = stepOf(await agentFor().run(), "hookshot");
    assert.equal(step.outcome, "failed");
    assert.match(
      step.error?.message ?? "",
      /MATRIX_UNAVAILABLE: GET .*gave up after 5 attempts \(HTTP 503 M_UNKNOWN\)/,
    );
    assert.equal(hs.writes(), 0);
    assert.ok(hs.requests.length <= 10, `bounded: ${hs.requests.length} requests`);
  });

  it("explains a rejected token and a too-low power level", async () => {
    const unknown = stepOf(await agentFor({}, "syt_revoked").run(), "hookshot");
    assert.match(unknown.error?.message ?? "", /MATRIX_AUTH: .*rejected the access token \(M_UNKNOWN_TOKEN/);
    const low = stepOf(await agentFor({}, "low").run(), "hookshot");
    assert.match(low.error?.message ?? "", /MATRIX_FORBIDDEN: .*user_level \(0\) < send_level \(50\)/);
    assert.equal(hs.writes(), 0);
  });

  it("reports a deleted transform and leaves its connection alone", async () => {
    const agent = agentFor();
    await agent.run();
    fx.push({ "hookshot/proxmox.js": null });
    const step = stepOf(await agent.run(), "hookshot");
    assert.equal(step.outcome, "succeeded");
    assert.deepEqual(step.items, [
      {
        id: "hookshot/proxmox.js",
        outcome: "skipped",
        detail: "deleted from the repository; the connection in the room is left as it is",
      },
    ]);
    assert.equal(connection("Proxmox VE")?.transformationFunction, transform("pve"));
  });

  it("dry run reads the room, describes the PUTs and writes nothing; the token never shows", async () => {
    const report = await agentFor().run({ dryRun: true });
    const step = stepOf(report, "hookshot");
    assert.equal(step.outcome, "planned");
    assert.equal(report.result, "planned");
    assert.deepEqual(step.effects.map((e) => e.type === "request" && `${e.method} ${e.url}`).sort(), [
      `PUT ${ROOM} state ${TYPE}/Proxmox VE`,
      `PUT ${ROOM} state ${TYPE}/grafana`,
    ]);
    assert.equal(hs.writes(), 0);
    assert.equal(connection("grafana")?.transformationFunction, "old");
    assert.ok(!JSON.stringify(report).includes(TOKEN));
    assert.ok(!stringify(report).includes(TOKEN));
  });

  it("a dry run that cannot reach the homeserver still describes the plan", async () => {
    await hs.close();
    const report = await agentFor().run({ dryRun: true });
    const step = stepOf(report, "hookshot");
    assert.equal(step.outcome, "unknown", "a dry run that could not look does not claim success");
    assert.equal(report.result, "undetermined");
    assert.ok(step.items.length > 0);
    assert.ok(
      step.items.every(
        (i) => i.outcome === "unknown" && /current state unknown \(MATRIX_UNAVAILABLE/.test(i.detail ?? ""),
      ),
    );
  });

  it("a real run that cannot reach the homeserver fails the step", async () => {
    await hs.close();
    mkdirSync(fx.dir, { recursive: true });
    const step = stepOf(await agentFor().run(), "hookshot");
    assert.equal(step.outcome, "failed");
    assert.match(step.error?.message ?? "", /ECONNREFUSED/);
  });
});
