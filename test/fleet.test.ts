import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import type { DeployEvent } from "../src/notify/events.js";
import { freePort, hostRoot, runCli, type Served, startCli } from "./helpers/agent.js";
import { type Fixture, git, hasCommit, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { type GiteaApi, startGiteaApi } from "./helpers/gitea-api.js";

/**
 * A test fleet: four agents on loopback, each with its own clone, root and state, notifying a Gitea API test
 * server (commit statuses) and a webhook receiver that checks every signature. One push fans out to all four
 * as Gitea does; the statuses and notices of a success, a failure, a repeat and a recovery are checked, and
 * `fleet wait` / `fleet status` are run against the fleet.
 */

const HOSTS = ["lxc151", "lxc106", "lxc139", "lxc110"];
const SECRET = "fleet-webhook-secret-0123456789";
const GITEA_TOKEN = "gitea-token-fleet-0123456789";
const NOTIFY_SECRET = "notify-hmac-secret-0123456789";

let fx: Fixture;
let gitea: GiteaApi;
let receiver: Server;
let receiverUrl: string;
const notices: DeployEvent[] = [];
let badSignatures = 0;
const agents: { host: string; port: number; daemon: Served }[] = [];

function manifest(host: string, port: number): string {
  return stringify({
    version: 1,
    host,
    listen: { host: "127.0.0.1", port },
    publicUrl: `http://127.0.0.1:${port}`,
    envFile: "/etc/deploy-agent/notify.env",
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    notify: {
      repeatMinutes: 60,
      targets: [
        {
          kind: "gitea-status",
          api: "${GITEA_API}",
          repository: "LotusGuild/matrix",
          token: "${GITEA_TOKEN}",
        },
        { kind: "webhook", url: "${NOTIFY_URL}", secret: "${NOTIFY_SECRET}" },
      ],
    },
    steps: [
      {
        name: "page",
        kind: "file",
        source: `pages/${host}.html`,
        targets: ["/var/www/index.html"],
        // A page must say "deploy-ok": what a failing deploy looks like.
        validate: ["grep", "-q", "deploy-ok", "{file}"],
      },
    ],
  });
}

const fleet = (...args: string[]) => runCli(["fleet", ...args, "--repo", fx.pusher]);

/** Gitea's fan-out: the same push to every agent at once. */
async function pushToAll(files: Record<string, string>): Promise<string> {
  const before = git(fx.pusher, "rev-parse", "HEAD");
  const rev = fx.push(files);
  const body = pushBody({ before, after: rev });
  const codes = await Promise.all(
    agents.map(
      async (a) =>
        (
          await fetch(`http://127.0.0.1:${a.port}/hooks/deploy`, {
            method: "POST",
            headers: giteaHeaders(body, SECRET),
            body: new Uint8Array(body),
          })
        ).status,
    ),
  );
  assert.deepEqual(codes, [202, 202, 202, 202]);
  return rev;
}

async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) {
      const logs = agents.map((a) => `--- ${a.host}\n${a.daemon.out().slice(-1500)}`).join("\n");
      throw new Error(`timed out: ${what}\n${logs}`);
    }
    await sleep(50);
  }
}

const noticesOf = (rev: string, event: string) =>
  notices
    .filter((n) => n.revision === rev && n.event === event)
    .map((n) => n.host)
    .sort();

