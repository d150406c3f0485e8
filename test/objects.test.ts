import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { subjectOf } from "../src/source/git.js";
import { createObjectReader, MAX_OBJECT_BYTES } from "../src/source/objects.js";
import { openRepo, type Repo } from "../src/source/open-repo.js";
import { changedPaths, gitTrees, loadSnapshot } from "../src/source/snapshot.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";

/**
 * The object reader (one long-lived `git cat-file --batch`) and what is built on it: snapshots resolved
 * tree by tree, and changed paths as a tree diff. Each answer is checked against git's own commands.
 */

let fx: Fixture;
let repo: Repo;

/** What git itself says changed (renames as both paths, as the planner wants them). */
function gitSays(from: string, to: string): string[] {
  const out = git(fx.clone, "diff", "--name-only", "--no-renames", "-z", from, to);
  return out.split("\0").filter(Boolean).sort();
}

const fetchAll = () => git(fx.clone, "fetch", "--quiet", "origin");

before(async () => {
  fx = makeFixture({
    "README.md": "readme\n",
    "landing/index.html": "<p>0</p>\n",
    "hookshot/grafana.js": "result = 1;\n",
    "hookshot/lib/prelude.js": "// prelude\n",
    "deep/a/b/c/d.txt": "deep\n",
    "link.txt": { symlink: "README.md" },
  });
  repo = await openRepo(fx.clone, "origin", "main");
});
after(() => {
  repo.objects.close();
  fx.cleanup();
});

