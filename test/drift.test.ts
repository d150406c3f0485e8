import assert from "node:assert/strict";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import {
  hostRoot,
  listeningUrl,
  runArgs,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";

/** Drift: what is live against what git says — `deploy-agent diff`, and `serve` checking and healing it. */

const SECRET = "drift-webhook-secret-0123456789";
const ROOM = "!room:lotus";
const TOKEN = "syt_ZHJpZnQ_driftMatrixToken_77";
const LIVE_TOKEN = "syt_ZHJhdXBuaXI_liveDriftToken_13";
const TYPE = "uk.half-shot.matrix-hookshot.generic.hook";
let fx: Fixture;
let root: string;
let stateDir: string;
let hs: MatrixTestServer;
let daemon: Served | undefined;

beforeEach(async () => {
  fx = makeFixture({
    "landing/index.html": "<p>v1</p>\n",
    "hookshot/grafana.js": 'result = { version: "v2", plain: "alert" };\n',
    "draupnir/production.yaml":
      'homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: REDACTED\nmanagementRoom: "!m"\n',
  });
  root = hostRoot(fx.dir, SECRET, ["opt/draupnir"]);
  stateDir = path.join(fx.dir, "state");
  writeFileSync(
    path.join(root, "opt/draupnir/production.yaml"),
    `homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: ${LIVE_TOKEN}\nmanagementRoom: "!old"\n`,
  );
  hs = await startMatrixServer({ roomId: ROOM, users: { [TOKEN]: { userId: "@j:lotus", powerLevel: 100 } } });
  hs.state.set(`${TYPE}/grafana`, { name: "grafana", transformationFunction: "old" });
});
afterEach(async () => {
  daemon?.child.kill("SIGTERM");
  await daemon?.exited;
  daemon = undefined;
  await hs.close();
  fx.cleanup();
});

function manifest(selfHeal = false, intervalSeconds = 0) {
  return writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds },
    commands: { systemctl: ["true"] },
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        mode: "0644",
        selfHeal,
      },
      {
        name: "hooks",
        kind: "hookshot",
        homeserver: hs.url,
        room: ROOM,
        token: TOKEN,
        transforms: { "grafana.js": null },
      },
      {
        name: "draupnir",
        kind: "draupnir-config",
        source: "draupnir/production.yaml",
        target: "/opt/draupnir/production.yaml",
        healthUrl: `${hs.url}/healthz-not-used`,
        healthTimeoutSeconds: 1,
        timeoutSeconds: 31,
      },
    ],
  });
}
const diff = (file: string, ...extra: string[]) =>
  runCli(["diff", "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir, ...extra]);

describe("drift", () => {
  it("diff: never applied is unknown (2); in sync (0); hand edits, modes and room state drift (1); the token never shows", async () => {
    const file = manifest();
    assert.equal((await diff(file)).code, 2, "never applied: cannot tell");
    // Deploy everything but Draupnir's health check (its URL answers 404): apply landing and hooks only.
    const deployed = await runCli([
      ...runArgs(file, fx.clone, root, stateDir),
      "--step",
      "landing",
      "--step",
      "hooks",
    ]);
    assert.equal(deployed.code, 0, deployed.stderr);
    const inSync = await diff(file, "--step", "landing", "--step", "hooks");
    assert.equal(inSync.code, 0, inSync.stdout);

    writeFileSync(path.join(root, "var/www/index.html"), "<p>edited by hand</p>\n");
    chmodSync(path.join(root, "var/www/index.html"), 0o600);
    hs.state.set(`${TYPE}/grafana`, { name: "grafana", transformationFunction: "edited in the widget" });
    const drifted = await diff(file, "--step", "landing", "--step", "hooks");
    assert.equal(drifted.code, 1);
    assert.match(drifted.stdout, /\[drifted\] landing \(file\) against [0-9a-f]{12}/);
    assert.match(
      drifted.stdout,
      /drifted: \/var\/www\/index\.html: content differs from git; mode 0600, git says 0644/,
    );
    assert.match(drifted.stdout, /-<p>edited by hand<\/p>\n\s+\+<p>v1<\/p>/);
    assert.match(
      drifted.stdout,
      /drifted: hookshot\/grafana\.js -> grafana: the room holds another function/,
    );
    const json = JSON.parse((await diff(file, "--json", "--step", "landing")).stdout) as {
      steps: { state: string }[];
    };
    assert.equal(json.steps[0]?.state, "drifted");
  });

  it("Draupnir's config is compared with its live token left out, which never shows", async () => {
    const file = manifest();
    // The step's state says applied at HEAD, as after a deploy; the live file has another managementRoom.
    const applied = await runCli([...runArgs(file, fx.clone, root, stateDir), "--step", "landing"]);
    assert.equal(applied.code, 0);
    const state = JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8"));
    state.steps.draupnir = { lastAppliedRevision: state.steps.landing.lastAppliedRevision, history: [] };
    writeFileSync(path.join(stateDir, "state.json"), JSON.stringify(state));
    const res = await diff(file, "--step", "draupnir");
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stdout, /-managementRoom: "!old"/);
    assert.match(res.stdout, /accessToken: <redacted>/);
    assert.equal((res.stdout + res.stderr).includes(LIVE_TOKEN), false);
  });

  it("serve checks drift at start, shows it in /status and /metrics, and a selfHeal step is put back", async () => {
    const file = manifest(true, 1);
    assert.equal((await runCli([...runArgs(file, fx.clone, root, stateDir), "--step", "landing"])).code, 0);
    writeFileSync(path.join(root, "var/www/index.html"), "<p>edited by hand</p>\n");
    daemon = startCli([...serveArgs(file, fx.clone, root), "--state-dir", stateDir]);
    const url = await listeningUrl(daemon);
    await daemon.waitFor(/"msg":"what is live drifted from git"/);
    await daemon.waitFor(/"run":"self-heal landing"/);
    const deadline = Date.now() + 10_000;
    while (readFileSync(path.join(root, "var/www/index.html"), "utf8") !== "<p>v1</p>\n") {
      assert.ok(Date.now() < deadline, "healed");
      await new Promise((r) => setTimeout(r, 50));
    }
    const status = (await (await fetch(`${url}/status`)).json()) as {
      drift: { steps: { name: string; state: string }[] };
    };
    assert.ok(status.drift.steps.some((s) => s.name === "landing"));
    await daemon.waitFor(/"msg":"run finished"/);
    // The next check (every second here) finds it in sync again.
    const metrics = async () => (await fetch(`${url}/metrics`)).text();
    while (!/deploy_agent_drift\{step="landing",host="lxctest"\} 0/.test(await metrics())) {
      assert.ok(Date.now() < deadline + 10_000, "the drift gauge returns to 0");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
