import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import pino from "pino";
import { AgentError } from "../src/core/errors.js";
import { deploy } from "../src/deploy/pipeline.js";
import { loadManifest } from "../src/manifest/load.js";
import { readState } from "../src/state/read-state.js";
import { hostRoot, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";
import { ALLOWED_SIGNERS, trustedSigner } from "./helpers/signing.js";

/**
 * A state file that cannot be used whole (a disk fault, a hand edit, a downgrade past a field a newer agent
 * wrote) must not lift a suspension, drop a pin or forget the anchor: what the file still says field by
 * field is kept, and what it no longer says comes from the deploy history. The real CLI, real git.
 */

let fx: Fixture;
let root: string;
let stateDir: string;
beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, "state-recovery-webhook-secret-0123");
  stateDir = path.join(fx.dir, "state");
});
afterEach(() => fx.cleanup());

const LANDING = {
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
};
const page = () => readFileSync(path.join(root, "var/www/index.html"), "utf8");
const stateFile = () => path.join(stateDir, "state.json");
const state = () =>
  JSON.parse(readFileSync(stateFile(), "utf8")) as {
    pinned?: { revision: string; by: string; reason: string };
    suspended?: { reason: string };
    anchor?: string;
    steps: Record<string, unknown>;
  };
const manifest = (extra: Record<string, unknown> = {}) =>
  writeManifest(fx.dir, { webhook: { pollIntervalSeconds: 0 }, steps: [LANDING], ...extra });
const cli = (file: string, ...args: string[]) =>
  runCli([...args, "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir], {
    SUDO_USER: "jared",
  });
/** v1 (the fixture's commit) runs, then v2 is pushed and runs; v1. */
async function ranTwice(file: string): Promise<string> {
  assert.equal((await cli(file, "run")).code, 0);
  const v1 = git(fx.pusher, "rev-parse", "HEAD");
  fx.push({ "landing/index.html": "<p>v2</p>\n" });
  assert.equal((await cli(file, "run")).code, 0);
  return v1;
}
const warnings = (stdout: string) => (JSON.parse(stdout) as { warnings: string[] }).warnings.join("\n");

