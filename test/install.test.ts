import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { readEnvFile } from "../src/host/env.js";
import { BUILT_BIN, CLI, freePort, PROJECT, runCli } from "./helpers/agent.js";
import {
  hooksJson,
  type InstallHost,
  MIGRATING,
  makeInstallHost,
  oldWebhook as oldWebhookOn,
  runCommand,
  signedDelivery,
} from "./helpers/install-host.js";
import { treeHash } from "./helpers/tree-hash.js";
import type { UnitRunner } from "./helpers/unit-runner.js";

/**
 * `deploy-agent install` on a host root (the real thing runs under systemd in test/system/): what it writes,
 * what it refuses, that a dry run changes nothing, and the migration from the webhook binary. systemctl is
 * a stand-in that runs the units as processes: the agent's unit is the real daemon of the root's clone, the
 * old webhook.service a listener on its port (test/helpers/unit-runner.ts).
 */

let root: string;
let systemctl: UnitRunner;
let host: InstallHost;

/** The host root with the config clone; the manifest's extra fields for this test. */
async function makeHost(extra: Record<string, unknown> = {}) {
  host = await makeInstallHost(extra);
  ({ root, systemctl } = host);
}

beforeEach(async (t) => {
  if (!t.name.includes("migrat")) await makeHost();
});
afterEach(() => host.cleanup());

const install = (...extra: string[]) => host.install(...extra);
const oldWebhook = (o: Parameters<typeof oldWebhookOn>[1]) => oldWebhookOn(root, o);
const unit = () => path.join(root, "etc/systemd/system/deploy-agent@.service");

describe("deploy-agent install", () => {
  it("--dry-run shows every effect, never the secret, and changes nothing", async () => {
    const before = treeHash(root);
    const res = await install("--dry-run");
    assert.equal(res.code, 0, res.stderr);
    assert.match(
      res.stdout,
      /would point \/usr\/local\/bin\/deploy-agent at .*dist\/src\/bin\.js \(one atomic rename\)/,
    );
    assert.match(res.stdout, /would create directory \/etc\/deploy-agent \(mode 0700\)/);
    assert.match(res.stdout, /would write \/etc\/systemd\/system\/deploy-agent@\.service \(created/);
    assert.match(
      res.stdout,
      /would write \/etc\/deploy-agent\/webhook-secret \(created, 65 bytes, mode 0600/,
    );
    assert.match(res.stdout, /<webhook secret, not shown>/);
    assert.match(res.stdout, /would run: systemctl enable deploy-agent@lxctest\.service/);
    assert.match(res.stdout, /nothing changed \(dry run\)/);
    assert.equal(treeHash(root), before);
    assert.deepEqual(
      systemctl.calls(),
      [
        "is-active webhook.service",
        "show -p UnitFileState --value webhook.service",
        "show -p Environment --value deploy-agent@lxctest.service",
        "is-enabled deploy-agent@lxctest.service",
        "is-active deploy-agent@lxctest.service",
      ],
      "only questions to systemd",
    );
  });

  it("the built executable finds its own checkout: the unit it installs and the link to itself", async () => {
    // dist/src has a package.json of its own (its files are CommonJS): not the agent's checkout.
    const res = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
      execFile(
        process.execPath,
        [BUILT_BIN, "install", "--host", "lxctest", "--root", root, "--dry-run"],
        (err, stdout, stderr) => done({ code: err ? (err.code as number) : 0, stdout, stderr }),
      );
    });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /would point \/usr\/local\/bin\/deploy-agent at (\S+) /);
    assert.equal(/would point \S+ at (\S+) /.exec(res.stdout)?.[1], BUILT_BIN);
    assert.match(res.stdout, /would write \/etc\/systemd\/system\/deploy-agent@\.service \(created/);
  });

  it("installs the unit, the bin link, a private secret and its record; starts the unit; again: nothing to do", async () => {
    const res = await install();
    assert.equal(res.code, 0, res.stderr);
    assert.equal(
      readFileSync(unit(), "utf8"),
      readFileSync(path.join(PROJECT, "systemd/deploy-agent@.service"), "utf8"),
    );
    assert.ok(lstatSync(path.join(root, "usr/local/bin/deploy-agent")).isSymbolicLink());
    assert.equal(
      readlinkSync(path.join(root, "usr/local/bin/deploy-agent")),
      path.join(PROJECT, "dist/src/bin.js"),
    );
    const secret = path.join(root, "etc/deploy-agent/webhook-secret");
    assert.match(readFileSync(secret, "utf8"), /^[0-9a-f]{64}\n$/);
    assert.equal(statSync(secret).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(root, "etc/deploy-agent")).mode & 0o777, 0o700);
    assert.equal(
      res.stdout.includes(readFileSync(secret, "utf8").trim()),
      false,
      "the secret is never printed",
    );
    assert.deepEqual(systemctl.calls(), [
      "is-active webhook.service",
      "show -p UnitFileState --value webhook.service",
      "daemon-reload",
      "show -p Environment --value deploy-agent@lxctest.service",
      "is-enabled deploy-agent@lxctest.service",
      "is-active deploy-agent@lxctest.service",
      "enable deploy-agent@lxctest.service",
      "restart deploy-agent@lxctest.service",
    ]);
    const again = await install();
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /write|point|create/, "nothing to write the second time");
  });

  it("refuses to overwrite a local change without --force, and overwrites it with --force", async () => {
    assert.equal((await install()).code, 0);
    writeFileSync(unit(), `${readFileSync(unit(), "utf8")}# tuned by hand\n`);
    const refused = await install();
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /^error LOCAL_CHANGES: local changes would be overwritten: \/etc\/systemd\/system\/deploy-agent@\.service\nhint: .*--force/,
    );
    assert.match(readFileSync(unit(), "utf8"), /tuned by hand/, "left as it was");
    const forced = await install("--force");
    assert.equal(forced.code, 0, forced.stderr);
    assert.doesNotMatch(readFileSync(unit(), "utf8"), /tuned by hand/);
  });

  it("a host role without a manifest, or no --host at all, is a usage or configuration error", async () => {
    const unknown = await runCli(["install", "--host", "nosuchhost", "--root", root]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /error CONFIG_INVALID: cannot read manifest .*nosuchhost\.yaml/);
    const none = await runCli(["install", "--root", root]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /error USAGE: install needs --host NAME/);
  });
});

