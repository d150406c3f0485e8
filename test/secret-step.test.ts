import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parse } from "dotenv";
import { parseDocument } from "yaml";
import { encrypt } from "../src/secrets/age.js";
import { fingerprint, parseCatalog, setCatalogEntry, wantedRecipients } from "../src/secrets/catalog.js";
import { type AgeKey, ageKeygen, catalogText, placeHostKey, runCliWithInput } from "./helpers/age.js";
import { hostRoot, runArgs, runCli, serveArgs, startCli, writeManifest } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";
import { needs } from "./helpers/needs.js";
import { seededRandom } from "./helpers/seeded.js";

/** The secret step through the real CLI: real age keys, a real Matrix test server, real git. */

const skip = needs("age", ["--version"], "apt-get install -y age");
const ROOM = "!spam:matrix.lotusguild.org";
const WEBHOOK_SECRET = "whsec-SECRETSTEP-recognisable-0123456789";
// Every value is recognisable, so a grep finds it wherever it leaked.
const TOKEN_A = "syt_QQ_secretstep_TokenA_aaaaaaaaaaaa";
const TOKEN_B = "syt_QQ_secretstep_TokenB_bbbbbbbbbbbb";
const TOKEN_UNKNOWN = "syt_QQ_secretstep_Unknown_cccccccccccc";
const TOKEN_LOW = "syt_QQ_secretstep_LowPower_dddddddddddd";
const TOKEN_LEFT = "syt_QQ_secretstep_NotJoined_eeeeeeeeeeee";
const ALL = [TOKEN_A, TOKEN_B, TOKEN_UNKNOWN, TOKEN_LOW, TOKEN_LEFT];
const ENV_BEFORE = `MATRIX_SERVER=https://matrix.example\nWEBHOOK_SECRET='${WEBHOOK_SECRET} # kept'\nMATRIX_TOKEN=old-token-placeholder\n`;