describe("a state file that cannot be used whole", () => {
  it("is not JSON: the host stays suspended and pinned, as the deploy history says, until the operator says otherwise", async () => {
    const file = manifest();
    const v1 = await ranTwice(file);
    assert.equal((await cli(file, "pin", v1, "--reason", "v2 is bad")).code, 0);
    assert.equal((await cli(file, "suspend", "--reason", "migration")).code, 0);
    assert.equal(page(), "<p>v1</p>\n");
    fx.push({ "landing/index.html": "<p>v3</p>\n" });

    writeFileSync(stateFile(), "{ truncated");
    const suspended = await cli(file, "run", "--json");
    assert.equal(
      page(),
      "<p>v1</p>\n",
      "a suspended host deploys nothing, whatever became of its state file",
    );
    assert.match(warnings(suspended.stdout), /state unusable: .*not valid JSON/);
    assert.match(
      warnings(suspended.stdout),
      /from the deploy history: suspended since \S+, pinned at [0-9a-f]{12}/,
    );
    assert.equal(state().suspended?.reason, "migration");
    assert.equal(state().pinned?.revision, v1);
    assert.equal(state().pinned?.by, "jared");
    const status = await cli(file, "status");
    assert.match(status.stdout, /SUSPENDED/);

    writeFileSync(stateFile(), "");
    assert.equal((await cli(file, "resume")).code, 0);
    assert.equal((await cli(file, "run")).code, 0);
    assert.equal(page(), "<p>v1</p>\n", "resumed, still pinned");
    assert.match(state().pinned?.reason ?? "", /recovered from the deploy history/);
    const unpinned = await cli(file, "unpin");
    assert.equal(unpinned.code, 0, unpinned.stderr);
    assert.equal(page(), "<p>v3</p>\n");
    assert.equal(state().pinned, undefined);
  });

  it("has a field this version does not know: every field that still reads is kept, the steps' too", async () => {
    const file = manifest();
    const v1 = await ranTwice(file);
    assert.equal((await cli(file, "pin", v1, "--reason", "kept in the file")).code, 0);
    // A newer agent's field, a step it wrote in a shape this one does not read, and no history to help.
    const written = state();
    writeFileSync(
      stateFile(),
      JSON.stringify({
        ...written,
        rolloutWave: 2,
        steps: { ...written.steps, "from-the-future": { v: 2 } },
      }),
    );
    writeFileSync(path.join(stateDir, "history.jsonl"), "");
    fx.push({ "landing/index.html": "<p>v3</p>\n" });
    const run = await cli(file, "run", "--json");
    assert.equal(run.code, 0, run.stderr);
    assert.equal(page(), "<p>v1</p>\n", "still pinned");
    const said = warnings(run.stdout);
    assert.match(said, /state unusable: .*unexpected shape/);
    assert.match(said, /1 step\(s\) kept, the others run again/);
    assert.match(said, /kept from the file: pinned at [0-9a-f]{12}, anchor [0-9a-f]{12}/);
    assert.equal(state().pinned?.reason, "kept in the file");
    assert.deepEqual(Object.keys(state().steps), ["landing"]);
    const report = JSON.parse(run.stdout) as { steps: { name: string; reason: string }[] };
    assert.notEqual(report.steps[0]?.reason, "NeverApplied");
  });

  it("holds JSON that is not an object: said so, and an empty state with nothing to recover", async () => {
    mkdirSync(stateDir, { recursive: true });
    for (const text of ["null", "[]", '"lxctest"', "7"]) {
      writeFileSync(stateFile(), text);
      const { state: read, problem } = await readState(stateDir, "lxctest");
      assert.match(
        problem ?? "",
        /does not hold a JSON object \(every step runs again; the deploy history \(empty\) has no record of a suspend or resume nor a pin or unpin: one older is lost\)$/,
        text,
      );
      assert.deepEqual(read, { version: 1, host: "lxctest", steps: {} });
    }
  });

  it("is read at every /status and /metrics request: the history is read again only once it changed", async () => {
    mkdirSync(stateDir, { recursive: true });
    // A host never suspended: the pass for its suspension reads the whole history, 10,000 records.
    const record = (i: number) =>
      JSON.stringify({
        v: 1,
        at: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
        host: "lxctest",
        event: "run",
        trigger: { kind: "push", delivery: `d${i}` },
        revision: i.toString(16).padStart(40, "0"),
        previousRevision: (i - 1).toString(16).padStart(40, "0"),
        result: "failed",
        verified: true,
        applied: false,
        error: { code: "COMMAND_FAILED", message: "x".repeat(300), step: "synapse" },
        steps: [{ name: "synapse", outcome: "failed", durationMs: 12 }],
        durationMs: 100,
      });
    const history = path.join(stateDir, "history.jsonl");
    writeFileSync(history, `${Array.from({ length: 10_000 }, (_, i) => record(i)).join("\n")}\n`);
    writeFileSync(stateFile(), "{ torn");
    let started = performance.now();
    const first = await readState(stateDir, "lxctest");
    const once = performance.now() - started;
    started = performance.now();
    for (let i = 0; i < 20; i++) {
      const again = await readState(stateDir, "lxctest");
      assert.deepEqual(again, first);
      again.state.anchor = "changed by a caller";
    }
    const twenty = performance.now() - started;
    assert.ok(twenty < once, `20 more reads took ${twenty.toFixed(0)} ms, one pass ${once.toFixed(0)} ms`);
    // Appended to: read again.
    appendFileSync(history, `${record(10_000)}\n`);
    const appended = await readState(stateDir, "lxctest");
    assert.equal(appended.state.lastRun?.revision, (10_000).toString(16).padStart(40, "0"));
  });

  it("lost with a suspension older than the deploy history holds: the problem says it is not known", async () => {
    const file = manifest({ history: { maxRecords: 10, maxAgeDays: 1 } });
    assert.equal((await cli(file, "suspend", "--reason", "long migration")).code, 0);
    // Ten pushes later (each recorded as suspended), the suspend record is past maxRecords.
    for (let i = 0; i < 10; i++) {
      fx.push({ "landing/index.html": `<p>v${i + 2}</p>\n` });
      assert.equal((await cli(file, "run")).code, 1);
    }
    writeFileSync(stateFile(), "{ torn");
    const { state: read, problem } = await readState(stateDir, "lxctest");
    assert.equal(read.suspended, undefined, "the history no longer holds it");
    assert.match(
      problem ?? "",
      /the deploy history back to \S+ has no record of a suspend or resume nor a pin or unpin: one older is lost/,
    );
  });

  it("belongs to another host: nothing of it is used, the history of this host is", async () => {
    const file = manifest();
    assert.equal((await cli(file, "run")).code, 0);
    assert.equal((await cli(file, "suspend", "--reason", "held")).code, 0);
    writeFileSync(stateFile(), JSON.stringify({ ...state(), host: "lxc999", suspended: undefined }));
    fx.push({ "landing/index.html": "<p>v2</p>\n" });
    const run = await cli(file, "run", "--json");
    assert.match(warnings(run.stdout), /belongs to host "lxc999"/);
    assert.equal(page(), "<p>v1</p>\n", "this host's own history says it is suspended");
  });

  it("is lost with repo.verify on: the anchor comes from the history, so a rollback push is still refused", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const jared = trustedSigner(fx, root);
    const file = manifest({ repo: { verify: { mode: "tip", allowedSignersFile: ALLOWED_SIGNERS } } });
    const a = jared.push({ "landing/index.html": "<p>a</p>\n" }, "a");
    assert.equal((await cli(file, "run")).code, 0);
    jared.push({ "landing/index.html": "<p>b, the fix</p>\n" }, "b, the fix");
    assert.equal((await cli(file, "run")).code, 0);

    writeFileSync(stateFile(), "\0\0\0\0");
    git(fx.pusher, "push", "--quiet", "--force", "origin", `${a}:refs/heads/main`);
    const rollback = await cli(file, "run");
    assert.equal(rollback.code, 1);
    assert.match(
      rollback.stderr,
      /error HISTORY_REWRITTEN: origin\/main is at [0-9a-f]{12}, which does not descend/,
    );
    assert.equal(page(), "<p>b, the fix</p>\n");
  });
});

