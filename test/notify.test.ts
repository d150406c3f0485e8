import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../src/core/log.js";
import { redact } from "../src/core/redact.js";
import { Secret } from "../src/core/secret.js";
import type { RunReport } from "../src/deploy/run-report.js";
import { loadManifest } from "../src/manifest/load.js";
import { type DeployEvent, eventBase, runEvents } from "../src/notify/events.js";
import { createNotifier, notifySchema } from "../src/notify/notifier.js";
import { POSTED_FILE } from "../src/notify/posted.js";
import { giteaStatus } from "../src/notify/targets/gitea-status.js";
import { noticeText } from "../src/notify/targets/matrix.js";
import { createAgent } from "../src/server/agent.js";
import { acquireLock } from "../src/state/lock.js";
import { runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { makeFixture } from "./helpers/git.js";
import { startMatrixServer } from "./helpers/matrix-server.js";

/** The notifier on its own: what a dry run prints, and that a dead or slow target never holds anything up. */

let hanging: Server;
let hangingUrl: string;
/** Requests per path: each test sends to its own. */
const requests = new Map<string, number>();
before(async () => {
  hanging = createServer((req) => {
    requests.set(req.url ?? "", (requests.get(req.url ?? "") ?? 0) + 1); // and never answers
  });
  await new Promise<void>((done) => hanging.listen(0, "127.0.0.1", done));
  hangingUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
});
after(() => {
  hanging.closeAllConnections();
  return new Promise<void>((done) => hanging.close(() => done()));
});

const rev = (n: number) => n.toString(16).padStart(40, "0");
const event = (n: number): DeployEvent => ({
  schema: "deploy-agent/event@1",
  event: "run.succeeded",
  host: "lxctest",
  revision: rev(n),
  at: new Date().toISOString(),
});

const PIN = {
  revision: "a".repeat(40),
  reason: "v2 renders wrong",
  since: "2026-01-01T00:00:00.000Z",
  until: "2026-01-02T00:00:00.000Z",
  by: "jared",
};

/** A run's report as far as its events read it. */
const report = (revision: string, result: RunReport["result"], pinned: RunReport["pinned"]): RunReport => ({
  schema: "deploy-agent/run@1",
  host: "lxctest",
  dryRun: false,
  revision,
  previousHead: revision,
  result,
  suspended: null,
  pinned,
  rewrittenFrom: null,
  pendingRestart: [],
  warnings: [],
  steps: [],
  durationMs: 1,
});

/** A receiver on loopback that answers each request with the next status of `answers` (then 204). */
async function receiver(answers: number[] = []) {
  const bodies: string[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    bodies.push(Buffer.concat(chunks).toString("utf8"));
    res.writeHead(answers.shift() ?? 204);
    res.end();
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/notify`,
    bodies,
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}

describe("notifier", () => {
  it("a publish with nothing to send does not stop later ones", async () => {
    const r = await receiver();
    try {
      const notifier = createNotifier({
        config: () => notifySchema.parse({ targets: [{ kind: "webhook", url: r.url }] }),
        host: "lxctest",
        log: silentLogger(),
      });
      // run.started goes to commit statuses only: with a webhook alone, nothing is queued.
      notifier.publish({ ...event(1), event: "run.started" });
      notifier.publish({ ...event(1), nothingToDo: true });
      notifier.publish(event(2));
      await notifier.drain(5000);
      notifier.publish({ ...event(2), event: "run.started" });
      notifier.publish(event(3));
      await notifier.drain(5000);
      assert.deepEqual(
        r.bodies.map((b) => (JSON.parse(b) as DeployEvent).revision),
        [event(2).revision, event(3).revision],
      );
      assert.equal(notifier.status().queued, 0);
      assert.ok(notifier.status().targets.webhook?.lastSuccessAt);
    } finally {
      await r.close();
    }
  });

  it("commit statuses: once per revision and state; a push held by a pin on its own commit, pending, once", async () => {
    const r = await receiver();
    const hook = await receiver();
    try {
      const notifier = createNotifier({
        config: () =>
          notifySchema.parse({
            targets: [
              {
                kind: "gitea-status",
                api: r.url,
                repository: "LotusGuild/matrix",
                token: "gitea-token-0123",
              },
              { kind: "webhook", url: hook.url },
            ],
          }),
        host: "lxctest",
        log: silentLogger(),
      });
      const pinned = { ...PIN, newestRevision: rev(2) };
      notifier.publish({ ...event(1), event: "run.started" });
      notifier.publish(event(1));
      await notifier.drain(5000);
      // Polls and held pushes: run.started of a revision with its status, then nothing to do, twice.
      for (let i = 0; i < 2; i++) {
        notifier.publish({ ...event(1), event: "run.started" });
        for (const e of runEvents(report(rev(1), "noop", pinned), {
          host: "lxctest",
          revision: rev(1),
        }))
          notifier.publish(e);
      }
      await notifier.drain(5000);
      const posted = r.bodies.map((b) => JSON.parse(b) as { state: string; description: string });
      assert.deepEqual(
        posted.map((b) => b.state),
        ["pending", "success", "pending"],
        JSON.stringify(posted),
      );
      assert.equal(
        posted[2]?.description,
        `held: lxctest pinned at ${PIN.revision.slice(0, 12)} by jared until ${PIN.until}`,
      );
      assert.deepEqual(
        hook.bodies.map((b) => (JSON.parse(b) as DeployEvent).event),
        ["run.succeeded"],
        "a held push is no notice",
      );
    } finally {
      await r.close();
      await hook.close();
    }
  });

  it("run.held: only for a verified tip the pin holds back, described within Gitea's 140 characters", () => {
    const at = rev(1);
    const base = { host: "lxctest", revision: at, subject: "the pinned revision's subject" };
    const held = (rep: RunReport) => runEvents(rep, base).filter((e) => e.event === "run.held");
    // A state written before newestRevision was kept, a tip that is the pinned revision, a suspended host.
    assert.deepEqual(held(report(at, "noop", PIN)), []);
    assert.deepEqual(held(report(at, "noop", { ...PIN, newestRevision: at })), []);
    assert.deepEqual(held(report(at, "suspended", { ...PIN, newestRevision: rev(2) })), []);
    assert.deepEqual(held(report(at, "noop", null)), []);
    const [failed] = held(report(at, "failed", { ...PIN, newestRevision: rev(2) }));
    assert.equal(failed?.revision, rev(2));
    assert.equal(failed?.subject, undefined, "the pinned revision's subject is not the held commit's");
    const long = { ...PIN, by: "o".repeat(200), newestRevision: rev(2) };
    const [e] = held(report(at, "noop", long));
    assert.ok(e);
    const text = giteaStatus.describe(
      { kind: "gitea-status", api: "http://g/api/v1", repository: "a/b", token: new Secret("tok-0123456") },
      e,
      "lxctest",
    );
    const description = text.split(" to pending: ")[1] ?? "";
    assert.ok(description.startsWith("held: lxctest pinned at "), text);
    assert.equal(description.length, 140);
    // A held commit a newer tip replaced: final, no fault of its own, and it carries no other commit's subject.
    const [gone] = runEvents(
      {
        ...report(at, "noop", { ...PIN, newestRevision: rev(3) }),
        superseded: { revision: rev(2), by: rev(3) },
      },
      base,
    ).filter((x) => x.event === "run.superseded");
    assert.equal(gone?.revision, rev(2));
    assert.equal(gone?.subject, undefined);
    assert.ok(gone);
    assert.equal(
      giteaStatus.describe(
        { kind: "gitea-status", api: "http://g/api/v1", repository: "a/b", token: new Secret("tok-0123456") },
        gone,
        "lxctest",
      ),
      `would set a/b@${rev(2).slice(0, 12)} deploy/lxctest to warning: superseded by ${rev(3).slice(0, 12)}: never deployed on lxctest`,
    );
  });

  it("status: the queue at its bound, and a target's last failure with its error, then its success", async () => {
    const notifier = createNotifier({
      config: () =>
        notifySchema.parse({ queueLength: 3, targets: [{ kind: "webhook", url: `${hangingUrl}/bound` }] }),
      host: "lxctest",
      log: silentLogger(),
    });
    for (let i = 1; i <= 3; i++) notifier.publish(event(i));
    // The first is being sent (it hangs); the other two wait.
    assert.equal(notifier.status().queued, 2);
    for (let i = 4; i <= 10; i++) notifier.publish(event(i));
    assert.equal(notifier.status().queued, 3, "never more than queueLength");

    const r = await receiver([503, 503, 503, 400]);
    try {
      const failing = createNotifier({
        config: () => notifySchema.parse({ targets: [{ kind: "webhook", url: r.url, name: "hookshot" }] }),
        host: "lxctest",
        log: silentLogger(),
      });
      failing.publish(event(1)); // 503 three times: retried, then given up
      failing.publish({ ...event(1), event: "run.failed" }); // 400: not retried
      failing.publish({ ...event(2), event: "run.succeeded" }); // 204
      await failing.drain(10_000);
      assert.equal(r.bodies.length, 5);
      const t = failing.status().targets.hookshot;
      assert.equal(t?.lastError, "HTTP 400");
      assert.ok(t?.lastFailureAt && t.lastSuccessAt && t.lastSuccessAt >= t.lastFailureAt, JSON.stringify(t));
    } finally {
      await r.close();
    }
  });

  it("target names: the kind by default, -2 for a second of a kind, an explicit name; duplicates refused", () => {
    const hook = (url: string, name?: string) => ({ kind: "webhook", url, ...(name ? { name } : {}) });
    const notifier = createNotifier({
      config: () =>
        notifySchema.parse({
          targets: [
            hook("http://127.0.0.1:1/a"),
            hook("http://127.0.0.1:1/b"),
            hook("http://127.0.0.1:1/c", "ops"),
            { kind: "matrix", homeserver: "http://127.0.0.1:1", room: "!r:hs", token: "matrix-token-0123" },
          ],
        }),
      host: "lxctest",
      log: silentLogger(),
    });
    assert.deepEqual(Object.keys(notifier.status().targets), ["webhook", "webhook-2", "ops", "matrix"]);
    for (const bad of [
      [hook("http://127.0.0.1:1/a"), hook("http://127.0.0.1:1/b", "webhook")],
      [hook("http://127.0.0.1:1/a", "a b")],
      [hook("http://127.0.0.1:1/a", 'x"}')],
      [{ kind: "matrix", homeserver: "http://127.0.0.1:1", room: "#alias:hs", token: "t" }],
    ]) {
      assert.equal(notifySchema.safeParse({ targets: bad }).success, false, JSON.stringify(bad));
    }
  });

  it("bounds: queueLength 1..1000; a Matrix notice at most 4,000 characters, redacted before it is cut", () => {
    assert.equal(notifySchema.parse({ queueLength: 1000 }).queueLength, 1000);
    for (const queueLength of [0, 1001, 1.5])
      assert.equal(notifySchema.safeParse({ queueLength }).success, false);
    const token = new Secret("matrix-bound-Zq3Wv8Lk1Pm6Xr4T");
    const failed = (message: string) =>
      noticeText({
        ...event(1),
        event: "run.failed",
        step: "landing",
        error: { code: "COMMAND_FAILED", message },
      });
    // The token starts 20 characters before the cut (its 30 characters straddle it).
    const pad = "x".repeat(3980 - failed("").length);
    const text = failed(`${pad}${token.reveal()}${"y".repeat(100)}`);
    assert.equal(text.length, 4000);
    assert.ok(text.endsWith("…"));
    // The token straddled the cut: redacted first, so not even its first characters are left.
    assert.equal(text.includes("matrix-b"), false);
    assert.ok(text.includes("[redacted]"));
  });

  it("publish never waits, and the queue stays within queueLength, dropping the oldest", () => {
    const counted: string[] = [];
    const notifier = createNotifier({
      config: () =>
        notifySchema.parse({ queueLength: 5, targets: [{ kind: "webhook", url: `${hangingUrl}/queue` }] }),
      host: "lxctest",
      log: silentLogger(),
      count: (_t, result) => counted.push(result),
    });
    // Publishing never waits: 50 publishes return at once although the target never answers.
    const started = performance.now();
    for (let i = 1; i <= 50; i++) notifier.publish(event(i));
    assert.ok(performance.now() - started < 1000, "publish never waits for a send");
    // One is being sent (it hangs); the queue holds the last 5; the rest were dropped and counted.
    assert.equal(counted.filter((c) => c === "dropped").length, 44);
  });

  it("a dry run prints the notices it would send and sends none", async () => {
    const fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
    try {
      const root = path.join(fx.dir, "root");
      mkdirSync(path.join(root, "var/www"), { recursive: true });
      const manifest = writeManifest(fx.dir, {
        publicUrl: "http://10.10.10.27:9000",
        notify: {
          targets: [
            {
              kind: "gitea-status",
              api: "http://127.0.0.1:1/api/v1",
              repository: "LotusGuild/matrix",
              token: "gitea-token-0123456789",
            },
            { kind: "webhook", url: `${hangingUrl}/dry`, secret: "notify-secret-0123456789" },
          ],
        },
        steps: [
          { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
        ],
      });
      const res = await runCli([
        ...runArgs(manifest, fx.clone, root, path.join(fx.dir, "state")),
        "--dry-run",
      ]);
      assert.equal(res.code, 0, res.stderr);
      assert.match(
        res.stdout,
        /^notice: would set LotusGuild\/matrix@[0-9a-f]{12} deploy\/lxctest to pending: deploying$/m,
      );
      assert.match(
        res.stdout,
        /^notice: would set LotusGuild\/matrix@[0-9a-f]{12} deploy\/lxctest to success: deployed/m,
      );
      assert.match(
        res.stdout,
        /^notice: would POST run\.succeeded to http:\/\/127\.0\.0\.1:\d+\/dry \(signed\)$/m,
      );
      assert.equal(requests.get("/dry"), undefined, "nothing was sent");
      assert.equal(res.stdout.includes("gitea-token-0123456789"), false);
    } finally {
      fx.cleanup();
    }
  });

  it("a hand-run run refused LOCKED tells its operator, not the room: no notice; the next run's is sent", async () => {
    const fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
    const got: string[] = [];
    const receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => {
        body += c.toString("utf8");
      });
      req.on("end", () => {
        got.push((JSON.parse(body) as DeployEvent).event);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((done) => receiver.listen(0, "127.0.0.1", done));
    try {
      const root = path.join(fx.dir, "root");
      const stateDir = path.join(fx.dir, "state");
      mkdirSync(path.join(root, "var/www"), { recursive: true });
      mkdirSync(stateDir, { mode: 0o700 });
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/notices`;
      const manifest = writeManifest(fx.dir, {
        notify: { targets: [{ kind: "webhook", url, secret: "notify-secret-0123456789" }] },
        steps: [
          { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
        ],
      });
      // Another run (the daemon's) holds the deploy lock.
      const held = await acquireLock(stateDir);
      const refused = await runCli(runArgs(manifest, fx.clone, root, stateDir));
      await held.release();
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /error LOCKED: another deploy/);
      assert.deepEqual(got, [], "the operator reads LOCKED in the terminal; the room hears nothing of it");
      const next = await runCli(runArgs(manifest, fx.clone, root, stateDir));
      assert.equal(next.code, 0, next.stderr);
      assert.deepEqual(got, ["run.succeeded"], "the same target takes the next run's notice");
    } finally {
      receiver.close();
      fx.cleanup();
    }
  });

  it("a daemon in --dry-run sends no notice, for its runs either", async () => {
    const fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
    try {
      const root = path.join(fx.dir, "root");
      mkdirSync(path.join(root, "var/www"), { recursive: true });
      const { manifest } = await loadManifest(
        writeManifest(fx.dir, {
          notify: {
            targets: [
              {
                kind: "gitea-status",
                api: `${hangingUrl}/dry-daemon`,
                repository: "o/r",
                token: "gitea-token-0123456789",
              },
              { kind: "webhook", url: `${hangingUrl}/dry-daemon` },
            ],
          },
          steps: [
            { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
          ],
        }),
        { processEnv: {} },
      );
      const agent = createAgent({
        manifest,
        repoDir: fx.clone,
        stateDir: path.join(fx.dir, "state"),
        root,
        dryRun: true,
        log: silentLogger(),
      });
      agent.request({ kind: "poll" });
      await agent.runner.idle();
      assert.equal(agent.runner.state().started.deploy ?? 0, 1);
      await agent.close();
      assert.deepEqual(
        [...requests.keys()].filter((k) => k.startsWith("/dry-daemon")),
        [],
      );
    } finally {
      fx.cleanup();
    }
  });
});

