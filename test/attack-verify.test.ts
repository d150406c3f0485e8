import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import type { DeployEvent } from "../src/notify/events.js";
import { descent, PARENTS_WALKED, parentsOf } from "../src/source/ancestry.js";
import { closeRepo, openRepo } from "../src/source/open-repo.js";
import {
  hostRoot,
  listeningUrl,
  makeAgent,
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

/**
 * repo.verify attacked where the designed tests did not look: the branch force-pushed back to an older
 * (unsigned or signed) commit, whose empty `last..new` range listed nothing to verify; and commits dated by
 * the signer (back-dated past a key's valid-before, forward-dated past its valid-after), which git checked
 * against the key's window at that chosen date.
 */

const SECRET = "attack-verify-webhook-secret-0123";
let fx: Fixture;
let keys: string;

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v0</p>\n" });
  keys = path.join(fx.dir, "keys");
  mkdirSync(keys);
});
afterEach(() => fx.cleanup());

const sshKey = (name: string) => {
  const file = path.join(keys, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file]);
  return { private: file, public: readFileSync(`${file}.pub`, "utf8").trim() };
};
const sshSigned = (key: { private: string }) => [
  "-c",
  "gpg.format=ssh",
  "-c",
  `user.signingkey=${key.private}`,
];

/** Commits a page in the pusher clone (signed with the given settings, dated when asked) and pushes. */
function commit(page: string, signing: string[] = [], date?: string, env: NodeJS.ProcessEnv = {}): string {
  writeFileSync(path.join(fx.pusher, "landing/index.html"), page);
  git(fx.pusher, "add", "-A");
  execFileSync(
    "git",
    ["-C", fx.pusher, ...signing, "commit", "--quiet", ...(signing.length ? ["-S"] : []), "-m", page],
    {
      env: {
        ...process.env,
        ...(date ? { GIT_COMMITTER_DATE: date, GIT_AUTHOR_DATE: date } : {}),
        ...env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  // Forced: a test may have rewound the branch under the pusher.
  git(fx.pusher, "push", "--quiet", "--force", "origin", "main");
  return git(fx.pusher, "rev-parse", "HEAD");
}
/** `git push -f origin <rev>:main`: the branch rewound to an older commit. */
const rewind = (rev: string) =>
  git(fx.pusher, "push", "--quiet", "--force", "origin", `${rev}:refs/heads/main`);

/** The allowed-signers file under the agent's root; returns its host path. */
function allowedSigners(line: string): string {
  const file = path.join(fx.dir, "root/etc/deploy-agent/allowed_signers");
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${line}\n`);
  return "/etc/deploy-agent/allowed_signers";
}

const page = () => {
  try {
    return readFileSync(path.join(fx.dir, "root/var/www/index.html"), "utf8");
  } catch {
    return "(nothing deployed)";
  }
};
const LANDING = {
  name: "landing",
  kind: "file",
  source: "landing/index.html",
  targets: ["/var/www/index.html"],
};

let manifests = 0;
function agentWith(verify: Record<string, unknown>) {
  const agent = makeAgent(
    fx.dir,
    fx.clone,
    writeManifest(fx.dir, { repo: { verify }, steps: [LANDING] }, `manifest-${++manifests}.yaml`),
  );
  mkdirSync(path.join(agent.root, "var/www"), { recursive: true });
  return agent;
}

const refusedAsRewrite = (from: string, to: string) => (e: AgentError) => {
  assert.equal(e.code, "HISTORY_REWRITTEN");
  assert.match(
    e.message,
    new RegExp(`at ${to.slice(0, 12)}, which does not descend from ${from.slice(0, 12)}`),
  );
  assert.match(e.hint ?? "", /run --accept-rewrite/);
  return true;
};

/** A loopback receiver of the notifier's webhook target: every event it was sent. */
async function receiver(): Promise<{ url: string; events: DeployEvent[]; server: Server }> {
  const events: DeployEvent[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      events.push(JSON.parse(body) as DeployEvent);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/notify`, events, server };
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const SSH = { skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does") };

describe("attack: the way back by push", SSH, () => {
  it("serve, verify all: a force push back to an older unsigned or signed commit deploys nothing; /status, the metric and a notice say so", async () => {
    const jared = sshKey("jared");
    const signers = allowedSigners(`jared@lotusguild.org namespaces="git" ${jared.public}`);
    const v0 = git(fx.pusher, "rev-parse", "HEAD"); // unsigned
    const v1 = commit("<p>v1</p>\n", sshSigned(jared));
    const v2 = commit("<p>v2</p>\n", sshSigned(jared));
    const hook = await receiver();
    const root = hostRoot(fx.dir, SECRET);
    const manifest = writeManifest(fx.dir, {
      repo: { verify: { mode: "all", allowedSignersFile: signers } },
      webhook: { pollIntervalSeconds: 0 },
      drift: { intervalSeconds: 0 },
      notify: { targets: [{ kind: "webhook", url: hook.url }] },
      steps: [LANDING],
    });
    const daemon: Served = startCli([
      ...serveArgs(manifest, fx.clone, root),
      "--state-dir",
      path.join(fx.dir, "state"),
    ]);
    try {
      const url = await listeningUrl(daemon);
      await daemon.waitFor(/"msg":"run finished"/);
      assert.equal(page(), "<p>v2</p>\n");
      const status = async () =>
        (await (await fetch(`${url}/status`)).json()) as {
          lastError: { code: string; message: string } | null;
        };
      const gauge = async () =>
        /^deploy_agent_history_rewritten\{[^}]*\} (\d)$/m.exec(
          await (await fetch(`${url}/metrics`)).text(),
        )?.[1];
      const deliver = async (after: string) => {
        const body = pushBody({ after });
        const res = await fetch(`${url}/hooks/deploy`, {
          method: "POST",
          headers: giteaHeaders(body, SECRET),
          body: new Uint8Array(body),
        });
        assert.equal(res.status, 202);
      };

      for (const back of [v0, v1]) {
        const errors = hook.events.filter((e) => e.event === "run.error").length;
        rewind(back);
        await deliver(back);
        const refused = await until("the refusal in /status", async () => {
          const s = await status();
          return s.lastError?.code === "HISTORY_REWRITTEN" && s.lastError.message.includes(back.slice(0, 12))
            ? s.lastError
            : undefined;
        });
        assert.match(refused.message, new RegExp(`does not descend from ${v2.slice(0, 12)}`));
        assert.equal(await gauge(), "1");
        // A notice for the first refusal; the same failure again within notify.repeatMinutes is not re-sent.
        if (back === v0) {
          const notice = await until("the notice", () =>
            hook.events.filter((e) => e.event === "run.error").length > errors
              ? hook.events.filter((e) => e.event === "run.error").at(-1)
              : undefined,
          );
          assert.equal(notice?.error?.code, "HISTORY_REWRITTEN");
          assert.match(notice?.error?.hint ?? "", /run --accept-rewrite/);
        }
        assert.equal(page(), "<p>v2</p>\n", "the host stays on the last good revision");
        assert.equal(git(fx.clone, "rev-parse", "HEAD"), v2, "the clone (and the manifest in it) stays");
      }
      // Forward again from the last good revision: deployed, and the refusal is over.
      git(fx.pusher, "reset", "--quiet", "--hard", v2);
      const v3 = commit("<p>v3</p>\n", sshSigned(jared));
      await deliver(v3);
      await until("v3 live", () => page() === "<p>v3</p>\n" || undefined);
      assert.equal(
        await until("the gauge cleared", async () => ((await gauge()) === "0" ? "0" : undefined)),
        "0",
      );
      assert.equal((await status()).lastError, null);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
      hook.server.close();
    }
  });

  it("verify tip: replaying an older signed commit is refused; run --accept-rewrite takes it, still verified", async () => {
    const jared = sshKey("jared");
    const signers = allowedSigners(`jared@lotusguild.org namespaces="git" ${jared.public}`);
    const v1 = commit("<p>v1</p>\n", sshSigned(jared));
    const agent = agentWith({ mode: "tip", allowedSignersFile: signers });
    assert.equal((await agent.run()).result, "succeeded");
    const v2 = commit("<p>v2 with a fix</p>\n", sshSigned(jared));
    assert.equal((await agent.run()).result, "succeeded");
    rewind(v1);
    await assert.rejects(agent.run(), refusedAsRewrite(v2, v1));
    assert.equal(page(), "<p>v2 with a fix</p>\n");
    // A dry run says the same.
    const args = runArgs(agent.manifestFile, fx.clone, agent.root, agent.stateDir);
    const dry = await runCli([...args, "--dry-run"]);
    assert.equal(dry.code, 1);
    assert.match(
      dry.stderr,
      /error HISTORY_REWRITTEN: origin\/main is at [0-9a-f]{12}, which does not descend/,
    );
    assert.match(dry.stderr, /hint: the host stays on [0-9a-f]{12}\. Push a commit on top/);
    // The operator takes it on purpose: deployed, with the warning.
    const taken = await runCli([...args, "--accept-rewrite", "--json"]);
    assert.equal(taken.code, 0, taken.stderr);
    const report = JSON.parse(taken.stdout) as { rewrittenFrom: string; warnings: string[] };
    assert.equal(report.rewrittenFrom, v2);
    assert.ok(report.warnings.some((w) => /history rewritten: .*\(accepted by the operator\)/.test(w)));
    assert.equal(page(), "<p>v1</p>\n");
    // --accept-rewrite never skips the signature check: an unsigned rewrite stays refused.
    const unsigned = fx.push({ "landing/index.html": "<p>unsigned rewrite</p>\n" }, "unsigned");
    rewind(git(fx.pusher, "rev-parse", "HEAD~2"));
    git(fx.pusher, "reset", "--quiet", "--hard", unsigned);
    git(fx.pusher, "push", "--quiet", "--force", "origin", "main");
    const still = await runCli([...args, "--accept-rewrite"]);
    assert.equal(still.code, 1);
    assert.match(still.stderr, /error UNVERIFIED: commit [0-9a-f]{12} is not signed/);
    assert.equal(page(), "<p>v1</p>\n");
  });

  it("verify all + --accept-rewrite verifies every commit of the new line, not only its tip", async () => {
    const jared = sshKey("jared");
    const signers = allowedSigners(`jared@lotusguild.org namespaces="git" ${jared.public}`);
    const base = commit("<p>base</p>\n", sshSigned(jared));
    commit("<p>old line</p>\n", sshSigned(jared));
    const agent = agentWith({ mode: "all", allowedSignersFile: signers });
    assert.equal((await agent.run()).result, "succeeded");
    // Another line from base: an unsigned commit under a signed tip.
    git(fx.pusher, "reset", "--quiet", "--hard", base);
    const hidden = commit("<p>sneaked in</p>\n");
    commit("<p>signed tip</p>\n", sshSigned(jared));
    git(fx.pusher, "push", "--quiet", "--force", "origin", "main");
    await assert.rejects(agent.run({ acceptRewrite: true }), (e: AgentError) => {
      assert.equal(e.code, "UNVERIFIED");
      assert.match(e.message, new RegExp(`commit ${hidden.slice(0, 12)} \\(under`));
      return true;
    });
    assert.equal(page(), "<p>old line</p>\n");
  });

  it("verify off: a rewind is deployed, with a warning and a history.rewritten notice", async () => {
    const hook = await receiver();
    try {
      const v1 = fx.push({ "landing/index.html": "<p>v1</p>\n" });
      const manifest = writeManifest(fx.dir, {
        notify: { targets: [{ kind: "webhook", url: hook.url }] },
        steps: [LANDING],
      });
      mkdirSync(path.join(fx.dir, "root/var/www"), { recursive: true });
      const args = runArgs(manifest, fx.clone, path.join(fx.dir, "root"), path.join(fx.dir, "state"));
      fx.push({ "landing/index.html": "<p>v2</p>\n" });
      assert.equal((await runCli(args)).code, 0);
      rewind(v1);
      const res = await runCli([...args, "--json"]);
      assert.equal(res.code, 0, res.stderr);
      const report = JSON.parse(res.stdout) as { warnings: string[] };
      assert.ok(
        report.warnings.some((w) => /history rewritten: .*\(deployed because repo\.verify is off\)/.test(w)),
      );
      assert.equal(page(), "<p>v1</p>\n");
      const notice = hook.events.find((e) => e.event === "history.rewritten");
      assert.ok(notice, `events: ${hook.events.map((e) => e.event).join(", ")}`);
      assert.equal(notice.revision, v1);
      assert.ok(notice.previousRevision);
    } finally {
      hook.server.close();
    }
  });

  it("a state whose last revision the clone never had counts as a rewrite, not as a first run", async () => {
    const jared = sshKey("jared");
    const signers = allowedSigners(`jared@lotusguild.org namespaces="git" ${jared.public}`);
    commit("<p>signed</p>\n", sshSigned(jared));
    const agent = agentWith({ mode: "all", allowedSignersFile: signers });
    assert.equal((await agent.run()).result, "succeeded");
    const file = path.join(agent.stateDir, "state.json");
    const state = JSON.parse(readFileSync(file, "utf8")) as {
      lastRun: { revision: string };
      anchor?: string;
    };
    state.lastRun.revision = "f".repeat(40);
    state.anchor = "f".repeat(40);
    writeFileSync(file, JSON.stringify(state));
    chmodSync(file, 0o600);
    await assert.rejects(agent.run(), (e: AgentError) => e.code === "HISTORY_REWRITTEN");
  });
});

describe("descent", () => {
  it("a forged header that looks like a parent (after a lone CR, in a header the signature skips) is no parent", async () => {
    const a = git(fx.clone, "rev-parse", "HEAD");
    writeFileSync(path.join(fx.clone, "b.txt"), "b\n");
    git(fx.clone, "add", "-A");
    git(fx.clone, "commit", "--quiet", "-m", "B");
    const b = git(fx.clone, "rev-parse", "HEAD");
    const raw = execFileSync("git", ["-C", fx.clone, "cat-file", "commit", a]);
    const end = raw.indexOf("\n\n");
    const forged = Buffer.concat([
      raw.subarray(0, end),
      Buffer.from(`\ngpgsig-sha256 x\rparent ${b}`),
      raw.subarray(end),
    ]);
    const f = execFileSync(
      "git",
      ["-C", fx.clone, "hash-object", "-t", "commit", "--literally", "-w", "--stdin"],
      {
        input: forged,
        encoding: "utf8",
      },
    ).trim();
    assert.deepEqual(parentsOf(forged), parentsOf(raw), "the forged line is not a parent");
    const repo = await openRepo(fx.clone, "origin", "main");
    try {
      assert.equal(await descent(repo, b, f), "rewritten", "A with a forged header does not descend from B");
      assert.equal(await descent(repo, a, b), "descends");
    } finally {
      closeRepo(repo);
    }
  });

  it("follows merges and histories longer than the walk, and refuses rewinds and other lines", async () => {
    const start = git(fx.pusher, "rev-parse", "HEAD");
    // A side branch merged back: its commits descend from start through the merge's second parent.
    git(fx.pusher, "checkout", "--quiet", "-b", "side");
    const side = fx.push({ "side.txt": "side\n" });
    git(fx.pusher, "checkout", "--quiet", "main");
    git(fx.pusher, "reset", "--quiet", "--hard", start);
    const other = fx.push({ "other.txt": "other\n" });
    git(fx.pusher, "merge", "--quiet", "--no-edit", "side");
    for (let i = 0; i < PARENTS_WALKED + 10; i++)
      git(fx.pusher, "commit", "--quiet", "--allow-empty", "-m", `n${i}`);
    git(fx.pusher, "push", "--quiet", "origin", "main");
    const tip = git(fx.pusher, "rev-parse", "HEAD");
    git(fx.clone, "fetch", "--quiet", "origin", "+refs/heads/*:refs/remotes/origin/*");
    git(fx.clone, "fetch", "--quiet", fx.pusher, "side");
    const repo = await openRepo(fx.clone, "origin", "main");
    try {
      assert.equal(await descent(repo, null, tip), "first");
      assert.equal(await descent(repo, tip, tip), "same");
      assert.equal(await descent(repo, start, tip), "descends", "deeper than the walk: git answers");
      assert.equal(await descent(repo, side, tip), "descends", "through a merge's second parent");
      const nearTip = git(fx.clone, "rev-parse", "origin/main~3");
      assert.equal(await descent(repo, nearTip, tip), "descends");
      assert.equal(await descent(repo, tip, start), "rewritten", "a rewind");
      // A rewind to a commit with a long history: the walk cannot tell, git's exit code must (simple-git's
      // raw() resolved on is-ancestor's silent exit 1, which read as "descends").
      assert.equal(await descent(repo, tip, nearTip), "rewritten", "a rewind deeper than the walk");
      const deep = git(fx.clone, "rev-parse", `origin/main~${PARENTS_WALKED + 2}`);
      assert.equal(await descent(repo, nearTip, deep), "rewritten");
      assert.equal(await descent(repo, deep, tip), "descends");
      assert.equal(await descent(repo, other, side), "rewritten", "another line");
      assert.equal(await descent(repo, "0".repeat(40), tip), "rewritten", "an unknown last revision");
    } finally {
      closeRepo(repo);
    }
  });
});

describe("attack: a key's validity at the signer's chosen date", SSH, () => {
  const PAST = "2019-06-01T00:00:00Z";
  const FUTURE = "2031-01-01T00:00:00Z";

  it("SSH: a back-dated commit by an expired key and a forward-dated one by a not-yet-valid key are refused", async () => {
    const jared = sshKey("jared");
    commit("<p>base</p>\n", sshSigned(jared));
    for (const [window, date, said] of [
      [`valid-before="20200101"`, PAST, /expired/],
      [`valid-after="20300101"`, FUTURE, /not yet valid/],
    ] as const) {
      const signers = allowedSigners(`jared@lotusguild.org namespaces="git",${window} ${jared.public}`);
      const agent = agentWith({ mode: "tip", allowedSignersFile: signers });
      const dated = commit(`<p>dated ${date}</p>\n`, sshSigned(jared), date);
      await assert.rejects(agent.run(), (e: AgentError) => {
        assert.equal(e.code, "UNVERIFIED");
        assert.match(
          e.message,
          new RegExp(`commit ${dated.slice(0, 12)} is not signed by a trusted key: .*`),
        );
        assert.match(e.message, said);
        return true;
      });
      assert.notEqual(page(), `<p>dated ${date}</p>\n`);
      // The same key, inside its window now, verifies a commit dated now (the check is not simply broken).
      const ok = allowedSigners(`jared@lotusguild.org namespaces="git" ${jared.public}`);
      commit(`<p>now after ${date}</p>\n`, sshSigned(jared));
      assert.equal((await agentWith({ mode: "tip", allowedSignersFile: ok }).run()).result, "succeeded");
    }
  });

  it("OpenPGP: a commit signed (at a faked past time) by a key that has since expired is refused", {
    skip: needs("gpg", ["--version"], "apt-get install gnupg; .ci/run does"),
  }, async () => {
    const home = path.join(keys, "gnupg");
    mkdirSync(home, { mode: 0o700 });
    // A key made in 2019 that expired at the end of 2019, and a gpg that believes it is mid-2019.
    execFileSync(
      "gpg",
      [
        "--batch",
        "--homedir",
        home,
        "--faked-system-time",
        "20190101T000000",
        "--passphrase",
        "",
        "--quick-gen-key",
        "Jared <jared@lotusguild.org>",
        "ed25519",
        "sign",
        "2019-12-31",
      ],
      { stdio: "ignore" },
    );
    const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(
      execFileSync("gpg", ["--batch", "--homedir", home, "--with-colons", "--list-secret-keys"], {
        encoding: "utf8",
      }),
    )?.[1];
    assert.ok(fpr);
    const pastGpg = path.join(keys, "gpg-2019");
    writeFileSync(
      pastGpg,
      `#!/bin/sh\nexec gpg --homedir ${home} --faked-system-time 20190601T000000 "$@"\n`,
      {
        mode: 0o755,
      },
    );
    const signing = [
      "-c",
      "gpg.format=openpgp",
      "-c",
      `gpg.program=${pastGpg}`,
      "-c",
      `user.signingkey=${fpr}`,
    ];
    const dated = commit("<p>gpg back-dated</p>\n", signing, PAST);
    const trusted = path.join(fx.dir, "root/etc/deploy-agent/gnupg");
    mkdirSync(trusted, { recursive: true, mode: 0o700 });
    execFileSync("gpg", ["--batch", "--homedir", trusted, "--import"], {
      input: execFileSync("gpg", ["--batch", "--homedir", home, "--armor", "--export", fpr]),
      stdio: ["pipe", "ignore", "ignore"],
    });
    await assert.rejects(
      agentWith({ mode: "tip", gpgHome: "/etc/deploy-agent/gnupg" }).run(),
      (e: AgentError) => {
        assert.equal(e.code, "UNVERIFIED");
        assert.match(e.message, new RegExp(`commit ${dated.slice(0, 12)}`));
        return true;
      },
    );
  });
});
