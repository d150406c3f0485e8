/**
 * deploy-agent `serve` against the old pipeline (Debian's `webhook` 2.8.0 + a bash deploy script doing
 * fetch, hard reset, diff, copy), side by side on this machine, each on its own local bare origin, for the
 * landing page of LXC 139. Figures: start-up, RSS idle and after load, signed-push acknowledgement
 * (saturation at 32 connections and at a steady 500 req/s), forged-signature flood with liveness-probe
 * latency during it, and push-to-live latency over 20 pushes.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import autocannon from "autocannon";
import { sign } from "../src/server/verify.js";
import { PROJECT, serveArgs, unitEnvironment, writeManifest } from "../test/helpers/agent.js";
import { type Fixture, makeFixture } from "../test/helpers/git.js";
import { giteaHeaders, pushBody } from "../test/helpers/gitea.js";
import { percentile, round, rssMiB } from "./lib.js";

const SECRET = "bench-secret";
const PUSHES = 20;

interface System {
  name: string;
  url: string;
  probe: string;
  target: string;
  fx: Fixture;
  child?: ChildProcess;
  spawn(): ChildProcess;
}

let nextPort = 19_000 + Math.floor(Math.random() * 500) * 2;

function fixture(): Fixture {
  const fx = makeFixture({ "landing/index.html": "<p>0</p>\n" });
  mkdirSync(path.join(fx.dir, "root/var/www/matrix-landing"), { recursive: true });
  return fx;
}

function agentSystem(): System {
  const fx = fixture();
  const port = nextPort++;
  const root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "etc/deploy-agent"), { recursive: true });
  writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), SECRET, { mode: 0o600 });
  const manifest = writeManifest(fx.dir, {
    host: "lxc139",
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      {
        name: "landing-page",
        kind: "file",
        source: "landing/index.html",
        targets: ["/var/www/matrix-landing/index.html"],
      },
    ],
  });
  const args = [
    ...serveArgs(manifest, fx.clone, root, `127.0.0.1:${port}`),
    "--state-dir",
    path.join(fx.dir, "state"),
  ];
  return {
    name: "deploy-agent",
    url: `http://127.0.0.1:${port}/hooks/deploy`,
    probe: `http://127.0.0.1:${port}/healthz`,
    target: path.join(root, "var/www/matrix-landing/index.html"),
    fx,
    // The unit's environment and its bin.
    spawn: () =>
      spawn(path.join(PROJECT, "dist/src/bin.js"), [...args, "--log-level", "warn"], {
        stdio: ["ignore", "ignore", "inherit"],
        env: { ...process.env, ...unitEnvironment() },
      }),
  };
}

function webhookSystem(): System {
  const fx = fixture();
  const port = nextPort++;
  const target = path.join(fx.dir, "root/var/www/matrix-landing/index.html");
  const hooks = path.join(fx.dir, "hooks.json");
  const match = (type: string, value: string, source: string, name: string) => ({
    match: { type, value, parameter: { source, name } },
  });
  writeFileSync(
    hooks,
    JSON.stringify([
      {
        id: "deploy",
        "execute-command": path.join(PROJECT, "bench/baseline/deploy-landing.sh"),
        "command-working-directory": fx.dir,
        "response-message": "deploy triggered",
        "success-http-response-code": 202,
        "http-methods": ["POST"],
        "pass-arguments-to-command": [
          { source: "string", name: fx.clone },
          { source: "string", name: target },
        ],
        "trigger-rule": {
          and: [
            {
              match: {
                type: "payload-hmac-sha256",
                secret: SECRET,
                parameter: { source: "header", name: "X-Gitea-Signature" },
              },
            },
            match("value", "push", "header", "X-Gitea-Event"),
            match("value", "refs/heads/main", "payload", "ref"),
            { not: match("value", "0".repeat(40), "payload", "after") },
          ],
        },
      },
    ]),
  );
  return {
    name: "webhook 2.8.0 + bash",
    url: `http://127.0.0.1:${port}/hooks/deploy`,
    probe: `http://127.0.0.1:${port}/`,
    target,
    fx,
    spawn: () =>
      spawn("webhook", ["-hooks", hooks, "-ip", "127.0.0.1", "-port", String(port)], {
        stdio: ["ignore", "ignore", "ignore"],
      }),
  };
}

const current = (file: string) => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
};

async function measure(sys: System) {
  const ignoredBody = pushBody({ ref: "refs/heads/feature/bench", after: "1".repeat(40) });
  const ignoredHeaders = giteaHeaders(ignoredBody, SECRET);
  const started = performance.now();
  const child = sys.spawn();
  sys.child = child;
  let startupMs = Number.NaN;
  for (;;) {
    const res = await fetch(sys.url, {
      method: "POST",
      headers: ignoredHeaders,
      body: new Uint8Array(ignoredBody),
    }).catch(() => null);
    if (res && res.status < 500) {
      startupMs = performance.now() - started;
      break;
    }
    await sleep(5);
  }
  await sleep(2000);
  const pid = child.pid ?? 0;
  const idle = rssMiB(pid);
  const saturated = await autocannon({
    url: sys.url,
    method: "POST",
    connections: 32,
    duration: 10,
    headers: ignoredHeaders,
    body: ignoredBody,
  });
  const steady = await autocannon({
    url: sys.url,
    method: "POST",
    connections: 32,
    duration: 10,
    overallRate: 500,
    headers: ignoredHeaders,
    body: ignoredBody,
  });

  const forgedHeaders = { ...ignoredHeaders, "x-gitea-signature": sign("wrong", ignoredBody) };
  const probe: number[] = [];
  let flooding = true;
  const prober = (async () => {
    while (flooding) {
      const t = performance.now();
      await fetch(sys.probe).then((r) => r.arrayBuffer());
      probe.push(performance.now() - t);
      await sleep(10);
    }
  })();
  const forged = await autocannon({
    url: sys.url,
    method: "POST",
    connections: 32,
    duration: 10,
    headers: forgedHeaders,
    body: ignoredBody,
  });
  flooding = false;
  await prober;
  const loaded = rssMiB(pid);

  const live: number[] = [];
  for (let i = 1; i <= PUSHES; i++) {
    const content = `<p>${i}</p>\n`;
    const rev = sys.fx.push({ "landing/index.html": content });
    const body = pushBody({ after: rev });
    const t = performance.now();
    const res = await fetch(sys.url, {
      method: "POST",
      headers: giteaHeaders(body, SECRET),
      body: new Uint8Array(body),
    });
    if (res.status !== 202) throw new Error(`${sys.name}: push ${i} answered ${res.status}`);
    const deadline = Date.now() + 30_000;
    while (current(sys.target) !== content) {
      if (Date.now() > deadline) throw new Error(`${sys.name}: push ${i} never went live`);
      await sleep(1);
    }
    live.push(performance.now() - t);
  }
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  sys.fx.cleanup();
  const rejected =
    forged.requests.total -
    (forged.statusCodeStats["202"]?.count ?? 0) -
    (forged.statusCodeStats["200"]?.count ?? 0);
  return {
    startupMs: Math.round(startupMs),
    rssIdleMiB: round(idle),
    rssAfterLoadMiB: round(loaded),
    signedAck: {
      rps: Math.round(saturated.requests.average),
      p50ms: saturated.latency.p50,
      p99ms: saturated.latency.p99,
      errors: saturated.errors,
    },
    signedAckAt500rps: { p50ms: steady.latency.p50, p99ms: steady.latency.p99 },
    forgedFlood: {
      rejectedPerSecond: Math.round(rejected / 10),
      accepted: forged.requests.total - rejected,
      statuses: Object.keys(forged.statusCodeStats),
      probeP99ms: round(percentile(probe, 99), 2),
    },
    pushToLiveMs: {
      p50: Math.round(percentile(live, 50)),
      p90: Math.round(percentile(live, 90)),
      n: live.length,
    },
  };
}

export async function compare() {
  if (spawnSync("webhook", ["-version"]).status !== 0)
    throw new Error("the baseline needs Debian's webhook package: apt-get install webhook");
  const agent = await measure(agentSystem());
  const baseline = await measure(webhookSystem());
  return { agent, baseline };
}
