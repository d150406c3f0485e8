import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { silentLogger } from "../src/log.js";
import { loadManifest } from "../src/manifest/load.js";
import type { DeployEvent } from "../src/notify/events.js";
import { createNotifier, notifySchema } from "../src/notify/notifier.js";
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

describe("notifier", () => {
  it("publish never waits, and the queue stays within queueLength, dropping the oldest", () => {
    const counted: string[] = [];
    const notifier = createNotifier({
      config: () =>
        notifySchema.parse({ queueLength: 5, targets: [{ kind: "webhook", url: `${hangingUrl}/queue` }] }),
      host: "lxctest",
      log: silentLogger(),
      count: (_t, result) => counted.push(result),
    });
    // Synchronous: publish returns before anything is sent (the target never answers).
    for (let i = 1; i <= 50; i++) assert.equal(notifier.publish(event(i)), undefined);
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
      agent.request("test");
      await agent.queue.idle();
      assert.equal(agent.queue.state().runsStarted, 1);
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
