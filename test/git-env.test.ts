import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import type { Effect } from "../src/host/effects.js";
import { isAncestor } from "../src/source/ancestry.js";
import { fetchBranch, resolveTarget } from "../src/source/git.js";
import { gitAt, gitExit } from "../src/source/git-command.js";
import { closeRepo, openRepo } from "../src/source/open-repo.js";
import { verifyRevision } from "../src/source/verify.js";
import { createContext } from "../src/steps/context.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";

/**
 * Every way the agent starts git gives it the one minimal environment (source/git-command.ts gitEnv), never
 * the process's: here the process's environment points git at another repository (GIT_DIR, GIT_WORK_TREE), so
 * a git that saw it would answer from that repository and each check below would fail.
 */

let fx: Fixture;
let decoy: string;
let head: string;

beforeEach(() => {
  fx = makeFixture({ "a.txt": "1\n" });
  decoy = path.join(fx.dir, "decoy");
  git(fx.dir, "init", "--quiet", "--initial-branch=main", decoy);
  writeFileSync(path.join(decoy, "b.txt"), "decoy\n");
  git(decoy, "add", "-A");
  git(decoy, "commit", "--quiet", "-m", "decoy");
  head = git(fx.clone, "rev-parse", "HEAD");
});
afterEach(() => fx.cleanup());

/** Runs fn while the process's environment sends git to the decoy repository. */
async function misdirected<T>(fn: () => Promise<T>): Promise<T> {
  const saved = { GIT_DIR: process.env.GIT_DIR, GIT_WORK_TREE: process.env.GIT_WORK_TREE };
  process.env.GIT_DIR = path.join(decoy, ".git");
  process.env.GIT_WORK_TREE = decoy;
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe("git sees the minimal environment, whatever the process has", () => {
  it("the misdirection works: a git started with the process's environment answers from the decoy", async () => {
    const seen = await misdirected(async () =>
      execFileSync("git", ["-C", fx.clone, "rev-parse", "HEAD"], { encoding: "utf8" }).trim(),
    );
    assert.equal(seen, git(decoy, "rev-parse", "HEAD"));
    assert.notEqual(seen, head);
  });

  it("gitAt (simple-git)", async () => {
    assert.equal((await misdirected(() => gitAt(fx.clone).revparse(["HEAD"]))).trim(), head);
  });

  it("gitExit and isAncestor (answers by exit code)", async () => {
    const res = await misdirected(() => gitExit(fx.clone, ["cat-file", "-t", head]));
    assert.deepEqual(res, { exitCode: 0, stdout: "commit\n", stderr: "" });
    assert.equal(await misdirected(() => isAncestor(fx.clone, head, head)), true);
  });

  it("the object reader and the fetch started ahead (openRepo)", async () => {
    const pushed = fx.push({ "a.txt": "2\n" });
    const repo = await misdirected(() => openRepo(fx.clone, "origin", "main"));
    try {
      assert.equal(await misdirected(() => fetchBranch(repo)), pushed);
      assert.equal(await misdirected(() => resolveTarget(repo)), pushed);
      const blob = await misdirected(() => repo.objects.read(`${pushed}:a.txt`));
      assert.equal(blob?.data.toString(), "2\n");
    } finally {
      closeRepo(repo);
    }
  });

  it("git verify-commit (verifyRevision)", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const key = path.join(fx.dir, "key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "pusher", "-f", key]);
    const allowed = path.join(fx.dir, "allowed_signers");
    writeFileSync(allowed, `pusher@example.test ${readFileSync(`${key}.pub`, "utf8")}`);
    writeFileSync(path.join(fx.pusher, "a.txt"), "signed\n");
    git(
      fx.pusher,
      "-c",
      "gpg.format=ssh",
      "-c",
      `user.signingkey=${key}`,
      "commit",
      "-q",
      "-a",
      "-S",
      "-m",
      "signed",
    );
    git(fx.pusher, "push", "--quiet", "origin", "main");
    const signed = git(fx.pusher, "rev-parse", "HEAD");
    git(fx.clone, "fetch", "--quiet", "origin");
    const repo = await openRepo(fx.clone, "origin", "main");
    try {
      const moved = await misdirected(() =>
        verifyRevision(repo, { mode: "all", allowedSignersFile: allowed }, (p) => p, {
          from: head,
          to: signed,
        }),
      );
      assert.equal(moved, "descends");
    } finally {
      closeRepo(repo);
    }
  });

  it("a step's or job's context (ctx.git); a dry run records it and runs nothing", async () => {
    const effects: Effect[] = [];
    const ctx = (dryRun: boolean) =>
      createContext({
        dryRun,
        root: "",
        log: pino({ level: "silent" }),
        signal: new AbortController().signal,
        commands: { systemctl: ["systemctl"] },
        record: (e) => effects.push(e),
      });
    const res = await misdirected(() => ctx(false).git(fx.clone, ["rev-parse", "HEAD"]));
    assert.deepEqual(res, { stdout: head, stderr: "", ran: true });
    const dry = await ctx(true).git(fx.clone, ["reset", "--hard", "HEAD~1"]);
    assert.deepEqual(dry, { stdout: "", stderr: "", ran: false });
    assert.equal(git(fx.clone, "rev-parse", "HEAD"), head, "the dry run reset nothing");
    assert.deepEqual(effects, [
      { type: "run", argv: ["git", "-C", fx.clone, "rev-parse", "HEAD"] },
      { type: "run", argv: ["git", "-C", fx.clone, "reset", "--hard", "HEAD~1"] },
    ]);
  });
});