const envFile = () => path.join(root, "etc/matrix-deploy.env");
const migrating = MIGRATING;

describe("deploy-agent install: migrating from webhook.service", () => {
  it("migrates a secret holding # $ quotes and spaces: the env file reads it back and the agent accepts it on the old port", async () => {
    await makeHost(migrating);
    const port = await freePort();
    // dotenv cut an unquoted value at `#`: the prefix alone is long enough for the agent to start.
    const secret = `old-secret-long-prefix#then $HOME "and" spaces`;
    await oldWebhook({ hooks: hooksJson(JSON.stringify(secret)), port });
    const res = await install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.equal(res.stdout.includes(secret), false, "the secret is never printed");
    assert.equal((await readEnvFile(envFile())).WEBHOOK_SECRET, secret);
    assert.equal((await readEnvFile(envFile())).MATRIX_TOKEN, "syt_abc", "the file's other variables kept");
    assert.equal(await signedDelivery(port, secret), 202);
    assert.equal(await signedDelivery(port, "old-secret-long-prefix"), 401);
    const calls = systemctl.calls();
    const stopOld = calls.indexOf("stop webhook.service");
    assert.ok(stopOld > calls.indexOf("restart deploy-agent@lxctest.service"), "tried first on a spare port");
    assert.deepEqual(calls.slice(stopOld), [
      "stop webhook.service",
      "enable deploy-agent@lxctest.service",
      "restart deploy-agent@lxctest.service",
      "disable webhook.service",
    ]);
    assert.equal(
      (await runCommand("systemctl", ["is-enabled", "webhook.service"]).catch(() => "disabled")).trim(),
      "disabled",
    );
  });

  it("migrated, then install again (an upgrade): the unit is checked on the kept port and hook path, and left running", async () => {
    await makeHost(migrating);
    const port = await freePort();
    const secret = "old-secret-0123456789abcdef";
    await oldWebhook({ hooks: hooksJson(JSON.stringify(secret)), port });
    const first = await install();
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const listenConf = path.join(root, "etc/systemd/system/deploy-agent@lxctest.service.d/listen.conf");
    const kept = readFileSync(listenConf, "utf8");
    // webhook.service is stopped and disabled now: the second install has nothing to migrate from.
    const again = await install();
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.equal(readFileSync(listenConf, "utf8"), kept, "the kept URL stays");
    assert.equal(await signedDelivery(port, secret), 202, "the unit still takes Gitea's deliveries");
    assert.equal(
      (await runCommand("systemctl", ["is-active", "webhook.service"]).catch(() => "inactive")).trim(),
      "inactive",
    );
  });

  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    it(`migrating: install interrupted (${sig}) after webhook.service stopped puts it back, enabled and listening`, async () => {
      await makeHost(migrating);
      const port = await freePort();
      const secret = "old-secret-0123456789abcdef";
      await oldWebhook({ hooks: hooksJson(JSON.stringify(secret)), port });
      const child = spawn(
        process.execPath,
        ["--import", "tsx", "--", CLI, "install", "--host", "lxctest", "--root", root],
        {
          cwd: PROJECT,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      const exited = new Promise<number | string | null>((done) =>
        child.on("close", (code, signal) => done(code ?? signal)),
      );
      // The operator's Ctrl-C (or a closed SSH session) once the old listener is gone.
      // Once the stop is done (the stand-in systemctl, killed while it writes its counts, breaks itself).
      const after = () => systemctl.calls().slice(systemctl.calls().indexOf("stop webhook.service"));
      let gone = false;
      void exited.then(() => {
        gone = true;
      });
      while (!systemctl.calls().includes("stop webhook.service") || after().length < 2) {
        assert.equal(gone, false, `install ended before it stopped webhook.service: ${stderr}`);
        await sleep(10);
      }
      await sleep(100);
      child.kill(sig);
      assert.equal(await exited, 1, stderr);
      assert.match(
        stderr,
        new RegExp(
          `^error INSTALL_FAILED: .*interrupted \\(${sig}\\).*; webhook\\.service is enabled and running again`,
          "s",
        ),
      );
      assert.equal((await runCommand("systemctl", ["is-active", "webhook.service"])).trim(), "active");
      assert.equal((await runCommand("systemctl", ["is-enabled", "webhook.service"])).trim(), "enabled");
      const answer = await fetch(`http://127.0.0.1:${port}/hooks/matrix-deploy`, { method: "POST" });
      assert.equal(await answer.text(), "ok", "the old listener has the port again");
      assert.equal(
        (
          await runCommand("systemctl", ["is-enabled", "deploy-agent@lxctest.service"]).catch(
            () => "disabled",
          )
        ).trim(),
        "disabled",
      );
    });
  }

  it("migrating: a failed final restart (start limit) puts webhook.service back, enabled and listening", async () => {
    await makeHost(migrating);
    const port = await freePort();
    const secret = "old-secret-0123456789abcdef";
    await oldWebhook({ hooks: hooksJson(JSON.stringify(secret)), port });
    systemctl.failOn("restart deploy-agent@lxctest.service", 2);
    const res = await install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error INSTALL_FAILED: systemctl restart deploy-agent@lxctest\.service exited with code 1.*; webhook\.service is enabled and running again\nhint: journalctl/s,
    );
    assert.equal((await runCommand("systemctl", ["is-active", "webhook.service"])).trim(), "active");
    assert.equal((await runCommand("systemctl", ["is-enabled", "webhook.service"])).trim(), "enabled");
    assert.equal(
      (
        await runCommand("systemctl", ["is-active", "deploy-agent@lxctest.service"]).catch(() => "inactive")
      ).trim(),
      "inactive",
    );
    const answer = await fetch(`http://127.0.0.1:${port}/hooks/matrix-deploy`, { method: "POST" });
    assert.equal(await answer.text(), "ok", "the old listener has the port again");
  });

  it("migrating a -template hooks file: getenv is resolved from webhook.service's environment", async () => {
    await makeHost(migrating);
    const port = await freePort();
    const secret = `templated-secret-0123#456 $X`;
    await oldWebhook({
      hooks: hooksJson(`"{{- getenv \`HOOK_SECRET\` -}}"`),
      flags: "-template",
      unitLines: `Environment="HOOK_SECRET=${secret}"\n`,
      port,
    });
    const res = await install();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.equal((await readEnvFile(envFile())).WEBHOOK_SECRET, secret);
    assert.equal(await signedDelivery(port, secret), 202);
  });

  for (const [what, o, message] of [
    [
      "an action other than getenv",
      { hooks: hooksJson(`"{{ .Env.HOOK_SECRET }}"`), flags: "-template" },
      /holds a template action install cannot resolve: \{\{ \.Env\.HOOK_SECRET \}\}/,
    ],
    [
      "a variable webhook.service does not set",
      { hooks: hooksJson(`"{{ getenv "NOT_SET" }}"`), flags: "-template" },
      /reads NOT_SET with getenv, but webhook\.service's environment does not set it/,
    ],
    [
      "getenv without -template (webhook takes it literally)",
      { hooks: hooksJson(`"{{ getenv \\"HOOK_SECRET\\" }}"`), unitLines: "Environment=HOOK_SECRET=x\n" },
      /the secret in \/etc\/webhook\/hooks\.json is a template, but webhook\.service runs webhook without -template/,
    ],
  ] as const) {
    it(`migrating refuses ${what} before anything changes`, async () => {
      await makeHost(migrating);
      await oldWebhook({ ...o, port: await freePort() });
      const before = treeHash(root);
      const callsBefore = systemctl.calls().length;
      const res = await install();
      assert.equal(res.code, 2, res.stdout + res.stderr);
      assert.match(
        res.stderr,
        new RegExp(`^error HOOKS_TEMPLATE_UNRESOLVED: .*${message.source}.*\\nhint: `, "s"),
      );
      assert.equal(treeHash(root), before, "nothing written");
      assert.deepEqual(
        systemctl
          .calls()
          .slice(callsBefore)
          .filter((c) => !/^(is-active|cat|show) /.test(c)),
        [],
        "only questions to systemd",
      );
      assert.equal((await runCommand("systemctl", ["is-active", "webhook.service"])).trim(), "active");
    });
  }
});

