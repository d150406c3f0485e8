import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createFetcher, type Fetcher } from "../src/source/fetch.js";
import { PROJECT } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { childrenOf } from "./helpers/proc.js";

/**
 * The fetch started ahead (src/source/fetch.ts): a real clone and bare origin, the waiting process found
 * in /proc, and what it must never do: fetch before it is told, hold a lock while it waits, use a remote
 * URL that changed meanwhile, or touch the clone when the agent dies under it.
 */

const ENV = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", LC_ALL: "C" };
const OPTIONS = ["--no-tags", "--no-recurse-submodules", "--no-auto-maintenance", "origin"];
const REFSPEC = "+refs/heads/main:refs/remotes/origin/main";
/** As the agent sets it (src/source/git-command.ts). */
const TIMEOUT_MS = 120_000;

let fx: Fixture;
let fetcher: Fetcher;
const tracking = () => git(fx.clone, "rev-parse", "refs/remotes/origin/main");

/** This process's fetches that wait for their refspec, from /proc. */
function waitingFetches(parent = process.pid): number[] {
  return childrenOf(parent).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("deploy-agent-fetch");
    } catch {
      return false; // exited meanwhile
    }
  });
}

/** Whether a process still runs (a zombie nobody reaped has ended). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

const lockFiles = (dir: string): string[] =>
  readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".lock"));

before(() => {
  fx = makeFixture({ "landing/index.html": "<p>0</p>\n" });
  fetcher = createFetcher(fx.clone, ENV, OPTIONS, TIMEOUT_MS);
});
after(() => {
  fetcher.close();
  fx.cleanup();
});

describe("git fetch started ahead", () => {
  it("waits without fetching or locking, then fetches the refspec it is given", async () => {
    fetcher.prepare();
    const [waiting] = waitingFetches();
    assert.ok(waiting, "a git fetch --stdin is waiting");
    const before = tracking();
    const pushed = fx.push({ "landing/index.html": "<p>1</p>\n" });
    await sleep(200);
    assert.equal(tracking(), before, "nothing fetched before it is told");
    assert.deepEqual(lockFiles(path.join(fx.clone, ".git")), [], "no lock held while waiting");
    await fetcher.fetch(REFSPEC);
    assert.equal(tracking(), pushed);
    assert.match(
      readFileSync(path.join(fx.clone, ".git/FETCH_HEAD"), "utf8"),
      new RegExp(`^${pushed}\t\tbranch 'main'`),
    );
    assert.ok(!running(waiting), "the waiting process was the one used");
    // Without one waiting (the CLI), the same fetch is started on the spot.
    const next = fx.push({ "landing/index.html": "<p>2</p>\n" });
    assert.deepEqual(waitingFetches(), []);
    await fetcher.fetch(REFSPEC);
    assert.equal(tracking(), next);
  });

  it("a remote URL changed while it waited: the fetch uses the new one", async () => {
    const other = makeFixture({ "landing/index.html": "<p>elsewhere</p>\n" });
    try {
      fetcher.prepare();
      const [old] = waitingFetches();
      git(fx.clone, "remote", "set-url", "origin", other.origin);
      await fetcher.fetch(REFSPEC);
      assert.equal(tracking(), git(other.origin, "rev-parse", "main"), "fetched from the new URL");
      assert.ok(old && !waitingFetches().includes(old));
    } finally {
      git(fx.clone, "remote", "set-url", "origin", fx.origin);
      other.cleanup();
    }
  });

  it("one killed while it waited is replaced; close() ends the waiting one", async () => {
    fetcher.prepare();
    const [waiting] = waitingFetches();
    process.kill(waiting ?? 0, "SIGKILL");
    await sleep(100);
    const pushed = fx.push({ "landing/index.html": "<p>3</p>\n" });
    await fetcher.fetch(REFSPEC);
    assert.equal(tracking(), pushed);
    fetcher.prepare();
    assert.equal(waitingFetches().length, 1);
    fetcher.close();
    await sleep(100);
    assert.deepEqual(waitingFetches(), []);
  });

  it("git's failure is the error: an unreachable origin, and a fetch that hangs past the timeout", async () => {
    git(fx.clone, "remote", "set-url", "origin", path.join(fx.dir, "gone.git"));
    try {
      await assert.rejects(fetcher.fetch(REFSPEC), /fatal: .*gone\.git/);
    } finally {
      git(fx.clone, "remote", "set-url", "origin", fx.origin);
    }
    // An upload-pack that never answers (set in the clone's config, as an operator could).
    git(fx.clone, "config", "remote.origin.uploadpack", "sleep 30; git-upload-pack");
    try {
      const quick = createFetcher(fx.clone, ENV, OPTIONS, 300);
      await assert.rejects(quick.fetch(REFSPEC), /did not finish within 300 ms/);
    } finally {
      git(fx.clone, "config", "--unset", "remote.origin.uploadpack");
    }
    await assert.rejects(fetcher.fetch("main\nmain"), /newline/);
  });

  it("the agent killed while its fetch waits: the orphan reads end-of-file and leaves the clone alone", async () => {
    // A separate Node process prepares a fetch and is killed -9, as a crashed agent would be.
    const script = `import { createFetcher } from ${JSON.stringify(path.join(PROJECT, "src/source/fetch.ts"))};
createFetcher(${JSON.stringify(fx.clone)}, ${JSON.stringify(ENV)}, ${JSON.stringify(OPTIONS)}, ${TIMEOUT_MS}).prepare();
process.stdout.write("ready\\n"); setInterval(() => {}, 1000);`;
    const agent = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: PROJECT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise((ready) => agent.stdout.once("data", ready));
    const [orphan] = waitingFetches(agent.pid);
    assert.ok(orphan, "the other process's fetch is waiting");
    const before = tracking();
    const fetchHead = statSync(path.join(fx.clone, ".git/FETCH_HEAD")).mtimeMs;
    fx.push({ "landing/index.html": "<p>4</p>\n" });
    agent.kill("SIGKILL");
    for (let i = 0; i < 100 && running(orphan); i++) await sleep(50);
    assert.equal(running(orphan), false, "the orphan ended");
    assert.equal(tracking(), before, "and fetched nothing");
    assert.equal(statSync(path.join(fx.clone, ".git/FETCH_HEAD")).mtimeMs, fetchHead, "nor wrote FETCH_HEAD");
  });
});
