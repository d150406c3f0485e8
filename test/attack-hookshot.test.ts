import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { silentLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { checkDrift } from "../src/deploy/drift.js";
import { loadManifest } from "../src/manifest/load.js";
import { createMatrixClient } from "../src/matrix/client.js";
import { makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";

/**
 * The hookshot step against what a homeserver, or whatever answers at its URL, may send back, and against
 * state keys that a URL would read as something else.
 */

const ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
const TOKEN = "syt_ZGVwbG95_attackHookshotToken_9z8y7x";
const TYPE = "uk.half-shot.matrix-hookshot.generic.hook";
const transform = (label: string) => `result = { version: "v2", plain: "${label}: " + data.text };\n`;

let fx: Fixture;
let hs: MatrixTestServer;

async function homeserver(extra: { canonicalJson?: boolean } = {}) {
  hs = await startMatrixServer({
    roomId: ROOM,
    users: { [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
    ...extra,
  });
}

function agentFor(transforms: Record<string, string | null>, homeserverUrl = hs.url) {
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "hookshot",
        kind: "hookshot",
        homeserver: homeserverUrl,
        room: ROOM,
        token: TOKEN,
        transforms,
        retry: { attempts: 2, backoffMs: 10, timeoutMs: 2000 },
      },
    ],
  });
  return makeAgent(fx.dir, fx.clone, manifestFile);
}

/** The drift check's verdict on the agent's one transform. */
async function driftOf(agent: ReturnType<typeof agentFor>) {
  const { manifest } = await loadManifest(agent.manifestFile, { processEnv: {} });
  const drift = await checkDrift({
    manifest,
    repoDir: fx.clone,
    stateDir: agent.stateDir,
    root: agent.root,
    log: silentLogger(),
  });
  return drift.steps.find((s) => s.name === "hookshot")?.items[0];
}

beforeEach(() => {
  fx = makeFixture({ "hookshot/grafana.js": transform("grafana"), "README.md": "x\n" });
});
afterEach(async () => {
  await hs?.close();
  fx.cleanup();
});

describe("hookshot: a homeserver that answers in canonical JSON", () => {
  it("a write whose read-back has the same content in another key order succeeds", async () => {
    await homeserver({ canonicalJson: true });
    // No transformationFunction yet: the agent adds it last, the homeserver answers it between the others.
    hs.state.set(`${TYPE}/grafana`, {
      name: "grafana",
      hookId: "df4a1302-2d62-4a01-b858-fb56f4d3781a",
      waitForComplete: true,
    });
    const report = await agentFor({ "grafana.js": null }).run();
    const step = stepOf(report, "hookshot");
    assert.equal(step.outcome, "succeeded", JSON.stringify(step.error));
    assert.deepEqual(hs.state.get(`${TYPE}/grafana`), {
      name: "grafana",
      hookId: "df4a1302-2d62-4a01-b858-fb56f4d3781a",
      waitForComplete: true,
      transformationFunction: transform("grafana"),
    });
  });
});

/** Not a homeserver: a web app or a proxy at the homeserver's URL, answering 200 with `body` to everything. */
async function answering(body: string, contentType: string): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": contentType });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return server;
}
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

