import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import type { Effect } from "../src/host/effects.js";
import { openRepo } from "../src/source/open-repo.js";
import { loadSnapshot } from "../src/source/snapshot.js";
import { readState } from "../src/state/read-state.js";
import { writeState } from "../src/state/state.js";
import { createStepContext } from "../src/steps/context.js";
import { CLI, makeAgent, runArgs, runCli, stepOf, writeManifest } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { startMatrixServer } from "./helpers/matrix-server.js";
import { treeHash } from "./helpers/tree-hash.js";

/** The step context as the only door to the world, one abort signal per step, and steps that finish what they start. */

let fx: Fixture;
let root: string;

beforeEach(() => {
  fx = makeFixture({
    "landing/index.html": "<p>v1</p>\n",
    "systemd/app.service": "[Service]\nExecStart=/bin/true\n",
  });
  root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
  mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
});
afterEach(() => fx.cleanup());

const page = () => readFileSync(path.join(root, "var/www/index.html"), "utf8");

describe("one abort signal per step", () => {
  it("a timed-out step is stopped and awaited: nothing it started changes the host after its result", async () => {
    const late = path.join(root, "late");
    const manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          timeoutSeconds: 1,
          // Ignores SIGTERM for 2 s, then writes: a command that outlives the step's timeout.
          reload: [["sh", "-c", `trap '' TERM; sleep 2; echo late > ${late}`]],
        },
      ],
    });
    writeFileSync(path.join(root, "var/www/index.html"), "<p>v0</p>\n");
    const agent = makeAgent(fx.dir, fx.clone, manifest);
    const report = await agent.run();
    const returned = Date.now();
    const step = stepOf(report, "landing");
    assert.equal(step.outcome, "failed");
    assert.equal(step.error?.code, "STEP_TIMEOUT");
    assert.equal(page(), "<p>v0</p>\n", "the previous page was restored before the result was recorded");
    assert.ok(
      existsSync(late) && statSync(late).mtimeMs <= returned,
      "the command ended before the run returned",
    );
    const before = treeHash(root);
    await sleep(2500);
    assert.equal(treeHash(root), before, "nothing changed after the run returned");
    assert.equal(
      (await readState(agent.stateDir, "lxctest")).state.steps.landing?.lastResult?.code,
      "STEP_TIMEOUT",
    );
  });
});

