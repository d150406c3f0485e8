import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { parseShownEnvironment, unitEnvironment } from "../src/commands/unit-environment.js";
import { AgentError } from "../src/core/errors.js";
import { createCommandRunner } from "../src/host/command.js";
import { PROJECT } from "./helpers/agent.js";
import { type InstallHost, makeInstallHost } from "./helpers/install-host.js";
import { treeHash } from "./helpers/tree-hash.js";

/**
 * Where install checks an installed unit: its Environment= as systemd resolved it (`systemctl show -p
 * Environment --value`), read back exactly, through the stand-in systemctl (which resolves and quotes as
 * systemd does) and against real systemd 252's output; its values (a webhook secret may be one) in no
 * message, output or error, also when systemctl fails or prints what install cannot read.
 */

const SECRET = `s3cret "q" \\b $HOME \`x\` #h;!'x`;
let h: InstallHost | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

/** A value as a unit file's Environment= takes it: in double quotes, `\` and `"` backslashed. */
const unitQuoted = (assignment: string) => `"${assignment.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;

const asking = (systemctl: readonly string[]) => ({
  run: createCommandRunner({ dryRun: false, record: () => {}, signal: AbortSignal.timeout(30_000) }),
  commands: { systemctl },
});

describe("a unit's environment, as systemd says it", () => {
  it("real systemd 252's line reads back item by item (quotes, escapes, specifiers already resolved)", () => {
    // `systemctl show -p Environment --value probe@x.service` in a booted Debian 12 container (test/system/).
    const line =
      '"NODE_OPTIONS=--max-semi-space-size=1 --max-old-space-size=160" PLAIN=from-template-b "GLOB=x*y" "Q=say \\"hi\\" \\\\ back" SQ=its "DOLLAR=\\$HOME" "TICK=\\`x\\`" HASH=a#b "SEMI=a;b" "TAB=a\\tb" UNI=é EMPTY= INST=x NAME=probe@x.service PCT=100% "MID=mid quote" "BANG=a!b" "PAREN=(x)" "LT=a<b" SAME=instance';
    assert.deepEqual(parseShownEnvironment(`${line}\n`), {
      NODE_OPTIONS: "--max-semi-space-size=1 --max-old-space-size=160",
      PLAIN: "from-template-b",
      GLOB: "x*y",
      Q: 'say "hi" \\ back',
      SQ: "its",
      DOLLAR: "$HOME",
      TICK: "`x`",
      HASH: "a#b",
      SEMI: "a;b",
      TAB: "a\tb",
      UNI: "é",
      EMPTY: "",
      INST: "x",
      NAME: "probe@x.service",
      PCT: "100%",
      MID: "mid quote",
      BANG: "a!b",
      PAREN: "(x)",
      LT: "a<b",
      SAME: "instance",
    });
    assert.deepEqual(parseShownEnvironment("\n"), {}, "a unit without Environment= (or none at all)");
  });

  it("through the stand-in: the unit file, then drop-ins in systemd's order; masked and dangling ones set nothing", async () => {
    h = await makeInstallHost();
    const d = (name: string) => path.join(h?.root ?? "", "etc/systemd/system", name);
    copyFileSync(path.join(PROJECT, "systemd/deploy-agent@.service"), d("deploy-agent@.service"));
    mkdirSync(d("deploy-agent@.service.d"), { recursive: true });
    mkdirSync(d("deploy-agent@lxctest.service.d"), { recursive: true });
    writeFileSync(
      d("deploy-agent@lxctest.service.d/listen.conf"),
      "[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=127.0.0.1:9500\nEnvironment=DEPLOY_AGENT_WEBHOOK_PATH=/hooks/matrix-deploy\n",
    );
    // A template drop-in sorting later wins; one of the same name as the instance's is replaced by it.
    writeFileSync(
      d("deploy-agent@.service.d/zz-path.conf"),
      `[Service]\nEnvironment="DEPLOY_AGENT_WEBHOOK_PATH=/hooks/%i" ${unitQuoted(`WEBHOOK_SECRET=${SECRET}`)}\n`,
    );
    writeFileSync(
      d("deploy-agent@.service.d/listen.conf"),
      "[Service]\nEnvironment=DEPLOY_AGENT_LISTEN=0.0.0.0:1\n",
    );
    symlinkSync("/dev/null", d("deploy-agent@lxctest.service.d/masked.conf"));
    symlinkSync("/nonexistent", d("deploy-agent@lxctest.service.d/dangling.conf"));
    const ctx = asking(["systemctl"]);
    const env = await unitEnvironment(ctx, "deploy-agent@lxctest.service");
    assert.equal(env.NODE_OPTIONS, "--max-semi-space-size=1 --max-old-space-size=160", "the unit file's own");
    assert.equal(env.DEPLOY_AGENT_LISTEN, "127.0.0.1:9500");
    assert.equal(env.DEPLOY_AGENT_WEBHOOK_PATH, "/hooks/lxctest");
    assert.equal(env.WEBHOOK_SECRET, SECRET);
    const other = await unitEnvironment(ctx, "deploy-agent@other.service");
    assert.equal(other.DEPLOY_AGENT_LISTEN, "0.0.0.0:1");
  });

  const refused =
    (...secrets: string[]) =>
    (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.code, "INSTALL_FAILED");
      assert.ok(err.hint);
      for (const s of secrets) assert.equal(`${err.message} ${err.hint}`.includes(s), false, err.message);
      return true;
    };

  it("systemctl failing (after printing the environment): INSTALL_FAILED with its stderr and a hint, no value", async () => {
    // A script of its own: its command line is in the message, its output must not be.
    const dir = mkdtempSync(path.join(tmpdir(), "systemctl-"));
    const script = path.join(dir, "systemctl");
    writeFileSync(
      script,
      `#!/bin/sh\nprintf '%s\\n' '"WEBHOOK_SECRET=s3cret value" OTHER=token-abc'\necho "Failed to connect to bus: No such file or directory" >&2\nexit 1\n`,
      { mode: 0o755 },
    );
    await assert.rejects(
      unitEnvironment(asking([script]), "deploy-agent@lxctest.service").finally(() =>
        rmSync(dir, { recursive: true, force: true }),
      ),
      (err) => {
        refused("s3cret", "token-abc")(err);
        assert.match(
          (err as Error).message,
          /did not say deploy-agent@lxctest\.service's environment: .*Failed to connect to bus/,
        );
        return true;
      },
    );
  });

  it("a line install cannot read (old systemd's [unprintable], a quote not closed): INSTALL_FAILED, where, never what", async () => {
    for (const out of [
      "PATH=/bin [unprintable]",
      '"WEBHOOK_SECRET=s3cret value',
      'A="s3cret"',
      '"A=s3cret\\q"',
    ]) {
      const script = `printf '%s\\n' '${out.replaceAll("'", "'\\''")}'`;
      await assert.rejects(
        unitEnvironment(asking(["sh", "-c", script, "sh"]), "deploy-agent@lxctest.service"),
        (err) => refused("s3cret", "unprintable")(err) && /at character \d+/.test((err as Error).message),
        out,
      );
    }
  });
});

describe("install, when systemd cannot say the unit's environment", () => {
  it("takes everything back and says so with a code and a hint; the secret in a drop-in is never shown", async () => {
    h = await makeInstallHost();
    const dropIn = path.join(h.root, "etc/systemd/system/deploy-agent@lxctest.service.d");
    mkdirSync(dropIn, { recursive: true });
    writeFileSync(
      path.join(dropIn, "secret.conf"),
      `[Service]\nEnvironment=${unitQuoted(`WEBHOOK_SECRET=${SECRET}`)}\n`,
    );
    const before = treeHash(h.root);
    h.systemctl.failOn("show -p Environment --value deploy-agent@lxctest.service");
    const res = await h.install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error INSTALL_FAILED: systemd did not say deploy-agent@lxctest\.service's environment: .*\nhint: install asks systemd/s,
    );
    assert.equal(treeHash(h.root), before, "every change taken back");
    for (const part of ["s3cret", SECRET]) assert.equal((res.stdout + res.stderr).includes(part), false);
  });
});
