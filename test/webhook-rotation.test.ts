import assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { type HmacPrimitives, matchSecret, sign } from "../src/server/verify.js";
import { acquireLock } from "../src/state/lock.js";
import {
  hostRoot,
  listeningUrl,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { giteaHeaders } from "./helpers/gitea.js";
import { type GiteaApi, type GiteaHook, startGiteaApi } from "./helpers/gitea-api.js";

/** Rotating the webhook secret without a missed push: the real daemon, the real CLI, a Gitea API server. */

const OLD = "old-webhook-secret-0123456789abcdef";
const OTHER = "never-given-secret-0123456789abcdef";

describe("matchSecret: both candidates, always", () => {
  const payload = Buffer.from('{"ref":"refs/heads/main"}');
  const counting = () => {
    const calls = { digest: 0, equal: 0 };
    const crypto: HmacPrimitives = {
      digest: (secret, p) => {
        calls.digest++;
        return createHmac("sha256", secret).update(p).digest();
      },
      equal: (a, b) => {
        calls.equal++;
        return timingSafeEqual(a, b);
      },
    };
    return { calls, crypto };
  };
  for (const [signedWith, expected] of [
    [OLD, "current"],
    ["next-webhook-secret-0123456789abcdef", "next"],
    [OTHER, null],
  ] as const) {
    it(`signed with ${expected ?? "neither"}: two HMACs computed and two compared, answer ${expected}`, () => {
      const { calls, crypto } = counting();
      const keys = { current: OLD, next: "next-webhook-secret-0123456789abcdef" };
      assert.equal(matchSecret(keys, payload, sign(signedWith, payload), crypto), expected);
      assert.deepEqual(calls, { digest: 2, equal: 2 });
    });
  }
  it("without a next secret: one of each; a malformed or missing signature: none", () => {
    const { calls, crypto } = counting();
    assert.equal(matchSecret({ current: OLD }, payload, sign(OLD, payload), crypto), "current");
    assert.deepEqual(calls, { digest: 1, equal: 1 });
    for (const sig of [null, "", "A".repeat(64), sign(OLD, payload).slice(1)])
      assert.equal(matchSecret({ current: OLD, next: OTHER }, payload, sig, crypto), null);
    assert.deepEqual(calls, { digest: 1, equal: 1 });
  });
});

let fx: Fixture;
let root: string;
let stateDir: string;
let manifest: string;
let daemon: Served | undefined;
let gitea: GiteaApi | undefined;

const nextFile = () => path.join(root, "etc/deploy-agent/webhook-secret.next");
const currentFile = () => path.join(root, "etc/deploy-agent/webhook-secret");
const hostArgs = () => ["--config", manifest, "--root", root, "--state-dir", stateDir];
const rotate = (extra: string[] = [], env: NodeJS.ProcessEnv = {}) =>
  runCli(["secret", "rotate-webhook", ...hostArgs(), ...extra], env);
const serve = () => startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", stateDir]);

/** A ping signed with `secret`: 202 (ignored_event) when it verifies, 401 when not; nothing is deployed. */
async function ping(url: string, secret: string): Promise<number> {
  const body = Buffer.from('{"zen":"rotate"}');
  const res = await fetch(`${url}/hooks/deploy`, {
    method: "POST",
    headers: giteaHeaders(body, secret, "ping"),
    body: new Uint8Array(body),
  });
  return res.status;
}

const counted = (metrics: string, secret: string) =>
  Number(
    new RegExp(
      `^deploy_agent_webhook_deliveries_total\\{outcome="ignored_event",secret="${secret}",host="lxctest"\\} (\\d+)$`,
      "m",
    ).exec(metrics)?.[1] ?? "0",
  );

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, OLD);
  stateDir = path.join(fx.dir, "state");
  manifest = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
});
afterEach(async () => {
  if (daemon) {
    daemon.child.kill("SIGTERM");
    await daemon.exited;
    daemon = undefined;
  }
  await gitea?.close();
  gitea = undefined;
  fx.cleanup();
});