describe("steps finish what they start", () => {
  let systemctl: FakeSystemctl;
  beforeEach(() => {
    systemctl = installFakeSystemctl();
  });
  afterEach(() => systemctl.restore());

  it("a run killed between its write and its reload: the retry runs the reload although the file is equal", async () => {
    const reloaded = path.join(root, "reloaded");
    const manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          reload: [["sh", "-c", `sleep 3; touch ${reloaded}`]],
        },
      ],
    });
    const args = runArgs(manifest, fx.clone, root, path.join(fx.dir, "state"));
    // The whole process group, so the reload command dies with the agent, as with kill -9 of a unit's cgroup.
    const child = spawn(process.execPath, ["--import", "tsx", "--", CLI, ...args], {
      detached: true,
      stdio: "ignore",
    });
    const deadline = Date.now() + 20_000;
    while (!(existsSync(path.join(root, "var/www/index.html")) && page() === "<p>v1</p>\n")) {
      assert.ok(Date.now() < deadline, "the page was written");
      await sleep(20);
    }
    process.kill(-(child.pid ?? 0), "SIGKILL");
    await sleep(3500);
    assert.equal(existsSync(reloaded), false, "the reload never ran");

    const retry = await runCli([...args, "--json"]);
    assert.equal(retry.code, 0, retry.stderr);
    const step = (
      JSON.parse(retry.stdout) as {
        steps: { reason: string; message: string; items: { outcome: string }[] }[];
      }
    ).steps[0];
    assert.equal(step?.reason, "NeverApplied");
    assert.match(
      step?.message ?? "",
      /never applied on this host; last attempt at [0-9a-f]{12} was interrupted/,
    );
    assert.deepEqual(
      step?.items.map((i) => i.outcome),
      ["unchanged"],
    );
    assert.ok(existsSync(reloaded), "the retry completed the reload");
  });

  it("a unit written before the agent died gets its daemon-reload on the retry", async () => {
    const manifest = writeManifest(fx.dir, {
      steps: [{ name: "unit", kind: "systemd-unit", source: "systemd/app.service", restart: "now" }],
    });
    const agent = makeAgent(fx.dir, fx.clone, manifest);
    // What a kill -9 after the write leaves: the unit in place, the attempt recorded, no result.
    writeFileSync(path.join(root, "etc/systemd/system/app.service"), "[Service]\nExecStart=/bin/true\n");
    const { state } = await readState(agent.stateDir, "lxctest");
    state.steps.unit = {
      lastAttemptedRevision: git(fx.clone, "rev-parse", "origin/main"),
      lastAttemptedAt: new Date().toISOString(),
      history: [],
    };
    await writeState(agent.stateDir, state);
    const step = stepOf(await agent.run(), "unit");
    assert.equal(step.outcome, "succeeded");
    assert.deepEqual(
      step.items.map((i) => i.outcome),
      ["unchanged"],
    );
    assert.deepEqual(systemctl.calls(), ["daemon-reload", "restart app.service"]);
    // Once finished, a run at the same revision does nothing.
    assert.equal(stepOf(await agent.run(), "unit").run, false);
    assert.equal(systemctl.calls().length, 2);
  });
});

describe("the dry-run context", () => {
  it("reaches no write primitive: files, commands, Matrix writes and health checks are only recorded", async () => {
    mkdirSync(path.join(root, "etc"), { recursive: true });
    writeFileSync(path.join(root, "etc/existing"), "keep\n");
    const hs = await startMatrixServer({
      roomId: "!r:x",
      users: { tok_abcdefgh: { userId: "@u:x", powerLevel: 100 } },
    });
    hs.state.set("t/k", { name: "k" });
    const effects: Effect[] = [];
    const repo = await openRepo(fx.clone, "origin", "main");
    const ctx = createStepContext({
      dryRun: true,
      root,
      source: loadSnapshot(repo, git(fx.clone, "rev-parse", "HEAD")),
      log: silentLogger(),
      signal: new AbortController().signal,
      commands: { systemctl: ["systemctl"] },
      record: (e) => effects.push(e),
    });
    const before = treeHash(root);
    try {
      await ctx.host.write("/var/www/new.html", Buffer.from("x"));
      await ctx.host.write("/etc/existing", Buffer.from("changed\n"), { mode: 0o600 });
      await ctx.host.restore({ path: "/etc/existing", data: null, mode: 0, uid: 0, gid: 0 });
      await ctx.run(["touch", path.join(root, "touched")]);
      const matrix = ctx.matrix({
        homeserver: hs.url,
        token: new Secret("tok_abcdefgh"),
        attempts: 3,
        backoffMs: 1,
        timeoutMs: 1000,
      });
      assert.deepEqual(await matrix.getState("!r:x", "t", "k"), { name: "k" }, "reads are real");
      await matrix.replaceState("!r:x", "t", "k", { name: "k", f: 1 }, "test");
      const requests = hs.requests.length;
      assert.deepEqual(await ctx.health(`${hs.url}/healthz`, 5), {
        healthy: true,
        last: "not checked (dry run)",
      });
      assert.equal(hs.requests.length, requests, "the health check sent nothing");
      assert.equal(hs.writes(), 0);
    } finally {
      await hs.close();
    }
    assert.equal(treeHash(root), before, "the root is byte-identical");
    assert.deepEqual(
      effects.map((e) => e.type),
      ["write", "write", "restore", "run", "request", "request"],
    );
  });
});
