import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import {
  hostRoot,
  type Served,
  serveArgs,
  startCli,
  unitEnvironment,
  writeManifest,
} from "./helpers/agent.js";
import { type Fixture, makeFixture } from "./helpers/git.js";
import { giteaHeaders, pushBody } from "./helpers/gitea.js";

/**
 * The daemon's HTTP layer attacked the way its guards can be walked past: every spelling of a guarded path
 * the router accepts, and clients that feed their request a byte a second. Each attack runs against the
 * real `serve` process (the unit's environment) on loopback.
 */

const SECRET = "attack-http-webhook-secret-0123456789";
const TOKEN = "status-token-0123456789abcdef";

let fx: Fixture;
let root: string;
let daemon: Served | undefined;
let started = 0;

async function serve(webhook: Record<string, unknown>): Promise<number> {
  const file = writeManifest(fx.dir, {
    webhook: { pollIntervalSeconds: 0, ...webhook },
    steps: [
      { name: "landing", kind: "file", source: "landing/index.html", targets: ["/var/www/index.html"] },
    ],
  });
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = startCli(
    // A state directory of its own, so that each daemon's first run is a deploy that says when it is done.
    [...serveArgs(file, fx.clone, root), "--state-dir", path.join(fx.dir, `state-${started++}`)],
    unitEnvironment(),
  );
  const line = await daemon.waitFor(/.*"msg":"listening".*/);
  await daemon.waitFor(/"msg":"run finished"|"result"/, 20_000).catch(() => {});
  return Number(new URL(/"address":"(http:\/\/[^"]+)"/.exec(line)?.[1] ?? "").port);
}

beforeEach(() => {
  fx = makeFixture({ "landing/index.html": "<p>v1</p>\n" });
  root = hostRoot(fx.dir, SECRET);
});
afterEach(async () => {
  daemon?.child.kill("SIGKILL");
  await daemon?.exited;
  daemon = undefined;
  fx.cleanup();
});

interface Answer {
  status: number;
  head: string;
  body: string;
}

/** One request written exactly as given (request target included) on its own connection. */
function raw(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body: Buffer = Buffer.alloc(0),
): Promise<Answer> {
  return new Promise((done) => {
    const s = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const giveUp = setTimeout(() => s.destroy(), 5000);
    s.on("data", (d) => chunks.push(d));
    s.on("error", () => {});
    s.once("close", () => {
      clearTimeout(giveUp);
      const text = Buffer.concat(chunks).toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      done({
        status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0),
        head: split < 0 ? text : text.slice(0, split),
        body: split < 0 ? "" : text.slice(split + 4),
      });
    });
    const lines = Object.entries({
      host: "127.0.0.1",
      connection: "close",
      ...(body.length ? { "content-length": String(body.length) } : {}),
      ...headers,
    }).map(([k, v]) => `${k}: ${v}\r\n`);
    s.end(Buffer.concat([Buffer.from(`${method} ${target} HTTP/1.1\r\n${lines.join("")}\r\n`), body]));
  });
}

/** What only the guarded documents contain: /status's fields and the metric names. */
const DOCUMENT = /deploy_agent_|"queue"|"conditions"|"lastRun"/;

/** Spellings of /status and /metrics that fastify's router sends to those routes. */
const ROUTED = [
  "/status",
  "/status?",
  "/status?x=1",
  "/status?/status",
  "/%73tatus",
  "/%73%74%61%74%75%73",
  "/sta%74us?a=b",
  "/status#fragment",
  "http://x/status",
  "http://x/%73tatus?y",
  "/metrics",
  "/metrics?",
  "/metrics?name[]=x",
  "/%6detrics",
  "/%6D%65%74%72%69%63%73?",
  "http://x/metrics",
];
/** Spellings it does not route there today; whatever it does with them, the answer must not differ by access. */
const ELSEWHERE = [
  "/STATUS",
  "/Status",
  "/status/",
  "//status",
  "/./status",
  "/x/../status",
  "/status;x",
  "/status%3F",
  "/status%00",
  "/status%20",
  "/%2fstatus",
  "*",
  "/METRICS",
  "/metrics/",
  "//metrics",
  "/metrics;x",
  "/metricsx",
];
const METHODS = ["GET", "HEAD", "POST", "OPTIONS", "DELETE"];

describe("attack: access is decided by route, never by spelling", () => {
  it("every spelling of /status and /metrics gets the plain path's answer, for a refused source and the token alike", async () => {
    writeFileSync(path.join(root, "etc/deploy-agent/status-token"), `${TOKEN}\n`, { mode: 0o600 });
    const port = await serve({
      statusAccess: { allowFrom: ["10.99.0.0/16"], tokenFile: "/etc/deploy-agent/status-token" },
    });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const leaks: string[] = [];
    const differ: string[] = [];
    for (const target of [...ROUTED, ...ELSEWHERE]) {
      for (const method of METHODS) {
        const refused = await raw(port, method, target);
        const viewer = await raw(port, method, target, auth);
        const what = `${method} ${target}: ${refused.status} refused, ${viewer.status} with the token`;
        if (refused.status === 200 || DOCUMENT.test(refused.body)) leaks.push(what);
        // 403 where the router reaches a guarded route; elsewhere what it answers anyone (404).
        const same = refused.status === 403 ? viewer.status === 200 : viewer.status === refused.status;
        const routed = ROUTED.includes(target) && (method === "GET" || method === "HEAD");
        if (!same || (routed && refused.status !== 403)) differ.push(what);
        if (method === "GET" && viewer.status === 200) assert.match(viewer.body, DOCUMENT, what);
      }
    }
    assert.deepEqual(leaks, [], "answered a refused source with the document");
    assert.deepEqual(differ, [], "an answer that depends on the spelling");
    assert.equal((await raw(port, "GET", "/healthz")).status, 200, "/healthz stays open");
    assert.equal((await raw(port, "GET", "/healthz?x=1")).status, 200, "/healthz stays open");

    // An allowed source needs no token, by every spelling.
    const open = await serve({ statusAccess: { allowFrom: ["127.0.0.0/8"] } });
    for (const target of ROUTED) assert.equal((await raw(open, "GET", target)).status, 200, target);

    // webhook.allowFrom shuts out the refused source by every spelling of every route, the hook's included,
    // even with a valid signature.
    const hook = await serve({ allowFrom: ["10.99.0.0/16"] });
    const body = pushBody({ after: "c".repeat(40) });
    const signed = giteaHeaders(body, SECRET);
    for (const target of [
      "/hooks/deploy",
      "/hooks/deploy?",
      "/hooks/deploy?x=1",
      "/hooks/%64eploy",
      "/%68ooks/deploy#x",
      "http://x/hooks/deploy",
      "/hooks/deploy/",
      "/healthz",
      "/status?",
      "/%6detrics",
    ]) {
      for (const method of ["POST", "GET", "HEAD"]) {
        const answer = await raw(
          hook,
          method,
          target,
          method === "POST" ? signed : {},
          method === "POST" ? body : undefined,
        );
        assert.equal(answer.status, 403, `${method} ${target} from a source not in webhook.allowFrom`);
      }
    }
    assert.doesNotMatch(daemon?.out() ?? "", /push accepted/);
  });
});