describe("deploy-agent install: the unit must take Gitea's deliveries before webhook.service goes", () => {
  it("migrating: a unit that is healthy but refuses the migrated secret (401) leaves webhook.service running", async () => {
    await makeHost(migrating);
    const port = await freePort();
    const secret = "old-secret-0123456789abcdef";
    await oldWebhook({ hooks: hooksJson(JSON.stringify(secret)), port });
    // An operator's drop-in gives the unit another secret: healthy, but every real delivery would get 401.
    const dropIn = path.join(root, "etc/systemd/system/deploy-agent@lxctest.service.d");
    mkdirSync(dropIn, { recursive: true });
    writeFileSync(
      path.join(dropIn, "local.conf"),
      "[Service]\nEnvironment=WEBHOOK_SECRET=another-secret-0123456789\n",
    );
    const res = await install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error INSTALL_FAILED: deploy-agent@lxctest\.service on a spare port: a delivery signed with the webhook secret got HTTP 401 .*; webhook\.service was left running\n/,
    );
    assert.equal((await runCommand("systemctl", ["is-enabled", "webhook.service"])).trim(), "enabled");
    assert.equal((await runCommand("systemctl", ["is-active", "webhook.service"])).trim(), "active");
    assert.equal(systemctl.calls().includes("stop webhook.service"), false, "never stopped");
  });
});

