import assert from "node:assert/strict";
import { lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { stringify } from "yaml";
import { PROJECT, runCli } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { treeHash } from "./helpers/tree-hash.js";

/**
 * `deploy-agent install` on a host root (the real thing runs under systemd in test/system/): what it writes,
 * what it refuses, and that a dry run changes nothing. systemctl is a stand-in that records its calls; a
 * loopback server answers the unit's /healthz as the started agent would.
 */

let fx: Fixture;
let root: string;
let systemctl: FakeSystemctl;
let health: Server;

beforeEach(async () => {
  health = createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404);
    res.end();
  });
  await new Promise<void>((done) => health.listen(0, "127.0.0.1", done));
  const port = (health.address() as AddressInfo).port;
  const manifest = {
    version: 1,
    host: "lxctest",
    listen: { host: "127.0.0.1", port },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  };
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", "config/lxctest.yaml": stringify(manifest) });
  root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "opt"), { recursive: true });
  git(fx.dir, "clone", "--quiet", fx.origin, path.join(root, "opt/matrix-config"));
  for (const d of ["etc/systemd/system", "usr/local/bin"]) mkdirSync(path.join(root, d), { recursive: true });
  systemctl = installFakeSystemctl();
});
afterEach(async () => {
  systemctl.restore();
  await new Promise((done) => health.close(done));
  fx.cleanup();
});

const install = (...extra: string[]) => runCli(["install", "--host", "lxctest", "--root", root, ...extra]);
const unit = () => path.join(root, "etc/systemd/system/deploy-agent@.service");

describe("deploy-agent install", () => {
  it("--dry-run shows every effect, never the secret, and changes nothing", async () => {
    const before = treeHash(root);
    const res = await install("--dry-run");
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /would link \/usr\/local\/bin\/deploy-agent -> .*dist\/src\/bin\.js/);
    assert.match(res.stdout, /would write \/etc\/systemd\/system\/deploy-agent@\.service \(created/);
    assert.match(
      res.stdout,
      /would write \/etc\/deploy-agent\/webhook-secret \(created, 65 bytes, mode 0600/,
    );
    assert.match(res.stdout, /<webhook secret, not shown>/);
    assert.match(res.stdout, /would run: systemctl enable deploy-agent@lxctest\.service/);
    assert.match(res.stdout, /nothing changed \(dry run\)/);
    assert.equal(treeHash(root), before);
    assert.deepEqual(systemctl.calls(), ["is-active webhook.service"], "only a question to systemd");
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
      "daemon-reload",
      "enable deploy-agent@lxctest.service",
      "restart deploy-agent@lxctest.service",
    ]);
    const again = await install();
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /write|link/, "nothing to write the second time");
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
