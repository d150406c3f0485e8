import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { parse, stringify } from "yaml";
import { hostRoot, listeningUrl, type Served, serveArgs, startCli } from "./helpers/agent.js";
import { type Fixture, git, hasCommit, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { type GiteaApi, startGiteaApi } from "./helpers/gitea-api.js";

/**
 * Live previews against the real `serve` process, real git (a bare origin whose refs/pull/N/head are pushed
 * as Gitea keeps them) and the Gitea API test server: the status preview/<host> says what would change, a
 * failing check fails it, drift shows; the live host is untouched and nothing runs, whatever the pull
 * request's manifest says; the bound on waiting previews; deploys first.
 */

const SECRET = "preview-serve-webhook-secret-0123";
const GITEA_TOKEN = "gitea-preview-Hq38ZxLr2W9mKp7vNc3H";
const REPOSITORY = "LotusGuild/matrix";
const MANIFEST = "config/lxctest.yaml";
const CONTEXT = "preview/lxctest";

let fx: Fixture | undefined;
let gitea: GiteaApi | undefined;
let daemon: Served | undefined;
afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  await gitea?.close();
  gitea = undefined;
  fx?.cleanup();
  fx = undefined;
});

interface Host {
  fx: Fixture;
  root: string;
  gitea: GiteaApi;
  url: string;
  manifest: (previews: object, extra?: object) => string;
}

/** The host manifest as the repository holds it; the landing step's reload leaves a marker when it runs. */
function manifestText(root: string, previews: object, extra: { landing?: object } = {}): string {
  return stringify({
    version: 1,
    host: "lxctest",
    listen: { port: 9000 },
    envFile: "/etc/deploy-agent/preview.env",
    webhook: { pollIntervalSeconds: 0, previews },
    drift: { intervalSeconds: 0 },
    notify: {
      targets: [
        { kind: "gitea-status", api: "${GITEA_API}", repository: REPOSITORY, token: "${GITEA_TOKEN}" },
      ],
    },
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        // A page that says "slow" takes 3 s to validate: a deploy that keeps the runner busy.
        validate: ["sh", "-c", 'if grep -q slow "$0"; then sleep 3; fi; true', "{file}"],
        reload: [["sh", "-c", `touch ${path.join(root, "var/www/reloaded")}`]],
        ...extra.landing,
      },
      {
        name: "settings",
        kind: "file",
        source: "settings/config.json",
        targets: ["/var/www/config.json"],
        check: "json",
      },
    ],
  });
}

async function host(previews: object = { enabled: true }): Promise<Host> {
  const f = makeFixture({ "landing/index.html": "<p>v1</p>\n", "settings/config.json": '{"a": 1}\n' });
  fx = f;
  const root = hostRoot(f.dir, SECRET);
  f.push({ [MANIFEST]: manifestText(root, previews) }, "manifest");
  git(f.clone, "pull", "--quiet");
  const api = await startGiteaApi({
    token: GITEA_TOKEN,
    repository: REPOSITORY,
    knows: (sha) => hasCommit(f.origin, sha),
  });
  gitea = api;
  writeFileSync(
    path.join(root, "etc/deploy-agent/preview.env"),
    `GITEA_API=${api.url}\nGITEA_TOKEN=${GITEA_TOKEN}\n`,
    { mode: 0o600 },
  );
  daemon = startCli([
    ...serveArgs(path.join(f.clone, MANIFEST), f.clone, root),
    "--state-dir",
    path.join(f.dir, "state"),
  ]);
  const url = await listeningUrl(daemon);
  // The start-up reconcile has deployed main.
  await until("the start-up deploy", async () => {
    const s = (await (await fetch(`${url}/status`)).json()) as { deployedRevision: string | null };
    return s.deployedRevision === git(f.pusher, "rev-parse", "HEAD");
  });
  return { fx: f, root, gitea: api, url, manifest: (p, extra) => manifestText(root, p, extra) };
}

