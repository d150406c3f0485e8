import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { loadManifest } from "../src/manifest/load.js";
import { type Agent, makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

const UNIT_V1 = "[Service]\nExecStart=/usr/local/bin/livekit-server\n";
const UNIT_V2 = "[Service]\nExecStart=/usr/local/bin/livekit-server --config /etc/livekit/config.yaml\n";

let fx: Fixture;
let systemctl: FakeSystemctl;

function agentWith(restart: "now" | "deferred" | "none"): Agent {
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "livekit-unit",
        kind: "systemd-unit",
        source: "systemd/livekit-server.service",
        restart,
        ...(restart === "deferred" ? { flagFile: "/run/livekit-restart-pending" } : {}),
      },
    ],
  });
  const agent = makeAgent(fx.dir, fx.clone, manifestFile);
  mkdirSync(path.join(agent.root, "etc/systemd/system"), { recursive: true });
  mkdirSync(path.join(agent.root, "run"), { recursive: true });
  return agent;
}

const under = (agent: Agent, p: string) => path.join(agent.root, p);

beforeEach(() => {
  fx = makeFixture({ "systemd/livekit-server.service": UNIT_V1 });
  systemctl = installFakeSystemctl();
});
afterEach(() => {
  systemctl.restore();
  fx.cleanup();
});

describe("systemd-unit step", () => {
  it("deferred: installs the unit, reloads systemd and flags the restart instead of restarting", async () => {
    const agent = agentWith("deferred");
    const report = await agent.run();
    assert.equal(report.result, "succeeded");
    assert.equal(readFileSync(under(agent, "/etc/systemd/system/livekit-server.service"), "utf8"), UNIT_V1);
    assert.deepEqual(systemctl.calls(), ["daemon-reload"]);
    assert.equal(readFileSync(under(agent, "/run/livekit-restart-pending"), "utf8"), `${report.revision}\n`);
  });

  it("now: restarts the unit after daemon-reload; an unchanged unit does neither", async () => {
    const agent = agentWith("now");
    await agent.run();
    assert.deepEqual(systemctl.calls(), ["daemon-reload", "restart livekit-server.service"]);
    await agent.run({ all: true });
    assert.deepEqual(systemctl.calls(), ["daemon-reload", "restart livekit-server.service"]);
  });

  it("a failed restart puts the previous unit back and reloads systemd again", async () => {
    const agent = agentWith("now");
    await agent.run();
    fx.push({ "systemd/livekit-server.service": UNIT_V2 });
    systemctl.failOn("restart");
    const step = stepOf(await agent.run(), "livekit-unit");
    assert.equal(step.error?.code, "COMMAND_FAILED");
    assert.match(
      step.error?.message ?? "",
      /systemctl restart livekit-server\.service exited with code 1: Job for/,
    );
    assert.equal(readFileSync(under(agent, "/etc/systemd/system/livekit-server.service"), "utf8"), UNIT_V1);
    assert.deepEqual(systemctl.calls().slice(2), [
      "daemon-reload",
      "restart livekit-server.service",
      "daemon-reload",
    ]);
  });

  it("none: installs and reloads only", async () => {
    const agent = agentWith("none");
    writeFileSync(under(agent, "/etc/systemd/system/livekit-server.service"), "old\n");
    await agent.run();
    assert.deepEqual(systemctl.calls(), ["daemon-reload"]);
  });

  it("a unit name taken from the source's file name is checked as a given one is", async () => {
    for (const source of ["systemd/livekit", "systemd/live kit.service", "systemd/livekit.service.bak"]) {
      const manifestFile = writeManifest(fx.dir, {
        steps: [{ name: "unit", kind: "systemd-unit", source, restart: "now" }],
      });
      await assert.rejects(
        loadManifest(manifestFile, { processEnv: {} }),
        (e: AgentError) =>
          e.code === "CONFIG_INVALID" && /steps\.0\.unit: .*must be a unit file name/.test(e.message),
        source,
      );
    }
  });
});
