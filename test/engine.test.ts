import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { readState } from "../src/state/read-state.js";
import { STATE_FILE } from "../src/state/state.js";
import { type Agent, makeAgent, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { treeHash } from "./helpers/tree-hash.js";

const PAGE_V1 = "<!doctype html><title>v1</title>\n";
const PAGE_V2 = "<!doctype html><title>v2</title>\n";
const CONFIG_V1 = '{ "defaultHomeserver": 0, "homeserverList": ["matrix.lotusguild.org"] }\n';

let fx: Fixture;
let agent: Agent;

/** A two-step host like LXC 106/139: a page with a reload command, and a JSON config copied twice. */
function setup(extraSteps: Record<string, unknown>[] = [], reload: string[][] = [["true"]]) {
  fx = makeFixture({
    "landing/index.html": PAGE_V1,
    "cinny/config.json": CONFIG_V1,
    "cinny/dev-update.sh": "#!/bin/sh\necho update\n",
    "README.md": "repo\n",
  });
  const manifestFile = writeManifest(fx.dir, {
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/landing/index.html"],
        mode: "0644",
        reload,
      },
      {
        name: "cinny-config",
        kind: "file",
        source: "cinny/config.json",
        check: "json",
        targets: ["/var/www/html/config.json", "/opt/cinny-dev/.cinny-config.json"],
      },
      {
        name: "cinny-update",
        kind: "file",
        source: "cinny/dev-update.sh",
        targets: ["/usr/local/bin/cinny-dev-update.sh"],
        mode: "0755",
      },
      ...extraSteps,
    ],
  });
  agent = makeAgent(fx.dir, fx.clone, manifestFile);
  for (const d of ["var/www/landing", "var/www/html", "opt/cinny-dev", "usr/local/bin"]) {
    mkdirSync(path.join(agent.root, d), { recursive: true });
  }
}

const target = (p: string) => path.join(agent.root, p);
const read = (p: string) => readFileSync(target(p), "utf8");
const mode = (p: string) => statSync(target(p)).mode & 0o777;