describe("secret step: deployed and rotated by commit, refused when it would break the host", {
  skip,
}, () => {
  let fx: Fixture;
  let root: string;
  let stateDir: string;
  let operator: AgeKey;
  let host: AgeKey;
  let other: AgeKey;
  let matrix: MatrixTestServer;
  let manifest: string;
  const envFile = () => path.join(root, "etc/matrix-deploy.env");
  const outputs: string[] = [];

  before(async () => {
    const keys = mkdtempSync(path.join(tmpdir(), "secret-step-keys-"));
    operator = ageKeygen(keys, "operator");
    host = ageKeygen(keys, "lxctest");
    other = ageKeygen(keys, "lxcother");
    matrix = await startMatrixServer({
      roomId: ROOM,
      users: {
        [TOKEN_A]: { userId: "@deploy:m", powerLevel: 50 },
        [TOKEN_B]: { userId: "@deploy:m", powerLevel: 50 },
        [TOKEN_LOW]: { userId: "@lowly:m", powerLevel: 0 },
        [TOKEN_LEFT]: { userId: "@gone:m", powerLevel: 100, joined: false },
      },
    });
    fx = makeFixture({
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxctest: host.recipient, lxcother: other.recipient },
      }),
    });
    root = hostRoot(fx.dir, WEBHOOK_SECRET, ["etc"]);
    stateDir = path.join(fx.dir, "state");
    placeHostKey(root, host);
    writeFileSync(envFile(), ENV_BEFORE, { mode: 0o640 });
    manifest = writeManifest(fx.dir, {
      log: { file: "/var/log/deploy.log" },
      steps: [
        {
          name: "matrix-token",
          kind: "secret",
          secret: "matrix-token",
          target: "/etc/matrix-deploy.env",
          format: "env",
          key: "MATRIX_TOKEN",
          matrix: { homeserver: matrix.url, room: ROOM, timeoutMs: 2000 },
          reload: [["true"]],
        },
      ],
    });
    mkdirSync(path.join(root, "var/log"), { recursive: true });
  });
  after(async () => {
    await matrix.close();
    // Nothing the agent printed, logged or kept holds a value.
    const logFile = path.join(root, "var/log/deploy.log");
    const kept = [...outputs, existsSync(logFile) ? readFileSync(logFile, "utf8") : ""];
    for (const f of existsSync(stateDir) ? readdirSync(stateDir) : [])
      kept.push(readFileSync(path.join(stateDir, f), "utf8"));
    for (const text of kept) for (const v of ALL) assert.equal(text.includes(v), false, `${v} leaked`);
    fx.cleanup();
  });

  /** The operator's rotation: `secret set` in their checkout, commit, push. */
  const rotate = async (value: string, hosts = "lxctest") => {
    const r = await runCliWithInput(
      ["secret", "set", "matrix-token", "--hosts", hosts, "--repo", fx.pusher],
      value,
    );
    assert.equal(r.code, 0, r.stderr);
    outputs.push(r.stdout, r.stderr);
    return fx.push({}, "rotate matrix-token");
  };
  const run = async (...extra: string[]) => {
    const r = await runCli([...runArgs(manifest, fx.clone, root, stateDir), ...extra]);
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  it("deploys the secret into its env line (0600), other variables untouched; the run shows fingerprints", async () => {
    await rotate(TOKEN_A);
    const dry = await run("--dry-run");
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`MATRIX_TOKEN=<${fingerprint(TOKEN_A)}>`));
    assert.equal(readFileSync(envFile(), "utf8"), ENV_BEFORE, "a dry run writes nothing");
    const r = await run();
    assert.equal(r.code, 0, r.stderr);
    const env = parse(readFileSync(envFile()));
    assert.equal(env.MATRIX_TOKEN, TOKEN_A);
    assert.equal(env.WEBHOOK_SECRET, `${WEBHOOK_SECRET} # kept`);
    assert.equal(statSync(envFile()).mode & 0o777, 0o600);
    // Asked once by the dry run and once by the run, before each would write.
    assert.equal(matrix.requests.filter((q) => q.path.endsWith("/account/whoami")).length, 2);
  });

  it("rotation is a commit: the next run writes the new token after checking it", async () => {
    await rotate(TOKEN_B);
    const r = await run("--json");
    assert.equal(r.code, 0, r.stderr);
    const items = JSON.parse(r.stdout).steps[0].items;
    assert.deepEqual(items, [
      {
        id: "/etc/matrix-deploy.env",
        outcome: "changed",
        detail: `${fingerprint(TOKEN_A)} -> ${fingerprint(TOKEN_B)}`,
      },
    ]);
    assert.equal(parse(readFileSync(envFile())).MATRIX_TOKEN, TOKEN_B);
    const diff = await runCli(["diff", ...runArgs(manifest, fx.clone, root, stateDir).slice(1)]);
    outputs.push(diff.stdout, diff.stderr);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
  });

  for (const [what, token, message] of [
    ["fails whoami", TOKEN_UNKNOWN, /whoami failed \(.*M_UNKNOWN_TOKEN/],
    [
      "lacks the power level",
      TOKEN_LOW,
      /@lowly:m has power level 0 in !spam:matrix\.lotusguild\.org, and uk\.half-shot\.matrix-hookshot\.generic\.hook needs 50/,
    ],
    ["is not joined", TOKEN_LEFT, /cannot read the state of|is not joined/],
  ] as const) {
    it(`a token that ${what} is refused and the old one stays`, async () => {
      const before = readFileSync(envFile());
      await rotate(token);
      const r = await run();
      assert.equal(r.code, 1);
      assert.match(r.stderr + r.stdout, /TOKEN_REJECTED/);
      assert.match(r.stderr + r.stdout, message);
      assert.match(r.stderr + r.stdout, /the old token stays in place/);
      assert.deepEqual(readFileSync(envFile()), before, "byte for byte");
      const drift = await runCli(["diff", ...runArgs(manifest, fx.clone, root, stateDir).slice(1)]);
      outputs.push(drift.stdout, drift.stderr);
    });
  }

  it("secret check asks the homeserver about the token in git, reading only", async () => {
    const bad = await runCli(["secret", "check", "--config", manifest, "--repo", fx.clone, "--root", root]);
    outputs.push(bad.stdout, bad.stderr);
    assert.equal(bad.code, 1, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /FAILED matrix-token: TOKEN_REJECTED/);
    await rotate(TOKEN_B);
    const good = await runCli(["secret", "check", "--config", manifest, "--repo", fx.clone, "--root", root]);
    outputs.push(good.stdout, good.stderr);
    assert.equal(good.code, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /ok matrix-token: matrix-token is @deploy:m/);
  });

  it("a secret for another host fails with SECRET_UNREADABLE naming this host's missing recipient; the old value stays", async () => {
    await rotate(TOKEN_A, "lxcother");
    const before = readFileSync(envFile());
    const r = await run();
    assert.equal(r.code, 1);
    const text = r.stderr + r.stdout;
    assert.match(text, /SECRET_UNREADABLE/);
    assert.match(
      text,
      new RegExp(
        `secret matrix-token is not encrypted to lxctest \\(${host.recipient}\\): it is for lxcother`,
      ),
    );
    assert.match(text, /add lxctest to secrets\.matrix-token\.hosts/);
    assert.deepEqual(readFileSync(envFile()), before);
    // Without a key at all: the hint says where one comes from.
    rmSync(path.join(root, "etc/deploy-agent/age.key"));
    const none = await run("--all");
    assert.match(none.stderr + none.stdout, /this host has no age identity at \/etc\/deploy-agent\/age\.key/);
    placeHostKey(root, host);
  });
});

