import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { AgentError } from "../src/core/errors.js";
import { makeAgent, runCli, stepOf, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";

/**
 * Signed commits (repo.verify), with real keys made by ssh-keygen and gpg and commits signed by git: signed,
 * unsigned, signed by an unknown key, a signed tip over an unsigned middle commit, a revoked key.
 */

let fx: Fixture;
let keys: string;

const sshKey = (name: string) => {
  const file = path.join(keys, name);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file]);
  return { private: file, public: readFileSync(`${file}.pub`, "utf8").trim() };
};

/** Commits a page change in the pusher clone, signed with the given git settings (none: unsigned), and pushes. */
function commit(page: string, signing: string[] = []): string {
  writeFileSync(path.join(fx.pusher, "landing/index.html"), page);
  git(fx.pusher, "add", "-A");
  execFileSync(
    "git",
    ["-C", fx.pusher, ...signing, "commit", "--quiet", ...(signing.length ? ["-S"] : []), "-m", page],
    {
      env: { ...process.env, GNUPGHOME: path.join(keys, "gnupg") },
    },
  );
  git(fx.pusher, "push", "--quiet", "origin", "main");
  return git(fx.pusher, "rev-parse", "HEAD");
}
const sshSigned = (key: { private: string }) => [
  "-c",
  "gpg.format=ssh",
  "-c",
  `user.signingkey=${key.private}`,
];

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v0</p>\n" });
  keys = path.join(fx.dir, "keys");
  mkdirSync(keys);
});
afterEach(() => fx.cleanup());

