import assert from "node:assert/strict";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { schema as draupnirSchema } from "../src/steps/draupnir-config.js";
import { type Agent, makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { treeHash } from "./helpers/tree-hash.js";

const LIVE_TOKEN = "syt_ZHJhdXBuaXI_LiveDraupnirToken_9z8y7x";
const REPO_CONFIG = `# Draupnir on LXC 110
homeserverUrl: "https://matrix.lotusguild.org"
rawHomeserverUrl: "https://matrix.lotusguild.org"
# never commit the real token
accessToken: REDACTED
managementRoom: "!mEvR5fe3jMmzwd-FwNygD72OY_yu8H3UP_N-57oK7MI"
web:
  enabled: true
  port: 8080
`;
const liveConfig = (token: string) =>
  `homeserverUrl: "https://matrix.lotusguild.org"\nrawHomeserverUrl: "https://matrix.lotusguild.org"\naccessToken: "${token}"\nmanagementRoom: "!old"\n`;

let fx: Fixture;
let systemctl: FakeSystemctl;
let health: Server;
let healthStatus = 200;
let agent: Agent;
const TARGET = "/opt/draupnir/config/production.yaml";
const live = () => path.join(agent.root, TARGET);

beforeEach(async () => {
  fx = makeFixture({ "draupnir/production.yaml": REPO_CONFIG });
  systemctl = installFakeSystemctl();
  healthStatus = 200;
  health = createServer((_req, res) => {
    res.writeHead(healthStatus);
    res.end();
  });
  await new Promise<void>((r) => health.listen(0, "127.0.0.1", r));
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "draupnir-config",
        kind: "draupnir-config",
        source: "draupnir/production.yaml",
        healthUrl: `http://127.0.0.1:${(health.address() as AddressInfo).port}/healthz`,
        healthTimeoutSeconds: 2,
      },
    ],
  });
  agent = makeAgent(fx.dir, fx.clone, manifestFile);
  mkdirSync(path.dirname(live()), { recursive: true });
  writeFileSync(live(), liveConfig(LIVE_TOKEN), { mode: 0o644 });
});
afterEach(async () => {
  systemctl.restore();
  await new Promise((r) => health.close(r));
  fx.cleanup();
});

