/**
 * Benchmark of `deploy-agent serve` on this machine, over loopback, against a local bare origin:
 * start-up time, idle and loaded RSS, signed-push acknowledgement throughput and latency (32 connections),
 * forged-signature flood with /healthz latency during it, and push-to-live latency.
 * Run: npm run bench (builds first). Prints a table and writes bench/results/serve.json.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import autocannon from "autocannon";
import { sign } from "../src/server/verify.js";
import { PROJECT, writeManifest } from "../test/helpers/agent.js";
import { makeFixture } from "../test/helpers/git.js";
import { giteaHeaders, pushBody } from "../test/helpers/gitea.js";

const SECRET = "bench-secret";
const PORT = 19_500 + Math.floor(Math.random() * 400);
const URL_BASE = `http://127.0.0.1:${PORT}`;
const PUSHES = 20;

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? Number.NaN;
};

async function main() {
  const fx = makeFixture({ "landing/index.html": "<p>0</p>\n" });
  const root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "var/www/matrix-landing"), { recursive: true });
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

  const started = performance.now();
  const child: ChildProcess = spawn(
    process.execPath,
    [
      path.join(PROJECT, "dist/src/cli.js"),
      "serve",
      "--config",
      manifest,
      "--repo",
      fx.clone,
      "--root",
      root,
      "--state-dir",
      path.join(fx.dir, "state"),
      "--listen",
      `127.0.0.1:${PORT}`,
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const pid = child.pid ?? 0;
  const ignoredBody = pushBody({ ref: "refs/heads/feature/bench", after: "1".repeat(40) });
  const ignoredHeaders = giteaHeaders(ignoredBody, SECRET);
  let startupMs = Number.NaN;
  for (;;) {
    try {
      const res = await fetch(`${URL_BASE}/hooks/deploy`, {
        method: "POST",
        headers: ignoredHeaders,
        body: new Uint8Array(ignoredBody),
      });
      if (res.status === 202) {
        startupMs = performance.now() - started;
        break;
      }
    } catch {}
    await sleep(5);
  }
  await sleep(2000);
  const idleRss = rssMiB(pid);

  const signed = await autocannon({
    url: `${URL_BASE}/hooks/deploy`,
    method: "POST",
    connections: 32,
    duration: 10,
    headers: ignoredHeaders,
    body: ignoredBody,
  });

  const forgedHeaders = { ...ignoredHeaders, "x-gitea-signature": sign("wrong", ignoredBody) };
  const healthLatencies: number[] = [];
  let flooding = true;
  const prober = (async () => {
    while (flooding) {
      const t = performance.now();
      await fetch(`${URL_BASE}/healthz`).then((r) => r.arrayBuffer());
      healthLatencies.push(performance.now() - t);
      await sleep(10);
    }
  })();
  const forged = await autocannon({
    url: `${URL_BASE}/hooks/deploy`,
    method: "POST",
    connections: 32,
    duration: 10,
    headers: forgedHeaders,
    body: ignoredBody,
  });
  flooding = false;
  await prober;
  const loadedRss = rssMiB(pid);

  const live: number[] = [];
  const target = path.join(root, "var/www/matrix-landing/index.html");
  for (let i = 1; i <= PUSHES; i++) {
    const content = `<p>${i}</p>\n`;
    const rev = fx.push({ "landing/index.html": content });
    const body = pushBody({ after: rev });
    const t = performance.now();
    const res = await fetch(`${URL_BASE}/hooks/deploy`, {
      method: "POST",
      headers: giteaHeaders(body, SECRET),
      body: new Uint8Array(body),
    });
    if (res.status !== 202) throw new Error(`push ${i}: HTTP ${res.status}`);
    while (readFileSync(target, "utf8") !== content) await sleep(2);
    live.push(performance.now() - t);
  }
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
  fx.cleanup();

  const results = {
    machine: { cpus: (await import("node:os")).cpus().length, node: process.version },
    startupMs: Math.round(startupMs),
    rssMiB: { idle: Number(idleRss.toFixed(1)), afterLoad: Number(loadedRss.toFixed(1)) },
    signedAck: {
      rps: Math.round(signed.requests.average),
      p50ms: signed.latency.p50,
      p99ms: signed.latency.p99,
      non2xx: signed.non2xx,
      errors: signed.errors,
    },
    forgedFlood: {
      rejectedPerSecond: Math.round(forged.requests.average),
      non401: forged.requests.total - (forged.statusCodeStats["401"]?.count ?? 0),
      healthzP99ms: Number(percentile(healthLatencies, 99).toFixed(2)),
      healthzSamples: healthLatencies.length,
    },
    pushToLiveMs: {
      p50: Math.round(percentile(live, 50)),
      p90: Math.round(percentile(live, 90)),
      n: live.length,
    },
  };
  mkdirSync(path.join(PROJECT, "bench/results"), { recursive: true });
  writeFileSync(path.join(PROJECT, "bench/results/serve.json"), `${JSON.stringify(results, null, 2)}\n`);
  const rows: [string, string, string][] = [
    ["start-up to first accepted request", `${results.startupMs} ms`, ""],
    ["RSS idle / after load", `${results.rssMiB.idle} / ${results.rssMiB.afterLoad} MiB`, "idle <= 60 MiB"],
    [
      "signed push ack, 32 connections",
      `${results.signedAck.rps} req/s, p99 ${results.signedAck.p99ms} ms`,
      "p99 <= 5 ms",
    ],
    [
      "forged-signature flood",
      `${results.forgedFlood.rejectedPerSecond} rejected/s, /healthz p99 ${results.forgedFlood.healthzP99ms} ms`,
      "",
    ],
    [
      "push-to-live (POST -> file holds the commit)",
      `p50 ${results.pushToLiveMs.p50} ms, p90 ${results.pushToLiveMs.p90} ms (n=${PUSHES})`,
      "",
    ],
  ];
  for (const [what, value, target] of rows) console.log(`${what.padEnd(46)} ${value.padEnd(44)} ${target}`);
}

await main();