/** A file of the host (under the agent's root, as the manifest's host paths are); returns its host path. */
function hostFile(rel: string, content: string): string {
  const file = path.join(fx.dir, "root", rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  return rel;
}

let manifests = 0;
/** An agent on this fixture with its own manifest file (they share the host root and state). */
function agentWith(verify: Record<string, unknown>) {
  const agent = makeAgent(
    fx.dir,
    fx.clone,
    writeManifest(
      fx.dir,
      {
        repo: { verify },
        steps: [
          { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
        ],
      },
      `manifest-${++manifests}.yaml`,
    ),
  );
  mkdirSync(path.join(agent.root, "var/www"), { recursive: true });
  return agent;
}
const page = (root: string) => readFileSync(path.join(root, "var/www/index.html"), "utf8");

describe("signed commits", {
  skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
}, () => {
  it("SSH, tip: a trusted signature deploys; unsigned or unknown-key commits deploy nothing, then a signed one does", async () => {
    const jared = sshKey("jared");
    const stranger = sshKey("stranger");
    const allowed = hostFile(
      "/etc/deploy-agent/allowed_signers",
      `jared@lotusguild.org namespaces="git" ${jared.public}
`,
    );
    const agent = agentWith({ mode: "tip", allowedSignersFile: allowed });
    const signed = commit("<p>signed</p>\n", sshSigned(jared));
    assert.equal((await agent.run()).result, "succeeded");
    assert.equal(page(agent.root), "<p>signed</p>\n");

    for (const [what, signing] of [
      ["unsigned", []],
      ["signed by an unknown key", sshSigned(stranger)],
    ] as const) {
      const rev = commit(`<p>${what}</p>\n`, [...signing]);
      await assert.rejects(agent.run(), (e: AgentError) => {
        assert.equal(e.code, "UNVERIFIED");
        assert.match(e.message, new RegExp(`commit ${rev.slice(0, 12)} is not signed by a trusted key`));
        return true;
      });
      assert.equal(page(agent.root), "<p>signed</p>\n", `${what}: the host stays on its last good revision`);
      assert.equal(git(fx.clone, "rev-parse", "HEAD"), signed, "the clone was not reset");
    }
    // A dry run and validate say the same.
    const dry = await runCli([
      "run",
      "--dry-run",
      "--config",
      agent.manifestFile,
      "--repo",
      fx.clone,
      "--root",
      agent.root,
      "--state-dir",
      agent.stateDir,
    ]);
    assert.equal(dry.code, 1);
    assert.match(dry.stderr, /error UNVERIFIED: commit [0-9a-f]{12} is not signed by a trusted key/);
    commit("<p>signed again</p>\n", sshSigned(jared));
    assert.equal((await agent.run()).result, "succeeded");
    assert.equal(page(agent.root), "<p>signed again</p>\n");
  });

  it("SSH, all: a signed tip over an unsigned commit deploys nothing, naming the unsigned one", async () => {
    const jared = sshKey("jared");
    const allowed = hostFile(
      "/etc/deploy-agent/allowed_signers",
      `jared@lotusguild.org namespaces="git" ${jared.public}
`,
    );
    commit("<p>base</p>\n", sshSigned(jared));
    const tipOnly = agentWith({ mode: "tip", allowedSignersFile: allowed });
    assert.equal((await tipOnly.run()).result, "succeeded");
    const middle = commit("<p>sneaked in</p>\n");
    const tip = commit("<p>signed tip</p>\n", sshSigned(jared));
    const all = agentWith({ mode: "all", allowedSignersFile: allowed });
    await assert.rejects(all.run(), (e: AgentError) => {
      assert.equal(e.code, "UNVERIFIED");
      assert.match(e.message, new RegExp(`commit ${middle.slice(0, 12)} \\(under ${tip.slice(0, 12)}\\)`));
      return true;
    });
    assert.equal(page(all.root), "<p>base</p>\n");
    assert.equal(
      stepOf(await tipOnly.run(), "landing").outcome,
      "succeeded",
      "mode tip looks at the tip only",
    );
  });

  it("SSH: a revoked key's signatures are refused", async () => {
    const jared = sshKey("jared");
    const allowed = hostFile(
      "/etc/deploy-agent/allowed_signers",
      `jared@lotusguild.org namespaces="git" ${jared.public}
`,
    );
    const revoked = hostFile(
      "/etc/deploy-agent/revoked_keys",
      `${jared.public}
`,
    );
    commit("<p>signed</p>\n", sshSigned(jared));
    const agent = agentWith({
      mode: "tip",
      allowedSignersFile: allowed,
      revokedKeysFile: revoked,
    });
    await assert.rejects(agent.run(), (e: AgentError) => e.code === "UNVERIFIED");
  });

  it("OpenPGP: a key in the GnuPG home verifies; one from elsewhere does not", {
    skip: needs("gpg", ["--version"], "apt-get install gnupg; .ci/run does"),
  }, async () => {
    const home = path.join(keys, "gnupg");
    mkdirSync(home, { mode: 0o700 });
    const gpg = (...args: string[]) =>
      execFileSync("gpg", ["--batch", "--homedir", home, ...args], { encoding: "utf8" });
    gpg("--passphrase", "", "--quick-gen-key", "Jared <jared@lotusguild.org>", "ed25519", "sign", "never");
    const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(gpg("--with-colons", "--list-secret-keys"))?.[1] ?? "";
    const signed = ["-c", "gpg.format=openpgp", "-c", `user.signingkey=${fpr}`];
    commit("<p>gpg</p>\n", signed);
    // The host's keyring holds only the public key.
    const trusted = path.join(fx.dir, "root/etc/deploy-agent/gnupg");
    mkdirSync(trusted, { recursive: true, mode: 0o700 });
    execFileSync("gpg", ["--batch", "--homedir", trusted, "--import"], {
      input: gpg("--armor", "--export", fpr),
      stdio: ["pipe", "ignore", "ignore"],
    });
    const agent = agentWith({ mode: "tip", gpgHome: "/etc/deploy-agent/gnupg" });
    assert.equal((await agent.run()).result, "succeeded");
    mkdirSync(path.join(fx.dir, "root/etc/deploy-agent/empty-gnupg"), { mode: 0o700 });
    commit("<p>gpg 2</p>\n", signed);
    await assert.rejects(
      agentWith({ mode: "tip", gpgHome: "/etc/deploy-agent/empty-gnupg" }).run(),
      (e: AgentError) => e.code === "UNVERIFIED" && /No public key/.test(e.message),
    );
  });

  it("a verify mode without keys is a configuration error", async () => {
    const res = await runCli([
      "validate",
      "--config",
      writeManifest(fx.dir, {
        repo: { verify: { mode: "tip" } },
        steps: [{ name: "x", kind: "file", source: "a", targets: ["/a"] }],
      }),
    ]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /repo\.verify: verify needs allowedSignersFile \(SSH\) or gpgHome \(OpenPGP\)/);
  });
});