describe("deploy engine", () => {
  beforeEach(() => setup());
  afterEach(() => fx.cleanup());

  it("first run deploys every step with declared modes and records the applied revision", async () => {
    const report = await agent.run();
    assert.equal(report.result, "succeeded");
    assert.equal(read("/var/www/landing/index.html"), PAGE_V1);
    assert.equal(read("/var/www/html/config.json"), CONFIG_V1);
    assert.equal(read("/opt/cinny-dev/.cinny-config.json"), CONFIG_V1);
    assert.equal(mode("/usr/local/bin/cinny-dev-update.sh"), 0o755);
    assert.equal(mode("/var/www/landing/index.html"), 0o644);
    const head = git(fx.clone, "rev-parse", "HEAD");
    assert.equal(report.revision, head);
    const { state, problem } = await readState(agent.stateDir, "lxctest");
    assert.equal(problem, undefined);
    for (const name of ["landing", "cinny-config", "cinny-update"]) {
      assert.equal(state.steps[name]?.lastAppliedRevision, head, name);
      assert.equal(state.steps[name]?.lastResult?.outcome, "succeeded");
    }
    assert.equal(stepOf(report, "landing").reason, "NeverApplied");
    assert.deepEqual(
      stepOf(report, "landing").effects.map((e) => e.type),
      ["write", "run"],
    );
  });

  it("an incremental push runs only the step whose files changed, after a hard reset of the clone", async () => {
    await agent.run();
    writeFileSync(path.join(fx.clone, "README.md"), "local edit that the reset discards\n");
    const rev = fx.push({ "landing/index.html": PAGE_V2 });
    const report = await agent.run();
    assert.equal(report.revision, rev);
    assert.equal(git(fx.clone, "rev-parse", "HEAD"), rev);
    assert.equal(readFileSync(path.join(fx.clone, "README.md"), "utf8"), "repo\n");
    assert.match(report.warnings.join("\n"), /discarding local edits in the clone: README\.md/);
    assert.equal(stepOf(report, "landing").reason, "Changed");
    assert.deepEqual(stepOf(report, "landing").files, ["landing/index.html"]);
    assert.equal(stepOf(report, "cinny-config").outcome, "skipped");
    assert.equal(stepOf(report, "cinny-config").reason, "NoRelevantChanges");
    assert.equal(read("/var/www/landing/index.html"), PAGE_V2);

    const again = await agent.run();
    assert.equal(again.result, "noop");
    assert.ok(again.steps.every((s) => s.reason === "UpToDate"));
  });

  it("a step whose content already matches writes nothing and runs no reload", async () => {
    await agent.run();
    const report = await agent.run({ all: true });
    const landing = stepOf(report, "landing");
    assert.equal(landing.outcome, "succeeded");
    assert.deepEqual(landing.items, [{ id: "/var/www/landing/index.html", outcome: "unchanged" }]);
    assert.deepEqual(landing.effects, []);
  });

  it("a deleted source fails its step and leaves the deployed file in place", async () => {
    await agent.run();
    fx.push({ "cinny/config.json": null });
    const report = await agent.run();
    assert.equal(report.result, "failed");
    const step = stepOf(report, "cinny-config");
    assert.equal(step.error?.code, "SOURCE_MISSING");
    assert.match(step.error?.message ?? "", /cinny\/config\.json does not exist/);
    assert.equal(read("/var/www/html/config.json"), CONFIG_V1);
  });

  it("both sides of a rename trigger a step that covers either path", async () => {
    fx.cleanup();
    setup([
      { name: "watch-img", kind: "file", source: "README.md", targets: ["/opt/readme"], paths: ["img/**"] },
    ]);
    await agent.run();
    fx.push({ "img/a.png": "png" });
    await agent.run();
    fx.rename("img/a.png", "docs/a.png");
    const report = await agent.run();
    const step = stepOf(report, "watch-img");
    assert.equal(step.reason, "Changed");
    assert.deepEqual(step.files, ["img/a.png"]);
  });

  it("a failing reload restores the previous file, keeps the old applied revision and retries next run", async () => {
    fx.cleanup();
    setup([], [["sh", "-c", `test ! -e "${"$"}BROKEN_FLAG"`]]);
    const flag = path.join(fx.dir, "broken");
    process.env.BROKEN_FLAG = flag;
    try {
      assert.equal((await agent.run()).result, "succeeded");
      const first = git(fx.clone, "rev-parse", "HEAD");
      writeFileSync(flag, "");
      fx.push({ "landing/index.html": PAGE_V2 });
      const failed = await agent.run();
      const step = stepOf(failed, "landing");
      assert.equal(step.outcome, "failed");
      assert.equal(step.error?.code, "COMMAND_FAILED");
      assert.deepEqual(
        step.effects.map((e) => e.type),
        ["write", "run", "restore", "run"],
      );
      assert.equal(read("/var/www/landing/index.html"), PAGE_V1, "previous page restored");
      let { state } = await readState(agent.stateDir, "lxctest");
      assert.equal(state.steps.landing?.lastAppliedRevision, first);
      assert.equal(state.steps.landing?.lastResult?.outcome, "failed");

      const retried = await agent.run();
      assert.equal(stepOf(retried, "landing").reason, "Changed");
      assert.equal(stepOf(retried, "landing").outcome, "failed");

      rmSync(flag);
      const fixed = await agent.run();
      assert.equal(stepOf(fixed, "landing").outcome, "succeeded");
      assert.equal(read("/var/www/landing/index.html"), PAGE_V2);
      ({ state } = await readState(agent.stateDir, "lxctest"));
      assert.equal(state.steps.landing?.lastAppliedRevision, fixed.revision);
    } finally {
      delete process.env.BROKEN_FLAG;
    }
  });

  it("one failing step does not stop the independent steps after it", async () => {
    await agent.run();
    fx.push({ "cinny/config.json": "{ not json", "cinny/dev-update.sh": "#!/bin/sh\necho v2\n" });
    const report = await agent.run();
    assert.equal(report.result, "failed");
    const cfg = stepOf(report, "cinny-config");
    assert.equal(cfg.error?.code, "SOURCE_INVALID");
    assert.match(cfg.error?.message ?? "", /cinny\/config\.json is not valid JSON/);
    assert.equal(read("/var/www/html/config.json"), CONFIG_V1);
    assert.equal(stepOf(report, "cinny-update").outcome, "succeeded");
    assert.equal(read("/usr/local/bin/cinny-dev-update.sh"), "#!/bin/sh\necho v2\n");
  });

  it("a validate command that rejects the new file leaves the old file byte-identical and no temp file", async () => {
    fx.cleanup();
    setup([
      {
        name: "checked",
        kind: "file",
        source: "README.md",
        targets: ["/opt/cinny-dev/readme"],
        validate: ["grep", "-q", "repo", "{file}"],
      },
    ]);
    await agent.run();
    const before = treeHash(target("/opt/cinny-dev"));
    fx.push({ "README.md": "no magic word\n" });
    const report = await agent.run();
    assert.equal(stepOf(report, "checked").error?.code, "COMMAND_FAILED");
    assert.match(stepOf(report, "checked").error?.message ?? "", /grep -q repo .*exited with code 1/);
    assert.equal(treeHash(target("/opt/cinny-dev")), before);
    assert.deepEqual(readdirSync(target("/opt/cinny-dev")).sort(), [".cinny-config.json", "readme"]);
  });

  it("a missing target directory fails the step without creating anything", async () => {
    fx.cleanup();
    setup([{ name: "nowhere", kind: "file", source: "README.md", targets: ["/srv/missing/readme"] }]);
    const report = await agent.run();
    const step = stepOf(report, "nowhere");
    assert.equal(step.error?.code, "TARGET_WRITE_FAILED");
    assert.match(step.error?.message ?? "", /directory \/srv\/missing does not exist/);
    assert.equal(existsSync(target("/srv")), false);
  });

  it("refuses a source that is a symlink, even to a file inside the repository", async () => {
    fx.cleanup();
    setup([
      { name: "linked", kind: "file", source: "landing/link.html", targets: ["/var/www/landing/link.html"] },
    ]);
    fx.push({ "landing/link.html": { symlink: "../../../../etc/passwd" } });
    const report = await agent.run();
    const step = stepOf(report, "linked");
    assert.equal(step.error?.code, "SOURCE_UNSAFE");
    assert.match(step.error?.message ?? "", /symlink/);
    assert.equal(existsSync(target("/var/www/landing/link.html")), false);
  });

  it("treats corrupt state as unknown: warns, runs every step, and writes fresh state", async () => {
    await agent.run();
    writeFileSync(path.join(agent.stateDir, STATE_FILE), "{ truncated");
    const report = await agent.run();
    assert.match(report.warnings.join("\n"), /state unusable: .*not valid JSON.*every step runs again/);
    assert.ok(report.steps.every((s) => s.reason === "NeverApplied"));
    const { problem } = await readState(agent.stateDir, "lxctest");
    assert.equal(problem, undefined);
  });

  it("removes git lock files a killed git process left in the clone, and says so", async () => {
    await agent.run();
    writeFileSync(path.join(fx.clone, ".git/index.lock"), "");
    writeFileSync(path.join(fx.clone, ".git/refs/remotes/origin/main.lock"), "");
    fx.push({ "landing/index.html": PAGE_V2 });
    const report = await agent.run();
    assert.equal(report.result, "succeeded");
    assert.match(
      report.warnings.join("\n"),
      /removed git lock files left by a killed git process: \.git\/index\.lock, \.git\/refs\/remotes\/origin\/main\.lock/,
    );
    assert.equal(read("/var/www/landing/index.html"), PAGE_V2);
  });

  it("follows a force push that rewrote the applied commit away", async () => {
    await agent.run();
    git(fx.pusher, "reset", "--hard", "HEAD");
    git(fx.pusher, "commit", "--quiet", "--amend", "-m", "rewritten");
    git(fx.pusher, "push", "--quiet", "--force", "origin", "main");
    git(fx.clone, "reflog", "expire", "--expire=now", "--all");
    const rewritten = git(fx.pusher, "rev-parse", "HEAD");
    const report = await agent.run();
    assert.equal(report.revision, rewritten);
    assert.equal(git(fx.clone, "rev-parse", "HEAD"), rewritten);
  });

  it("a step that outlives its timeout fails with STEP_TIMEOUT and its command is stopped", async () => {
    fx.cleanup();
    setup([], [["sleep", "30"]]);
    const manifest = readFileSync(agent.manifestFile, "utf8").replace(
      "name: landing",
      "name: landing\n    timeoutSeconds: 1",
    );
    writeFileSync(agent.manifestFile, manifest);
    const started = Date.now();
    const report = await agent.run();
    assert.equal(stepOf(report, "landing").error?.code, "STEP_TIMEOUT");
    assert.ok(Date.now() - started < 20_000, "did not wait for sleep 30");
  });

  it("dry run leaves the clone, the host root and the state byte-identical, and describes the work", async () => {
    await agent.run();
    fx.push({ "landing/index.html": PAGE_V2, "cinny/dev-update.sh": "#!/bin/sh\necho v3\n" });
    git(fx.clone, "fetch", "--quiet", "origin");
    const skipGit = (rel: string) => rel === ".git";
    const before = [
      treeHash(fx.clone, skipGit),
      git(fx.clone, "rev-parse", "HEAD"),
      treeHash(agent.root),
      treeHash(agent.stateDir),
    ];
    const report = await agent.run({ dryRun: true, fetch: false });
    const after = [
      treeHash(fx.clone, skipGit),
      git(fx.clone, "rev-parse", "HEAD"),
      treeHash(agent.root),
      treeHash(agent.stateDir),
    ];
    assert.deepEqual(after, before);
    assert.equal(report.dryRun, true);
    const landing = stepOf(report, "landing");
    const write = landing.effects.find((e) => e.type === "write");
    assert.ok(write && write.type === "write");
    assert.equal(write.path, "/var/www/landing/index.html");
    assert.equal(write.added, 1);
    assert.equal(write.removed, 1);
    assert.match(
      write.patch ?? "",
      /-<!doctype html><title>v1<\/title>\n\+<!doctype html><title>v2<\/title>/,
    );
    assert.deepEqual(
      landing.effects.filter((e) => e.type === "run").map((e) => e.type === "run" && e.argv),
      [["true"]],
    );
    assert.equal(stepOf(report, "cinny-config").outcome, "skipped");
  });

  it("keeps the declared owner and mode on rewrite and the existing ones when none is declared", async () => {
    await agent.run();
    const file = target("/var/www/html/config.json");
    chmodSync(file, 0o640);
    chownSync(file, 1234, 4321);
    fx.push({ "cinny/config.json": '{ "defaultHomeserver": 1 }\n' });
    await agent.run();
    const st = statSync(file);
    assert.equal(st.mode & 0o777, 0o640);
    assert.equal(st.uid, 1234);
    assert.equal(st.gid, 4321);
  });
});