describe("secret rotate-webhook against the running daemon", () => {
  it("during the rotation both secrets are accepted and counted by secret; --finish waits for a next delivery; after it only the new one works", async () => {
    daemon = serve();
    const url = await listeningUrl(daemon);
    assert.equal(await ping(url, OLD), 202);

    const started = await rotate();
    assert.equal(started.code, 0, started.stderr);
    const next = readFileSync(nextFile(), "utf8").trim();
    assert.match(next, /^[0-9a-f]{64}$/, "32 random bytes as hex");
    assert.equal(statSync(nextFile()).mode & 0o777, 0o600);
    assert.equal(started.stdout.includes(next), false, "the secret is never printed");
    assert.match(started.stdout, /cat .*webhook-secret\.next/);
    assert.match(started.stdout, /Settings → Webhooks/);

    const early = await rotate(["--finish"]);
    assert.equal(early.code, 1);
    assert.match(early.stderr, /error ROTATION_UNCONFIRMED: no delivery signed with the next webhook secret/);
    assert.ok(existsSync(nextFile()), "refused: nothing changed");

    // The window: old and next both verify, anything else does not.
    assert.equal(await ping(url, next), 202);
    assert.equal(await ping(url, OLD), 202);
    assert.equal(await ping(url, next), 202);
    assert.equal(await ping(url, OTHER), 401);
    await daemon.waitFor(/first delivery signed with the next webhook secret/);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.equal(counted(metrics, "current"), 2);
    assert.equal(counted(metrics, "next"), 2);
    const lines = daemon
      .out()
      .split("\n")
      .filter((l) => l.includes('"msg":"delivery"'))
      .map((l) => JSON.parse(l) as { signedWith?: string; status: number });
    assert.deepEqual(
      lines.map((l) => l.signedWith ?? null),
      ["current", "next", "current", "next", null],
    );

    const finished = await rotate(["--finish"]);
    assert.equal(finished.code, 0, finished.stderr);
    assert.equal(readFileSync(currentFile(), "utf8").trim(), next);
    assert.equal(statSync(currentFile()).mode & 0o777, 0o600);
    assert.equal(existsSync(nextFile()), false);
    // No restart: the daemon sees the rename at its next delivery.
    assert.equal(await ping(url, OLD), 401);
    assert.equal(await ping(url, next), 202);
    const after = await (await fetch(`${url}/metrics`)).text();
    assert.equal(counted(after, "current"), 3, "the new secret now counts as the current one");
    assert.equal(daemon.out().includes(next), false, "the daemon never logs the secret");
    const again = await rotate(["--finish"]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /no rotation under way/);
  });

  it("a next secret file others can read is refused: serve does not start, a running daemon does not take it", async () => {
    writeFileSync(nextFile(), "loose-next-secret-0123456789abcdef\n", { mode: 0o644 });
    chmodSync(nextFile(), 0o644);
    const refused = serve();
    assert.equal(await refused.exited, 2);
    assert.match(
      refused.out(),
      /error CONFIG_INVALID: next webhook secret file .* is readable by others \(mode 0644\)/,
    );
    const validate = await runCli(["validate", ...hostArgs(), "--repo", fx.clone]);
    assert.match(validate.stdout + validate.stderr, /readable by others \(mode 0644\)/);

    chmodSync(nextFile(), 0o600);
    daemon = serve();
    const url = await listeningUrl(daemon);
    assert.equal(await ping(url, "loose-next-secret-0123456789abcdef"), 202, "0600: accepted");
    writeFileSync(nextFile(), "changed-next-secret-0123456789abcdef\n");
    chmodSync(nextFile(), 0o640);
    assert.equal(await ping(url, "changed-next-secret-0123456789abcdef"), 401);
    assert.equal(await ping(url, "loose-next-secret-0123456789abcdef"), 401, "the replaced one is gone too");
    assert.equal(await ping(url, OLD), 202, "the current secret still works");
    await daemon.waitFor(/next webhook secret refused: next webhook secret file .* readable by others/);
    const finish = await rotate(["--finish", "--force"]);
    assert.equal(finish.code, 2);
    assert.equal(readFileSync(currentFile(), "utf8").trim(), OLD);
  });

  it(`secrets are bounded: a next secret of 15 or 1025 characters, or a file over 4096 bytes, is refused`, async () => {
    for (const [content, why] of [
      ["x".repeat(15), /15 characters; at least 16/],
      ["x".repeat(1025), /1025 characters; at most 1024/],
      [`${"x".repeat(1024)}\n${" ".repeat(3072)}`, /4097 bytes, more than 4096/],
    ] as const) {
      writeFileSync(nextFile(), content, { mode: 0o600 });
      const r = await rotate(["--finish", "--force"]);
      assert.equal(r.code, 2, content.length.toString());
      assert.match(r.stderr, why);
    }
    writeFileSync(nextFile(), `${"y".repeat(1024)}\n${" ".repeat(3071)}`, { mode: 0o600 });
    assert.equal((await rotate(["--finish", "--force"])).code, 0, "1024 characters in 4096 bytes: taken");
    assert.equal(readFileSync(currentFile(), "utf8").trim(), "y".repeat(1024));
  });
});

