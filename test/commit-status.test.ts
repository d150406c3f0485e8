import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { hostRoot, runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, hasCommit, makeFixture } from "./helpers/git.js";
import { type GiteaApi, startGiteaApi } from "./helpers/gitea-api.js";

/**
 * The Gitea commit statuses the operator's CLI posts (pin, unpin, run, suspend, resume) against the Gitea
 * test server: a commit's status says the truth about that commit, and nothing is posted twice for the same
 * outcome, though every command is a new process.
 */

const GITEA_TOKEN = "gitea-cs-Wm37QpZx8Lk2Rv5NbT9aYe";
const CONTEXT = "deploy/lxctest";
let fx: Fixture;
let root: string;
let stateDir: string;
let manifest: string;
let gitea: GiteaApi;

beforeEach(async () => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, "commit-status-webhook-secret-0123");
  stateDir = path.join(fx.dir, "state");
  gitea = await startGiteaApi({
    token: GITEA_TOKEN,
    repository: "LotusGuild/matrix",
    knows: (sha) => hasCommit(fx.pusher, sha),
  });
  writeFileSync(
    path.join(root, "etc/deploy-agent/notify.env"),
    `GITEA_API=${gitea.url}\nGITEA_TOKEN=${GITEA_TOKEN}\n`,
    { mode: 0o600 },
  );
  manifest = writeManifest(fx.dir, {
    envFile: "/etc/deploy-agent/notify.env",
    publicUrl: "http://127.0.0.1:9000",
    notify: {
      targets: [
        {
          kind: "gitea-status",
          api: "${GITEA_API}",
          repository: "LotusGuild/matrix",
          token: "${GITEA_TOKEN}",
        },
      ],
    },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
});

afterEach(async () => {
  await gitea.close();
  fx.cleanup();
});