describe("draupnir-config step", () => {
  it("writes the repository config with the live token, keeps comments, mode 0600, restarts and checks health", async () => {
    const report = await agent.run();
    assert.equal(report.result, "succeeded", JSON.stringify(stepOf(report, "draupnir-config").error));
    const written = readFileSync(live(), "utf8");
    assert.equal(written, REPO_CONFIG.replace("accessToken: REDACTED", `accessToken: ${LIVE_TOKEN}`));
    assert.equal(statSync(live()).mode & 0o777, 0o600);
    assert.deepEqual(systemctl.calls(), ["restart draupnir.service"]);
    const text = JSON.stringify(report);
    assert.ok(!text.includes(LIVE_TOKEN), "token absent from the report");
    const write = stepOf(report, "draupnir-config").effects.find((e) => e.type === "write");
    assert.ok(write?.type === "write" && write.patch?.includes("accessToken: <redacted>"));
  });

  it("dry run shows the token as <redacted> and touches nothing", async () => {
    const before = treeHash(agent.root);
    const report = await agent.run({ dryRun: true });
    assert.equal(treeHash(agent.root), before);
    assert.deepEqual(systemctl.calls(), []);
    assert.ok(!JSON.stringify(report).includes(LIVE_TOKEN));
    assert.match(JSON.stringify(report), /<redacted>/);
  });

  for (const [name, content] of [
    ["the placeholder", liveConfig("REDACTED")],
    ["an empty token", liveConfig("")],
    ["no token", 'homeserverUrl: "https://x"\n'],
    ["unparsable YAML", "accessToken: [oops\n"],
  ] as const) {
    it(`refuses and changes nothing when the live config has ${name}`, async () => {
      writeFileSync(live(), content);
      const before = treeHash(agent.root);
      const step = stepOf(await agent.run(), "draupnir-config");
      assert.equal(step.error?.code, "TOKEN_UNAVAILABLE");
      assert.match(step.error?.message ?? "", /refusing to overwrite it/);
      assert.equal(treeHash(agent.root), before);
      assert.deepEqual(systemctl.calls(), []);
    });
  }

  it("refuses a repository config that carries a real token", async () => {
    fx.push({ "draupnir/production.yaml": REPO_CONFIG.replace("REDACTED", "syt_committed_by_mistake") });
    const step = stepOf(await agent.run(), "draupnir-config");
    assert.equal(step.error?.code, "SOURCE_INVALID");
    assert.match(step.error?.message ?? "", /must carry accessToken: REDACTED/);
    assert.equal(readFileSync(live(), "utf8"), liveConfig(LIVE_TOKEN));
  });

  it("an unhealthy bot gets the previous config back and another restart", async () => {
    healthStatus = 418;
    const before = readFileSync(live());
    const step = stepOf(await agent.run(), "draupnir-config");
    assert.equal(step.error?.code, "HEALTH_CHECK_FAILED");
    assert.match(
      step.error?.message ?? "",
      /unhealthy after the new config \(HTTP 418\); previous config restored, but it is still unhealthy/,
    );
    assert.deepEqual(readFileSync(live()), before);
    assert.equal(statSync(live()).mode & 0o777, 0o644, "previous mode restored too");
    assert.deepEqual(systemctl.calls(), ["restart draupnir.service", "restart draupnir.service"]);
  });

  /** The Draupnir step with a 1 s health wait and these timeouts, in a manifest file of its own. */
  const quickHealthManifest = (timeouts: Record<string, number>, file: string) =>
    writeManifest(
      fx.dir,
      {
        steps: [
          {
            name: "draupnir-config",
            kind: "draupnir-config",
            source: "draupnir/production.yaml",
            healthUrl: `http://127.0.0.1:${(health.address() as AddressInfo).port}/healthz`,
            healthTimeoutSeconds: 1,
            ...timeouts,
          },
        ],
      },
      file,
    );

  it("a restart that hangs past the step's timeout: the config is restored, then Draupnir restarted with it", async () => {
    const manifestFile = quickHealthManifest({ timeoutSeconds: 31 }, "timeout.yaml");
    systemctl.watch(live());
    systemctl.hangAt(1);
    const before = readFileSync(live(), "utf8");
    const started = Date.now();
    const step = stepOf(await makeAgent(fx.dir, fx.clone, manifestFile).run(), "draupnir-config");
    assert.equal(step.error?.code, "STEP_TIMEOUT", JSON.stringify(step.error));
    assert.ok(Date.now() - started < 31_000 + 15_000, "the rollback is bounded");
    assert.equal(readFileSync(live(), "utf8"), before, "the previous config is back on disk");
    assert.deepEqual(systemctl.calls(), ["restart draupnir.service", "restart draupnir.service"]);
    const [first, second] = systemctl.seen();
    assert.match(first ?? "", /managementRoom: "!mEvR5fe3jMmzwd/, "the hung restart was of the new config");
    assert.equal(second, before, "Draupnir was restarted after the restore, with the config on disk");
    assert.ok(step.effects.some((e) => e.type === "restore"));
  });

  it("a rollback whose restart hangs too ends at its own deadline", async () => {
    const manifestFile = quickHealthManifest({ rollbackTimeoutSeconds: 2 }, "rollback.yaml");
    healthStatus = 418;
    systemctl.hangAt(2);
    const before = readFileSync(live(), "utf8");
    const started = Date.now();
    const step = stepOf(await makeAgent(fx.dir, fx.clone, manifestFile).run(), "draupnir-config");
    assert.ok(
      Date.now() - started < 10_000,
      `ended at the rollback's deadline, not the step's (${Date.now() - started} ms)`,
    );
    assert.equal(step.error?.code, "HEALTH_CHECK_FAILED");
    assert.match(
      step.error?.message ?? "",
      /previous config restored, but it is still unhealthy \(.*was cancelled/,
    );
    assert.equal(readFileSync(live(), "utf8"), before);
    assert.deepEqual(systemctl.calls(), ["restart draupnir.service", "restart draupnir.service"]);
  });

  it("refuses a rollback deadline that would outlast what a stopping daemon waits for", () => {
    const parsed = draupnirSchema.safeParse({
      name: "d",
      kind: "draupnir-config",
      source: "draupnir/production.yaml",
      timeoutSeconds: 280,
      rollbackTimeoutSeconds: 30,
    });
    assert.equal(parsed.success, false);
    assert.match(
      JSON.stringify(parsed.error?.issues),
      /timeoutSeconds \+ rollbackTimeoutSeconds must be at most 300/,
    );
  });

  it("a failing systemctl restart puts the previous config back; the next run retries instead of saying unchanged", async () => {
    systemctl.failOn("restart");
    const before = readFileSync(live());
    const step = stepOf(await agent.run(), "draupnir-config");
    assert.equal(step.error?.code, "HEALTH_CHECK_FAILED");
    assert.match(step.error?.message ?? "", /Job for draupnir\.service failed.*previous config restored/);
    assert.deepEqual(readFileSync(live()), before, "the new config did not stay behind");
    systemctl.failOn();
    const retry = stepOf(await agent.run(), "draupnir-config");
    assert.equal(retry.outcome, "succeeded");
    assert.deepEqual(
      retry.items.map((i) => i.outcome),
      ["changed"],
    );
    assert.match(readFileSync(live(), "utf8"), /managementRoom: "!mEvR5fe3jMmzwd/);
  });
});