describe("hookshot: a 200 that is no Matrix answer", () => {
  const bodies: [string, string, string][] = [
    ["an HTML page", "<!doctype html><title>Element</title>", "text/html"],
    ["an empty body", "", "application/json"],
    ["JSON null", "null", "application/json"],
    ["a JSON array", "[]", "application/json"],
    ["a JSON string", '"ok"', "application/json"],
  ];
  for (const [what, body, type] of bodies) {
    it(`${what} is refused, never taken as empty state content`, async () => {
      const server = await answering(body, type);
      try {
        const client = createMatrixClient({
          homeserver: urlOf(server),
          token: new Secret(TOKEN),
          maxAttempts: 1,
        });
        for (const call of [
          () => client.getState(ROOM, TYPE, "grafana"),
          () => client.putState(ROOM, TYPE, "grafana", { name: "grafana" }),
        ]) {
          await assert.rejects(
            call(),
            (e: AgentError) =>
              e.code === "MATRIX_REFUSED" && /answered 200 with no JSON object/.test(e.message),
          );
        }
      } finally {
        await new Promise((r) => server.close(r));
      }
    });
  }

  it("drift does not claim that the room holds another function", async () => {
    await homeserver();
    hs.state.set(`${TYPE}/grafana`, { name: "grafana", hookId: "h1", transformationFunction: "old" });
    const applied = await agentFor({ "grafana.js": null }).run();
    assert.equal(applied.result, "succeeded");
    const server = await answering("<!doctype html><title>Element</title>", "text/html");
    try {
      const agent = agentFor({ "grafana.js": null }, urlOf(server));
      const item = await driftOf(agent);
      assert.equal(item?.state, "unknown", JSON.stringify(item));
      assert.match(item?.detail ?? "", /answered 200 with no JSON object/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe("hookshot: a state key a URL would read as a path step", () => {
  // `.` and `..` are path segments a URL resolves away: `/state/<type>/.` is `/state/<type>/`, the state key "".
  it("the client sends no request for `.` or `..`, which would reach another state event", async () => {
    await homeserver();
    hs.state.set(`${TYPE}/`, { name: "the hook at the empty state key", hookId: "h0" });
    const client = createMatrixClient({ homeserver: hs.url, token: new Secret(TOKEN), maxAttempts: 1 });
    for (const key of [".", ".."]) {
      for (const call of [
        () => client.getState(ROOM, TYPE, key),
        () => client.putState(ROOM, TYPE, key, { name: "x" }),
        () => client.getState(ROOM, key, "grafana"),
      ]) {
        await assert.rejects(
          call(),
          (e: AgentError) => e.code === "MATRIX_REFUSED" && /cannot be sent in a URL path/.test(e.message),
        );
      }
    }
    assert.deepEqual(hs.requests, [], "nothing sent");
    assert.deepEqual(hs.state.get(`${TYPE}/`), { name: "the hook at the empty state key", hookId: "h0" });
  });

  for (const [what, transforms] of [
    ["a mapped key `.`", { "grafana.js": "." }],
    ["a mapped key `..`", { "grafana.js": ".." }],
    ["a file `..js` (key `.`)", { "..js": null }],
    ["a file `...js` (key `..`)", { "...js": null }],
  ] as const) {
    it(`${what} is refused when the manifest loads`, async () => {
      await homeserver();
      const agent = agentFor(transforms);
      await assert.rejects(
        loadManifest(agent.manifestFile, { processEnv: {} }),
        (e: AgentError) =>
          e.code === "CONFIG_INVALID" && /transforms.*cannot be sent in a URL path/.test(e.message),
      );
    });
  }

  it("other metacharacters reach the state key they name", async () => {
    await homeserver();
    const keys = ["a/b", "..a", "a b", "ünïcødé ✓", "?x#y", "%2e"];
    for (const key of keys) hs.state.set(`${TYPE}/${key}`, { name: key, hookId: "h" });
    const client = createMatrixClient({ homeserver: hs.url, token: new Secret(TOKEN), maxAttempts: 1 });
    for (const key of keys)
      assert.deepEqual(await client.getState(ROOM, TYPE, key), { name: key, hookId: "h" });
  });
});

describe("hookshot: the read-back fails after the PUT was accepted", () => {
  it("the item says the function was written, and the next run finds it equal", async () => {
    await homeserver();
    hs.state.set(`${TYPE}/grafana`, { name: "grafana", hookId: "h1", transformationFunction: "old" });
    hs.failAfterWrite(2, 503);
    const agent = agentFor({ "grafana.js": null });
    const step = stepOf(await agent.run(), "hookshot");
    assert.equal(step.outcome, "failed");
    assert.equal(hs.state.get(`${TYPE}/grafana`)?.transformationFunction, transform("grafana"));
    assert.match(
      step.error?.message ?? "",
      /grafana\.js -> grafana: MATRIX_UNAVAILABLE: written, but the read-back failed: GET .*gave up after 2 attempts/,
    );
    const again = stepOf(await agent.run(), "hookshot");
    assert.deepEqual(
      again.items.map((i) => [i.id, i.outcome]),
      [["hookshot/grafana.js -> grafana", "unchanged"]],
    );
  });
});

describe("hookshot: a connection removed in hookshot", () => {
  // Hookshot removes a connection by replacing its state with content that has no `name` ({} or {disabled: true}).
  for (const content of [{}, { disabled: true }]) {
    it(`drift says the connection is gone when its state is ${JSON.stringify(content)}`, async () => {
      await homeserver();
      hs.state.set(`${TYPE}/grafana`, { name: "grafana", hookId: "h1", transformationFunction: "old" });
      const agent = agentFor({ "grafana.js": null });
      assert.equal((await agent.run()).result, "succeeded");
      hs.state.set(`${TYPE}/grafana`, content);
      const item = await driftOf(agent);
      assert.equal(item?.state, "drifted");
      assert.match(item?.detail ?? "", /no connection "grafana" in !Gtt/);
    });
  }
});

describe("hookshot: two transforms for one connection", () => {
  it("is refused when the manifest loads: each run would write one over the other", async () => {
    await homeserver();
    const agent = agentFor({ "grafana.js": null, "grafana-v2.js": "grafana" });
    await assert.rejects(
      loadManifest(agent.manifestFile, { processEnv: {} }),
      (e: AgentError) =>
        e.code === "CONFIG_INVALID" &&
        /transforms\.grafana-v2\.js: connection "grafana" is already the target of grafana\.js/.test(
          e.message,
        ),
    );
  });
});
