import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { DeployEvent } from "../src/notify/events.js";
import {
  hostRoot,
  runArgs,
  runCli,
  type Served,
  serveArgs,
  startCli,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, git, hasCommit, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";
import { type GiteaApi, startGiteaApi } from "./helpers/gitea-api.js";
import { type MatrixTestServer, startMatrixServer } from "./helpers/matrix-server.js";
import { needs } from "./helpers/needs.js";
import { ALLOWED_SIGNERS, trustedSigner } from "./helpers/signing.js";

/**
 * Notifications against the real `serve` process and three real receivers on loopback (a Gitea API test
 * server, a Matrix test homeserver, a signature-checking webhook receiver):
 * - runs that publish nothing (Gitea's Test Delivery, a push that changes nothing for the host, a start-up
 *   with only webhook targets) never stop later notices;
 * - a registered secret printed by a failing step reaches no request body of any target, and no log line;
 * - a push held by a pin has its own commit say so (pending, held), once, and no notice; so has the
 *   revision the host ran when it was pinned, and a held commit a newer push replaces ends superseded;
 * - a push the host refuses (unsigned) has its own commit say why (error).
 */

const SECRET = "attack-notify-webhook-secret-0123";
const GITEA_TOKEN = "gitea-Tq84LxZr2W9mKp7vNc3HsBe5";
const MATRIX_TOKEN = "mx-notify-Jd5Rb8YwQ1tVe6Ua4FoGi2";
const NOTIFY_SECRET = "notify-hmac-secret-attack-0123456789";
const ROOM = "!deploys:matrix.test";

let fx: Fixture;
let root: string;
let gitea: GiteaApi;
let matrix: MatrixTestServer;
let receiver: Server;
let receiverUrl: string;
/** The raw bodies the webhook receiver got, and the events among them whose signature was right. */
let hookBodies: string[];
let notices: DeployEvent[];
let badSignatures: number;
let daemon: Served | undefined;

beforeEach(async () => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n", "docs/readme.txt": "not deployed\n" });
  root = hostRoot(fx.dir, SECRET);
  hookBodies = [];
  notices = [];
  badSignatures = 0;
  gitea = await startGiteaApi({
    token: GITEA_TOKEN,
    repository: "LotusGuild/matrix",
    knows: (sha) => hasCommit(fx.pusher, sha),
  });
  matrix = await startMatrixServer({
    roomId: ROOM,
    users: { [MATRIX_TOKEN]: { userId: "@deploy-agent:matrix.test", powerLevel: 0 } },
  });
  receiver = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    hookBodies.push(body.toString("utf8"));
    const want = `sha256=${createHmac("sha256", NOTIFY_SECRET).update(body).digest("hex")}`;
    if (req.method !== "POST" || req.headers["x-signature"] !== want) {
      badSignatures++;
      res.writeHead(401);
      return res.end();
    }
    notices.push(JSON.parse(body.toString("utf8")) as DeployEvent);
    res.writeHead(204);
    res.end();
  });
  await new Promise<void>((done) => receiver.listen(0, "127.0.0.1", done));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/deploy-agent`;
});

afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  await gitea.close();
  await matrix.close();
  receiver.closeAllConnections();
  await new Promise((done) => receiver.close(done));
  fx.cleanup();
});

const TARGETS = {
  gitea: {
    kind: "gitea-status",
    api: "${GITEA_API}",
    repository: "LotusGuild/matrix",
    token: "${GITEA_TOKEN}",
  },
  matrix: { kind: "matrix", homeserver: "${MATRIX_HS}", room: ROOM, token: "${NOTIFY_MATRIX_TOKEN}" },
  webhook: { kind: "webhook", url: "${NOTIFY_URL}", secret: "${NOTIFY_SECRET}" },
};

/** `serve` with the given notify targets (tokens from the env file) and one file step; returns its URL. */
async function serve(
  targets: object[],
  step: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): Promise<string> {
  writeFileSync(
    path.join(root, "etc/deploy-agent/notify.env"),
    [
      `GITEA_API=${gitea.url}`,
      `GITEA_TOKEN=${GITEA_TOKEN}`,
      `MATRIX_HS=${matrix.url}`,
      `NOTIFY_MATRIX_TOKEN=${MATRIX_TOKEN}`,
      `NOTIFY_URL=${receiverUrl}`,
      `NOTIFY_SECRET=${NOTIFY_SECRET}`,
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  const manifest = writeManifest(fx.dir, {
    envFile: "/etc/deploy-agent/notify.env",
    publicUrl: "http://127.0.0.1:9000",
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    notify: { targets },
    ...extra,
    steps: [
      {
        name: "landing",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/index.html"],
        ...step,
      },
    ],
  });
  daemon = startCli([...serveArgs(manifest, fx.clone, root), "--state-dir", path.join(fx.dir, "state")]);
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  return /"address":"(http:\/\/[^"]+)"/.exec(line)?.[1] ?? "";
}

async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}\n${daemon?.out().slice(-3000)}`);
    await sleep(50);
  }
}