/** Every path below a directory with its type, mode, owner, size, mtime (ns) and content: what "unchanged" means. */
function treeListing(dir: string): string[] {
  const lines: string[] = [];
  const walk = (rel: string) => {
    const st = lstatSync(path.join(dir, rel), { bigint: true });
    const kind = st.isSymbolicLink()
      ? `-> ${readlinkSync(path.join(dir, rel))}`
      : st.isDirectory()
        ? "dir"
        : "file";
    const data = st.isFile() ? readFileSync(path.join(dir, rel)).toString("base64") : "";
    lines.push(`${rel} ${kind} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeNs} ${data}`);
    if (st.isDirectory())
      for (const name of readdirSync(path.join(dir, rel)).sort()) walk(path.join(rel, name));
  };
  walk(".");
  return lines;
}

/** chattr +i (or -i) on every file and directory below `dir`: not even root may change them. */
const immutable = (dir: string, on: boolean) =>
  runCommand("sh", ["-c", `find "$1" ! -type l -exec chattr ${on ? "+i" : "-i"} {} +`, "sh", dir]);

describe("deploy-agent install: a dry run only records, a failed install is taken back", () => {
  it("a dry run of a migration against a read-only, immutable root succeeds and changes nothing", async () => {
    await makeHost(migrating);
    await oldWebhook({
      hooks: hooksJson(JSON.stringify("old-secret-0123456789abcdef")),
      port: await freePort(),
    });
    await runCommand("chmod", ["-R", "a-w", root]);
    await immutable(root, true);
    try {
      assert.throws(() => writeFileSync(path.join(root, "etc/probe"), ""), /EPERM/, "the root is immutable");
      const before = treeListing(root);
      const res = await install("--dry-run");
      assert.equal(res.code, 0, res.stdout + res.stderr);
      for (const effect of [
        /would create directory \/etc\/deploy-agent \(mode 0700\)/,
        /would write \/etc\/matrix-deploy\.env \(modified, \d+ bytes, mode 0600/,
        /would write \/etc\/systemd\/system\/deploy-agent@lxctest\.service\.d\/listen\.conf \(created/,
        /would write \/run\/systemd\/system\/deploy-agent@lxctest\.service\.d\/zz-install-check\.conf \(created/,
        /would run: systemctl stop webhook\.service/,
        /would POST http:\/\/127\.0\.0\.1:\d+\/hooks\/matrix-deploy \(a ping signed with the webhook secret/,
        /would run: systemctl disable webhook\.service/,
      ]) {
        assert.match(res.stdout, effect);
      }
      assert.deepEqual(treeListing(root), before);
      assert.equal((await runCommand("systemctl", ["is-active", "webhook.service"])).trim(), "active");
    } finally {
      await immutable(root, false);
      await runCommand("chmod", ["-R", "u+w", root]);
    }
  });

  it("a fresh install whose last systemctl call fails (enable) leaves the host as it found it", async () => {
    const before = treeHash(root);
    systemctl.failOn("enable deploy-agent@lxctest.service");
    const res = await install();
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      /^error COMMAND_FAILED: systemctl enable deploy-agent@lxctest\.service exited with code 1: Job for .* failed/,
    );
    assert.equal(treeHash(root), before, "every file, link and directory it made is gone");
    assert.deepEqual(systemctl.calls().slice(-3), [
      "enable deploy-agent@lxctest.service",
      "disable --now deploy-agent@lxctest.service",
      "daemon-reload",
    ]);
  });

  it("an upgrade whose restart fails puts the old files back and the unit running on them", async () => {
    assert.equal((await install()).code, 0);
    writeFileSync(unit(), `${readFileSync(unit(), "utf8")}# tuned by hand\n`);
    // The agent's own state and the page it deploys change while it runs (on a loaded machine its start-up
    // deploy may still be writing the page when the tree is first hashed); install's files must not.
    const skip = (rel: string) =>
      (rel.startsWith("var/lib/deploy-agent/") && !rel.endsWith("installed.json")) ||
      rel.startsWith("var/www/");
    const before = treeHash(root, skip);
    systemctl.failOn("restart deploy-agent@lxctest.service", 2);
    const res = await install("--force");
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stderr, /^error COMMAND_FAILED: systemctl restart deploy-agent@lxctest\.service exited/);
    assert.equal(treeHash(root, skip), before, "the hand-tuned unit file is back");
    assert.deepEqual(systemctl.calls().slice(-3), [
      "restart deploy-agent@lxctest.service",
      "daemon-reload",
      "restart deploy-agent@lxctest.service",
    ]);
    assert.equal(
      (await runCommand("systemctl", ["is-active", "deploy-agent@lxctest.service"])).trim(),
      "active",
    );
  });
});

describe("repo.verify off: a one-line notice", () => {
  const notice =
    /^(note|warning): repo\.verify is off: push access to the config repository is root on every host; set repo\.verify mode: all/m;

  it("install and validate print it while verify is off, and not once it is on", async () => {
    const dry = await install("--dry-run");
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, notice);
    const config = path.join(root, "opt/matrix-config/config/lxctest.yaml");
    const validate = await runCli(["validate", "--config", config, "--root", root]);
    assert.match(validate.stdout, notice);
    assert.equal(validate.stdout.match(new RegExp(notice.source, "gm"))?.length, 1, "one line");
    const signers = path.join(root, "etc/allowed-signers");
    writeFileSync(signers, "");
    writeFileSync(
      config,
      readFileSync(config, "utf8")
        .replace(/^repo:.*$/m, "")
        .concat(`repo:\n  verify:\n    mode: all\n    allowedSignersFile: /etc/allowed-signers\n`),
    );
    const on = await runCli(["validate", "--config", config, "--root", root]);
    assert.doesNotMatch(on.stdout, notice);
  });
});
