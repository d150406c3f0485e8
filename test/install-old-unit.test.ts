import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { freePort } from "./helpers/agent.js";
import {
  hooksJson,
  type InstallHost,
  MIGRATING,
  makeInstallHost,
  oldWebhook,
  runCommand,
  signedDelivery,
  unitNow,
} from "./helpers/install-host.js";
import { treeHash } from "./helpers/tree-hash.js";

/**
 * webhook.service in each state a legacy host can leave it: what install migrates (whatever would listen on
 * the port again, now or at the next boot), what it leaves alone, and that a failed install puts back
 * exactly the state it found (enabled or not, running or not, masked), never more.
 */

const SECRET = "old-secret-0123456789abcdef";
const AGENT = "deploy-agent@lxctest.service";
let h: InstallHost;
afterEach(() => h.cleanup());

/** A host migrating from webhook.service in the given state, on a port of its own. */
async function legacyHost(state?: "enabled" | "running" | "masked") {
  h = await makeInstallHost(MIGRATING);
  const port = await freePort();
  await oldWebhook(h.root, { hooks: hooksJson(JSON.stringify(SECRET)), port, state });
  return port;
}

/** install's calls that change webhook.service (questions left out). */
const changesToOld = () =>
  h.systemctl
    .calls()
    .filter((c) => c.endsWith(" webhook.service") && !/^(is-active|is-enabled|cat|show) /.test(c));

// What the agent itself does while it runs (its start-up fetch and deploy), not install's files.
const agentsOwn = (rel: string) => rel.startsWith("opt/matrix-config/.git/") || rel.startsWith("var/www/");

describe("install: webhook.service enabled but stopped (the next boot would start it on the port)", () => {
  it("is migrated: its secret and hook URL are taken over, and it is disabled", async () => {
    const port = await legacyHost("enabled");
    const res = await h.install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "disabled", active: "inactive" });
    assert.equal(
      await signedDelivery(port, SECRET),
      202,
      "the agent answers on the old URL with the old secret",
    );
    assert.equal(h.systemctl.calls().includes("start webhook.service"), false, "never started");
    assert.match(res.stdout, /webhook\.service is stopped and disabled/);
  });

  it("enabled with no hooks file (Debian's package as installed) is left alone: it cannot start", async () => {
    await legacyHost("enabled");
    rmSync(path.join(h.root, "etc/webhook/hooks.json"));
    const setUp = changesToOld().length;
    const res = await h.install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.deepEqual(changesToOld().slice(setUp), [], "nothing done to webhook.service");
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "enabled", active: "inactive" });
    assert.equal((await unitNow(AGENT)).active, "active");
  });

  it("a failed final restart leaves it enabled and stopped, as it was, and install's files as they were", async () => {
    await legacyHost("enabled");
    const before = treeHash(h.root, agentsOwn);
    h.systemctl.failOn(`restart ${AGENT}`, 2);
    const res = await h.install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error INSTALL_FAILED: systemctl restart deploy-agent@lxctest\.service exited with code 1.*; webhook\.service is enabled again \(not running, as it was\)\nhint: /s,
    );
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "enabled", active: "inactive" });
    assert.deepEqual(await unitNow(AGENT), { enabled: "disabled", active: "inactive" });
    assert.equal(treeHash(h.root, agentsOwn), before);
  });

  it("beside an agent already installed and serving: only disabled, the agent's secret and URL kept", async () => {
    h = await makeInstallHost(MIGRATING);
    const env = path.join(h.root, "etc/matrix-deploy.env");
    writeFileSync(env, "MATRIX_TOKEN=syt_abc\n", { mode: 0o600 });
    assert.equal((await h.install()).code, 0);
    const secretBefore = readFileSync(env, "utf8");
    // The old unit comes back enabled (a package upgrade, a restore): it would take the port at the next boot.
    await oldWebhook(h.root, {
      hooks: hooksJson(JSON.stringify(SECRET)),
      port: await freePort(),
      state: "enabled",
    });
    const res = await h.install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "disabled", active: "inactive" });
    assert.deepEqual(changesToOld(), ["enable webhook.service", "disable webhook.service"]);
    assert.equal(
      readFileSync(env, "utf8"),
      secretBefore,
      "the agent's secret kept, the old hooks file's not taken",
    );
    assert.deepEqual(await unitNow(AGENT), { enabled: "enabled", active: "active" });
  });
});

describe("install: webhook.service running but disabled", () => {
  it("a failed final restart starts it again and leaves it disabled, as it was", async () => {
    const port = await legacyHost("running");
    h.systemctl.failOn(`restart ${AGENT}`, 2);
    const res = await h.install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stderr, /; webhook\.service is running again \(not enabled, as it was\)\nhint: /);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "disabled", active: "active" });
    const answer = await fetch(`http://127.0.0.1:${port}/hooks/matrix-deploy`, { method: "POST" });
    assert.equal(await answer.text(), "ok", "the old listener has the port again");
  });
});

describe("install: webhook.service masked", () => {
  it("stopped: nothing to migrate; it stays masked and untouched, also when the install fails", async () => {
    await legacyHost("masked");
    h.systemctl.failOn(`enable ${AGENT}`);
    const failed = await h.install();
    assert.equal(failed.code, 1, failed.stdout + failed.stderr);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "masked", active: "inactive" });
    h.systemctl.failOn(`enable ${AGENT}`, 99);
    const res = await h.install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "masked", active: "inactive" });
    assert.deepEqual(changesToOld(), ["mask webhook.service"], "only the test's own mask");
    assert.doesNotMatch(res.stdout, /webhook\.service is stopped and disabled/);
  });

  it("but still running: refused before anything changes (a masked unit cannot be started again)", async () => {
    await legacyHost("running");
    await runCommand("systemctl", ["mask", "webhook.service"]);
    const before = treeHash(h.root);
    const res = await h.install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error INSTALL_FAILED: webhook\.service is masked but running: .*\nhint: .*systemctl unmask webhook\.service/s,
    );
    assert.equal(treeHash(h.root), before, "nothing written");
    assert.deepEqual(changesToOld(), ["start webhook.service", "mask webhook.service"]);
    assert.deepEqual(await unitNow("webhook.service"), { enabled: "masked", active: "active" });
  });
});