describe("kill -9 during secret writes leaves the old value or the new, never half", { skip }, () => {
  let fx: Fixture;
  let root: string;
  let operator: AgeKey;
  let host: AgeKey;
  let systemctl: FakeSystemctl;

  before(() => {
    const keys = mkdtempSync(path.join(tmpdir(), "secret-kill-keys-"));
    operator = ageKeygen(keys, "operator");
    host = ageKeygen(keys, "lxctest");
    systemctl = installFakeSystemctl();
    fx = makeFixture({
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxctest: host.recipient },
      }),
    });
    root = hostRoot(fx.dir, WEBHOOK_SECRET, ["etc"]);
    placeHostKey(root, host);
  });
  after(() => {
    systemctl.restore();
    fx.cleanup();
  });

  /** The operator's side of `secret set`, in process (the same functions), to keep each round short. */
  const commitValue = async (name: string, value: string) => {
    const file = path.join(fx.pusher, "secrets/secrets.yaml");
    const text = readFileSync(file, "utf8");
    const catalog = parseCatalog(text);
    const recipients = wantedRecipients(catalog, ["lxctest"]);
    writeFileSync(path.join(fx.pusher, `secrets/${name}.age`), await encrypt(value, recipients));
    writeFileSync(file, setCatalogEntry(text, name, { hosts: ["lxctest"], recipients }));
    return fx.push({}, `rotate ${name}`);
  };

  it("at seeded random points, 12 rounds", { timeout: 240_000 }, async () => {
    const random = seededRandom("SECRET_KILL_SEED");
    // A large whole-file secret and an env line, so a write takes long enough to be cut.
    const big = (i: number) => `${`round ${i} `.repeat(6000)}\n`;
    const manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "key-file",
          kind: "secret",
          secret: "key-file",
          target: "/etc/big.key",
          reload: [["sleep", "0.1"]],
        },
        {
          name: "env-token",
          kind: "secret",
          secret: "env-token",
          target: "/etc/app.env",
          format: "env",
          key: "APP_TOKEN",
          reload: [["systemctl", "restart", "app"]],
        },
      ],
    });
    writeFileSync(path.join(root, "etc/app.env"), "OTHER=kept\n", { mode: 0o600 });
    let current = { file: null as string | null, env: undefined as string | undefined };
    const args = runArgs(manifest, fx.clone, root, path.join(fx.dir, "state"));
    const seen: string[] = [];
    for (let i = 1; i <= 12; i++) {
      await commitValue("key-file", big(i));
      await commitValue("env-token", `env-token-round-${i}`);
      // Killed at a random point after the first secret step began (its log line), however slow the machine.
      const s = startCli(args);
      await Promise.race([s.waitFor(/"step":"key-file"/, 60_000), s.exited]);
      await new Promise((r) => setTimeout(r, Math.floor(random() * 1200)));
      s.child.kill("SIGKILL");
      await s.exited;
      const keyFile = path.join(root, "etc/big.key");
      const file = existsSync(keyFile) ? readFileSync(keyFile, "utf8") : null;
      assert.ok(file === current.file || file === big(i), `round ${i}: key file is neither old nor new`);
      const env = parse(readFileSync(path.join(root, "etc/app.env")));
      assert.equal(env.OTHER, "kept", `round ${i}`);
      assert.ok(
        env.APP_TOKEN === current.env || env.APP_TOKEN === `env-token-round-${i}`,
        `round ${i}: env token ${env.APP_TOKEN}`,
      );
      seen.push(
        `${file === big(i) ? "new" : "old"}/${env.APP_TOKEN === `env-token-round-${i}` ? "new" : "old"}`,
      );
      current = { file, env: env.APP_TOKEN };
    }
    console.log(`after each kill (key file/env line): ${seen.join(" ")}`);
    const done = await runCli(args);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(readFileSync(path.join(root, "etc/big.key"), "utf8"), big(12));
    assert.equal(parse(readFileSync(path.join(root, "etc/app.env"))).APP_TOKEN, "env-token-round-12");
    assert.deepEqual(
      readdirSync(path.join(root, "etc")).filter((n) => n.includes(".deploy-agent-")),
      [],
      "temp files swept",
    );
  });
});

