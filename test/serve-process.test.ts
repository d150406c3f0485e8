import assert from "node:assert/strict";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { readState } from "../src/state/read-state.js";
import { hostRoot, listeningUrl, runCli, serveArgs, startCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { childrenOf } from "./helpers/proc.js";

/** `deploy-agent serve` as a real process: start-up, signals, crashes. */

let fx: Fixture;
let root: string;
let stateDir: string;
let manifest: string;
const SECRET = "serve-process-Secret-xyz";

/** `serve` on this test's manifest, repository and root, on a free loopback port. */
const serveProcessArgs = () => serveArgs(manifest, fx.clone, root);
const serve = () => startCli([...serveProcessArgs(), "--state-dir", stateDir]);

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", "cinny/config.json": "{}\n" });
  root = hostRoot(fx.dir, SECRET);
  stateDir = path.join(fx.dir, "state");
  manifest = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      {
        name: "slow",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        // Marks when the command is in flight, then takes 2 s.
        reload: [["sh", "-c", `touch ${path.join(root, "var/www/reloading")}; sleep 2`]],
      },
      { name: "after", kind: "file", source: "cinny/config.json", targets: ["/var/www/config.json"] },
    ],
  });
});
afterEach(() => fx.cleanup());

describe("deploy-agent serve (process)", () => {
  it("SIGTERM during a slow step: the step finishes, the rest is skipped, state is saved, exit 0", async () => {
    const s = serve();
    await s.waitFor(/"step":"slow".*"msg":"never applied on this host"/);
    // SIGTERM while the reload command runs: no other signal handler may end the daemon.
    while (!existsSync(path.join(root, "var/www/reloading"))) await new Promise((r) => setTimeout(r, 10));
    s.child.kill("SIGTERM");
    assert.equal(await s.exited, 0, s.out());
    assert.match(s.out(), /"step":"slow".*"msg":"step succeeded"/);
    assert.match(s.out(), /shutting down/);
    const { state } = await readState(stateDir, "lxctest");
    assert.equal(state.steps.slow?.lastResult?.outcome, "succeeded");
    assert.ok(state.steps.slow?.lastAppliedRevision);
    assert.equal(
      state.steps.after?.lastAppliedRevision,
      undefined,
      "the step after the shutdown did not run",
    );
    assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>v1</p>\n");
    assert.equal(s.out().includes(SECRET), false);
  });

  it("after the drift check, as after a run, a lock process waits for the next push: one, never none", async () => {
    const s = serve();
    const url = await listeningUrl(s);
    // The start-up run readies one; the drift check at start takes it under the lock and must ready another.
    const waiting = () =>
      childrenOf(s.child.pid ?? 0).filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("read -r go && exec flock");
        } catch {
          return false;
        }
      });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const status = (await (await fetch(`${url}/status`)).json()) as { drift?: unknown };
      if (status.drift && waiting().length > 0) break;
      assert.ok(Date.now() < deadline, `no lock process waits after the drift check:\n${s.out()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(waiting().length, 1);
    s.child.kill("SIGTERM");
    assert.equal(await s.exited, 0, s.out());
  });

  it("kill -9 mid-step leaves consistent state; the next start re-runs what was not recorded as applied", async () => {
    const s = serve();
    await s.waitFor(/"step":"slow".*"msg":"never applied on this host"/);
    s.child.kill("SIGKILL");
    await s.exited;
    const crashed = await readState(stateDir, "lxctest");
    assert.equal(crashed.problem, undefined, "state file is intact");
    assert.ok(crashed.state.steps.slow?.lastAttemptedRevision);
    assert.equal(crashed.state.steps.slow?.lastAppliedRevision, undefined);

    const again = serve();
    await again.waitFor(/"msg":"run finished"/);
    const stopping = Date.now();
    again.child.kill("SIGTERM");
    assert.equal(await again.exited, 0);
    // Idle, with nothing to notify: nothing waits out the notifier's 5 s drain bound (a ref'd timer did).
    assert.ok(Date.now() - stopping < 3000, `stopped after ${Date.now() - stopping} ms`);
    const { state } = await readState(stateDir, "lxctest");
    assert.ok(state.steps.slow?.lastAppliedRevision && state.steps.after?.lastAppliedRevision);
    assert.equal(readFileSync(path.join(root, "var/www/config.json"), "utf8"), "{}\n");
  });

  it("refuses to start without a secret, or with a secret file others can read", async () => {
    writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), "\n");
    const empty = await runCli(serveProcessArgs());
    assert.equal(empty.code, 2);
    assert.match(
      empty.stderr,
      /error CONFIG_INVALID: no webhook secret\nhint: put it in \S*\/etc\/deploy-agent\/webhook-secret /,
    );
    writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), `${SECRET}\n`);
    chmodSync(path.join(root, "etc/deploy-agent/webhook-secret"), 0o644);
    const open = await runCli(serveProcessArgs());
    assert.equal(open.code, 2);
    assert.match(open.stderr, /is readable by others \(mode 0644\)/);
    assert.equal((open.stderr + open.stdout).includes(SECRET), false);
    const badListen = await runCli(["serve", "--config", manifest, "--listen", "nope"]);
    assert.equal(badListen.code, 2);
    assert.match(badListen.stderr, /--listen \(or DEPLOY_AGENT_LISTEN\) takes HOST:PORT, not "nope"/);
    const badEnv = await runCli(["serve", "--config", manifest, "--repo", fx.clone, "--root", root], {
      DEPLOY_AGENT_LISTEN: "0.0.0.0",
    });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /error USAGE: .*not "0\.0\.0\.0"/);
  });

  it("a port already in use (the old webhook still running) is LISTEN_FAILED, exit 1, no stack trace", async () => {
    const holder = createServer();
    await new Promise<void>((done) => holder.listen(0, "127.0.0.1", done));
    const { port } = holder.address() as AddressInfo;
    try {
      const res = await runCli(serveArgs(manifest, fx.clone, root, `127.0.0.1:${port}`));
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`error LISTEN_FAILED: 127\\.0\\.0\\.1:${port} is already in use`));
      assert.match(res.stderr, /hint: see who holds it: ss -ltnp/);
      assert.doesNotMatch(res.stderr + res.stdout, /INTERNAL|\n\s+at /);
    } finally {
      holder.close();
    }
  });

  it("takes the listen address and hook path from the environment, as install's drop-in sets them", async () => {
    const daemon = startCli([
      "serve",
      "--config",
      manifest,
      "--repo",
      fx.clone,
      "--root",
      root,
      "--state-dir",
      stateDir,
    ]);
    try {
      await daemon.waitFor(/"msg":"listening"/);
      assert.match(daemon.out(), /"path":"\/hooks\/deploy"/);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
    const moved = startCli(
      ["serve", "--config", manifest, "--repo", fx.clone, "--root", root, "--state-dir", stateDir],
      {
        DEPLOY_AGENT_LISTEN: "127.0.0.1:0",
        DEPLOY_AGENT_WEBHOOK_PATH: "/hooks/matrix-deploy",
      },
    );
    try {
      const line = await moved.waitFor(/.*"msg":"listening".*/);
      assert.match(line, /"path":"\/hooks\/matrix-deploy"/);
      const address = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(line)?.[1];
      assert.ok(address, line);
      assert.equal((await fetch(`${address}/hooks/deploy`, { method: "POST" })).status, 404);
      assert.equal((await fetch(`${address}/hooks/matrix-deploy`, { method: "POST" })).status, 401);
    } finally {
      moved.child.kill("SIGTERM");
      await moved.exited;
    }
  });
});