async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${daemon?.out() ?? ""}`);
    await sleep(50);
  }
}

/** A pull request #n: a branch off main with these files, pushed to refs/pull/n/head as Gitea keeps it. */
function openPull(f: Fixture, n: number, files: Record<string, string>): string {
  git(f.pusher, "checkout", "--quiet", "-B", `pr${n}`, "main");
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(f.pusher, rel)), { recursive: true });
    writeFileSync(path.join(f.pusher, rel), content);
  }
  git(f.pusher, "add", "-A");
  git(f.pusher, "commit", "--quiet", "-m", `pull request ${n}`);
  git(f.pusher, "push", "--quiet", "--force", "origin", `HEAD:refs/pull/${n}/head`);
  const sha = git(f.pusher, "rev-parse", "HEAD");
  git(f.pusher, "checkout", "--quiet", "main");
  return sha;
}

/** Gitea's pull_request delivery (the fields Gitea's PullRequestPayload carries that matter here). */
async function deliver(url: string, n: number, head: string, action = "opened", base = "main") {
  const body = Buffer.from(
    JSON.stringify(
      {
        action,
        number: n,
        pull_request: {
          id: 1000 + n,
          number: n,
          state: "open",
          head: { label: `pr${n}`, ref: `pr${n}`, sha: head },
          base: { label: base, ref: base, sha: "0".repeat(40) },
          merged: false,
        },
        repository: { full_name: REPOSITORY },
        sender: { login: "someone" },
        commit_id: "",
        review: null,
      },
      null,
      2,
    ),
  );
  const res = await fetch(`${url}/hooks/deploy`, {
    method: "POST",
    headers: giteaHeaders(body, SECRET, "pull_request"),
    body: new Uint8Array(body),
  });
  return { status: res.status, doc: (await res.json()) as Record<string, unknown> };
}

const statusOf = (api: GiteaApi, sha: string) =>
  api.statuses.filter((s) => s.sha === sha && s.context === CONTEXT).at(-1);

async function previewed(h: Host, sha: string) {
  await until(`the preview status of ${sha.slice(0, 12)}`, () => statusOf(h.gitea, sha) !== undefined);
  return statusOf(h.gitea, sha) as NonNullable<ReturnType<typeof statusOf>>;
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe("live previews (serve, pull_request deliveries)", () => {
  it("a pull request that changes the landing page: preview/<host> success naming it; the host untouched; nothing ran, whatever its manifest says", async () => {
    const h = await host();
    const live = path.join(h.root, "var/www/index.html");
    const reloaded = path.join(h.root, "var/www/reloaded");
    assert.ok(existsSync(reloaded), "the start-up deploy ran the reload");
    const { rmSync } = await import("node:fs");
    rmSync(reloaded);
    const main = git(h.fx.clone, "rev-parse", "refs/remotes/origin/main");
    const cloneHead = git(h.fx.clone, "rev-parse", "HEAD");
    const pwned = path.join(h.root, "pwned");
    // The pull request's manifest tries to run its own commands: validate, reload and systemctl.
    const sha = openPull(h.fx, 1, {
      "landing/index.html": "<p>v2 from the pull request</p>\n",
      [MANIFEST]: h.manifest(
        { enabled: true },
        {
          landing: {
            validate: ["sh", "-c", `touch ${pwned}-validate`],
            reload: [["touch", `${pwned}-reload`]],
          },
        },
      ),
    });
    const res = await deliver(h.url, 1, sha);
    assert.equal(res.status, 202);
    assert.equal(res.doc.queued, true);
    const s = await previewed(h, sha);
    assert.equal(s.state, "success", s.description);
    assert.match(s.description, /would change landing \(1 item\)/);
    assert.doesNotMatch(s.description, /settings/);
    assert.equal(readFileSync(live, "utf8"), "<p>v1</p>\n", "the live page is untouched");
    for (const marker of [reloaded, `${pwned}-validate`, `${pwned}-reload`])
      assert.ok(!existsSync(marker), `${marker} exists: a command ran`);
    // The branch, the work tree and the clone's refs are as they were; the preview's own ref is gone.
    assert.equal(git(h.fx.clone, "rev-parse", "refs/remotes/origin/main"), main);
    assert.equal(git(h.fx.clone, "rev-parse", "HEAD"), cloneHead);
    assert.equal(git(h.fx.clone, "status", "--porcelain"), "");
    assert.equal(git(h.fx.clone, "for-each-ref", "refs/deploy-agent/"), "");
    // No deploy status for the pull request's head: it was never deployed.
    assert.ok(!h.gitea.statuses.some((x) => x.sha === sha && x.context !== CONTEXT));
    const status = (await (await fetch(`${h.url}/status`)).json()) as {
      deployedRevision: string;
      previews: { last: { number: number; state: string; posted: boolean }[] };
    };
    assert.equal(status.deployedRevision, main);
    assert.deepEqual(
      status.previews.last.map((p) => [p.number, p.state, p.posted]),
      [[1, "success", true]],
    );
    assert.equal(await metric(h.url, 'deploy_agent_previews_total{result="success"'), 1);
    // No body sent to Gitea carries the token.
    assert.ok(!h.gitea.bodies.some((b) => b.includes(GITEA_TOKEN)));
  });

  it("invalid JSON in a checked file: preview/<host> failure naming the step and the check", async () => {
    const h = await host();
    const sha = openPull(h.fx, 2, { "settings/config.json": '{"a": 1,}\n' });
    assert.equal((await deliver(h.url, 2, sha, "synchronized")).status, 202);
    const s = await previewed(h, sha);
    assert.equal(s.state, "failure");
    assert.match(s.description, /^settings: .*JSON/);
    assert.equal(readFileSync(path.join(h.root, "var/www/config.json"), "utf8"), '{"a": 1}\n');
  });

  it("an invalid manifest in the pull request: failure, CONFIG_INVALID", async () => {
    const h = await host();
    const sha = openPull(h.fx, 3, { [MANIFEST]: "version: 1\nhost: lxctest\nsteps: []\n" });
    await deliver(h.url, 3, sha, "reopened");
    const s = await previewed(h, sha);
    assert.equal(s.state, "failure");
    assert.match(s.description, /^CONFIG_INVALID: /);
  });

  it("a hookshot step the pull request adds: a broken transform fails it; no request reaches its homeserver with the host's token", async () => {
    const h = await host();
    const asked: string[] = [];
    const { createServer } = await import("node:http");
    const homeserver = createServer((req, res) => {
      asked.push(`${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
    await new Promise<void>((done) => homeserver.listen(0, "127.0.0.1", done));
    const hs = `http://127.0.0.1:${(homeserver.address() as { port: number }).port}`;
    try {
      const withHookshot = (files: Record<string, string>) => {
        const doc = h.manifest({ enabled: true });
        const step = {
          name: "hookshot",
          kind: "hookshot",
          homeserver: hs,
          room: "!hooks:matrix.test",
          token: "${GITEA_TOKEN}",
          transforms: { "grafana.js": null },
        };
        const parsed = parse(doc) as { steps: object[] };
        parsed.steps.push(step);
        return { ...files, [MANIFEST]: stringify(parsed) };
      };
      const good = openPull(
        h.fx,
        7,
        withHookshot({ "hookshot/grafana.js": 'result = { version: "v2", plain: "x" };\n' }),
      );
      await deliver(h.url, 7, good);
      const ok = await previewed(h, good);
      assert.equal(ok.state, "success", ok.description);
      assert.match(ok.description, /hookshot \(0 items, 1 unknown\)/);
      const broken = openPull(
        h.fx,
        8,
        withHookshot({ "hookshot/grafana.js": "result = { version: 'v2', plain: " }),
      );
      await deliver(h.url, 8, broken);
      const bad = await previewed(h, broken);
      assert.equal(bad.state, "failure");
      assert.match(bad.description, /^hookshot: .*grafana\.js/);
      assert.deepEqual(asked, [], "the preview asked the pull request's homeserver");
    } finally {
      homeserver.closeAllConnections();
      await new Promise((done) => homeserver.close(done));
    }
  });

  it("the pull request's manifest cannot make the host read another env file", async () => {
    const h = await host();
    writeFileSync(path.join(h.root, "etc/other.env"), "STOLEN=value-from-another-file\n");
    const doc = h
      .manifest({ enabled: true })
      .replace("envFile: /etc/deploy-agent/preview.env", "envFile: /etc/other.env")
      .replace("- /var/www/config.json", "- /var/www/${STOLEN}.json");
    assert.match(doc, /STOLEN/);
    const sha = openPull(h.fx, 9, { [MANIFEST]: doc });
    await deliver(h.url, 9, sha);
    const s = await previewed(h, sha);
    assert.equal(s.state, "failure");
    assert.match(s.description, /^ENV_MISSING: .*STOLEN/);
    assert.ok(!h.gitea.bodies.some((b) => b.includes("value-from-another-file")));
  });

  it("drift shows: a hand-edited live page is named, and stays as it is", async () => {
    const h = await host();
    const live = path.join(h.root, "var/www/index.html");
    writeFileSync(live, "<p>edited by hand</p>\n");
    const sha = openPull(h.fx, 4, { "landing/index.html": "<p>v2</p>\n" });
    await deliver(h.url, 4, sha);
    const s = await previewed(h, sha);
    assert.equal(s.state, "success");
    assert.match(s.description, /drifted here: landing/);
    assert.equal(readFileSync(live, "utf8"), "<p>edited by hand</p>\n");
  });

  it("actions other than opened, reopened and synchronized, and pull requests into another branch, preview nothing", async () => {
    const h = await host();
    const sha = openPull(h.fx, 5, { "landing/index.html": "<p>v2</p>\n" });
    for (const action of ["closed", "edited", "label_updated", "assigned", "", "Opened"]) {
      const r = await deliver(h.url, 5, sha, action);
      assert.equal(r.status, 202);
      assert.match(String(r.doc.ignored), /no new head to preview/);
    }
    const other = await deliver(h.url, 5, sha, "opened", "develop");
    assert.match(String(other.doc.ignored), /into develop, not main/);
    await sleep(500);
    assert.equal(statusOf(h.gitea, sha), undefined);
  });

  it("previews disabled (the default): a pull_request delivery is ignored_event, as any other event", async () => {
    const h = await host({});
    const sha = openPull(h.fx, 6, { "landing/index.html": "<p>v2</p>\n" });
    const r = await deliver(h.url, 6, sha);
    assert.equal(r.status, 202);
    assert.equal(r.doc.ignored, "event pull_request is not a push");
    assert.equal(await metric(h.url, 'deploy_agent_webhook_deliveries_total{outcome="ignored_event"'), 1);
    await sleep(500);
    assert.equal(statusOf(h.gitea, sha), undefined);
  });

  it("maxPending: 11 pull requests while a deploy runs, one dropped and counted; a push to main then deploys before them", async () => {
    const h = await host({ enabled: true, maxPending: 10 });
    const shas = Array.from({ length: 11 }, (_, i) =>
      openPull(h.fx, 10 + i, { "landing/index.html": `<p>pull ${10 + i}</p>\n` }),
    );
    // A slow deploy keeps the runner busy while the pull requests come.
    const slow = h.fx.push({ "landing/index.html": "<p>slow v2</p>\n" });
    const pushed = pushBody({ after: slow });
    await fetch(`${h.url}/hooks/deploy`, {
      method: "POST",
      headers: giteaHeaders(pushed, SECRET),
      body: new Uint8Array(pushed),
    });
    await until("the slow deploy to start", async () => {
      const s = (await (await fetch(`${h.url}/status`)).json()) as { queue: { running: boolean } };
      return s.queue.running;
    });
    const answers = [];
    for (const [i, sha] of shas.entries()) answers.push(await deliver(h.url, 10 + i, sha));
    assert.deepEqual(
      answers.map((a) => (a.doc.queued ? "queued" : a.doc.dropped ? "dropped" : JSON.stringify(a.doc))),
      [...Array(10).fill("queued"), "dropped"],
    );
    // A newer head of a waiting pull request replaces it: not a new entry, not dropped at the bound.
    const newer = openPull(h.fx, 10, { "landing/index.html": "<p>pull 10, newer</p>\n" });
    assert.equal((await deliver(h.url, 10, newer, "synchronized")).doc.coalesced, true);
    assert.equal(await metric(h.url, 'deploy_agent_previews_total{result="dropped"'), 1);
    assert.equal(await metric(h.url, 'deploy_agent_webhook_deliveries_total{outcome="preview_dropped"'), 1);
    // A push to main while the previews wait: deployed before any of them.
    const next = h.fx.push({ "landing/index.html": "<p>v3</p>\n" });
    const body = pushBody({ after: next });
    await fetch(`${h.url}/hooks/deploy`, {
      method: "POST",
      headers: giteaHeaders(body, SECRET),
      body: new Uint8Array(body),
    });
    await until(
      "ten previews",
      () => h.gitea.statuses.filter((s) => s.context === CONTEXT).length >= 10,
      60_000,
    );
    const out = daemon?.out() ?? "";
    const deployed = out.indexOf(`"revision":"${next}","result":"succeeded"`);
    const firstPreview = out.indexOf('"msg":"preview"');
    assert.ok(deployed > 0 && deployed < firstPreview, "the push was deployed before the first preview");
    assert.equal(readFileSync(path.join(h.root, "var/www/index.html"), "utf8"), "<p>v3</p>\n");
    // The dropped one got no status; pull request 10's preview is of its newer head.
    assert.equal(statusOf(h.gitea, shas[10] as string), undefined);
    assert.equal(statusOf(h.gitea, shas[0] as string), undefined);
    assert.equal(statusOf(h.gitea, newer)?.state, "success");
  });
});