describe("draupnir-config with tokenSecret: rotation is a commit, an unhealthy Draupnir gets the old token back", {
  skip,
}, () => {
  let fx: Fixture;
  let root: string;
  let health: Server;
  let healthy = true;
  let systemctl: FakeSystemctl;
  let manifest: string;
  const D1 = "syt_ZHJhdXBuaXI_rotation_D1_1111111111";
  const D2 = "syt_ZHJhdXBuaXI_rotation_D2_2222222222";
  const REPO =
    'homeserverUrl: "https://m"\nrawHomeserverUrl: "https://m"\n# placeholder only\naccessToken: REDACTED\nmanagementRoom: "!r"\n';
  const live = () =>
    parseDocument(readFileSync(path.join(root, "opt/draupnir/config/production.yaml"), "utf8")).get(
      "accessToken",
    );
  let operator: AgeKey;

  before(async () => {
    const keys = mkdtempSync(path.join(tmpdir(), "secret-draupnir-keys-"));
    operator = ageKeygen(keys, "operator");
    const host = ageKeygen(keys, "lxc110");
    systemctl = installFakeSystemctl();
    health = createServer((_q, r) => {
      r.writeHead(healthy ? 200 : 503);
      r.end();
    });
    await new Promise<void>((r) => health.listen(0, "127.0.0.1", r));
    fx = makeFixture({
      "draupnir/production.yaml": REPO,
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxc110: host.recipient },
      }),
    });
    root = hostRoot(fx.dir, WEBHOOK_SECRET, ["opt/draupnir/config"]);
    placeHostKey(root, host);
    manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "draupnir",
          kind: "draupnir-config",
          source: "draupnir/production.yaml",
          healthUrl: `http://127.0.0.1:${(health.address() as AddressInfo).port}/healthz`,
          healthTimeoutSeconds: 2,
          tokenSecret: { name: "draupnir-token" },
        },
      ],
    });
  });
  after(async () => {
    systemctl.restore();
    await new Promise((r) => health.close(r));
    fx.cleanup();
  });

  it("first deploy without any live config, rotation, then a token Draupnir cannot start with", async () => {
    const set = async (v: string) => {
      const r = await runCliWithInput(
        ["secret", "set", "draupnir-token", "--hosts", "lxc110", "--repo", fx.pusher],
        v,
      );
      assert.equal(r.code, 0, r.stderr);
      fx.push({}, "draupnir token");
    };
    const args = runArgs(manifest, fx.clone, root, path.join(fx.dir, "state"));
    await set(D1);
    const first = await runCli(args);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(live(), D1);
    await set(D2);
    healthy = false;
    const bad = await runCli(args);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr + bad.stdout, /HEALTH_CHECK_FAILED.*previous config restored/);
    assert.equal(live(), D1, "the previous token is back");
    healthy = true;
    const good = await runCli([...args, "--all"]);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(live(), D2);
    assert.deepEqual(systemctl.calls().filter((c) => c.startsWith("restart")).length, 4);
    for (const text of [first, bad, good].flatMap((r) => [r.stdout, r.stderr]))
      for (const t of [D1, D2]) assert.equal(text.includes(t), false);
  });
});