describe("a state file lost while the host is pinned", () => {
  const signedRepo = () => {
    const jared = trustedSigner(fx, root);
    return (content: string) => jared.push({ "landing/index.html": content }, content);
  };

  it("takes as anchor the branch's tip verified by the pinned runs, not the pinned revision they ran", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const signed = signedRepo();
    const file = manifest({
      repo: { verify: { mode: "tip", allowedSignersFile: "/etc/deploy-agent/allowed_signers" } },
    });
    const a = signed("<p>a</p>\n");
    assert.equal((await cli(file, "run")).code, 0);
    const b = signed("<p>b</p>\n");
    assert.equal((await cli(file, "run")).code, 0);
    assert.equal((await cli(file, "pin", a, "--reason", "b is bad")).code, 0);
    const c = signed("<p>c, the fix</p>\n");
    assert.equal((await cli(file, "run")).code, 0, "pinned: a runs, c is verified and remembered");
    assert.equal(state().anchor, c);

    writeFileSync(stateFile(), "\0\0\0\0");
    const { state: recovered } = await readState(stateDir, "lxctest");
    assert.equal(recovered.anchor, c, "the newest revision verified here is c");
    // A force push back to b (a descends into it, c does not): a rollback of c.
    git(fx.pusher, "push", "--quiet", "--force", "origin", `${b}:refs/heads/main`);
    const held = await cli(file, "run", "--json");
    assert.match(warnings(held.stdout), /is refused \(HISTORY_REWRITTEN/);
    const unpin = await cli(file, "unpin");
    assert.equal(unpin.code, 1, "the rollback is refused at unpin too");
    assert.notEqual(page(), "<p>b</p>\n");
  });
});

describe("a pin or unpin whose run failed after it was written", () => {
  // Anything after the pin is in the state file may end the run (a full disk at the next state write, a git
  // object that cannot be read): the pin holds, and so must the state recovered from the history.
  const later = () => {
    throw new AgentError("STATE_WRITE_FAILED", "cannot write state.json: ENOSPC");
  };
  const run = async (file: string, extra: Partial<Parameters<typeof deploy>[0]>) => {
    const { manifest: m } = await loadManifest(file);
    return deploy({
      manifest: m,
      repoDir: fx.clone,
      stateDir,
      root,
      dryRun: false,
      trigger: { kind: "pin", user: "jared" },
      fetch: false,
      all: false,
      only: [],
      lockWaitMs: 0,
      log: pino({ level: "silent" }),
      onManifest: later,
      ...extra,
    });
  };

  it("a pin: recovered from the history, the host stays pinned", async () => {
    const file = manifest();
    const v1 = await ranTwice(file);
    const since = new Date().toISOString();
    const pin = { revision: v1, reason: "v2 is bad", since, until: since, by: "jared" };
    await assert.rejects(run(file, { pin }), /ENOSPC/);
    assert.equal(state().pinned?.revision, v1, "the pin was written before the run failed");

    writeFileSync(stateFile(), "{ truncated");
    const { state: recovered } = await readState(stateDir, "lxctest");
    assert.equal(recovered.pinned?.revision, v1);
    fx.push({ "landing/index.html": "<p>v3</p>\n" });
    assert.equal((await cli(file, "run")).code, 0);
    assert.equal(
      page(),
      "<p>v1</p>\n",
      "the pinned revision runs; v3 is held back, not deployed over the pin",
    );
  });

  it("an unpin: recovered from the history, the host is not pinned again", async () => {
    const file = manifest();
    const v1 = await ranTwice(file);
    assert.equal((await cli(file, "pin", v1, "--reason", "v2 is bad")).code, 0);
    await assert.rejects(run(file, { unpin: true, trigger: { kind: "unpin", user: "jared" } }), /ENOSPC/);
    assert.equal(state().pinned, undefined, "the unpin was written before the run failed");

    writeFileSync(stateFile(), "{ truncated");
    const { state: recovered } = await readState(stateDir, "lxctest");
    assert.equal(recovered.pinned, undefined);
  });
});