before(async () => {
  receiver = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const want = `sha256=${createHmac("sha256", NOTIFY_SECRET).update(body).digest("hex")}`;
    if (req.headers["x-signature"] !== want) {
      badSignatures++;
      res.writeHead(401);
      return res.end();
    }
    notices.push(JSON.parse(body.toString("utf8")) as DeployEvent);
    res.writeHead(204);
    res.end();
  });
  await new Promise<void>((done) => receiver.listen(0, "127.0.0.1", done));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/deploy-agent`;

  const ports = await Promise.all(HOSTS.map(() => freePort()));
  const files: Record<string, string> = {};
  HOSTS.forEach((h, i) => {
    files[`config/${h}.yaml`] = manifest(h, ports[i] ?? 0);
    files[`pages/${h}.html`] = `<p>${h} deploy-ok v1</p>\n`;
  });
  fx = makeFixture(files);
  gitea = await startGiteaApi({
    token: GITEA_TOKEN,
    repository: "LotusGuild/matrix",
    knows: (sha) => hasCommit(fx.pusher, sha),
  });
  HOSTS.forEach((host, i) => {
    const dir = path.join(fx.dir, host);
    const root = hostRoot(dir, SECRET);
    writeFileSync(
      path.join(root, "etc/deploy-agent/notify.env"),
      `GITEA_API=${gitea.url}\nGITEA_TOKEN=${GITEA_TOKEN}\nNOTIFY_URL=${receiverUrl}\nNOTIFY_SECRET=${NOTIFY_SECRET}\n`,
      { mode: 0o600 },
    );
    const clone = path.join(dir, "clone");
    git(fx.dir, "clone", "--quiet", fx.origin, clone);
    const daemon = startCli([
      "serve",
      "--config",
      path.join(clone, "config", `${host}.yaml`),
      "--repo",
      clone,
      "--root",
      root,
      "--state-dir",
      path.join(dir, "state"),
    ]);
    agents.push({ host, port: ports[i] ?? 0, daemon });
  });
  for (const a of agents) await a.daemon.waitFor(/"msg":"listening"/);
});

after(async () => {
  for (const a of agents) a.daemon.child.kill("SIGTERM");
  await Promise.all(agents.map((a) => a.daemon.exited));
  await gitea?.close();
  await new Promise((done) => receiver?.close(done));
  fx?.cleanup();
});

describe("the fleet: notices, commit statuses, fleet wait and status", () => {
  it("start-up: every host posts pending then success on the commit, and a signed notice", async () => {
    const rev = git(fx.pusher, "rev-parse", "HEAD");
    await until("four start-up notices", () => noticesOf(rev, "run.succeeded").length === 4);
    for (const h of HOSTS)
      await until(`success for ${h}`, () => gitea.latest(rev, `deploy/${h}`) === "success");
    for (const h of HOSTS) {
      const mine = gitea.statuses
        .filter((s) => s.sha === rev && s.context === `deploy/${h}`)
        .map((s) => s.state);
      assert.deepEqual(mine, ["pending", "success"]);
    }
    const s = gitea.statuses.find((x) => x.context === "deploy/lxc151");
    assert.match(s?.target_url ?? "", /^http:\/\/127\.0\.0\.1:\d+\/status$/);
    assert.equal((await fleet("wait", rev, "--timeout", "20")).code, 0);
  });

  it("a failure, its repeat, and the recovery", async () => {
    // lxc110's page loses its "deploy-ok": its validate fails; the other three deploy.
    const bad = await pushToAll({
      "pages/lxc151.html": "<p>deploy-ok v2</p>\n",
      "pages/lxc110.html": "<p>oops</p>\n",
    });
    await until("lxc110 failure status", () => gitea.latest(bad, "deploy/lxc110") === "failure");
    await until("lxc151 success", () => gitea.latest(bad, "deploy/lxc151") === "success");
    await until("nothing-to-do successes", () =>
      ["lxc106", "lxc139"].every((h) => gitea.latest(bad, `deploy/${h}`) === "success"),
    );
    await until("failure notice", () => noticesOf(bad, "run.failed").length === 1);
    // A host posts its commit status, then its notice: wait for lxc151's, then give the two hosts with
    // nothing to do the same moment to show they send none.
    await until("lxc151's notice", () => noticesOf(bad, "run.succeeded").includes("lxc151"));
    await sleep(300);
    assert.deepEqual(noticesOf(bad, "run.succeeded"), ["lxc151"], "hosts with nothing to do send no notice");
    const failure = notices.find((n) => n.revision === bad && n.event === "run.failed");
    assert.equal(failure?.host, "lxc110");
    assert.equal(failure?.step, "page");
    assert.equal(failure?.error?.code, "COMMAND_FAILED");
    assert.match(
      gitea.statuses.find((s) => s.sha === bad && s.state === "failure")?.description ?? "",
      /^page: COMMAND_FAILED/,
    );

    const waited = await fleet("wait", bad, "--timeout", "3");
    assert.equal(waited.code, 1);
    assert.match(waited.stdout, /lxc110: page failed \(COMMAND_FAILED/);

    // The same failure again on the next push: a status for the new commit, no second notice (repeatMinutes).
    const again = await pushToAll({ "pages/lxc110.html": "<p>still wrong</p>\n" });
    await until("lxc110 failure on the repeat", () => gitea.latest(again, "deploy/lxc110") === "failure");
    await sleep(300);
    assert.deepEqual(noticesOf(again, "run.failed"), [], "a repeat within repeatMinutes is not sent again");

    const fixed = await pushToAll({ "pages/lxc110.html": "<p>lxc110 deploy-ok v3</p>\n" });
    await until("recovery notice", () => noticesOf(fixed, "run.succeeded").includes("lxc110"));
    assert.equal(gitea.latest(fixed, "deploy/lxc110"), "success");
    assert.equal((await fleet("wait", "HEAD", "--timeout", "20")).code, 0);
  });

  it("--token-file that is missing, empty or readable by others is a clear error, never INTERNAL", async () => {
    const file = path.join(fx.dir, "status-token");
    const missing = await fleet("status", "--token-file", file);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /error USAGE: --token-file .*status-token is missing or empty/);
    writeFileSync(file, "\n", { mode: 0o600 });
    const empty = await fleet("status", "--token-file", file);
    assert.match(empty.stderr, /error USAGE: --token-file .* is missing or empty/);
    writeFileSync(file, "a-status-token-0123456789\n");
    chmodSync(file, 0o644);
    const open = await fleet("status", "--token-file", file);
    assert.equal(open.code, 2, open.stderr);
    assert.match(
      open.stderr,
      /error CONFIG_INVALID: status token file .* is readable by others \(mode 0644\)/,
    );
    assert.doesNotMatch(open.stderr + open.stdout, /a-status-token-0123456789/);
    // A FIFO in its place (mode 0600, nobody writing): refused at once, never waited on.
    const fifo = path.join(fx.dir, "status-token.fifo");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const started = Date.now();
    const pipe = await fleet("status", "--token-file", fifo);
    assert.equal(pipe.code, 2, pipe.stderr);
    assert.match(
      pipe.stderr,
      /error CONFIG_INVALID: status token file .*status-token\.fifo is not a regular file/,
    );
    assert.ok(Date.now() - started < 10_000, "not blocked on the FIFO");
    chmodSync(file, 0o600);
    const ok = await fleet("status", "--token-file", file);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it("fleet status shows every host up to date; the stand-in Gitea refuses what real Gitea refuses", async () => {
    const res = await fleet("status");
    assert.equal(res.code, 0, res.stdout + res.stderr);
    for (const h of HOSTS)
      assert.match(
        res.stdout,
        new RegExp(`^${h} +[0-9a-f]{12} “update”; up to date; last run (succeeded|noop)`, "m"),
      );
    const json = JSON.parse((await fleet("status", "--json")).stdout) as {
      hosts: { host: string; behind: number }[];
    };
    assert.deepEqual(
      json.hosts.map((h) => h.behind),
      [0, 0, 0, 0],
    );

    assert.equal(badSignatures, 0);
    assert.deepEqual(gitea.refused, [], "every status the agents sent fit Gitea's schema");
    const sha = git(fx.pusher, "rev-parse", "HEAD");
    const post = (body: unknown, token = GITEA_TOKEN, at = sha) =>
      fetch(`${gitea.url}/repos/LotusGuild/matrix/statuses/${at}`, {
        method: "POST",
        headers: { authorization: `token ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then((r) => r.status);
    assert.equal(await post({ state: "bogus" }), 422);
    assert.equal(await post({ state: "success" }, "wrong"), 401);
    assert.equal(await post({ state: "success" }, GITEA_TOKEN, "0".repeat(40)), 404);
    for (const n of notices)
      assert.equal(JSON.stringify(n).includes(GITEA_TOKEN) || JSON.stringify(n).includes(SECRET), false);
  });
});