describe("notifier: hostile texts and servers", () => {
  it("a commit subject of 200,000 characters: the event carries a bounded part, redaction stays linear", () => {
    for (const text of ["a.".repeat(100_000), "http://".repeat(30_000), "x://".repeat(50_000)]) {
      const started = performance.now();
      redact(text);
      assert.ok(performance.now() - started < 1000, `redacting ${text.slice(0, 8)}… took under a second`);
    }
    const subject = "a.".repeat(100_000);
    const base = eventBase({ host: "lxctest" }, "1".repeat(40), subject);
    assert.ok((base.subject?.length ?? 0) <= 200, "the subject is cut");
    assert.ok(base.subject?.startsWith("a.a.") && base.subject.endsWith("…"));
    // What redaction strips is still stripped.
    assert.equal(
      redact("see https://user:pw@host.test/x?token=abc and Bearer abc.def"),
      "see https://host.test/x?[redacted] and Bearer [redacted]",
    );
    // Credentials in a URL right after a long word (git's output, a hash glued to it): stripped as ever.
    const glued = `${"deadbeef".repeat(5)}https://deploy:hunter2-pat@git.test/r.git`;
    assert.equal(
      redact(`clone failed: ${glued}`),
      `clone failed: ${"deadbeef".repeat(5)}https://git.test/r.git`,
    );
    assert.equal(
      redact(`${"x".repeat(40)}+ssh://deploy:hunter2-pat@git.test/`),
      `${"x".repeat(40)}+ssh://git.test/`,
    );
  });

  it("a Matrix notice mentions nobody: @room or a user's id in a commit subject pings no one", async () => {
    const matrix = await startMatrixServer({
      roomId: "!deploys:matrix.test",
      users: { "mx-token-0123456789": { userId: "@deploy-agent:matrix.test", powerLevel: 100 } },
    });
    try {
      const notifier = createNotifier({
        config: () =>
          notifySchema.parse({
            targets: [
              {
                kind: "matrix",
                homeserver: matrix.url,
                room: "!deploys:matrix.test",
                token: "mx-token-0123456789",
              },
            ],
          }),
        host: "lxctest",
        log: silentLogger(),
      });
      notifier.publish({ ...event(7), subject: "@room wake up, @alice:matrix.test" });
      await notifier.drain(5000);
      assert.equal(matrix.messages.length, 1);
      const content = matrix.messages[0]?.content ?? {};
      assert.match(String(content.body), /@room wake up/);
      assert.deepEqual(content["m.mentions"], {}, "an empty m.mentions: no @room, no user pinged");
    } finally {
      await matrix.close();
    }
  });

  it("a Matrix 429 that gives its wait only as retry_after_ms (no Retry-After) is waited for", async () => {
    let limitedUntil = 0;
    const at: number[] = [];
    const server = createServer(async (req, res) => {
      for await (const _ of req);
      at.push(Date.now());
      if (limitedUntil === 0) limitedUntil = Date.now() + 2000;
      if (Date.now() < limitedUntil) {
        res.writeHead(429, { "content-type": "application/json" });
        return res.end(
          JSON.stringify({ errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests", retry_after_ms: 2000 }),
        );
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ event_id: "$1" }));
    });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    try {
      const results: string[] = [];
      const notifier = createNotifier({
        config: () =>
          notifySchema.parse({
            targets: [
              {
                kind: "matrix",
                homeserver: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
                room: "!deploys:matrix.test",
                token: "mx-token-0123456789",
              },
            ],
          }),
        host: "lxctest",
        log: silentLogger(),
        random: () => 0,
        count: (_t, result) => results.push(result),
      });
      notifier.publish(event(8));
      await notifier.drain(10_000);
      assert.deepEqual(results, ["sent"], `requests at ${at.map((t) => t - (at[0] ?? 0)).join(", ")} ms`);
      assert.equal(at.length, 2, "one wait of retry_after_ms, then sent");
    } finally {
      await new Promise<void>((done) => server.close(() => done()));
    }
  });
});

