import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect, createServer, type Socket, type Server as TcpServer } from "node:net";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { silentLogger } from "../src/core/log.js";
import { establishedTcp, LIVEKIT_METRICS_MAX_BYTES, sumSamples } from "../src/jobs/livekit-restart.js";
import { loadManifest } from "../src/manifest/load.js";
import { createAgent } from "../src/server/agent.js";
import { runCli, writeManifest } from "./helpers/agent.js";
import { type FakeSystemctl, installFakeSystemctl } from "./helpers/fake-systemctl.js";
import { type Fixture, makeFixture } from "./helpers/git.js";

let fx: Fixture;
let systemctl: FakeSystemctl;
let metrics: Server;
let metricsBody = "";
let rtc: TcpServer;
let rtcPort: number;
let sockets: Socket[] = [];
let manifest: string;
let root: string;

const livekitMetrics = (
  participants: number,
  rooms: number,
) => `# HELP livekit_participant_total number of participants
# TYPE livekit_participant_total gauge
livekit_participant_total{node_id="ND_abc",node_type="MEDIA",region=""} ${participants}
# HELP livekit_room_total number of rooms
# TYPE livekit_room_total gauge
livekit_room_total{node_id="ND_abc",node_type="MEDIA",region=""} ${rooms}
`;

const flag = () => path.join(root, "run/livekit-restart-pending");

async function openCall(): Promise<void> {
  const s = connect(rtcPort, "127.0.0.1");
  await new Promise((r) => s.once("connect", r));
  sockets.push(s);
}

async function livekitRestart(...extra: string[]) {
  const res = await runCli(["livekit-restart", "--config", manifest, "--root", root, "--json", ...extra], {
    PATH: process.env.PATH,
  });
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as {
    restart: boolean;
    reason: string;
    participants: number | null;
    tcpConnections: number;
    warnings: string[];
  };
}

beforeEach(async () => {
  fx = makeFixture({ "systemd/livekit-server.service": "[Service]\n" });
  systemctl = installFakeSystemctl();
  metricsBody = livekitMetrics(0, 0);
  metrics = createHttpServer((_req, res) => res.end(metricsBody));
  await new Promise<void>((r) => metrics.listen(0, "127.0.0.1", r));
  rtc = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => rtc.listen(0, "127.0.0.1", r));
  rtcPort = (rtc.address() as AddressInfo).port;
  root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "run"), { recursive: true });
  manifest = writeManifest(fx.dir, {
    livekit: {
      metricsUrl: `http://127.0.0.1:${(metrics.address() as AddressInfo).port}/metrics`,
      rtcTcpPort: rtcPort,
      watchIntervalSeconds: 1,
    },
    webhook: { pollIntervalSeconds: 0 },
    steps: [
      {
        name: "livekit-unit",
        kind: "systemd-unit",
        source: "systemd/livekit-server.service",
        restart: "deferred",
        flagFile: "/run/livekit-restart-pending",
      },
    ],
  });
});
afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  await new Promise((r) => rtc.close(r));
  await new Promise((r) => metrics.close(r));
  systemctl.restore();
  fx.cleanup();
});

