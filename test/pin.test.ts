import assert from "node:assert/strict";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { MAX_PIN_DAYS, parseDuration } from "../src/commands/pin.js";
import type { AgentError } from "../src/core/errors.js";
import { acquireLock } from "../src/state/lock.js";
import {
  hostRoot,
  listeningUrl,
  runArgs,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { needs } from "./helpers/needs.js";
import { ALLOWED_SIGNERS, trustedSigner } from "./helpers/signing.js";

/** The way back: pin an earlier revision with the real CLI beside the real daemon, and unpin. */

const SECRET = "pin-test-webhook-secret-0123456789";
let fx: Fixture;
let root: string;
let stateDir: string;
let daemon: Served | undefined;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, SECRET);
  stateDir = path.join(fx.dir, "state");
});
afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  fx.cleanup();
});

const LANDING = {
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
};
const page = () => {
  try {
    return readFileSync(path.join(root, "var/www/index.html"), "utf8");
  } catch {
    return "(nothing deployed)";
  }
};
const manifest = (extra: Record<string, unknown> = {}) =>
  writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    steps: [LANDING],
    ...extra,
  });
const cli = (file: string, ...args: string[]) =>
  runCli([...args, "--config", file, "--repo", fx.clone, "--root", root, "--state-dir", stateDir], {
    SUDO_USER: "jared",
  });

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}\n${daemon?.out() ?? ""}`);
    await sleep(50);
  }
}

type Status = {
  pinned: { revision: string; reason: string; by: string; until: string; newestRevision?: string } | null;
  deployedRevision: string;
  queue: { runsStarted: number; running: boolean; pending: boolean };
};

describe("pin and unpin", () => {
  it("pin holds the host at an earlier revision while pushes are verified and remembered; unpin deploys the tip", async () => {
    const file = manifest();
    daemon = startCli([...serveArgs(file, fx.clone, root), "--state-dir", stateDir]);
    const url = await listeningUrl(daemon);
    const status = async () => (await (await fetch(`${url}/status`)).json()) as Status;
    const deliver = async (after: string) => {
      const before = (await status()).queue.runsStarted;
      const body = pushBody({ after });
      const res = await fetch(`${url}/hooks/deploy`, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      });
      assert.equal(res.status, 202);
      await until("the push's run", async () => {
        const s = await status();
        return s.queue.runsStarted > before && !s.queue.running && !s.queue.pending ? s : undefined;
      });
    };
    await until("v1 live", () => (page() === "<p>v1</p>\n" ? true : undefined));
    const v1 = git(fx.pusher, "rev-parse", "HEAD");
    const v2 = fx.push({ "landing/index.html": "<p>v2</p>\n" });
    await deliver(v2);
    const v3 = fx.push({ "landing/index.html": "<p>v3 renders wrong</p>\n" });
    await deliver(v3);
    assert.equal(page(), "<p>v3 renders wrong</p>\n");

    // A dry run first: what would change, nothing changed.
    const dry = await cli(file, "pin", v2, "--dry-run");
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /write \/var\/www\/index\.html/);
    assert.equal(page(), "<p>v3 renders wrong</p>\n");

    // A revision this host never ran, or one off the branch, is refused without --force.
    const offBranch = git(fx.clone, "commit-tree", `${v1}^{tree}`, "-m", "off the branch");
    const refused = await cli(file, "pin", offBranch);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /error PIN_REFUSED: [0-9a-f]{12} is not in the history of origin\/main/);
    assert.match(refused.stderr, /hint: pin a commit of the branch, or pass --force/);
    const bad = await cli(file, "pin", v2, "--until", "45d");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--until takes a duration like 90m, 24h or 2d \(at most 30d\)/);

    const pinned = await cli(file, "pin", v2, "--reason", "v3 renders wrong", "--until", "2h");
    assert.equal(pinned.code, 0, pinned.stderr + pinned.stdout);
    assert.equal(page(), "<p>v2</p>\n", "back at v2");
    const s = await status();
    assert.equal(s.pinned?.revision, v2);
    assert.equal(s.pinned?.by, "jared");
    assert.equal(s.pinned?.reason, "v3 renders wrong");
    assert.ok(Date.parse(s.pinned?.until ?? "") > Date.now() + 3_500_000);
    assert.match(
      await (await fetch(`${url}/metrics`)).text(),
      /^deploy_agent_pinned_until_timestamp_seconds\{host="lxctest"\} [1-9]\d+/m,
    );

    // A push while pinned: verified, acknowledged, remembered, not deployed.
    const v4 = fx.push({ "landing/index.html": "<p>v4 with the fix</p>\n" });
    await deliver(v4);
    const never = await cli(file, "pin", v4);
    assert.equal(never.code, 1);
    assert.match(never.stderr, /error PIN_REFUSED: this host never applied [0-9a-f]{12} successfully/);
    assert.equal(page(), "<p>v2</p>\n", "still pinned");
    assert.equal((await status()).pinned?.newestRevision, v4);
    const shown = await cli(file, "status");
    assert.match(
      shown.stdout,
      /PINNED at [0-9a-f]{12} by jared since .*: v3 renders wrong; newest revision [0-9a-f]{12} waits/,
    );

    const unpinned = await cli(file, "unpin");
    assert.equal(unpinned.code, 0, unpinned.stderr);
    assert.equal(page(), "<p>v4 with the fix</p>\n", "the tip at once");
    assert.equal((await status()).pinned, null);

    // The history tells it: the pin and the unpin, by whom.
    const history = JSON.parse((await cli(file, "history", "--json", "--limit", "10")).stdout) as {
      records: { trigger: { kind: string; user?: string }; revision: string }[];
    };
    const kinds = history.records.map((r) => `${r.trigger.kind}:${r.revision?.slice(0, 7)}`);
    assert.deepEqual(kinds.slice(0, 3), [
      `unpin:${v4.slice(0, 7)}`,
      `push:${v2.slice(0, 7)}`,
      `pin:${v2.slice(0, 7)}`,
    ]);
    assert.equal(history.records[0]?.trigger.user, "jared");
    assert.ok(v1);
  });

  it("pin works while the origin is unreachable, and a kill -9 during it converges on the next start", async () => {
    const file = manifest({
      steps: [{ ...LANDING, reload: [["sh", "-c", `touch ${path.join(root, "reloading")}; sleep 2`]] }],
    });
    const args = runArgs(file, fx.clone, root, stateDir);
    assert.equal((await runCli(args)).code, 0);
    const v1 = git(fx.pusher, "rev-parse", "HEAD");
    fx.push({ "landing/index.html": "<p>v2</p>\n" });
    assert.equal((await runCli(args)).code, 0);
    assert.equal(page(), "<p>v2</p>\n");
    renameSync(fx.origin, `${fx.origin}.gone`);
    rmSync(path.join(root, "reloading"));
    // Killed while the step's reload runs: the pin is recorded before any step.
    const child = startCli(["pin", v1, ...args.slice(1)]);
    await until("the reload in flight", () => {
      try {
        readFileSync(path.join(root, "reloading"));
        return true;
      } catch {
        return undefined;
      }
    });
    child.child.kill("SIGKILL");
    await child.exited;
    const state = JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as {
      pinned?: { revision: string };
    };
    assert.equal(state.pinned?.revision, v1, "the pin was recorded before the step");
    // The daemon's start-up reconcile (origin still gone: the fetch fails, then the retry) is not needed to
    // converge: a run without fetching deploys the pinned revision.
    const again = await runCli([...args, "--no-fetch"]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(page(), "<p>v1</p>\n");
  });

  it("a revision that fails repo.verify is refused even with --force", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const jared = trustedSigner(fx, root);
    const unsigned = git(fx.pusher, "rev-parse", "HEAD");
    jared.push({ "landing/index.html": "<p>signed</p>\n" }, "signed");
    const file = manifest({
      repo: { verify: { mode: "tip", allowedSignersFile: ALLOWED_SIGNERS } },
    });
    assert.equal((await cli(file, "run")).code, 0);
    const res = await cli(file, "pin", unsigned, "--force");
    assert.equal(res.code, 1);
    assert.match(res.stderr, /error UNVERIFIED: commit [0-9a-f]{12} is not signed by a trusted key/);
    assert.equal(page(), "<p>signed</p>\n");
    const state = JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as { pinned?: unknown };
    assert.equal(state.pinned, undefined, "nothing pinned");
  });

  it("a pin does not move the anchor: a force push between the pin and the newest revision is still refused; a pin cannot change repo.verify", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const jared = trustedSigner(fx, root);
    // The manifest lives in the repository, as on the hosts: each revision carries its own.
    const inRepo = (verify: boolean) => ({
      "config/lxctest.yaml": stringify({
        version: 1,
        host: "lxctest",
        listen: { port: 9000 },
        webhook: { pollIntervalSeconds: 0 },
        ...(verify ? { repo: { verify: { mode: "all", allowedSignersFile: ALLOWED_SIGNERS } } } : {}),
        steps: [LANDING],
      }),
    });
    const signed = jared.push;
    const noVerify = signed({ ...inRepo(false), "landing/index.html": "<p>a</p>\n" }, "A, before verify");
    const b = signed({ ...inRepo(true), "landing/index.html": "<p>b</p>\n" }, "B");
    const c = signed({ "landing/index.html": "<p>c</p>\n" }, "C");
    signed({ "landing/index.html": "<p>d with the fix</p>\n" }, "D");
    git(fx.clone, "fetch", "--quiet", "origin");
    git(fx.clone, "reset", "--quiet", "--hard", "origin/main");
    const file = path.join(fx.clone, "config/lxctest.yaml");
    const run = (...args: string[]) => cli(file, ...args);
    // B and C run (each pinned in turn; A, from before verify existed, is refused), then D.
    for (const rev of [noVerify, b, c]) {
      const r = await run("pin", rev, "--force");
      assert.equal(r.code, rev === noVerify ? 1 : 0, r.stderr);
    }
    assert.equal((await run("unpin")).code, 0);
    assert.equal(page(), "<p>d with the fix</p>\n");
    // A pin whose manifest has no verify would leave the host without it after a restart: refused.
    const weaker = await run("pin", noVerify, "--force");
    assert.equal(weaker.code, 1);
    assert.match(weaker.stderr, /error PIN_REFUSED: the manifest at [0-9a-f]{12} has other repo settings/);
    // A state written before anchors were (an upgraded host): the pin must not become the anchor either.
    const stateFile = path.join(stateDir, "state.json");
    const { anchor, ...withoutAnchor } = JSON.parse(readFileSync(stateFile, "utf8")) as { anchor?: string };
    assert.ok(anchor, "the case is what it claims: the state had an anchor to take away");
    writeFileSync(stateFile, JSON.stringify(withoutAnchor));
    // Pinned at B, the branch force-pushed back to C: C descends from B but not from D. Refused, and
    // the pinned host keeps running B; unpin refuses it too.
    assert.equal((await run("pin", b)).code, 0);
    git(fx.pusher, "push", "--quiet", "--force", "origin", `${c}:refs/heads/main`);
    const whilePinned = await run("run", "--json");
    assert.equal(whilePinned.code, 0, whilePinned.stderr);
    const report = JSON.parse(whilePinned.stdout) as { warnings: string[]; revision: string };
    assert.equal(report.revision, b);
    assert.ok(
      report.warnings.some((w) => /tip [0-9a-f]{12} is refused \(HISTORY_REWRITTEN/.test(w)),
      report.warnings.join("\n"),
    );
    const unpin = await run("unpin");
    assert.equal(unpin.code, 1);
    assert.match(
      unpin.stderr,
      /error HISTORY_REWRITTEN: origin\/main is at [0-9a-f]{12}, which does not descend from [0-9a-f]{12}/,
    );
    assert.equal(page(), "<p>b</p>\n", "still at the pin");
  });
});

describe("pin and unpin at their edges", () => {
  it("unpin leaves an unpinned host as it is and a suspended one pinned; a failed pin says it holds", async () => {
    const file = manifest();
    assert.equal((await cli(file, "run")).code, 0);
    const v1 = git(fx.pusher, "rev-parse", "HEAD");
    fx.push({ "landing/index.html": "<p>v2</p>\n" });
    assert.equal((await cli(file, "run")).code, 0);
    fx.push({ "landing/index.html": "<p>v3, not deployed</p>\n" });

    const notPinned = await cli(file, "unpin");
    assert.equal(notPinned.code, 0, notPinned.stderr);
    assert.equal(
      notPinned.stdout,
      "lxctest is not pinned: nothing to unpin, nothing deployed (deploy-agent run deploys)\n",
    );
    assert.equal(page(), "<p>v2</p>\n", "unpin is not a way to deploy");
    const asJson = await cli(file, "unpin", "--json");
    assert.deepEqual(JSON.parse(asJson.stdout), {
      schema: "deploy-agent/unpin@1",
      host: "lxctest",
      pinned: false,
    });

    // A reason is one plain line: one with escape sequences is refused before anything is pinned.
    const hostile = "\u001b]0;owned\u0007\u001b[2Jv2 is bad";
    const refused = await cli(file, "pin", v1, "--reason", hostile);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /error USAGE: --reason takes one line of at most 500 characters/);
    assert.equal(page(), "<p>v2</p>\n");
    assert.equal((await cli(file, "pin", v1, "--reason", "v2 is bad")).code, 0);
    assert.equal(page(), "<p>v1</p>\n");
    // A state an older agent wrote may hold one: shown to the next operator, it never drives their terminal.
    const stateFile = path.join(stateDir, "state.json");
    writeFileSync(stateFile, readFileSync(stateFile, "utf8").replace('"v2 is bad"', JSON.stringify(hostile)));
    const status = await cli(file, "status");
    assert.match(status.stdout, /\?\]0;owned\?\?\[2Jv2 is bad/);
    assert.equal(status.stdout.includes("\u001b"), false);
    assert.equal((await cli(file, "suspend", "--reason", "migration")).code, 0);
    const suspended = await cli(file, "unpin");
    assert.equal(suspended.code, 1);
    assert.match(suspended.stderr, /error PIN_REFUSED: lxctest is suspended \(migration\)/);
    assert.match(suspended.stderr, /hint: deploy-agent resume first/);
    const state = () =>
      JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as {
        pinned?: { revision: string };
      };
    assert.equal(state().pinned?.revision, v1, "the pin stays");
    assert.equal((await cli(file, "resume")).code, 0);
    assert.equal(page(), "<p>v1</p>\n", "resumed, still pinned");

    // A pin whose run fails still holds: the output says so, not only the state.
    const v2 = git(fx.pusher, "rev-parse", "HEAD~1");
    const failing = manifest({ steps: [{ ...LANDING, reload: [["false"]] }] });
    const failed = await cli(failing, "pin", v2);
    assert.equal(failed.code, 1);
    assert.match(
      failed.stdout,
      new RegExp(
        `pinned at ${v2.slice(0, 12)} until \\S+, whatever this run's result: pushes are held; deploy-agent unpin returns to the branch's tip`,
      ),
    );
    assert.equal(state().pinned?.revision, v2);
  });
});

describe("unpin under the deploy lock", () => {
  it("two operators unpin at once: one unpin runs, the other finds no pin and deploys nothing", async () => {
    const file = manifest();
    assert.equal((await cli(file, "run")).code, 0);
    const v1 = git(fx.pusher, "rev-parse", "HEAD");
    fx.push({ "landing/index.html": "<p>v2</p>\n" });
    assert.equal((await cli(file, "run")).code, 0);
    assert.equal((await cli(file, "pin", v1)).code, 0);
    fx.push({ "landing/index.html": "<p>v3 with the fix</p>\n" });
    // A run holds the deploy lock while both operators type `unpin`: each reads the state, then waits.
    const held = await acquireLock(stateDir, 0);
    const args = ["unpin", "--wait", "60", "--config", file, "--repo", fx.clone, "--root", root];
    const env = { SUDO_USER: "jared" };
    const both = [
      startCli([...args, "--state-dir", stateDir], env),
      startCli([...args, "--state-dir", stateDir], env),
    ];
    try {
      for (const op of both) await op.waitFor(/waiting for the deploy lock held by another run/, 30_000);
    } finally {
      await held.release();
    }
    const codes = await Promise.all(both.map((op) => op.exited));
    assert.deepEqual(codes, [0, 0], both.map((op) => op.out()).join("\n---\n"));
    const notPinned =
      "lxctest is not pinned: nothing to unpin, nothing deployed (deploy-agent run deploys)\n";
    const said = both.map((op) => op.out().includes(notPinned));
    assert.deepEqual(
      said.sort(),
      [false, true],
      `exactly one finds no pin:\n${both.map((op) => op.out()).join("\n---\n")}`,
    );
    assert.equal(page(), "<p>v3 with the fix</p>\n");
    const history = JSON.parse((await cli(file, "history", "--json", "--limit", "10")).stdout) as {
      records: { trigger: { kind: string } }[];
    };
    assert.deepEqual(
      history.records.map((r) => r.trigger.kind).filter((k) => k === "unpin"),
      ["unpin"],
      "one unpin run in the history",
    );
    const state = JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as { pinned?: unknown };
    assert.equal(state.pinned, undefined);
  });

  it("unpin --dry-run on a host that is not pinned says so and takes no lock", async () => {
    const file = manifest();
    assert.equal((await cli(file, "run")).code, 0);
    const held = await acquireLock(stateDir, 0);
    try {
      const dry = await cli(file, "unpin", "--dry-run");
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(
        dry.stdout,
        "lxctest is not pinned: nothing to unpin, nothing deployed (deploy-agent run deploys)\n",
      );
      // Without --wait a real unpin finds the lock taken: LOCKED, not a guess made before the lock.
      const locked = await cli(file, "unpin");
      assert.equal(locked.code, 1);
      assert.match(locked.stderr, /error LOCKED/);
    } finally {
      await held.release();
    }
  });
});

describe("pin --until durations", () => {
  it("takes s, m, h and d up to the 30-day bound exactly, and nothing else", () => {
    assert.equal(parseDuration("3600s"), 3_600_000);
    assert.equal(parseDuration("90m"), 5_400_000);
    assert.equal(parseDuration(" 24h "), 86_400_000);
    assert.equal(parseDuration(`${MAX_PIN_DAYS}d`), MAX_PIN_DAYS * 86_400_000);
    assert.equal(parseDuration(`${MAX_PIN_DAYS * 24}h`), MAX_PIN_DAYS * 86_400_000);
    for (const bad of [
      `${MAX_PIN_DAYS + 1}d`,
      `${MAX_PIN_DAYS * 24 + 1}h`,
      "0h",
      "1w",
      "2",
      "h",
      "-1h",
      "1.5h",
      "1e3s",
      "1234567s",
      "",
    ]) {
      assert.throws(
        () => parseDuration(bad),
        (e: AgentError) => e.code === "USAGE",
        bad,
      );
    }
  });
});