/** Every command's output, to prove the token never reaches one. */
const outputs: string[] = [];
/** The CLI as the operator jared runs it (sudo), on this test's host. */
async function cli(...args: string[]) {
  const r = await runCli([...args, ...runArgs(manifest, fx.clone, root, stateDir).slice(1)], {
    SUDO_USER: "jared",
  });
  outputs.push(r.stdout, r.stderr);
  return r;
}
async function ok(...args: string[]) {
  const r = await cli(...args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r;
}
const on = (rev: string) =>
  gitea.statuses.filter((s) => s.sha === rev).map((s) => [s.state, s.context, s.description]);
const latest = (rev: string) => gitea.statuses.filter((s) => s.sha === rev && s.context === CONTEXT).at(-1);
const pinUntil = () =>
  (JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as { pinned: { until: string } })
    .pinned.until;
const head = () => git(fx.pusher, "rev-parse", "HEAD");
const landing = (text: string) => fx.push({ "landing/index.html": `<p>${text}</p>\n` }, text);
/** No command's output, log line, state file or request body holds the token, nor 10 characters of it. */
function tokenKept() {
  const files = readdirSync(stateDir).flatMap((f) => {
    try {
      return [readFileSync(path.join(stateDir, f), "utf8")];
    } catch {
      return [];
    }
  });
  for (const text of [...outputs, ...files, ...gitea.bodies]) {
    for (let i = 0; i + 10 <= GITEA_TOKEN.length; i++)
      assert.equal(
        text.includes(GITEA_TOKEN.slice(i, i + 10)),
        false,
        `the token leaked: ${text.slice(0, 400)}`,
      );
  }
  assert.deepEqual(gitea.refused, []);
}

describe("commit statuses: pin and unpin", () => {
  it("pin at an older revision tells the tip it ran that it is held now, as a held push is", async () => {
    const rev0 = head();
    await ok("run");
    const rev1 = landing("v2 renders wrong");
    await ok("run");
    assert.equal(latest(rev1)?.state, "success");

    await ok("pin", rev0, "--reason", "v2 renders wrong", "--until", "2h");
    const tip = latest(rev1);
    assert.deepEqual(
      [tip?.state, tip?.description],
      ["pending", `held: lxctest pinned at ${rev0.slice(0, 12)} by jared until ${pinUntil()}`],
      "the tip no longer runs on the host: its success is not true any more",
    );
    assert.equal(tip?.target_url, "http://127.0.0.1:9000/status");
    assert.equal(latest(rev0)?.state, "success");
    // Pinned again, meant longer: the tip is told by whom and until when it is held now, once.
    await ok("pin", rev0, "--reason", "v2 still renders wrong", "--until", "3h");
    assert.equal(
      latest(rev1)?.description,
      `held: lxctest pinned at ${rev0.slice(0, 12)} by jared until ${pinUntil()}`,
    );
    assert.equal(on(rev1).filter((s) => String(s[2]).startsWith("held: ")).length, 2);

    // unpin deploys it again: success, once more the truth.
    await ok("unpin");
    assert.equal(latest(rev1)?.state, "success");
    tokenKept();
  });

  it("a held commit a newer tip replaces is closed as superseded, by a newer held push and by unpin", async () => {
    const rev0 = head();
    await ok("run");
    await ok("pin", rev0, "--reason", "hold everything");
    const rev1 = landing("v2");
    await ok("run");
    assert.equal(latest(rev1)?.state, "pending");

    const rev2 = landing("v3");
    await ok("run");
    assert.equal(latest(rev2)?.state, "pending", "the newer tip is held");
    assert.deepEqual(
      on(rev1).at(-1),
      ["warning", CONTEXT, `superseded by ${rev2.slice(0, 12)}: never deployed on lxctest`],
      "the replaced commit must not wait for ever",
    );

    // The tip moves again and unpin deploys it at once: the commit it replaced is closed too.
    const rev3 = landing("v4");
    await ok("unpin");
    assert.equal(latest(rev3)?.state, "success");
    assert.deepEqual(on(rev2).at(-1), [
      "warning",
      CONTEXT,
      `superseded by ${rev3.slice(0, 12)}: never deployed on lxctest`,
    ]);
    assert.equal(latest(rev1)?.state, "warning", "closed once, left alone");
    assert.equal(on(rev1).length, 2);
    tokenKept();
  });

  it("each run on a pinned host posts nothing new: held once, the pinned revision left alone", async () => {
    const rev0 = head();
    await ok("run");
    await ok("pin", rev0, "--reason", "hold");
    const rev1 = landing("v2");
    await ok("run");
    assert.deepEqual(
      on(rev1).map((s) => s.slice(0, 2)),
      [["pending", CONTEXT]],
    );
    const posted = gitea.statuses.length;
    // A cron'd or hand-run `run`, twice: the same outcome as before, each a new process.
    await ok("run");
    await ok("run");
    assert.deepEqual(
      gitea.statuses.slice(posted).map((s) => [s.sha.slice(0, 12), s.state, s.description]),
      [],
      "the same outcome was posted again",
    );
    tokenKept();
  });
});

describe("commit statuses: a suspended host", () => {
  it("a run while suspended says nothing on the tip it does not deploy; resume deploys it", async () => {
    await ok("run");
    await ok("suspend", "--reason", "migration");
    const rev1 = landing("v2");
    const run = await cli("run");
    assert.equal(run.code, 1, "suspended: nothing deployed");
    assert.deepEqual(on(rev1), [], "a suspended run deploys nothing: it is not deploying");

    await ok("resume");
    assert.equal(latest(rev1)?.state, "success");
    tokenKept();
  });
  it("a pin or unpin refused because the host is suspended marks no commit", async () => {
    const rev0 = head();
    await ok("run");
    landing("v2");
    await ok("run");
    await ok("suspend", "--reason", "migration");
    const refusedWith = async (...args: string[]) => {
      const before = gitea.statuses.length;
      const r = await cli(...args);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /PIN_REFUSED: lxctest is suspended \(migration\)/);
      assert.deepEqual(
        gitea.statuses.slice(before),
        [],
        `${args[0]} was refused, which is no commit's fault: nothing to say on one`,
      );
    };
    await refusedWith("pin", rev0, "--reason", "too late");
    await ok("resume");
    await ok("pin", rev0, "--reason", "now");
    await ok("suspend", "--reason", "migration");
    await refusedWith("unpin");
    assert.equal(latest(rev0)?.state, "success");
    tokenKept();
  });
});
