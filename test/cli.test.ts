import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { acquireLock } from "../src/state/lock.js";
import { PROJECT, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

let fx: Fixture;
let root: string;
let stateDir: string;
let manifest: string;
const SECRET_FILE = "etc/deploy-agent/webhook-secret";

function args(...extra: string[]) {
  return ["--config", manifest, "--repo", fx.clone, "--root", root, "--state-dir", stateDir, ...extra];
}

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", "README.md": "repo\n" });
  root = path.join(fx.dir, "root");
  stateDir = path.join(fx.dir, "state");
  mkdirSync(path.join(root, "var/www"), { recursive: true });
  manifest = writeManifest(fx.dir, {
    log: { file: "/var/log/deploy.log" },
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        reload: [["sh", "-c", "exit 0"]],
      },
    ],
  });
  mkdirSync(path.join(root, "var/log"), { recursive: true });
  mkdirSync(path.join(root, "etc/deploy-agent"), { recursive: true });
  writeFileSync(path.join(root, SECRET_FILE), "0123456789abcdef0123456789abcdef\n", { mode: 0o600 });
});
afterEach(() => fx.cleanup());

describe("deploy-agent CLI", () => {
  it("run --dry-run describes the write and the command, exits 0 and writes nothing", async () => {
    const res = await runCli(["run", "--dry-run", ...args()]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /deploy-agent dry run: host lxctest, revision [0-9a-f]{12}/);
    assert.match(res.stdout, /\[plan\] landing \(file\): never applied on this host/);
    assert.match(
      res.stdout,
      /would write \/var\/www\/index\.html \(created, 10 bytes, mode 0644, \+1 -0 lines\)/,
    );
    assert.match(res.stdout, /would run: sh -c exit 0/);
    assert.match(res.stdout, /result: planned \(1 step\(s\) planned/);
    assert.doesNotMatch(res.stdout + res.stderr, /succeeded/, "a dry run never says it succeeded");
    assert.throws(() => readFileSync(path.join(root, "var/www/index.html")));
    assert.throws(() => readFileSync(path.join(stateDir, "state.json")));
  });

  it("run deploys, logs JSON to stderr and the manifest's log file under --root, and status reports it", async () => {
    const res = await runCli(["run", ...args()]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>v1</p>\n");
    const lines = res.stderr
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string; level: number });
    assert.ok(lines.some((l) => l.msg === "run finished"));
    assert.match(readFileSync(path.join(root, "var/log/deploy.log"), "utf8"), /"msg":"run finished"/);

    const status = await runCli(["status", "--json", ...args()]);
    assert.equal(status.code, 0, status.stderr);
    const doc = JSON.parse(status.stdout) as {
      schema: string;
      steps: { name: string; lastAppliedRevision: string; lastResult: { outcome: string } }[];
    };
    assert.equal(doc.schema, "deploy-agent/status@1");
    assert.equal(doc.steps[0]?.lastAppliedRevision, git(fx.clone, "rev-parse", "HEAD"));
    assert.equal(doc.steps[0]?.lastResult.outcome, "succeeded");
    const text = await runCli(["status", ...args()]);
    assert.match(text.stdout, /landing \(file\): applied [0-9a-f]{12}; last succeeded \d+s ago/);
  });

  it("run --json prints the versioned run document", async () => {
    const res = await runCli(["run", "--json", ...args()]);
    assert.equal(res.code, 0, res.stderr);
    const doc = JSON.parse(res.stdout) as {
      schema: string;
      result: string;
      steps: { name: string; outcome: string }[];
    };
    assert.equal(doc.schema, "deploy-agent/run@1");
    assert.equal(doc.result, "succeeded");
    assert.deepEqual(
      doc.steps.map((s) => [s.name, s.outcome]),
      [["landing", "succeeded"]],
    );
  });

  it("exits 1 when a step fails, and prints the error code", async () => {
    fx.push({ "landing/index.html": null });
    const res = await runCli(["run", ...args()]);
    assert.equal(res.code, 1);
    assert.match(res.stdout, /\[FAILED\] landing/);
    assert.match(res.stdout, /error SOURCE_MISSING: landing\/index\.html does not exist/);
  });

  it("exits 2 on usage and configuration errors with a hint", async () => {
    const noRemote = path.join(fx.dir, "no-remote");
    mkdirSync(noRemote);
    git(noRemote, "init", "-q");
    git(noRemote, "remote", "add", "upstream", fx.origin);
    const cases: [string[], RegExp][] = [
      [["deploy"], /error USAGE: unknown command "deploy"/],
      [[], /error USAGE: no command given/],
      [["run", "--bogus"], /error USAGE: Unknown option '--bogus'/],
      [["run"], /error USAGE: no manifest given\nhint: pass --config/],
      [["run", ...args("--step", "nope")], /error USAGE: no step named nope .*\nhint: steps: landing/],
      [
        ["run", "--config", "/nonexistent.yaml"],
        /error CONFIG_INVALID: cannot read manifest \/nonexistent\.yaml: ENOENT/,
      ],
      [["run", "--config", manifest, "--repo", root], /error REPO_INVALID: .* is not a git work tree/],
      [
        ["run", "--config", manifest, "--repo", noRemote],
        /error REPO_INVALID: repository .*no-remote has no remote named "origin"\nhint: git -C .*no-remote remote add origin <url>/,
      ],
    ];
    for (const [argv, pattern] of cases) {
      const res = await runCli(argv, { DEPLOY_AGENT_CONFIG: "" });
      assert.equal(res.code, 2, `${argv.join(" ")}: ${res.stderr}`);
      assert.match(res.stderr, pattern);
    }
  });

  it("a second run fails clearly while another holds the lock, and --wait waits for it", async () => {
    // Held here until the waiting run says it waits: no window for a slow start to miss.
    mkdirSync(stateDir, { mode: 0o700 });
    const held = await acquireLock(stateDir);
    let released = false;
    try {
      const second = await runCli(["run", ...args()]);
      assert.equal(second.code, 1);
      assert.match(second.stderr, /error LOCKED: another deploy \(pid \d+, since .*\) holds .*deploy\.lock/);
      const waiting = await runCli(
        ["run", ...args("--wait", "60")],
        {},
        {
          onStderr: (text) => {
            if (released || !/waiting for the deploy lock held by another run/.test(text)) return;
            released = true;
            void held.release();
          },
        },
      );
      assert.ok(released, "the run said it waits for the lock");
      assert.equal(waiting.code, 0, waiting.stderr);
    } finally {
      await held.release();
    }
  });

  it("validate checks the manifest's sources in the checkout and refuses symlinks", async () => {
    const ok = await runCli(["validate", ...args()]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /landing \(file\): 1 file\(s\) covered\nwarning: repo\.verify is off: push access to the config repository is root on every host; .*\nvalid/,
    );
    writeFileSync(path.join(fx.clone, "elsewhere.html"), "x");
    const page = path.join(fx.clone, "landing/index.html");
    (await import("node:fs")).rmSync(page);
    symlinkSync("../elsewhere.html", page);
    const bad = await runCli(["validate", ...args()]);
    assert.equal(bad.code, 2);
    assert.match(bad.stdout, /error: .*step landing: landing\/index\.html: is a symlink/);
  });

  it("validate reports what serve and run would refuse: the secret, its mode, Cinny's keys, the clone's owner", async () => {
    const secret = path.join(root, SECRET_FILE);
    chmodSync(secret, 0o644);
    let res = await runCli(["validate", ...args()]);
    assert.equal(res.code, 2);
    assert.match(
      res.stdout,
      /error: CONFIG_INVALID: webhook secret file .* is readable by others \(mode 0644\)/,
    );
    writeFileSync(secret, "short\n", { mode: 0o600 });
    chmodSync(secret, 0o600);
    res = await runCli(["validate", ...args()]);
    assert.match(res.stdout, /error: CONFIG_INVALID: the webhook secret is 5 characters; at least 16/);
    rmSync(secret);
    res = await runCli(["validate", ...args()]);
    assert.match(res.stdout, /error: CONFIG_INVALID: no webhook secret/);
    assert.equal(res.code, 2);
    writeFileSync(secret, "0123456789abcdef0123456789abcdef\n", { mode: 0o600 });

    writeFileSync(
      path.join(fx.clone, "landing/index.html"),
      '{"homeserverList":["x.org"],"homeServerList":[]}',
    );
    writeManifest(fx.dir, {
      steps: [
        { name: "cinny", kind: "file", source: "landing/index.html", targets: ["/x"], check: "cinny-config" },
      ],
    });
    res = await runCli(["validate", ...args()]);
    assert.equal(res.code, 2);
    assert.match(
      res.stdout,
      /error: .*step cinny: landing\/index\.html is not a valid Cinny config: .*homeServerList/,
    );

    if (process.getuid?.() !== 0) return;
    execFileSync("chown", ["-R", "12345:12345", fx.clone]);
    res = await runCli(["validate", ...args()]);
    assert.equal(res.code, 2);
    assert.match(
      res.stdout,
      /REPO_INVALID: git refuses .*: it is owned by uid 12345, not by this process's uid 0 \("dubious ownership"\)/,
    );
    assert.match(res.stdout, /safe\.directory/);
  });

  it("through the link npm makes (npm i -g): runs, and --env-file /missing or --log-level verbose are usage errors", async () => {
    // The built bin, as npm links it: the entry point must not depend on argv[1] being the real path, and
    // Node must leave deploy-agent's own --env-file alone (the shebang ends Node's options with --).
    const prefix = path.join(fx.dir, "global");
    // --ignore-scripts: npm runs a linked folder's `prepare` (the build), and a rebuild removes dist/ from
    // under the tests running beside this one. The link is what is tested; the build is npm ci's.
    execFileSync(
      "npm",
      ["install", "--global", "--prefix", prefix, PROJECT, "--no-audit", "--no-fund", "--ignore-scripts"],
      { stdio: "ignore" },
    );
    const bin = path.join(prefix, "bin/deploy-agent");
    assert.ok(lstatSync(bin).isSymbolicLink());
    const run = (...a: string[]) => spawnSync(bin, a, { encoding: "utf8" });
    const version = run("--version");
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
    const dry = run("run", "--dry-run", ...args());
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /\[plan\] landing \(file\)/);
    const env = run("run", "--env-file", "/missing", ...args());
    assert.equal(env.status, 2);
    assert.match(env.stderr, /^error ENV_MISSING: cannot read env file \/missing: ENOENT\nhint: /);
    const level = run("status", "--log-level", "verbose", ...args());
    assert.equal(level.status, 2);
    assert.match(
      level.stderr,
      /^error USAGE: --log-level takes trace\|debug\|info\|warn\|error, not "verbose"/,
    );
    assert.doesNotMatch(env.stderr + level.stderr, /INTERNAL|\n\s+at /);
  });
});