interface Status {
  queue: { running: boolean; pending: boolean; runsStarted: number };
  lastRun: { revision: string; result: string } | null;
  notifications: {
    queued: number;
    targets: Record<
      string,
      { lastSuccessAt: string | null; lastFailureAt: string | null; lastError: string | null }
    >;
  };
}

const status = async (url: string) => (await (await fetch(`${url}/status`)).json()) as Status;

/** Delivers a signed push (before..after) as Gitea does and waits until the run it causes has finished. */
async function deliver(url: string, before: string, after: string): Promise<Status> {
  const runs = (await status(url)).queue.runsStarted;
  const body = pushBody({ before, after });
  const res = await fetch(`${url}/hooks/deploy`, {
    method: "POST",
    headers: giteaHeaders(body, SECRET),
    body: new Uint8Array(body),
  });
  assert.equal(res.status, 202);
  let s = await status(url);
  await until(`the run for ${after.slice(0, 12)}`, async () => {
    s = await status(url);
    return s.queue.runsStarted > runs && !s.queue.running && !s.queue.pending;
  });
  return s;
}

async function startedUp(url: string): Promise<Status> {
  let s = await status(url);
  await until("the start-up run", async () => {
    s = await status(url);
    return s.queue.runsStarted >= 1 && !s.queue.running && !s.queue.pending;
  });
  return s;
}

/** The CLI on this test's host, as the operator jared runs it (sudo), with the daemon's state directory. */
const operatorCli = (manifest: string, ...args: string[]) =>
  runCli([...args, ...runArgs(manifest, fx.clone, root, path.join(fx.dir, "state")).slice(1)], {
    SUDO_USER: "jared",
  });
const head = () => git(fx.pusher, "rev-parse", "HEAD");
const noticesFor = (rev: string) => notices.filter((n) => n.revision === rev).map((n) => n.event);
const messagesAbout = (rev: string) =>
  matrix.messages.filter((m) => String(m.content.body).includes(rev.slice(0, 12)));

