import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
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
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/** Pausing a host on purpose: `suspend` and `resume`, with the real serve process and real repositories. */

const SECRET = "suspend-webhook-secret-0123456789";
let fx: Fixture;
let root: string;
let manifest: string;
let stateDir: string;
let daemon: Served | undefined;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, SECRET);
  stateDir = path.join(fx.dir, "state");
  manifest = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
});
afterEach(async () => {
  daemon?.child.kill("SIGTERM");
  await daemon?.exited;
  daemon = undefined;
  fx.cleanup();
});

const page = () => readFileSync(path.join(root, "var/www/index.html"), "utf8");
const common = () => ["--config", manifest, "--repo", fx.clone, "--root", root, "--state-dir", stateDir];

describe("suspend and resume", () => {
  it("a suspended host acknowledges pushes and deploys nothing, shows it everywhere, and catches up on resume", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    const paused = await runCli(["suspend", "--reason", "Draupnir migration", ...common()]);
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, /lxctest suspended: Draupnir migration/);

    daemon = startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", stateDir]);
    const url = await listeningUrl(daemon);
    const rev = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const body = pushBody({ after: rev });
    const res = await fetch(`${url}/hooks/deploy`, {
      method: "POST",
      headers: giteaHeaders(body, SECRET),
      body: new Uint8Array(body),
    });
    assert.equal(res.status, 202);
    // The start-up reconcile logs the same line: wait for the push's run to be remembered instead.
    type Status = { suspended: { reason: string; newestRevision: string } };
    let status = (await (await fetch(`${url}/status`)).json()) as Status;
    for (let i = 0; i < 200 && status.suspended.newestRevision !== rev; i++) {
      await sleep(50);
      status = (await (await fetch(`${url}/status`)).json()) as Status;
    }
    assert.equal(page(), "<p>v1</p>\n", "nothing deployed while suspended");
    assert.equal(status.suspended.reason, "Draupnir migration");
    assert.equal(status.suspended.newestRevision, rev);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /^deploy_agent_suspended_since_timestamp_seconds\{host="lxctest"\} [1-9]\d+/m,
    );
    assert.equal((await fetch(`${url}/healthz`)).status, 200, "suspended on purpose is not unhealthy");
    daemon.child.kill("SIGTERM");
    await daemon.exited;
    daemon = undefined;

    const manual = await runCli(runArgs(manifest, fx.clone, root, stateDir));
    assert.equal(manual.code, 1, "a hand-run run deploys nothing either");
    assert.match(manual.stdout, /host suspended since .* \(Draupnir migration\): nothing deployed/);

    const resumed = await runCli(["resume", ...common()]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /lxctest resumed \(suspended since .*: Draupnir migration\)/);
    assert.equal(page(), "<p>v2</p>\n", "caught up at once");
    const status2 = await runCli(["status", "--json", ...common()]);
    assert.equal(
      (JSON.parse(status2.stdout) as { steps: { lastAppliedRevision: string }[] }).steps[0]
        ?.lastAppliedRevision,
      rev,
    );
  });

  it("resume on a host that is not suspended says so, exits 0 and changes nothing", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    const stateFile = path.join(stateDir, "state.json");
    const before = readFileSync(stateFile, "utf8");
    fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const res = await runCli(["resume", ...common()]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(
      res.stdout,
      "lxctest is not suspended: nothing to resume, nothing deployed (deploy-agent run deploys)\n",
    );
    assert.equal(page(), "<p>v1</p>\n", "no deploy");
    assert.equal(readFileSync(stateFile, "utf8"), before, "state untouched");
    const json = await runCli(["resume", "--json", ...common()]);
    assert.deepEqual(JSON.parse(json.stdout), {
      schema: "deploy-agent/resume@1",
      host: "lxctest",
      suspended: false,
    });
  });

  it("a reason of several lines, with an escape sequence or a bidi control, or over 500 characters is refused before anything is written", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    const stateFile = path.join(stateDir, "state.json");
    const before = readFileSync(stateFile, "utf8");
    for (const reason of [
      "one\nlxctest resumed",
      "\u001b]0;owned\u0007x",
      "a\rb",
      "mig\u202eration",
      "x".repeat(501),
    ]) {
      const res = await runCli(["suspend", "--reason", reason, ...common()]);
      assert.equal(res.code, 2, JSON.stringify(reason));
      assert.match(
        res.stderr,
        /^error USAGE: --reason takes one line of at most 500 characters, without control characters\nhint: /,
      );
      assert.equal(res.stdout, "");
    }
    assert.equal(readFileSync(stateFile, "utf8"), before, "state untouched");
    const long = await runCli(["suspend", "--reason", "ü".repeat(500), ...common()]);
    assert.equal(long.code, 0, long.stderr);
  });
});
