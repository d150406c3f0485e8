import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { draupnirConfigStep, schema } from "../src/steps/draupnir-config.js";
import { ageKeygen, catalogText, placeHostKey, runCliWithInput } from "./helpers/age.js";
import { hostRoot, runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { type Fixture, git, makeFixture } from "./helpers/git.js";
import { needs } from "./helpers/needs.js";

/**
 * Draupnir's live config as its service's user may leave it: the token reached through a YAML alias or a `<<`
 * merge key. Draupnir reads it there; the token is written at the anchor, away from `accessToken:`. A token of
 * the older, macaroon shape: nothing but the step's own redaction stands between it and the output.
 */

const skip = needs("age", ["--version"], "apt-get install -y age");
const LIVE = "MDAxOGxvY2F0aW9uIGxvdHVzZ3VpbGQub3JnCjAwMTNpZGVudGlmaWVyIGtleQo";
const NEW = "MDAxOGxvY2F0aW9uIG5ld3Rva2VuLWZyb20tdGhlLXNlY3JldC0wMDAwMDAwMDA";
const REPO =
  'homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: REDACTED\nmanagementRoom: "!new"\n';

describe("Draupnir's token through an alias or a merge key", { skip }, () => {
  let fx: Fixture;
  let root: string;
  let manifest: string;
  const target = () => path.join(root, "opt/draupnir/config/production.yaml");

  before(async () => {
    const keys = mkdtempSync(path.join(tmpdir(), "attack-draupnir-keys-"));
    const operator = ageKeygen(keys, "operator");
    const host = ageKeygen(keys, "lxctest");
    fx = makeFixture({
      "draupnir/production.yaml": REPO,
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxctest: host.recipient },
      }),
    });
    root = hostRoot(fx.dir, "attack-draupnir-webhook-secret-01", ["opt/draupnir/config"]);
    placeHostKey(root, host);
    manifest = writeManifest(fx.dir, {
      commands: { systemctl: ["true"] },
      steps: [
        {
          name: "draupnir",
          kind: "draupnir-config",
          source: "draupnir/production.yaml",
          healthUrl: "http://127.0.0.1:1/healthz",
          healthTimeoutSeconds: 1,
          timeoutSeconds: 31,
          tokenSecret: { name: "draupnir-token" },
        },
        {
          name: "token-file",
          kind: "secret",
          secret: "draupnir-token",
          target: "/opt/draupnir/config/token",
        },
      ],
    });
    const set = await runCliWithInput(
      ["secret", "set", "draupnir-token", "--hosts", "lxctest", "--repo", fx.pusher],
      NEW,
    );
    assert.equal(set.code, 0, set.stderr);
    fx.push({}, "draupnir token");
  });
  after(() => fx.cleanup());

  for (const [name, live] of [
    [
      "an alias",
      `tokens:\n  current: &t "${LIVE}"\nhomeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\naccessToken: *t\nmanagementRoom: "!old"\n`,
    ],
    [
      "a merge key",
      `base: &b\n  accessToken: "${LIVE}"\n<<: *b\nhomeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\nmanagementRoom: "!old"\n`,
    ],
  ] as const) {
    it(`with ${name}, a dry run and a diff never show it`, async () => {
      writeFileSync(target(), live, { mode: 0o600 });
      const stateDir = path.join(fx.dir, `state-${name.replace(/\W/g, "")}`);
      const dry = await runCli([...runArgs(manifest, fx.clone, root, stateDir), "--dry-run", "--json"]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /not shown/);
      // The step as applied at HEAD, as after a deploy (whose health check the test's URL could not pass).
      const head = JSON.parse(dry.stdout).revision as string;
      mkdirSync(stateDir, { recursive: true });
      writeFileSync(
        path.join(stateDir, "state.json"),
        JSON.stringify({ version: 1, host: "lxctest", steps: { draupnir: { lastAppliedRevision: head } } }),
      );
      const diff = await runCli(["diff", ...runArgs(manifest, fx.clone, root, stateDir).slice(1)]);
      assert.equal(diff.code, 1, diff.stdout + diff.stderr);
      for (const text of [dry.stdout, dry.stderr, diff.stdout, diff.stderr])
        for (const t of [LIVE, NEW]) assert.equal(text.includes(t), false, `${name}: ${text}`);
    });
  }

  it("a secret step's target replaced by a link is drift no run can put back, like any target's", async () => {
    const stateDir = path.join(fx.dir, "state-link");
    git(fx.clone, "fetch", "--quiet", "origin");
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(
      path.join(stateDir, "state.json"),
      JSON.stringify({
        version: 1,
        host: "lxctest",
        steps: { "token-file": { lastAppliedRevision: git(fx.origin, "rev-parse", "main") } },
      }),
    );
    symlinkSync("/etc/hostname", path.join(root, "opt/draupnir/config/token"));
    const res = await runCli([
      "diff",
      ...["--config", manifest, "--repo", fx.clone, "--root", root, "--state-dir", stateDir],
      ...["--step", "token-file", "--json"],
    ]);
    assert.equal(res.code, 1, res.stdout + res.stderr);
    const item = JSON.parse(res.stdout).steps[0].items[0];
    assert.equal(item.state, "drifted");
    assert.equal(item.stalled, true);
    assert.match(item.detail, /symbolic link/);
  });
});

describe("Draupnir's config as diffs show it, with merge keys", () => {
  const step = schema.parse({ name: "d", kind: "draupnir-config", source: "draupnir/production.yaml" });
  const shown = (text: string) => draupnirConfigStep.shown?.(step, Buffer.from(text)).toString() ?? "";

  it("a token merged in, directly, in a list or through a chain of merges, is never shown", () => {
    for (const text of [
      `base: &b {accessToken: "${LIVE}"}\n<<: *b\nmanagementRoom: "!m"\n`,
      `c: &c {accessToken: "${LIVE}"}\nb: &b {<<: *c}\n<<: *b\nmanagementRoom: "!m"\n`,
      `c: &c {accessToken: "${LIVE}"}\n<<: [*c]\nmanagementRoom: "!m"\n`,
    ])
      assert.equal(shown(text).includes(LIVE), false, text);
  });

  it("merge keys that bring no token keep the diff, the token redacted", () => {
    const text = `web: &w {homeserverUrl: "https://m"}\n<<: *w\naccessToken: "${LIVE}"\n`;
    assert.equal(shown(text), 'web: &w {homeserverUrl: "https://m"}\n<<: *w\naccessToken: <redacted>\n');
  });
});