async function metrics(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

describe("attack: notices never stall", () => {
  it("webhook targets only: a start-up, a Test Delivery and a push with nothing for the host publish nothing, and every later notice is sent", async () => {
    const url = await serve([TARGETS.webhook]);
    const rev0 = head();
    // The start-up run's "run.started" goes to no webhook: it publishes nothing.
    await until("the start-up notice", () => noticesFor(rev0).includes("run.succeeded"));

    // Gitea's Test Delivery: before == after, nothing to deploy.
    let s = await deliver(url, rev0, rev0);
    assert.equal(s.lastRun?.result, "noop");
    // A push that changes nothing this host deploys.
    const rev1 = fx.push({ "docs/readme.txt": "still not deployed\n" }, "docs only");
    s = await deliver(url, rev0, rev1);
    assert.equal(s.lastRun?.result, "noop");

    const rev2 = fx.push({ "landing/index.html": "<p>v2</p>\n" }, "landing v2");
    const published = Date.now();
    await deliver(url, rev1, rev2);
    await until("the notice of the deploy after the no-ops", () =>
      noticesFor(rev2).includes("run.succeeded"),
    );
    // Another round: a no-op, then a deploy.
    await deliver(url, rev2, rev2);
    const rev3 = fx.push({ "landing/index.html": "<p>v3</p>\n" }, "landing v3");
    await deliver(url, rev2, rev3);
    await until("the notice of the next deploy", () => noticesFor(rev3).includes("run.succeeded"));

    assert.deepEqual(noticesFor(rev1), [], "a push with nothing for the host sends no notice");
    assert.equal(badSignatures, 0);
    await until("the queue is empty", async () => (await status(url)).notifications.queued === 0);
    s = await status(url);
    assert.deepEqual(Object.keys(s.notifications.targets), ["webhook"]);
    const hook = s.notifications.targets.webhook;
    assert.ok(
      hook?.lastSuccessAt && Date.parse(hook.lastSuccessAt) >= published - 1000,
      JSON.stringify(hook),
    );
    assert.equal(hook.lastFailureAt, null);
    assert.equal(hook.lastError, null);

    const text = await metrics(url);
    assert.match(text, /^deploy_agent_notify_queue_length\{host="lxctest"\} 0$/m);
    const at =
      /^deploy_agent_notify_last_success_timestamp_seconds\{[^}]*target="webhook"[^}]*\} ([\d.e+]+)$/m.exec(
        text,
      );
    assert.ok(at, text);
    assert.ok(Math.abs(Number(at[1]) * 1000 - Date.parse(hook.lastSuccessAt)) < 1000);
  });

  it("Gitea, Matrix and webhook targets: a Test Delivery and a no-op push between deploys stop nothing", async () => {
    const url = await serve([TARGETS.gitea, TARGETS.matrix, TARGETS.webhook]);
    const rev0 = head();
    await startedUp(url);
    await until("the start-up notices", () => noticesFor(rev0).includes("run.succeeded"));
    await until("the start-up message", () => messagesAbout(rev0).length === 1);
    await until("the start-up status", () => gitea.latest(rev0, "deploy/lxctest") === "success");

    // Test Delivery: the commit status of rev0 is already posted, so nothing is queued.
    assert.equal((await deliver(url, rev0, rev0)).lastRun?.result, "noop");
    const rev1 = fx.push({ "docs/readme.txt": "still not deployed\n" }, "docs only");
    assert.equal((await deliver(url, rev0, rev1)).lastRun?.result, "noop");
    await until("the no-op push's commit status", () => gitea.latest(rev1, "deploy/lxctest") === "success");
    assert.equal(
      gitea.statuses.find((x) => x.sha === rev1 && x.state === "success")?.description,
      "nothing to deploy for this commit",
    );
    await deliver(url, rev1, rev1);

    const rev2 = fx.push({ "landing/index.html": "<p>v2</p>\n" }, "landing v2");
    await deliver(url, rev1, rev2);
    await until("rev2's commit status", () => gitea.latest(rev2, "deploy/lxctest") === "success");
    await until("rev2's notice", () => noticesFor(rev2).includes("run.succeeded"));
    await until("rev2's message", () => messagesAbout(rev2).length === 1);

    assert.deepEqual(noticesFor(rev1), []);
    assert.equal(messagesAbout(rev1).length, 0);
    const message = messagesAbout(rev2)[0];
    assert.equal(message?.type, "m.room.message");
    assert.equal(message?.content.msgtype, "m.notice");
    assert.match(String(message?.content.body), /lxctest deployed [0-9a-f]{12} “landing v2”/);
    assert.deepEqual(gitea.refused, []);
    assert.equal(badSignatures, 0);

    await until("the queue is empty", async () => (await status(url)).notifications.queued === 0);
    const s = await status(url);
    assert.deepEqual(Object.keys(s.notifications.targets).sort(), ["gitea-status", "matrix", "webhook"]);
    for (const [name, t] of Object.entries(s.notifications.targets)) {
      assert.ok(t.lastSuccessAt, `${name} sent`);
      assert.equal(t.lastError, null, name);
    }
    const text = await metrics(url);
    for (const name of ["gitea-status", "matrix", "webhook"]) {
      assert.match(
        text,
        new RegExp(
          `^deploy_agent_notify_last_success_timestamp_seconds\\{[^}]*target="${name}"[^}]*\\} \\d`,
          "m",
        ),
      );
    }
  });
});