describe("livekit-restart", () => {
  it("counts real established TCP connections on the RTC port from /proc/net/tcp", async () => {
    assert.equal(await establishedTcp(rtcPort), 0);
    await openCall();
    await openCall();
    await sleep(50);
    assert.equal(await establishedTcp(rtcPort), 2);
  });

  it("sums LiveKit's gauges from Prometheus text", () => {
    const text = `${livekitMetrics(3, 1)}livekit_participant_total{node_id="ND_def"} 2\n`;
    assert.deepEqual(sumSamples(text, ["livekit_participant_total", "livekit_room_total"]), {
      livekit_participant_total: 5,
      livekit_room_total: 1,
    });
  });

  it("reads the samples Prometheus text may hold beyond plain numbers", () => {
    const sum = (...values: string[]) =>
      sumSamples(values.map((v, i) => `livekit_participant_total{node_id="ND_${i}"} ${v}\n`).join(""), [
        "livekit_participant_total",
      ]).livekit_participant_total;
    assert.equal(sum("0", "+Inf"), Number.POSITIVE_INFINITY, "+Inf is more than zero");
    assert.equal(sum("0", "1e400"), Number.POSITIVE_INFINITY, "past float64 is more than zero");
    assert.equal(sum("1", "-Inf"), 1, "-Inf counts as 0, as a negative sample does");
    assert.ok(Number.isNaN(sum("0", "NaN")), "a NaN sample leaves the count unknown, not 0");
    assert.ok(Number.isNaN(sum("0", "twelve")));
    assert.equal(sum("2", "2"), 4, "a duplicate series only adds");
  });

  it("a NaN participant sample is no zero: the metrics are unreadable and TCP decides, with a warning", async () => {
    writeFileSync(flag(), "rev\n");
    metricsBody = `${livekitMetrics(0, 0)}livekit_participant_total{node_id="ND_def"} NaN\n`;
    const d = await livekitRestart("--dry-run");
    assert.equal(d.participants, null);
    assert.match(
      d.warnings.join(),
      /LiveKit metrics unreadable .*livekit_participant_total has a sample that is not a number/,
    );
    metricsBody = `${livekitMetrics(0, 0)}livekit_participant_total{node_id="ND_def"} +Inf\n`;
    const inf = await livekitRestart();
    assert.equal(inf.restart, false, inf.reason);
    assert.equal(inf.participants, Number.MAX_SAFE_INTEGER, "a count JSON can carry, not null (unread)");
    assert.ok(existsSync(flag()));
    assert.deepEqual(systemctl.calls(), []);
  });

  it("does nothing when no restart is pending", async () => {
    const d = await livekitRestart();
    assert.equal(d.restart, false);
    assert.equal(d.reason, "no restart pending");
    assert.deepEqual(systemctl.calls(), []);
  });

  it("waits while LiveKit reports participants (UDP calls the old TCP check missed)", async () => {
    writeFileSync(flag(), "rev\n");
    metricsBody = livekitMetrics(2, 1);
    const d = await livekitRestart();
    assert.equal(d.restart, false);
    assert.match(d.reason, /call active: 2 participant\(s\) in 1 room\(s\), 0 TCP connection/);
    assert.ok(existsSync(flag()));
    assert.deepEqual(systemctl.calls(), []);
  });

  it("a node whose gauge went negative does not cancel another node's call", async () => {
    writeFileSync(flag(), "rev\n");
    // A gauge decremented once too often (ND_abc) beside a node with a call in progress (ND_def).
    metricsBody = `${livekitMetrics(-2, 0)}livekit_participant_total{node_id="ND_def"} 2\nlivekit_room_total{node_id="ND_def"} 1\n`;
    const d = await livekitRestart();
    assert.equal(d.restart, false, d.reason);
    assert.equal(d.participants, 2);
    assert.ok(existsSync(flag()));
    assert.deepEqual(systemctl.calls(), []);
  });

  it("waits while a TCP connection to the RTC port is established", async () => {
    writeFileSync(flag(), "rev\n");
    await openCall();
    const d = await livekitRestart();
    assert.equal(d.restart, false);
    assert.equal(d.tcpConnections, 1);
    assert.ok(existsSync(flag()));
  });

  it("restarts and clears the flag when both signals say zero; --dry-run only reports", async () => {
    writeFileSync(flag(), "rev\n");
    const dry = await livekitRestart("--dry-run");
    assert.match(dry.reason, /no call active .*would restart livekit-server\.service/);
    assert.ok(existsSync(flag()));
    assert.deepEqual(systemctl.calls(), []);
    const d = await livekitRestart();
    assert.equal(d.restart, true);
    assert.deepEqual(systemctl.calls(), ["restart livekit-server.service"]);
    assert.equal(existsSync(flag()), false);
  });

  it("falls back to TCP with a warning when the metrics endpoint is unreachable", async () => {
    writeFileSync(flag(), "rev\n");
    await new Promise((r) => metrics.close(r));
    const d = await livekitRestart();
    assert.equal(d.participants, null);
    assert.match(d.warnings.join(), /LiveKit metrics unreadable .*ECONNREFUSED.*TCP connections alone/);
    assert.equal(d.restart, true);
    metrics = createHttpServer();
    await new Promise<void>((r) => metrics.listen(0, "127.0.0.1", r));
  });

  it("reads a metrics answer of exactly 1 MiB and refuses one byte more, deciding on TCP alone", async () => {
    assert.equal(LIVEKIT_METRICS_MAX_BYTES, 1024 * 1024);
    writeFileSync(flag(), "rev\n");
    const gauges = livekitMetrics(2, 1);
    const padded = (size: number) => {
      const filler = size - Buffer.byteLength(gauges) - 3;
      return `# ${"x".repeat(filler)}\n${gauges}`;
    };
    metricsBody = padded(LIVEKIT_METRICS_MAX_BYTES);
    assert.equal(Buffer.byteLength(metricsBody), LIVEKIT_METRICS_MAX_BYTES);
    const at = await livekitRestart();
    assert.equal(at.participants, 2);
    assert.equal(at.restart, false);
    metricsBody = padded(LIVEKIT_METRICS_MAX_BYTES + 1);
    const over = await livekitRestart();
    assert.equal(over.participants, null);
    assert.match(
      over.warnings.join(),
      /LiveKit metrics unreadable .*larger than 1048576 bytes.*TCP connections alone/,
    );
    assert.equal(over.restart, true);
  });

  it("the watcher in serve restarts within seconds after the last call ends", async () => {
    const { manifest: m } = await loadManifest(manifest, { processEnv: {} });
    const agent = createAgent({
      manifest: m,
      repoDir: fx.clone,
      stateDir: path.join(fx.dir, "state"),
      root,
      dryRun: false,
      log: silentLogger(),
    });
    writeFileSync(flag(), "rev\n");
    await openCall();
    agent.start();
    await agent.runner.idle();
    await sleep(1500);
    assert.ok(existsSync(flag()), "still a call: no restart");
    for (const s of sockets) s.destroy();
    const hungUp = Date.now();
    while (existsSync(flag()) && Date.now() - hungUp < 10_000) await sleep(100);
    await agent.close();
    assert.equal(existsSync(flag()), false, "restarted after the call ended");
    assert.ok(systemctl.calls().includes("restart livekit-server.service"));
  });
});
