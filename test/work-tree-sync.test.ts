import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { stringify } from "yaml";
import { resolveDeployed } from "../src/commands/options.js";
import type { DeployEvent } from "../src/notify/events.js";
import { noticeText } from "../src/notify/targets/matrix.js";
import { hostRoot, runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/**
 * The clone's work tree is reset after the steps (git status, reset --hard). When that fails, the steps have
 * applied the revision all the same: the run, the state and the history say so, and the failure is a warning
 * that names the clone and how to repair it, never an INTERNAL error with a stack.
 */

let fx: Fixture;
let root: string;
let stateDir: string;
/** While this file exists, the step's reload damages the clone's index: after the step applied, before the reset. */
let damage: string;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, "work-tree-sync-test-secret-0123456789");
  stateDir = path.join(fx.dir, "state");
  damage = path.join(fx.dir, "damage-the-index");
});
afterEach(() => fx.cleanup());

const page = () => readFileSync(path.join(root, "var/www/index.html"), "utf8");
const manifest = () =>
  writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        reload: [
          [
            "sh",
            "-c",
            `if test -e "${damage}"; then printf 'not an index' > "${path.join(fx.clone, ".git/index")}"; fi`,
          ],
        ],
      },
    ],
  });
const cli = (file: string, ...args: string[]) =>
  runCli([...args, "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir], {
    SUDO_USER: "jared",
  });

interface Report {
  revision: string;
  result: string;
  warnings: string[];
}
interface LocalStatus {
  lastRun: { revision: string; result: string } | null;
  pinned: { revision: string } | null;
  steps: { name: string; lastAppliedRevision?: string }[];
}
interface History {
  records: {
    trigger: { kind: string };
    revision: string;
    result: string;
    applied: boolean;
    error: unknown;
  }[];
}

/** The run's report, with the checks every run through a damaged clone must pass. */
function damaged(res: { code: number | null; stdout: string; stderr: string }, revision: string): Report {
  assert.equal(res.code, 0, `the steps applied, so the run did what it was asked:\n${res.stderr}`);
  assert.doesNotMatch(res.stderr, /INTERNAL|\n\s+at /, "no internal error, no stack trace");
  const report = JSON.parse(res.stdout) as Report;
  assert.equal(report.revision, revision);
  const said = report.warnings.find((w) => w.includes("work tree could not be reset"));
  assert.ok(said, `a warning says so:\n${report.warnings.join("\n")}`);
  assert.match(said, /GIT_FAILED: git status failed: fatal: .*index file smaller than expected/);
  assert.match(said, new RegExp(`the steps applied ${revision.slice(0, 12)}`));
  assert.ok(said.includes(`git -C ${fx.clone} reset --hard ${revision.slice(0, 12)}`), said);
  return report;
}

async function status(file: string): Promise<LocalStatus> {
  const res = await cli(file, "status", "--json");
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as LocalStatus;
}

async function newestRecord(file: string) {
  const res = await cli(file, "history", "--json", "--limit", "1");
  assert.equal(res.code, 0, res.stderr);
  const record = (JSON.parse(res.stdout) as History).records[0];
  assert.ok(record);
  return record;
}

describe("a clone whose work tree cannot be reset after the steps", () => {
  it("a run and a pin record what the steps applied and warn how to repair the clone", async () => {
    const file = manifest();
    assert.equal((await cli(file, "run")).code, 0);
    const v1 = git(fx.pusher, "rev-parse", "HEAD");

    const v2 = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    writeFileSync(damage, "");
    const report = damaged(await cli(file, "run", "--json"), v2);
    assert.equal(report.result, "succeeded");
    assert.equal(page(), "<p>v2</p>\n");
    const after = await status(file);
    assert.equal(after.lastRun?.revision, v2, "status names the revision the steps applied");
    assert.equal(after.lastRun?.result, "succeeded");
    const record = await newestRecord(file);
    assert.deepEqual(
      [record.trigger.kind, record.revision, record.result, record.applied, record.error],
      ["manual", v2, "succeeded", true, null],
    );

    // Still damaged: every run says so again (the clone is not repaired by itself), and deploys nothing new.
    const again = damaged(await cli(file, "run", "--json"), v2);
    assert.equal(again.result, "noop");

    // Repaired as the warning says: the next run is clean.
    rmSync(damage);
    rmSync(path.join(fx.clone, ".git/index"));
    git(fx.clone, "reset", "--quiet", "--hard", v2);
    const clean = JSON.parse((await cli(file, "run", "--json")).stdout) as Report;
    assert.deepEqual(clean.warnings, []);

    // A pin through the same damage: pinned, at the pinned revision, in state and history.
    writeFileSync(damage, "");
    const pinned = damaged(await cli(file, "pin", v1, "--json", "--reason", "v2 is bad"), v1);
    assert.equal(pinned.result, "succeeded");
    assert.equal(page(), "<p>v1</p>\n");
    const held = await status(file);
    assert.equal(held.pinned?.revision, v1);
    assert.equal(held.lastRun?.revision, v1);
    assert.equal(held.steps.find((s) => s.name === "landing")?.lastAppliedRevision, v1);
    const pin = await newestRecord(file);
    assert.deepEqual(
      [pin.trigger.kind, pin.revision, pin.result, pin.applied, pin.error],
      ["pin", v1, "succeeded", true, null],
    );
  });
});