describe("attack: notices pass the redaction point", () => {
  it("a failing step prints two registered secrets: no body any target receives, and no log line, holds them", async () => {
    const leak = path.join(fx.dir, "leak");
    const argv = ["sh", "-c", `cat ${leak} >&2; exit 7`];
    // Place the Gitea token where the commit status's 140-character description is cut: a cut made before
    // redaction would leave its first characters in the description.
    const before = `landing: COMMAND_FAILED: ${argv.join(" ")} exited with code 7: `;
    const pad = ".".repeat(Math.max(0, 125 - before.length));
    assert.ok(before.length + pad.length < 140 && before.length + pad.length + GITEA_TOKEN.length > 140);
    writeFileSync(leak, `${pad}${GITEA_TOKEN} and the Matrix token ${MATRIX_TOKEN}\n`);

    const url = await serve([TARGETS.gitea, TARGETS.matrix, TARGETS.webhook], { reload: [argv] });
    await startedUp(url);
    const rev0 = head();
    await until("the start-up failure notice", () => noticesFor(rev0).includes("run.failed"));
    await until("the start-up failure message", () =>
      matrix.messages.some((m) => String(m.content.body).includes("COMMAND_FAILED")),
    );
    await until("the failure status", () => gitea.latest(rev0, "deploy/lxctest") === "failure");

    const failed = notices.find((n) => n.event === "run.failed");
    assert.match(
      failed?.error?.message ?? "",
      /exited with code 7: \.*\[redacted\] and the Matrix token \[redacted\]/,
    );
    const description = gitea.statuses.find((x) => x.state === "failure")?.description ?? "";
    assert.match(description, /^landing: COMMAND_FAILED: sh -c cat .* exited with code 7: \.*\[redacted\]/);
    assert.ok(description.length <= 140, description);
    const body = String(
      matrix.messages.find((m) => String(m.content.body).includes("COMMAND_FAILED"))?.content.body,
    );
    assert.match(body, /\[redacted\] and the Matrix token \[redacted\]/);

    const bodies = [
      ...hookBodies,
      ...gitea.bodies,
      ...matrix.requests.filter((r) => r.method === "PUT").map((r) => r.body),
    ];
    assert.ok(bodies.length >= 5, `${bodies.length} bodies`);
    for (const secret of [GITEA_TOKEN, MATRIX_TOKEN]) {
      // Any 10 characters of it in a row: a cut secret counts as leaked.
      for (let i = 0; i + 10 <= secret.length; i++) {
        const piece = secret.slice(i, i + 10);
        for (const b of bodies) assert.equal(b.includes(piece), false, `"${piece}" reached a target: ${b}`);
      }
      assert.equal(daemon?.out().includes(secret), false, "a log line holds the secret");
    }
    assert.equal(badSignatures, 0, "the signature is over the body as sent");
  });
});