describe("serve: no plaintext in its log, /status, /metrics or notices", { skip }, () => {
  it("deploys a secret, fails a rotation, and every surface is clean", { timeout: 90_000 }, async () => {
    const keys = mkdtempSync(path.join(tmpdir(), "secret-serve-keys-"));
    const operator = ageKeygen(keys, "operator");
    const host = ageKeygen(keys, "lxctest");
    const received: string[] = [];
    const receiver = createServer((q, r) => {
      let b = "";
      q.on("data", (d) => {
        b += d;
      });
      q.on("end", () => {
        received.push(b);
        r.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const matrix = await startMatrixServer({
      roomId: ROOM,
      users: { [TOKEN_A]: { userId: "@deploy:m", powerLevel: 50 } },
    });
    const fx = makeFixture({
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxctest: host.recipient },
      }),
    });
    const s = { stop: async () => {} };
    try {
      const root = hostRoot(fx.dir, WEBHOOK_SECRET, ["etc", "var/log"]);
      placeHostKey(root, host);
      const set = async (v: string) => {
        const r = await runCliWithInput(
          ["secret", "set", "matrix-token", "--hosts", "lxctest", "--repo", fx.pusher],
          v,
        );
        assert.equal(r.code, 0, r.stderr);
        return fx.push({}, "token");
      };
      await set(TOKEN_A);
      const manifest = writeManifest(fx.dir, {
        log: { file: "/var/log/deploy.log" },
        webhook: { pollIntervalSeconds: 1 },
        notify: {
          targets: [
            {
              kind: "webhook",
              url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/n`,
              secret: "notify-hmac-secret-0123456789",
            },
          ],
        },
        steps: [
          {
            name: "matrix-token",
            kind: "secret",
            secret: "matrix-token",
            target: "/etc/matrix-deploy.env",
            format: "env",
            key: "MATRIX_TOKEN",
            matrix: { homeserver: matrix.url, room: ROOM, timeoutMs: 2000 },
          },
        ],
      });
      const served = startCli([...serveArgs(manifest, fx.clone, root), "--log-level", "debug"]);
      s.stop = async () => {
        // SIGTERM: the daemon ends its git processes before the fixture is removed under them.
        served.child.kill("SIGTERM");
        await served.exited;
      };
      await served.waitFor(/"msg":"run finished"/, 60_000);
      assert.equal(parse(readFileSync(path.join(root, "etc/matrix-deploy.env"))).MATRIX_TOKEN, TOKEN_A);
      await set(TOKEN_UNKNOWN);
      await served.waitFor(/TOKEN_REJECTED/, 60_000);
      const port = /"port":(\d+)/.exec(served.out())?.[1] ?? /127\.0\.0\.1:(\d+)/.exec(served.out())?.[1];
      const base = `http://127.0.0.1:${port}`;
      const status = await (await fetch(`${base}/status`)).text();
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(status, /TOKEN_REJECTED/);
      for (let i = 0; i < 200 && !received.some((b) => b.includes("TOKEN_REJECTED")); i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        received.some((b) => b.includes("TOKEN_REJECTED")),
        "the failure was notified",
      );
      const log = readFileSync(path.join(root, "var/log/deploy.log"), "utf8");
      const state = readdirSync(path.join(root, "var/lib/deploy-agent")).map((f) => {
        try {
          return readFileSync(path.join(root, "var/lib/deploy-agent", f), "utf8");
        } catch {
          return "";
        }
      });
      for (const [where, text] of [
        ["output", served.out()],
        ["log file", log],
        ["/status", status],
        ["/metrics", metrics],
        ["notices", received.join("\n")],
        ["state", state.join("\n")],
      ] as const) {
        for (const v of [TOKEN_A, TOKEN_UNKNOWN])
          assert.equal(text.includes(v), false, `${where} holds a token`);
      }
      assert.equal(
        parse(readFileSync(path.join(root, "etc/matrix-deploy.env"))).MATRIX_TOKEN,
        TOKEN_A,
        "old kept",
      );
    } finally {
      await s.stop();
      await matrix.close();
      await new Promise((r) => receiver.close(r));
      fx.cleanup();
    }
  });
});

describe("secret step: a secret systemd continues past a line ending in `\\` never shows in a diff", {
  skip,
}, () => {
  // Each part is recognisable: a grep finds any that leaked into a run's, a dry run's or diff's output.
  const PARTS = ["ZqCont-one-recognisable", "ZqCont-two-recognisable", "ZqCont-three=recognisable"];
  const ENV = `MATRIX_SERVER=https://matrix.example\nHOOKSHOT_TOKEN=${PARTS.join("\\\n")}\nMATRIX_TOKEN=old-token-placeholder\nAFTER=shown\n`;
  let fx: Fixture;
  let root: string;
  let stateDir: string;
  let manifest: string;
  before(() => {
    const keys = mkdtempSync(path.join(tmpdir(), "secret-cont-keys-"));
    const operator = ageKeygen(keys, "operator");
    const host = ageKeygen(keys, "lxctest");
    fx = makeFixture({
      "secrets/secrets.yaml": catalogText({
        operators: [operator.recipient],
        hosts: { lxctest: host.recipient },
      }),
    });
    root = hostRoot(fx.dir, WEBHOOK_SECRET, ["etc"]);
    stateDir = path.join(fx.dir, "state");
    placeHostKey(root, host);
    writeFileSync(path.join(root, "etc/matrix-deploy.env"), ENV, { mode: 0o600 });
    manifest = writeManifest(fx.dir, {
      steps: [
        {
          name: "matrix-token",
          kind: "secret",
          secret: "matrix-token",
          target: "/etc/matrix-deploy.env",
          format: "env",
          key: "MATRIX_TOKEN",
        },
      ],
    });
  });
  after(() => fx.cleanup());

  it("dry run, run and diff show the continued value as one fingerprint, the lines around it as they are", async () => {
    const set = await runCliWithInput(
      ["secret", "set", "matrix-token", "--hosts", "lxctest", "--repo", fx.pusher],
      TOKEN_A,
    );
    assert.equal(set.code, 0, set.stderr);
    fx.push({}, "matrix-token");
    const outputs: string[] = [];
    const dry = await runCli([...runArgs(manifest, fx.clone, root, stateDir), "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /AFTER=shown/, "the diff shows the lines around the change");
    assert.match(dry.stdout, /HOOKSHOT_TOKEN=<sha256:[0-9a-f]{12}>/);
    outputs.push(dry.stdout, dry.stderr);
    const ran = await runCli(runArgs(manifest, fx.clone, root, stateDir));
    assert.equal(ran.code, 0, ran.stderr);
    outputs.push(ran.stdout, ran.stderr);
    assert.equal(parse(readFileSync(path.join(root, "etc/matrix-deploy.env"))).MATRIX_TOKEN, TOKEN_A);
    writeFileSync(path.join(root, "etc/matrix-deploy.env"), ENV, { mode: 0o600 });
    const diff = await runCli(["diff", ...runArgs(manifest, fx.clone, root, stateDir).slice(1)]);
    outputs.push(diff.stdout, diff.stderr);
    assert.match(diff.stdout, /HOOKSHOT_TOKEN=<sha256:[0-9a-f]{12}>/);
    for (const text of outputs) {
      for (const part of [...PARTS, TOKEN_A])
        assert.equal(text.includes(part), false, `${part} leaked:\n${text}`);
      assert.equal(text.includes("ZqCont"), false);
    }
  });
});