describe("a restart after the work tree could not be reset", () => {
  /** The host manifest in the repository, its log level (a setting bound at start) as given. */
  const inRepo = (level: string, notifyUrl: string) =>
    stringify({
      version: 1,
      host: "lxctest",
      listen: { port: 9000 },
      log: { level },
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      notify: { targets: [{ kind: "webhook", url: notifyUrl }] },
      steps: [
        {
          name: "landing",
          kind: "file",
          source: "landing/index.html",
          targets: ["/var/www/index.html"],
          // The clone's index damaged after the step applied, before the reset (see above).
          reload: [["sh", "-c", 'if test -e "$DAMAGE"; then printf x > "$CLONE/.git/index"; fi']],
        },
      ],
    });

  it("reads the manifest of the revision the host runs, from git, not the work tree's; a notice says so", async () => {
    const events: DeployEvent[] = [];
    const hook = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => {
        body += d;
      });
      req.on("end", () => {
        events.push(JSON.parse(body) as DeployEvent);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    const notifyUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/notify`;
    const fx2 = makeFixture({
      "landing/index.html": "<p>v1</p>\n",
      "config/lxctest.yaml": inRepo("info", notifyUrl),
    });
    try {
      const root2 = hostRoot(fx2.dir, "work-tree-sync-test-secret-0123456789");
      const damage2 = path.join(fx2.dir, "damage-the-index");
      const run = () =>
        runCli(
          [
            ...runArgs(
              path.join(fx2.clone, "config/lxctest.yaml"),
              fx2.clone,
              root2,
              path.join(fx2.dir, "state"),
            ),
            "--json",
          ],
          { DAMAGE: damage2, CLONE: fx2.clone },
        );
      assert.equal((await run()).code, 0);
      const v2 = fx2.push({
        "landing/index.html": "<p>v2</p>\n",
        "config/lxctest.yaml": inRepo("debug", notifyUrl),
      });
      writeFileSync(damage2, "");
      const first = JSON.parse((await run()).stdout) as Report & { pendingRestart: string[] };
      assert.equal(first.revision, v2);
      assert.ok(
        first.warnings.some((w) => w.includes("work tree could not be reset")),
        first.warnings.join("\n"),
      );
      assert.deepEqual(
        first.pendingRestart,
        ["log"],
        "the process started before v2: v2's log level waits for a restart",
      );
      assert.match(
        readFileSync(path.join(fx2.clone, "config/lxctest.yaml"), "utf8"),
        /level: info/,
        "the work tree is v1's",
      );

      const notice = events.find((e) => e.event === "clone.reset-failed");
      assert.ok(notice, `the operator is told: ${JSON.stringify(events.map((e) => e.event))}`);
      assert.equal(notice.revision, v2);
      assert.match(
        notice.error?.message ?? "",
        /work tree could not be reset to .*index file smaller than expected/,
      );
      assert.match(
        notice.error?.hint ?? "",
        new RegExp(`git -C ${fx2.clone} reset --hard ${v2.slice(0, 12)}`),
      );
      assert.match(
        noticeText(notice),
        new RegExp(
          `^⚠️ lxctest: deployed ${v2.slice(0, 12)}.*, but its clone could not be reset to it\nGIT_FAILED`,
        ),
      );

      // A new process (a restart): it runs with v2's manifest, the one deployed, so nothing waits for a restart.
      const again = await run();
      const restarted = JSON.parse(again.stdout) as Report & { pendingRestart: string[] };
      assert.equal(restarted.revision, v2);
      assert.deepEqual(restarted.pendingRestart, [], "a restart reads the deployed revision's manifest");
      assert.match(
        again.stderr,
        /is not config\/lxctest\.yaml as deployed at [0-9a-f]{12}: started with git's/,
      );
      // A run with nothing to do repeats the warning, not the notice.
      assert.equal(events.filter((e) => e.event === "clone.reset-failed").length, 1);
    } finally {
      hook.close();
      fx2.cleanup();
    }
  });

  /**
   * A clone whose manifest one CLI run has deployed (so its digest is recorded), and `failingGit()`: from
   * then on every git this process starts fails and leaves its arguments in `calls`.
   */
  async function deployedOnce() {
    const fx = makeFixture({
      "landing/index.html": "<p>v1</p>\n",
      "config/lxctest.yaml": inRepo("info", "http://127.0.0.1:9/unused"),
    });
    const flags = {
      config: path.join(fx.clone, "config/lxctest.yaml"),
      repo: fx.clone,
      root: hostRoot(fx.dir, "work-tree-sync-test-secret-0123456789"),
      stateDir: path.join(fx.dir, "state"),
      json: true,
    };
    const run = await runCli([...runArgs(flags.config, flags.repo, flags.root, flags.stateDir), "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const calls = path.join(fx.dir, "git-calls");
    const failingGit = () => {
      const bin = path.join(fx.dir, "bin");
      mkdirSync(bin);
      writeFileSync(path.join(bin, "git"), `#!/bin/sh\necho "$@" >> ${calls}\nexit 1\n`, { mode: 0o755 });
      process.env.PATH = `${bin}:${process.env.PATH}`;
    };
    return { fx, flags, calls, failingGit };
  }

  it("a start whose manifest file is the one the last run deployed asks git nothing", async () => {
    const saved = process.env.PATH;
    const { fx, flags, calls, failingGit } = await deployedOnce();
    try {
      const state = JSON.parse(readFileSync(path.join(flags.stateDir, "state.json"), "utf8")) as {
        lastRun: { manifestSha256?: string };
      };
      assert.equal(
        state.lastRun.manifestSha256,
        createHash("sha256").update("config/lxctest.yaml\0").update(readFileSync(flags.config)).digest("hex"),
        "the run records the digest of the manifest it deployed",
      );
      failingGit();
      const same = await resolveDeployed(flags);
      assert.equal(same.note, undefined);
      assert.equal(existsSync(calls), false, "the usual start reads no git object");
      // Another manifest of the clone, deployed by nothing here, with this one's text: not the deployed one.
      const other = path.join(fx.clone, "config/other.yaml");
      writeFileSync(other, readFileSync(flags.config));
      const copied = await resolveDeployed({ ...flags, config: other });
      assert.ok(existsSync(calls), "another path's file with the deployed text is checked against git");
      assert.match(copied.note ?? "", /could not be read .*: started with /);
      rmSync(calls);
      // Edited in the clone: now git is asked (and, failing here, the note says the file was used).
      writeFileSync(flags.config, `${readFileSync(flags.config, "utf8")}# edited by hand\n`);
      const edited = await resolveDeployed(flags);
      assert.ok(existsSync(calls), "a file that is not the deployed one is checked against git");
      assert.match(edited.note ?? "", /could not be read .*: started with /);
    } finally {
      process.env.PATH = saved;
      fx.cleanup();
    }
  });

  it("a manifest file that reads as another text the second time is checked against git, not taken for the deployed one", async () => {
    const saved = process.env.PATH;
    const { fx, flags, calls, failingGit } = await deployedOnce();
    let writer: ReturnType<typeof spawn> | undefined;
    try {
      const deployed = readFileSync(flags.config, "utf8");
      // The file in use is an edited one; whoever reads it a second time is served the deployed text (the
      // pause lets the first reader see the end of the first text).
      rmSync(flags.config);
      writer = spawn(
        "sh",
        [
          "-c",
          'mkfifo "$0" && printf %s "$1" > "$0" && sleep 0.3 && printf %s "$2" > "$0"',
          flags.config,
          `${deployed}# edited\n`,
          deployed,
        ],
        { stdio: "ignore" },
      );
      failingGit();
      while (!existsSync(flags.config)) await new Promise((r) => setTimeout(r, 5));
      const started = await resolveDeployed(flags);
      assert.ok(existsSync(calls), "the text in use is not the deployed one: git is asked");
      assert.match(started.note ?? "", /could not be read .*: started with /);
    } finally {
      writer?.kill("SIGKILL");
      process.env.PATH = saved;
      fx.cleanup();
    }
  });
});