describe("attack: a push held by a pin", () => {
  it("the pushed commit's status is pending and says who holds it until when; the pinned revision's is left alone", async () => {
    const url = await serve([TARGETS.gitea, TARGETS.webhook]);
    await startedUp(url);
    const rev0 = head();
    await until("the start-up status", () => gitea.latest(rev0, "deploy/lxctest") === "success");
    const rev1 = fx.push({ "landing/index.html": "<p>v2 renders wrong</p>\n" }, "landing v2");
    await deliver(url, rev0, rev1);
    await until("rev1's status", () => gitea.latest(rev1, "deploy/lxctest") === "success");

    const stateDir = path.join(fx.dir, "state");
    const cli = (...args: string[]) => operatorCli(path.join(fx.dir, "manifest.yaml"), ...args);
    const pin = await cli("pin", rev0, "--reason", "v2 renders wrong", "--until", "2h");
    assert.equal(pin.code, 0, pin.stderr);
    const { until: meant } = (
      JSON.parse(readFileSync(path.join(stateDir, "state.json"), "utf8")) as { pinned: { until: string } }
    ).pinned;
    const onRev0 = gitea.statuses.filter((x) => x.sha === rev0).length;
    // rev1, which the host ran, runs no more: the CLI's pin tells its commit it is held.
    assert.deepEqual(
      gitea.statuses
        .filter((x) => x.sha === rev1)
        .map((x) => [x.state, x.description])
        .at(-1),
      ["pending", `held: lxctest pinned at ${rev0.slice(0, 12)} by jared until ${meant}`],
    );

    const rev2 = fx.push({ "landing/index.html": "<p>v3 with the fix</p>\n" }, "landing v3");
    await deliver(url, rev1, rev2);
    await until("the held push's status", () => gitea.statuses.some((x) => x.sha === rev2));
    // Whatever else the run sent has had the time to arrive (the queue is empty, the last request answered).
    await until("the queue is empty", async () => (await status(url)).notifications.queued === 0);
    await sleep(500);
    const held = gitea.statuses.filter((x) => x.sha === rev2);
    assert.deepEqual(
      held.map((x) => [x.state, x.context, x.description]),
      [["pending", "deploy/lxctest", `held: lxctest pinned at ${rev0.slice(0, 12)} by jared until ${meant}`]],
    );
    assert.ok((held[0]?.description.length ?? 0) <= 140);
    assert.equal(held[0]?.target_url, "http://127.0.0.1:9000/status");
    // The run deployed the pinned revision (nothing to do): its commit keeps its status.
    assert.equal(
      gitea.statuses.filter((x) => x.sha === rev0).length,
      onRev0,
      `the held push's run posted on the pinned revision: ${JSON.stringify(gitea.statuses.filter((x) => x.sha === rev0))}`,
    );
    assert.equal(gitea.latest(rev0, "deploy/lxctest"), "success");
    // The daemon's run replaced the held rev1 by rev2: rev1 will never be deployed, and says so, once.
    assert.deepEqual(
      gitea.statuses
        .filter((x) => x.sha === rev1)
        .map((x) => [x.state, x.description])
        .slice(-2),
      [
        ["pending", `held: lxctest pinned at ${rev0.slice(0, 12)} by jared until ${meant}`],
        ["warning", `superseded by ${rev2.slice(0, 12)}: never deployed on lxctest`],
      ],
    );

    // The same push again (a redelivery, a poll): held is said once, and the pinned revision is left alone.
    await deliver(url, rev2, rev2);
    await until("the queue is empty", async () => (await status(url)).notifications.queued === 0);
    await sleep(500);
    assert.equal(gitea.statuses.filter((x) => x.sha === rev2).length, 1);
    assert.equal(gitea.statuses.filter((x) => x.sha === rev0).length, onRev0);
    assert.equal(gitea.latest(rev1, "deploy/lxctest"), "warning");
    assert.equal(gitea.statuses.filter((x) => x.sha === rev1 && x.state === "warning").length, 1);
    assert.deepEqual(noticesFor(rev2), [], "a held push is no notice: only its commit status says it");

    // unpin deploys it: its status ends success.
    const unpin = await cli("unpin");
    assert.equal(unpin.code, 0, unpin.stderr);
    assert.equal(gitea.latest(rev2, "deploy/lxctest"), "success");
    assert.deepEqual(gitea.refused, []);
  });
});

