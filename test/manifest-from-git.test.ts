import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { freePort, hostRoot, runCli, type Served, startCli } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/**
 * The host manifest deployed from git: `serve` started on a manifest inside its clone applies, on every run,
 * the manifest of the revision it deploys (real repositories, the real serve process, signed pushes).
 */

const SECRET = "manifest-from-git-secret-0123456789";
const MANIFEST = "config/lxctest.yaml";

let fx: Fixture;
let root: string;
let daemon: Served | undefined;

function manifest(overrides: { steps?: unknown[]; listen?: unknown; webhook?: unknown } = {}): string {
  return stringify({
    version: 1,
    host: "lxctest",
    listen: overrides.listen ?? { host: "127.0.0.1", port: 9000 },
    webhook: overrides.webhook ?? { pollIntervalSeconds: 0 },
    stateDir: "/var/lib/deploy-agent",
    steps: overrides.steps ?? [page()],
  });
}

const page = (extra: Record<string, unknown> = {}) => ({
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
  ...extra,
});

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", [MANIFEST]: manifest() });
  root = hostRoot(fx.dir, SECRET, ["var/lib/deploy-agent"]);
});
afterEach(async () => {
  daemon?.child.kill("SIGTERM");
  await daemon?.exited;
  daemon = undefined;
  fx.cleanup();
});

/** serve on the manifest inside the clone; resolves with its base URL once it listens. */
async function serve(opts: { manifestListen?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  daemon = startCli(
    [
      "serve",
      "--config",
      path.join(fx.clone, MANIFEST),
      "--root",
      root,
      "--repo",
      fx.clone,
      ...(opts.manifestListen ? [] : ["--listen", "127.0.0.1:0"]),
    ],
    opts.env,
  );
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  const url = /"address":"(http:\/\/[^"]+)"/.exec(line)?.[1];
  assert.ok(url, line);
  await daemon
    .waitFor(/"run":"start-up reconcile".*"msg":"run finished"|"msg":"run finished"/, 20_000)
    .catch(() => {});
  return url;
}

async function deliver(url: string, after: string) {
  const body = pushBody({ after });
  const res = await fetch(`${url}/hooks/deploy`, {
    method: "POST",
    headers: giteaHeaders(body, SECRET),
    body: new Uint8Array(body),
  });
  assert.equal(res.status, 202);
}

async function status(url: string) {
  return (await (await fetch(`${url}/status`)).json()) as {
    deployedRevision: string | null;
    queue: { running: boolean };
    configuration: { valid: boolean; source: string; pendingRestart: string[] };
    lastError: { code: string; message: string } | null;
    steps: { name: string; lastAppliedRevision: string | null }[];
    orphanedSteps: { name: string; lastAppliedRevision: string | null }[];
  };
}

