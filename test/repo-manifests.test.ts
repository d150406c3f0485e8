import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { PROJECT, runCli } from "./helpers/agent.js";
import { git } from "./helpers/git.js";

/** This repository's own manifests, validated and dry-run against this repository's own history. */

const HOSTS = ["lxc151", "lxc106", "lxc139", "lxc110"];
const work = mkdtempSync(path.join(tmpdir(), "deploy-agent-self-"));
after(() => rmSync(work, { recursive: true, force: true }));

describe("config/<host>.yaml", () => {
  for (const host of HOSTS) {
    it(`${host} validates against the checkout`, async () => {
      const res = await runCli([
        "validate",
        "--config",
        `config/${host}.yaml`,
        "--repo",
        ".",
        "--env-file",
        "config/demo.env",
      ]);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /\nvalid\n$/);
    });
  }

  it("the README's demo: a dry run of lxc151 against a clone of this repository", async () => {
    const clone = path.join(work, "clone");
    git(
      work,
      "clone",
      "--quiet",
      "--branch",
      git(PROJECT, "rev-parse", "--abbrev-ref", "HEAD"),
      PROJECT,
      clone,
    );
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
    assert.match(res.stdout, /\[ok\] hookshot-transforms \(hookshot\): never applied on this host/);
    assert.match(res.stdout, /plan: sync hookshot\/grafana\.js -> connection "grafana"/);
    assert.match(res.stdout, /skipped: hookshot\/grafana\.js -> grafana: current state unknown/);
    assert.match(res.stdout, /would write \/etc\/systemd\/system\/livekit-server\.service/);
    assert.match(res.stdout, /would run: systemctl daemon-reload/);
    assert.match(res.stdout, /would write \/run\/livekit-restart-pending/);
    assert.ok(!res.stdout.includes("demo-token-not-a-secret"));
  });

  it("validate runs every transform on its fixtures and names the one that breaks", async () => {
    const clone = path.join(work, "broken");
    git(work, "clone", "--quiet", PROJECT, clone);
    writeFileSync(
      path.join(clone, "hookshot/owncast.js"),
      'result = { version: "v2", plain: data.eventData.missing.name };\n',
    );
    const res = await runCli([
      "validate",
      "--config",
      "config/lxc151.yaml",
      "--repo",
      clone,
      "--env-file",
      "config/demo.env",
    ]);
    assert.equal(res.code, 2);
    assert.match(
      res.stdout,
      /hookshot\/owncast\.js on test\/fixtures\/payloads\/owncast\/stream-started\.json: Transformation failed to run: .*TypeError/,
    );
  });
});
