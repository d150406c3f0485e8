import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import pino from "pino";
import { loadManifest } from "../src/manifest/load.js";
import { createDriftWatch } from "../src/server/drift-watch.js";
import type { Runner } from "../src/server/runner.js";
import { liveState } from "../src/server/status.js";
import { openRepo } from "../src/source/open-repo.js";
import { hostRoot, runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/** Drift at its seams: targets that are not files any more, steps that are gone. */

const SECRET = "attack-drift-webhook-secret-0123";
let fx: Fixture;
let root: string;
let stateDir: string;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", "landing/about.html": "<p>about</p>\n" });
  root = hostRoot(fx.dir, SECRET);
  stateDir = path.join(fx.dir, "state");
});
afterEach(() => fx.cleanup());

const step = (name: string, file: string) => ({
  name,
  kind: "file",
  source: `landing/${file}`,
  targets: [`/var/www/${file}`],
  mode: "0644",
});
function manifest(
  steps: Record<string, unknown>[] = [step("landing", "index.html"), step("about", "about.html")],
  name?: string,
) {
  return writeManifest(
    fx.dir,
    {
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      commands: { systemctl: ["true"] },
      steps,
    },
    name,
  );
}
const diff = (file: string, ...extra: string[]) =>
  runCli(["diff", "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir, ...extra]);

/** The daemon's drift watch over the manifest at `file`, with what a test replaces (metrics, runner). */
async function driftWatch(file: string, parts: Partial<Parameters<typeof createDriftWatch>[0]>) {
  const live = liveState((await loadManifest(file)).manifest);
  const repo = await openRepo(fx.clone, live.manifest.repo.remote, live.manifest.repo.branch);
  const watch = createDriftWatch({
    live,
    repoDir: fx.clone,
    stateDir,
    root,
    dryRun: false,
    log: pino({ level: "silent" }),
    metrics: { drift: () => {} },
    publish: () => {},
    repo: async () => repo,
    runner: () => ({ request: () => {} }) as unknown as Runner,
    stop: new AbortController().signal,
    ...parts,
  });
  return { live, watch };
}

describe("drift at its seams", () => {
  it("a target replaced by a link, a directory or a FIFO is drift of that step; the other steps are still told", async () => {
    const file = manifest();
    const deployed = await runCli(runArgs(file, fx.clone, root, stateDir));
    assert.equal(deployed.code, 0, deployed.stderr);
    const target = path.join(root, "var/www/index.html");
    const plant = {
      link: () => symlinkSync("/etc/hostname", target),
      directory: () => mkdirSync(target),
      fifo: () => execFileSync("mkfifo", [target]),
    };
    for (const [what, make] of Object.entries(plant)) {
      rmSync(target, { recursive: true, force: true });
      make();
      const res = await diff(file, "--json");
      assert.equal(res.code, 1, `${what}: ${res.stdout}${res.stderr}`);
      const report = JSON.parse(res.stdout) as {
        steps: { name: string; state: string; items: { id: string; detail?: string }[] }[];
      };
      const landing = report.steps.find((s) => s.name === "landing");
      assert.equal(landing?.state, "drifted", what);
      assert.match(landing?.items[0]?.detail ?? "", /symbolic link|not a regular file/, what);
      assert.equal(report.steps.find((s) => s.name === "about")?.state, "in-sync", what);
    }
  });

  it("a step removed from the manifest loses its drift sample: the alert does not fire for a step that is gone", async () => {
    const file = manifest();
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    writeFileSync(path.join(root, "var/www/index.html"), "<p>edited by hand</p>\n");
    const samples = new Map<string, number>();
    const { live, watch } = await driftWatch(file, {
      metrics: {
        drift: (name, state) =>
          state === "unknown" ? samples.delete(name) : samples.set(name, state === "drifted" ? 1 : 0),
      },
    });
    await watch.check();
    assert.deepEqual(Object.fromEntries(samples), { landing: 1, about: 0 });
    // A new manifest without the drifted step (removed, or renamed).
    live.manifest = (await loadManifest(manifest([step("about", "about.html")], "next.yaml"))).manifest;
    await watch.check();
    assert.deepEqual(Object.fromEntries(samples), { about: 0 });
  });

  it("a selfHeal step whose target is a link is reported, never healed: the run would fail the same way at every check", async () => {
    const file = manifest([
      { ...step("landing", "index.html"), selfHeal: true },
      { ...step("about", "about.html"), selfHeal: true },
    ]);
    assert.equal((await runCli(runArgs(file, fx.clone, root, stateDir))).code, 0);
    const target = path.join(root, "var/www/index.html");
    rmSync(target);
    symlinkSync("/etc/hostname", target);
    const requests: unknown[] = [];
    const { live, watch } = await driftWatch(file, {
      runner: () =>
        ({ request: (_task: string, trigger: unknown) => requests.push(trigger) }) as unknown as Runner,
    });
    await watch.check();
    assert.equal(live.drift?.steps.find((s) => s.name === "landing")?.state, "drifted");
    assert.deepEqual(requests, []);
    // Drift a run can put back, beside it, is healed; the link is not.
    writeFileSync(path.join(root, "var/www/about.html"), "<p>edited</p>\n");
    await watch.check();
    assert.deepEqual(requests, [{ kind: "self-heal", steps: ["about"] }]);
  });

  it("Draupnir's config deleted, or left with the placeholder, is drift (no run can put it back), not 'cannot tell'", async () => {
    fx.push({
      "draupnir/production.yaml":
        'homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: REDACTED\nmanagementRoom: "!m"\n',
    });
    git(fx.clone, "pull", "--quiet");
    const file = manifest([
      {
        name: "draupnir",
        kind: "draupnir-config",
        source: "draupnir/production.yaml",
        target: "/var/www/production.yaml",
        healthUrl: "http://127.0.0.1:1/healthz",
        healthTimeoutSeconds: 1,
        timeoutSeconds: 31,
      },
    ]);
    // Applied at HEAD, as after a deploy.
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(
      path.join(stateDir, "state.json"),
      JSON.stringify({
        version: 1,
        host: "lxctest",
        steps: { draupnir: { lastAppliedRevision: git(fx.clone, "rev-parse", "HEAD") } },
      }),
    );
    const target = path.join(root, "var/www/production.yaml");
    for (const [what, live] of [
      ["deleted", null],
      [
        "the placeholder",
        'homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: REDACTED\nmanagementRoom: "!m"\n',
      ],
    ] as const) {
      rmSync(target, { force: true });
      if (live) writeFileSync(target, live, { mode: 0o600 });
      const res = await diff(file, "--json");
      assert.equal(res.code, 1, `${what}: ${res.stdout}${res.stderr}`);
      const report = JSON.parse(res.stdout) as { steps: { state: string; items: { stalled?: boolean }[] }[] };
      assert.equal(report.steps[0]?.state, "drifted", what);
      assert.equal(report.steps[0]?.items[0]?.stalled, true, what);
    }
  });
});