/** A notify section with one gitea-status target at `api`. */
const giteaOnly = (api: string, extra: Record<string, unknown> = {}) =>
  notifySchema.parse({
    ...extra,
    targets: [
      { kind: "gitea-status", api, repository: "LotusGuild/matrix", token: "gitea-token-0123456789" },
    ],
  });

describe("notifier: a commit status Gitea never got", () => {
  it("is sent again by the next run for that revision (a poll with nothing to do), once Gitea answers", async () => {
    // Gitea down for the first notice's three attempts, then up.
    const gitea = await receiver([503, 503, 503]);
    try {
      const notifier = createNotifier({
        config: () => giteaOnly(gitea.url),
        host: "lxctest",
        log: silentLogger(),
        retry: { backoffMs: 10 },
      });
      notifier.publish(event(9));
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 3, "three attempts, all refused");
      // The next poll finds nothing to do for the same revision.
      notifier.publish({ ...event(9), nothingToDo: true });
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 4, "the status Gitea never got is sent again");
      assert.equal(JSON.parse(gitea.bodies[3] ?? "{}").state, "success");
      // Now that Gitea has it: once, as before.
      notifier.publish({ ...event(9), nothingToDo: true });
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 4);
    } finally {
      await gitea.close();
    }
  });

  it("two Gitea targets, one down: the next run sends it again to that one only", async () => {
    const up = await receiver();
    const down = await receiver([503, 503, 503]);
    try {
      const target = (api: string, name: string) => ({
        kind: "gitea-status",
        name,
        api,
        repository: "LotusGuild/matrix",
        token: "gitea-token-0123456789",
      });
      const notifier = createNotifier({
        config: () => notifySchema.parse({ targets: [target(up.url, "code"), target(down.url, "mirror")] }),
        host: "lxctest",
        log: silentLogger(),
        retry: { backoffMs: 10 },
      });
      notifier.publish(event(7));
      await notifier.drain(5000);
      assert.equal(up.bodies.length, 1);
      assert.equal(down.bodies.length, 3, "three attempts, all refused");
      notifier.publish({ ...event(7), nothingToDo: true });
      await notifier.drain(5000);
      assert.equal(down.bodies.length, 4, "the target that missed it gets it");
      assert.equal(up.bodies.length, 1, "the target that has it is not sent it twice");
    } finally {
      await up.close();
      await down.close();
    }
  });

  it("one process after another (CLI runs, a restarted daemon): a status Gitea took is not posted again", async () => {
    const gitea = await receiver([503, 503, 503]);
    const dir = mkdtempSync(path.join(tmpdir(), "posted-"));
    const process = () =>
      createNotifier({
        config: () => giteaOnly(gitea.url),
        host: "lxctest",
        log: silentLogger(),
        stateDir: dir,
        retry: { backoffMs: 10 },
      });
    try {
      // The first process's status is refused: nothing recorded, so the next process sends it.
      let notifier = process();
      notifier.publish(event(5));
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 3);
      notifier = process();
      notifier.publish({ ...event(5), nothingToDo: true });
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 4, "Gitea never had it: sent by the next process");
      const file = path.join(dir, POSTED_FILE);
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(readFileSync(file, "utf8").includes("gitea-token"), false);
      for (let i = 0; i < 2; i++) {
        notifier = process();
        notifier.publish({ ...event(5), event: "run.started" });
        notifier.publish({ ...event(5), nothingToDo: true });
        await notifier.drain(5000);
      }
      assert.equal(gitea.bodies.length, 4, "the next processes know Gitea has it");

      // A record that is not ours (damaged, hand-edited) is read as none: statuses go out, never fail.
      writeFileSync(file, "{ not json");
      notifier = process();
      notifier.publish({ ...event(5), event: "run.failed" });
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 5);
      assert.equal(JSON.parse(gitea.bodies[4] ?? "{}").state, "failure");
      assert.match(readFileSync(file, "utf8"), /^\{"schema":"deploy-agent\/commit-statuses@1"/);
    } finally {
      await gitea.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a commit status dropped from a full queue is sent again by the next run for that revision", async () => {
    const gitea = await receiver();
    try {
      const dropped: string[] = [];
      const notifier = createNotifier({
        config: () => giteaOnly(gitea.url, { queueLength: 1 }),
        host: "lxctest",
        log: silentLogger(),
        count: (_t, result) => result === "dropped" && dropped.push(result),
      });
      // 10 is being sent, 11 waits, 12 pushes 11 out of the queue.
      for (const n of [10, 11, 12]) notifier.publish(event(n));
      await notifier.drain(5000);
      assert.deepEqual(dropped, ["dropped"]);
      assert.equal(gitea.bodies.length, 2);
      notifier.publish({ ...event(11), nothingToDo: true });
      await notifier.drain(5000);
      assert.equal(gitea.bodies.length, 3, "the dropped status is sent by the next run for 11");
    } finally {
      await gitea.close();
    }
  });
});
