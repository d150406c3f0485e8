import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  hostRoot,
  listeningUrl,
  PROJECT,
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

  it("suspending a suspended host keeps when it began and the revision it remembers; the reason is the new one", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    assert.equal((await runCli(["suspend", "--reason", "first", ...common()])).code, 0);
    const rev = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    assert.equal(
      (await runCli(runArgs(manifest, fx.clone, root, stateDir))).code,
      1,
      "remembered, not deployed",
    );
    type Suspended = { reason: string; since: string; newestRevision?: string };
    const read = () =>
      (JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as { suspended: Suspended })
        .suspended;
    const first = read();
    assert.equal(first.newestRevision, rev);
    await sleep(20);
    const again = await runCli(["suspend", "--reason", "second", ...common()]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`lxctest suspended \\(since ${first.since}\\): second\\.`));
    assert.deepEqual(read(), { ...first, reason: "second" });
    const json = await runCli(["suspend", "--json", "--reason", "third", ...common()]);
    assert.deepEqual((JSON.parse(json.stdout) as { suspended: Suspended }).suspended, {
      ...first,
      reason: "third",
    });
  });

  it("suspend while a run holds the lock waits its turn, and is since when it took effect", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    const holder = spawn(
      process.execPath,
      ["--import", "tsx", path.join(PROJECT, "test/helpers/lock-child.ts"), stateDir, "hold"],
      {
        cwd: PROJECT,
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    try {
      await new Promise<void>((r) => holder.stdout?.once("data", () => r()));
      const pending = runCli(["suspend", "--reason", "while running", ...common()]);
      // Long enough for the command to start and be waiting for the lock.
      await sleep(4000);
      assert.equal(
        existsSync(path.join(stateDir, "state.json")) &&
          readFileSync(path.join(stateDir, "state.json"), "utf8").includes("while running"),
        false,
        "not before the lock",
      );
      const released = new Date().toISOString();
      holder.kill("SIGKILL");
      const res = await pending;
      assert.equal(res.code, 0, res.stderr);
      const { suspended } = JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as {
        suspended: { since: string };
      };
      assert.ok(
        suspended.since >= released,
        `since ${suspended.since}, the lock was released at ${released}`,
      );
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("a suspend racing a push's run (two real processes): the mark is never lost, and what was deployed is what the history says", async () => {
    assert.equal((await runCli(runArgs(manifest, fx.clone, root, stateDir))).code, 0);
    daemon = startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", stateDir]);
    const url = await listeningUrl(daemon);
    const rev = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const body = pushBody({ after: rev });
    const [delivered, paused] = await Promise.all([
      fetch(`${url}/hooks/deploy`, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      }),
      runCli(["suspend", "--reason", "race", ...common()]),
    ]);
    assert.equal(delivered.status, 202);
    assert.equal(paused.code, 0, paused.stderr);
    type Status = { suspended: { reason: string; newestRevision?: string } | null; deployedRevision: string };
    let s = (await (await fetch(`${url}/status`)).json()) as Status;
    // The push's run ends either before the suspend (v2 deployed) or after it (remembered, nothing deployed).
    for (let i = 0; i < 200 && s.deployedRevision !== rev && s.suspended?.newestRevision !== rev; i++) {
      await sleep(50);
      s = (await (await fetch(`${url}/status`)).json()) as Status;
    }
    assert.equal(s.suspended?.reason, "race", "the suspension is not lost");
    const history = readFileSync(path.join(stateDir, "history.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; result: string; revision: string });
    const suspendAt = history.findIndex((r) => r.event === "suspend");
    const deployed = history.findIndex(
      (r) => r.event === "run" && r.revision === rev && r.result === "succeeded",
    );
    if (page() === "<p>v2</p>\n")
      assert.ok(deployed >= 0 && deployed < suspendAt, "deployed before the suspend");
    else {
      assert.equal(deployed, -1, "nothing deployed after the suspend");
      assert.equal(s.suspended?.newestRevision, rev);
    }
  });
});
