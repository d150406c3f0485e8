import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentError } from "../src/core/errors.js";
import { closeRepo, openRepo } from "../src/source/open-repo.js";
import { git } from "./helpers/git.js";

/**
 * openRepo asks one shell for `git rev-parse --show-toplevel` and `git remote`: the directory never reaches
 * the command line, the top's text is never taken for a remote, and a list git refused or that was cut
 * short is an error, never a list without (or with a made-up) remote.
 */

let dir: string;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "open-repo-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A work tree at `name` (inside the test's directory) with these remotes. */
function workTree(name: string, remotes: string[]): string {
  const top = path.join(dir, name);
  git(dir, "init", "--quiet", "--", top);
  for (const r of remotes) git(top, "remote", "add", r, "https://example.invalid/config.git");
  return top;
}

async function refusal(repo: string, remote = "origin"): Promise<AgentError> {
  const err = await openRepo(repo, remote, "main").then(
    (r) => {
      closeRepo(r);
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof AgentError, `openRepo(${JSON.stringify(repo)}) opened it`);
  return err;
}

describe("openRepo", () => {
  it("opens a work tree whose path holds spaces, shell syntax and a leading dash; nothing runs", async () => {
    const top = workTree("-x a b;$(touch made)`touch made2`&|", ["origin"]);
    closeRepo(await openRepo(top, "origin", "main"));
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith("made")),
      [],
    );
    assert.equal(existsSync(path.join(top, "made")), false);
  });

  it("never takes a line of the top's path for a remote", async () => {
    const top = workTree("clone\norigin", ["upstream"]);
    const err = await refusal(top);
    assert.equal(err.code, "REPO_INVALID");
    assert.match(err.message, /has no remote named "origin"/);
  });

  it("refuses a clone whose remotes git cannot list, with git's reason", async () => {
    const top = workTree("bad-refspec", ["origin"]);
    git(top, "config", "--add", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*:bad");
    const err = await refusal(top);
    assert.equal(err.code, "REPO_INVALID");
    assert.match(err.message, /cannot list the remotes .*fatal: invalid refspec/);
  });

  it("refuses a list of remotes over its bound instead of reading it cut short", async () => {
    // Read cut short, a list lacks the remote, or ends in a part of a name ("origin" of "origin-later").
    const top = workTree("many-remotes", []);
    let config = "";
    const name = (i: number) => `a${String(i).padStart(14, "0")}`;
    for (let i = 0; i < 66_000; i++) config += `[remote "${name(i)}"]\n\turl = x\n`;
    config += '[remote "origin-later"]\n\turl = x\n';
    appendFileSync(path.join(top, ".git/config"), config);
    const err = await refusal(top);
    assert.equal(err.code, "REPO_INVALID");
    assert.match(err.message, /listed more than 1048576 bytes/);
  });

  it('says git cannot run when it is not on PATH, instead of "not a git work tree"', async () => {
    const top = workTree("no-git-on-path", ["origin"]);
    const saved = process.env.PATH;
    process.env.PATH = path.join(dir, "empty-bin");
    try {
      const err = await refusal(top);
      assert.equal(err.code, "GIT_FAILED");
      assert.match(err.message, /cannot run git in .*git: (command )?not found/);
    } finally {
      process.env.PATH = saved;
    }
  });

  it("refuses a bare repository and the .git directory: no work tree", async () => {
    const bare = path.join(dir, "bare.git");
    git(dir, "init", "--quiet", "--bare", bare);
    git(bare, "remote", "add", "origin", "https://example.invalid/config.git");
    const top = workTree("plain", ["origin"]);
    for (const repo of [bare, path.join(top, ".git")]) {
      const err = await refusal(repo);
      assert.equal(err.code, "REPO_INVALID");
      assert.match(err.message, /is not a git work tree/);
    }
  });
});
