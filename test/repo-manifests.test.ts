import assert from "node:assert/strict";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { PROJECT, runCli } from "./helpers/agent.js";
import { git } from "./helpers/git.js";

/** This repository's own manifests, validated and dry-run against this repository's own history. */

const HOSTS = ["lxc151", "lxc106", "lxc139", "lxc110"];
const work = mkdtempSync(path.join(tmpdir(), "deploy-agent-self-"));
after(() => rmSync(work, { recursive: true, force: true }));

// A host as validate sees it: a clone of this repository with its origin, the hosts' webhook secret file
// under a root, and the demo env file as private as a real one (serve and validate refuse it otherwise).
const clone = path.join(work, "clone");
git(work, "clone", "--quiet", "--branch", git(PROJECT, "rev-parse", "--abbrev-ref", "HEAD"), PROJECT, clone);
const hostRoot = path.join(work, "host");
mkdirSync(path.join(hostRoot, "etc/deploy-agent"), { recursive: true });
writeFileSync(path.join(hostRoot, "etc/deploy-agent/webhook-secret"), "0123456789abcdef0123456789abcdef\n", {
  mode: 0o600,
});
const envFile = path.join(work, "demo.env");
copyFileSync(path.join(PROJECT, "config/demo.env"), envFile);
chmodSync(envFile, 0o600);

describe("config/<host>.yaml", () => {
  for (const host of HOSTS) {
    it(`${host} validates against a clone`, async () => {
      const res = await runCli([
        "validate",
        "--config",
        `config/${host}.yaml`,
        "--repo",
        clone,
        "--env-file",
        envFile,
        "--root",
        hostRoot,
      ]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /\nvalid\n$/);
    });
  }

  it("the README's demo: a dry run of lxc151 against a clone of this repository", async () => {
    const root = path.join(work, "root");
    const res = await runCli([
      "run",
      "--dry-run",
      "--no-fetch",
      "--config",
      "config/lxc151.yaml",
      "--repo",
      clone,
      "--env-file",
      "config/demo.env",
      "--root",
      root,
      "--state-dir",
      path.join(root, "state"),
    ]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    // The demo homeserver cannot be reached: the dry run says so and does not claim success.
    assert.match(res.stdout, /\[UNKNOWN\] hookshot-transforms \(hookshot\): never applied on this host/);
    assert.match(
      res.stdout,
      /unknown: hookshot\/bazarr\.js -> bazarr, hookshot\/deploy-agent\.js -> deploy-agent, hookshot\/grafana\.js -> grafana, .*: current state unknown/,
    );
    assert.equal(res.stdout.match(/grafana\.js/g)?.length, 1, "each connection is listed once");
    assert.match(res.stdout, /\[plan\] livekit-unit/);
    assert.match(res.stdout, /\nresult: undetermined /);
    assert.doesNotMatch(res.stdout + res.stderr, /succeeded/);
    assert.match(res.stdout, /would write \/etc\/systemd\/system\/livekit-server\.service/);
    assert.match(res.stdout, /would run: systemctl daemon-reload/);
    assert.match(res.stdout, /would write \/run\/livekit-restart-pending/);
    assert.ok(!res.stdout.includes("demo-token-not-a-secret"));
  });

  it("validate runs every transform on its fixtures and names the one that breaks", async () => {
    const broken = path.join(work, "broken");
    git(work, "clone", "--quiet", PROJECT, broken);
    writeFileSync(
      path.join(broken, "hookshot/owncast.js"),
      'result = { version: "v2", plain: data.eventData.missing.name };\n',
    );
    const res = await runCli([
      "validate",
      "--config",
      "config/lxc151.yaml",
      "--repo",
      broken,
      "--env-file",
      envFile,
      "--root",
      hostRoot,
    ]);
    assert.equal(res.code, 2);
    assert.match(
      res.stdout,
      /hookshot\/owncast\.js on test\/fixtures\/payloads\/owncast\/stream-started\.json: Transformation failed to run: .*TypeError/,
    );
  });
});