async function until(what: string, probe: () => Promise<boolean> | boolean, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}\n${daemon?.out()}`);
    await sleep(50);
  }
}

const live = () => readFileSync(path.join(root, "var/www/index.html"), "utf8");
const applied = async (url: string, step: string) =>
  (await status(url)).steps.find((s) => s.name === step)?.lastAppliedRevision;
/** The run of `rev` is over: what the daemon reports about it (validity, pending restarts) is final. */
const ranTo = async (url: string, rev: string) => {
  const s = await status(url);
  return s.deployedRevision === rev && !s.queue.running;
};

describe("the host manifest from git", () => {
  it("a push that changes a step's timeout and its file together is deployed with the new timeout", async () => {
    // At first the page's reload takes 2 s against a 1 s timeout: the step fails.
    fx.push({ [MANIFEST]: manifest({ steps: [page({ reload: [["sleep", "2"]], timeoutSeconds: 1 })] }) });
    const url = await serve();
    await until(
      "the first run to fail",
      async () =>
        (await status(url)).steps[0]?.lastAppliedRevision === null &&
        /STEP_TIMEOUT/.test(daemon?.out() ?? ""),
    );
    const rev = fx.push({
      "landing/index.html": "<p>v2</p>\n",
      [MANIFEST]: manifest({ steps: [page({ reload: [["sleep", "2"]], timeoutSeconds: 10 })] }),
    });
    await deliver(url, rev);
    await until("v2 live at the pushed commit", async () => (await applied(url, "landing")) === rev);
    assert.equal(live(), "<p>v2</p>\n");
    assert.equal((await status(url)).configuration.source, `git: ${MANIFEST} at the deployed revision`);
  });

  it("an invalid pushed manifest deploys nothing and says so everywhere until a fixed one is pushed", async () => {
    const url = await serve();
    await until("v1 live", async () => (await applied(url, "landing")) !== null);
    const good = git(fx.clone, "rev-parse", "HEAD");
    const bad = fx.push({
      "landing/index.html": "<p>v2</p>\n",
      [MANIFEST]: manifest({ steps: [{ ...page(), kind: "teleport" }] }),
    });
    await deliver(url, bad);
    await until(
      "the run to fail on the manifest",
      async () => (await status(url)).lastError?.code === "CONFIG_INVALID",
    );
    const s = await status(url);
    assert.equal(s.configuration.valid, false);
    assert.match(
      s.lastError?.message ?? "",
      new RegExp(`${MANIFEST}@${bad.slice(0, 12)}: steps\\.0\\.kind: unknown step kind`),
    );
    assert.equal(live(), "<p>v1</p>\n", "nothing deployed");
    assert.equal(git(fx.clone, "rev-parse", "HEAD"), good, "the clone stays on the last good revision");
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 503);
    assert.match(await health.text(), /configuration invalid/);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /^deploy_agent_config_valid\{host="lxctest"\} 0$/m,
    );
    // A hand-run `run` reads the same manifest from git and refuses the same way.
    const manual = await runCli([
      "run",
      "--config",
      path.join(fx.clone, MANIFEST),
      "--repo",
      fx.clone,
      "--root",
      root,
    ]);
    assert.equal(manual.code, 2);
    assert.match(manual.stderr, /error CONFIG_INVALID: .*steps\.0\.kind: unknown step kind/);

    const fixed = fx.push({ [MANIFEST]: manifest() });
    await deliver(url, fixed);
    await until("the fixed revision deployed", () => ranTo(url, fixed));
    assert.equal(live(), "<p>v2</p>\n");
    assert.equal((await status(url)).configuration.valid, true);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /^deploy_agent_config_valid\{host="lxctest"\} 1$/m,
    );
    assert.equal(daemon?.child.exitCode, null, "the daemon never died of the bad push");
  });

  it("a changed listen port is reported as taking effect after a restart; the rest applies now", async () => {
    // The listener as the manifest file says (no --listen, which a restart would keep).
    const port = await freePort();
    const first = fx.push({ [MANIFEST]: manifest({ listen: { host: "127.0.0.1", port } }) });
    git(fx.clone, "fetch", "--quiet", "origin");
    git(fx.clone, "reset", "--quiet", "--hard", first);
    const url = await serve({ manifestListen: true });
    await until("v1 live", async () => (await applied(url, "landing")) !== null);
    const rev = fx.push({
      "landing/index.html": "<p>v3</p>\n",
      [MANIFEST]: manifest({ listen: { host: "127.0.0.1", port: 9123 } }),
    });
    await deliver(url, rev);
    await until("v3 live", () => ranTo(url, rev));
    assert.deepEqual((await status(url)).configuration.pendingRestart, ["listen"]);
    assert.match(
      daemon?.out() ?? "",
      /listen: config\/lxctest\.yaml changes it to \{\\"host\\":\\"127\.0\.0\.1\\",\\"port\\":9123\}; the agent runs with .* \(its manifest file, read at start\) until it is restarted/,
    );
    assert.equal((await fetch(`${url}/healthz`)).status, 200, "still on the old address");
  });

  it("a migrated host's DEPLOY_AGENT_WEBHOOK_PATH is no pending restart; git changing it is said once, with both values and their sources", async () => {
    const env = { DEPLOY_AGENT_WEBHOOK_PATH: "/hooks/matrix-deploy" };
    const url = await serve({ env });
    const hook = async (rev: string) => {
      const body = pushBody({ after: rev });
      const res = await fetch(`${url}/hooks/matrix-deploy`, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      });
      assert.equal(res.status, 202);
      await until(`${rev} run`, () => ranTo(url, rev));
    };
    await hook(fx.push({ "landing/index.html": "<p>v2</p>\n" }));
    await hook(fx.push({ "landing/index.html": "<p>v3</p>\n" }));
    assert.deepEqual((await status(url)).configuration.pendingRestart, []);
    assert.doesNotMatch(
      daemon?.out() ?? "",
      /webhook\.path|until it is restarted/,
      "no warning while git and the host agree",
    );
    const rev = fx.push({
      [MANIFEST]: manifest({ webhook: { pollIntervalSeconds: 0, path: "/hooks/other" } }),
    });
    await hook(rev);
    // The same revision again (Gitea's Test Delivery): a second run of it, and nothing said again.
    const runs = async () =>
      ((await (await fetch(`${url}/status`)).json()) as { queue: { runsStarted: number } }).queue.runsStarted;
    const before = await runs();
    await hook(rev);
    await until(
      "the second run of the revision",
      async () => (await runs()) > before && (await ranTo(url, rev)),
    );
    assert.deepEqual((await status(url)).configuration.pendingRestart, []);
    const said = (daemon?.out() ?? "").match(/webhook\.path: config\/lxctest\.yaml sets [^\n]*/g) ?? [];
    assert.equal(said.length, 1, "once per revision");
    assert.match(
      said[0] ?? "",
      /sets \\"\/hooks\/other\\", DEPLOY_AGENT_WEBHOOK_PATH \(the unit's environment\) overrides it with \\"\/hooks\/matrix-deploy\\" \(a restart keeps that\)/,
    );
  });

  it("a renamed step runs once as new; the old name's state is kept and reported as orphaned", async () => {
    const url = await serve();
    await until("v1 live", async () => (await applied(url, "landing")) !== null);
    const rev = fx.push({ [MANIFEST]: manifest({ steps: [{ ...page(), name: "landing-page" }] }) });
    await deliver(url, rev);
    await until("landing-page applied", async () => (await applied(url, "landing-page")) === rev);
    const s = await status(url);
    assert.deepEqual(
      s.orphanedSteps.map((o) => o.name),
      ["landing"],
    );
    assert.ok(s.orphanedSteps[0]?.lastAppliedRevision);
    const text = await runCli(["status", "--config", path.join(fx.clone, MANIFEST), "--root", root]);
    assert.match(text.stdout, /landing: orphaned \(no longer in the manifest; its state is kept\)/);
  });
});