describe("secret rotate-webhook --hook: Gitea's API", () => {
  const TOKEN = "gitea-admin-token-0123456789";
  const hookOf = (url: string, over: Partial<GiteaHook["config"]> = {}): GiteaHook => ({
    id: 7,
    type: "gitea",
    active: true,
    events: ["push", "create"],
    branch_filter: "main",
    authorization_header: "",
    config: { url: `${url}/hooks/deploy`, content_type: "json", secret: OLD, ...over },
  });

  it("PATCHes the hook's whole config with the next secret, keeps its events and filter, and Gitea's test delivery confirms it", async () => {
    daemon = serve();
    const url = await listeningUrl(daemon);
    gitea = await startGiteaApi({
      token: TOKEN,
      repository: "lotus/matrix",
      knows: () => true,
      hooks: [hookOf(url)],
    });
    const page = gitea.url.replace(/\/api\/v1$/, "/lotus/matrix/settings/hooks/7");
    const r = await rotate(["--hook", page], { GITEA_TOKEN: TOKEN });
    assert.equal(r.code, 0, r.stderr);
    const next = readFileSync(nextFile(), "utf8").trim();
    const hook = gitea.hooks[0];
    assert.equal(hook?.config.secret, next);
    assert.equal(hook?.config.url, `${url}/hooks/deploy`);
    assert.deepEqual(hook?.events, ["push", "create"]);
    assert.equal(hook?.branch_filter, "main");
    assert.deepEqual(gitea.tested, [{ url: `${url}/hooks/deploy`, status: 202 }]);
    assert.equal(r.stdout.includes(next) || r.stderr.includes(next), false);
    await daemon.waitFor(/first delivery signed with the next webhook secret/);
    const finished = await rotate(["--finish"]);
    assert.equal(finished.code, 0, finished.stderr);
    assert.equal(await ping(url, OLD), 401);
  });

  it("a rotation takes the deploy lock: it waits for a running deploy, and three at once leave Gitea's secret on the host", async () => {
    gitea = await startGiteaApi({
      token: TOKEN,
      repository: "lotus/matrix",
      knows: () => true,
      hooks: [hookOf("http://127.0.0.1:9")],
    });
    const page = gitea.url.replace(/\/api\/v1$/, "/lotus/matrix/settings/hooks/7");
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const held = await acquireLock(stateDir, 0);
    const waiting = rotate(["--hook", page], { GITEA_TOKEN: TOKEN });
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(existsSync(nextFile()), false, "nothing written while a deploy holds the lock");
    assert.equal(gitea.hooks[0]?.config.secret, OLD);
    await held.release();
    const done = await waiting;
    assert.equal(done.code, 0, done.stderr);
    assert.equal(gitea.hooks[0]?.config.secret, readFileSync(nextFile(), "utf8").trim());
    const all = await Promise.all(
      [0, 1, 2].map(() => rotate(["--hook", page, "--force"], { GITEA_TOKEN: TOKEN })),
    );
    for (const r of all) assert.equal(r.code, 0, r.stderr);
    assert.equal(gitea.hooks[0]?.config.secret, readFileSync(nextFile(), "utf8").trim());
  });

  it("an unknown hook 404, no or a wrong token 401, a read-only token 403, an invalid config 422: GITEA_HOOK_FAILED, Gitea unchanged", async () => {
    gitea = await startGiteaApi({
      token: TOKEN,
      readOnlyToken: "gitea-read-only-token-0123",
      repository: "lotus/matrix",
      knows: () => true,
      hooks: [
        hookOf("http://127.0.0.1:9"),
        { ...hookOf("http://127.0.0.1:9", { content_type: "text/plain" }), id: 8 },
      ],
    });
    const api = (id: number) => `${gitea?.url}/repos/lotus/matrix/hooks/${id}`;
    for (const [id, token, status, hint] of [
      [99, TOKEN, 404, /no such hook/],
      [7, "wrong-token-0123456789", 401, /token is missing or wrong/],
      [7, "gitea-read-only-token-0123", 403, /administrator of the repository/],
      [8, TOKEN, 422, /./],
    ] as const) {
      const r = await rotate(["--hook", api(id)], { GITEA_TOKEN: token });
      assert.equal(r.code, 1, `${id}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`error GITEA_HOOK_FAILED: .*HTTP ${status}`));
      assert.match(r.stderr, hint);
    }
    assert.deepEqual(
      gitea.hooks.map((h) => h.config.secret),
      [OLD, OLD],
    );
    const noToken = await rotate(["--hook", api(7)], { GITEA_TOKEN: "" });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /--hook needs a Gitea token/);
    const badHook = await rotate(["--hook", "https://example.test/not-a-hook"], { GITEA_TOKEN: TOKEN });
    assert.equal(badHook.code, 2);
    assert.match(badHook.stderr, /names no Gitea repository hook/);
  });
});
