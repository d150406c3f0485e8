import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../src/core/log.js";
import { Secret } from "../src/core/secret.js";
import { loadManifest } from "../src/manifest/load.js";
import type { DeployEvent } from "../src/notify/events.js";
import { createNotifier, notifySchema } from "../src/notify/notifier.js";
import { noticeText } from "../src/notify/targets/matrix.js";
import { createAgent } from "../src/server/agent.js";
import { runArgs, runCli, writeManifest } from "./helpers/agent.js";
import { makeFixture } from "./helpers/git.js";

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

const event = (n: number): DeployEvent => ({
  schema: "deploy-agent/event@1",
  event: "run.succeeded",
  host: "lxctest",
  revision: n.toString(16).padStart(40, "0"),
  at: new Date().toISOString(),
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