describe("git objects through cat-file --batch", () => {
  it("a commit's subject is git's %s: first paragraph on one line, after multi-line headers", async () => {
    const tree = git(fx.clone, "rev-parse", "HEAD^{tree}");
    const who = "A U Thor <a@example.org> 1700000000 +0000";
    const messages = [
      "one line",
      "first line\nsecond line of the same paragraph\n\nthe body\n",
      "\n\nafter blank lines\n\nbody",
      "",
    ];
    for (const message of messages) {
      // A signature header whose armour has an empty line (a lone space after the continuation prefix).
      const object = `tree ${tree}\nauthor ${who}\ncommitter ${who}\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAAB\n -----END PGP SIGNATURE-----\n\n${message}`;
      const oid = execFileSync("git", ["hash-object", "-t", "commit", "-w", "--stdin", "--literally"], {
        cwd: fx.clone,
        input: object,
        encoding: "utf8",
      }).trim();
      const expected = git(fx.clone, "log", "-1", "--format=%s", oid) || null;
      assert.equal(await subjectOf(repo, oid), expected, JSON.stringify(message));
    }
    assert.equal(await subjectOf(repo, "0".repeat(40)), null);
  });

  it("changed paths match git's diff: edits, additions, deletions, renames, nested and mode changes", async () => {
    const start = git(fx.clone, "rev-parse", "HEAD");
    const revs = [start];
    revs.push(fx.push({ "landing/index.html": "<p>1</p>\n" }));
    revs.push(fx.push({ "deep/a/b/c/e.txt": "new\n", README: null }));
    revs.push(fx.rename("hookshot/grafana.js", "hookshot/old/grafana.js"));
    git(fx.pusher, "update-index", "--chmod=+x", "README.md");
    revs.push(fx.push({}, "mode change"));
    // A directory replaced by a file of the same name, and back.
    git(fx.pusher, "rm", "-rq", "deep/a/b");
    revs.push(fx.push({ "deep/a/b": "now a file\n" }));
    git(fx.pusher, "rm", "-q", "deep/a/b");
    revs.push(fx.push({ "deep/a/b/x.txt": "a dir again\n" }));
    fetchAll();
    for (let i = 0; i < revs.length; i++) {
      for (let k = i + 1; k < revs.length; k++) {
        const from = revs[i] ?? "";
        const to = revs[k] ?? "";
        assert.deepEqual(
          await changedPaths(gitTrees(repo.objects), from, to),
          gitSays(from, to),
          `${i}..${k}`,
        );
      }
    }
    assert.deepEqual(await changedPaths(gitTrees(repo.objects), start, start), []);
  });

  it("a revision that is not a commit here is unknown (null), never an error", async () => {
    const head = git(fx.clone, "rev-parse", "HEAD");
    assert.equal(await changedPaths(gitTrees(repo.objects), "1".repeat(40), head), null);
    assert.equal(await changedPaths(gitTrees(repo.objects), "not-a-sha", head), null);
    const blob = git(fx.clone, "rev-parse", "HEAD:README.md");
    assert.equal(await changedPaths(gitTrees(repo.objects), blob, head), null, "a blob is not a commit");
  });

  it("a snapshot reads files as git has them, refuses links, and lists every path only when asked", async () => {
    const rev = fx.push({ "landing/index.html": "<p>snapshot</p>\n" });
    fetchAll();
    const snap = loadSnapshot(repo, rev);
    assert.equal((await snap.read("landing/index.html")).toString(), "<p>snapshot</p>\n");
    assert.equal(await snap.has("landing/index.html"), true);
    assert.equal(await snap.has("landing"), false, "a directory is not a file");
    assert.equal(await snap.has("landing/index.html/x"), false);
    await assert.rejects(snap.read("nope.txt"), { code: "SOURCE_MISSING" });
    await assert.rejects(snap.read("link.txt"), { code: "SOURCE_UNSAFE" });
    const listed = git(fx.clone, "ls-tree", "-r", "--name-only", "-z", rev).split("\0").filter(Boolean);
    assert.deepEqual((await snap.paths()).sort(), listed.sort());
  });

  it("objects fetched after the reader started are found", async () => {
    await loadSnapshot(repo, git(fx.clone, "rev-parse", "origin/main")).read("README.md");
    const rev = fx.push({ "landing/index.html": "<p>after start</p>\n" });
    fetchAll();
    assert.equal(
      (await loadSnapshot(repo, rev).read("landing/index.html")).toString(),
      "<p>after start</p>\n",
    );
  });

  it("a killed cat-file fails the reads in flight and is started again on the next read", async () => {
    const reader = createObjectReader(fx.clone, process.env);
    assert.ok(await reader.read("HEAD"));
    const pids = execFileSync("pgrep", ["-f", "^git cat-file --batch$", "-P", String(process.pid)], {
      encoding: "utf8",
    })
      .trim()
      .split("\n")
      .map(Number)
      .filter((pid) => pid > 1);
    assert.ok(pids.length > 0, "the reader's cat-file runs");
    for (const pid of pids) process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 100));
    const again = await reader.read("HEAD");
    assert.equal(again?.type, "commit");
    reader.close();
  });

  it("closing the reader answers the reads still waiting, and a later read starts it again", async () => {
    const reader = createObjectReader(fx.clone, process.env);
    const waiting = reader.read("HEAD");
    reader.close();
    await assert.rejects(waiting, { code: "GIT_FAILED", message: /closed/ });
    assert.equal((await reader.read("HEAD"))?.type, "commit");
    reader.close();
  });

  it("a git that stops answering fails the read after the timeout, and is killed", async () => {
    const bin = mkdtempSync(path.join(tmpdir(), "stuck-git-"));
    writeFileSync(path.join(bin, "git"), '#!/bin/sh\necho $$ > "$(dirname "$0")/pid"\nexec sleep 60\n', {
      mode: 0o755,
    });
    const reader = createObjectReader(
      fx.clone,
      { ...process.env, PATH: `${bin}:${process.env.PATH}` },
      {
        timeoutMs: 300,
      },
    );
    const started = Date.now();
    await assert.rejects(reader.read("HEAD"), {
      code: "GIT_FAILED",
      message: /did not answer within 300 ms/,
    });
    assert.ok(Date.now() - started >= 300);
    const pid = Number(readFileSync(path.join(bin, "pid"), "utf8"));
    await new Promise((r) => setTimeout(r, 100));
    assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "the stuck process is gone");
    reader.close();
    rmSync(bin, { recursive: true, force: true });
  });

  it("an object of exactly the cap is read; one byte more is refused with a clear error", async () => {
    const rev = fx.push({
      "max.bin": Buffer.alloc(MAX_OBJECT_BYTES, 0x61),
      "big.bin": Buffer.alloc(MAX_OBJECT_BYTES + 1, 0x61),
    });
    fetchAll();
    const reader = createObjectReader(fx.clone, process.env);
    assert.equal((await reader.read(`${rev}:max.bin`))?.data.length, MAX_OBJECT_BYTES);
    await assert.rejects(reader.read(`${rev}:big.bin`), { code: "SOURCE_UNSAFE", message: /at most/ });
    // The reader recovers: the next read starts a new cat-file.
    assert.equal((await reader.read(`${rev}:README.md`))?.type, "blob");
    reader.close();
  });
});
