import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";

/** The alert rules in monitoring/, checked and unit-tested by Prometheus's own promtool. */

const hasPromtool = spawnSync("promtool", ["--version"]).status === 0;

describe("monitoring/deploy-agent.rules.yml", {
  skip: hasPromtool ? false : "promtool is not installed (.ci/run installs prometheus)",
}, () => {
  it("passes promtool check rules", () => {
    const res = spawnSync("promtool", ["check", "rules", "monitoring/deploy-agent.rules.yml"], {
      encoding: "utf8",
    });
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /SUCCESS: 4 rules found/);
  });

  it("fires as its unit tests expect (promtool test rules)", () => {
    const res = spawnSync("promtool", ["test", "rules", "deploy-agent.rules.test.yml"], {
      cwd: "monitoring",
      encoding: "utf8",
    });
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /SUCCESS/);
  });
});
