import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { needs } from "./helpers/needs.js";

/** The alert rules in monitoring/, checked and unit-tested by Prometheus's own promtool. */

describe("monitoring/deploy-agent.rules.yml", {
  skip: needs("promtool", ["--version"], "apt-get install prometheus; .ci/run does"),
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
