import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { stringify } from "yaml";
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
    assert.match(res.stdout, /SUCCESS: 8 rules found/);
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

describe("monitoring/deploy-agent.dashboard.json", {
  skip: needs("promtool", ["--version"], "apt-get install prometheus; .ci/run does"),
}, () => {
  it("every panel query is PromQL that promtool parses, over the agent's own metric names", () => {
    const dashboard = JSON.parse(readFileSync("monitoring/deploy-agent.dashboard.json", "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ title: p.title, expr: t.expr })));
    assert.ok(exprs.length >= 10);
    // Grafana's variables as Prometheus would see them once Grafana has filled them in.
    const filled = exprs.map((e) => e.expr.replaceAll("$__rate_interval", "5m").replaceAll("$host", ".*"));
    const rules = {
      groups: [
        { name: "dashboard", rules: filled.map((expr, i) => ({ record: `dashboard:panel_${i}`, expr })) },
      ],
    };
    const dir = mkdtempSync(path.join(tmpdir(), "dashboard-"));
    try {
      writeFileSync(path.join(dir, "rules.yml"), stringify(rules));
      const res = spawnSync("promtool", ["check", "rules", path.join(dir, "rules.yml")], {
        encoding: "utf8",
      });
      assert.equal(res.status, 0, res.stdout + res.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    for (const { title, expr } of exprs)
      assert.match(expr, /deploy_agent_[a-z_]+/, `${title} queries an agent metric`);
  });
});