describe("attack: a push the host refuses", () => {
  it("an unsigned commit's own status says it was refused and why; a signed one after it deploys", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const jared = trustedSigner(fx, root);
    const url = await serve(
      [TARGETS.gitea, TARGETS.webhook],
      {},
      {
        repo: { verify: { mode: "tip", allowedSignersFile: ALLOWED_SIGNERS } },
      },
    );
    // The fixture's first commit is not signed: the start-up run refuses it, and says so on it.
    const rev0 = head();
    await startedUp(url);
    await until("the refused start-up's status", () => gitea.latest(rev0, "deploy/lxctest") === "error");
    const rev1 = jared.push({ "landing/index.html": "<p>signed</p>\n" }, "signed");
    await deliver(url, rev0, rev1);
    await until("rev1's status", () => gitea.latest(rev1, "deploy/lxctest") === "success");

    const rev2 = fx.push({ "landing/index.html": "<p>not signed</p>\n" }, "unsigned");
    await deliver(url, rev1, rev2);
    await until("the refused push's status", () => gitea.latest(rev2, "deploy/lxctest") === "error");
    const refused = gitea.statuses.filter((x) => x.sha === rev2);
    assert.deepEqual(
      refused.map((x) => x.state),
      ["error"],
      "refused before it started: never pending",
    );
    assert.match(
      refused[0]?.description ?? "",
      new RegExp(`^UNVERIFIED: commit ${rev2.slice(0, 12)} is not signed by a trusted key`),
    );
    assert.ok((refused[0]?.description.length ?? 0) <= 140);
    assert.equal(readFileSync(path.join(root, "var/www/index.html"), "utf8"), "<p>signed</p>\n");
    assert.deepEqual(gitea.refused, []);
  });
});

describe("attack: a pinned revision refused at its run", () => {
  it("the error goes on the pinned revision it is about, never on the tip that passed", {
    skip: needs("ssh", ["-V"], "apt-get install openssh-client (ssh-keygen); .ci/run does"),
  }, async () => {
    const k1 = trustedSigner(fx, root, "k1");
    const k2 = trustedSigner(fx, root, "k2");
    const signed = (content: string, by: typeof k1) => by.push({ "landing/index.html": content }, content);
    writeFileSync(
      path.join(root, "etc/deploy-agent/notify.env"),
      `GITEA_API=${gitea.url}\nGITEA_TOKEN=${GITEA_TOKEN}\n`,
      { mode: 0o600 },
    );
    const manifest = writeManifest(fx.dir, {
      envFile: "/etc/deploy-agent/notify.env",
      webhook: { pollIntervalSeconds: 0 },
      repo: { verify: { mode: "tip", allowedSignersFile: ALLOWED_SIGNERS } },
      notify: { targets: [TARGETS.gitea] },
      steps: [
        { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
      ],
    });
    const cli = (...args: string[]) => operatorCli(manifest, ...args);
    const a = signed("<p>a</p>\n", k1);
    assert.equal((await cli("run")).code, 0);
    signed("<p>b</p>\n", k1);
    assert.equal((await cli("run")).code, 0);
    assert.equal((await cli("pin", a, "--reason", "b is bad")).code, 0);
    const c = signed("<p>c</p>\n", k2);
    // k1 is revoked: a, pinned, is no longer trusted; c, the tip, is.
    k1.revoke();
    const run = await cli("run");
    assert.equal(run.code, 1);
    assert.match(run.stderr, /UNVERIFIED/);
    assert.equal(gitea.latest(a, "deploy/lxctest"), "error", "the pinned revision is the one refused");
    assert.deepEqual(
      gitea.statuses.filter((x) => x.sha === c).map((x) => x.state),
      [],
      "c passed verification: no error status on it",
    );
  });
});
