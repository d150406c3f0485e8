/**
 * One host, deploy-agent against the old pipeline, side by side (bench/systems.ts): start-up, RSS idle and
 * after load, signed pushes at 32 connections (Gitea's real 5.9 KB push body to another branch: verified,
 * parsed, ignored), a forged-signature flood with the liveness probe's latency during it, and push-to-live.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { sign } from "../src/server/verify.js";
import { percentile, round, rssMiB, treeCpuMs, wrk } from "./lib.js";
import { agentSystem, ignoredPush, pushToLive, type System, stop, webhookSystem } from "./systems.js";

const PUSHES = 30;
const SECONDS = 10;

async function measure(sys: System) {
  const { child, startupMs } = await sys.start();
  await sleep(2000);
  const pid = child.pid ?? 0;
  const idle = rssMiB(pid);
  const { body, headers } = ignoredPush();
  const signed = await wrk(sys.url, { body, headers, connections: 32, seconds: SECONDS });

  const forged = { ...headers, "x-gitea-signature": sign("not-the-secret", body) };
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
  const flood = await wrk(sys.url, { body, headers: forged, connections: 32, seconds: SECONDS });
  flooding = false;
  await prober;
  const loaded = rssMiB(pid);
  const cpuBefore = treeCpuMs(pid);
  const live = await pushToLive(sys, PUSHES);
  const cpuPerPushMs = (treeCpuMs(pid) - cpuBefore) / PUSHES;
  await stop(child);
  sys.fx.cleanup();
  const accepted = (flood.statuses["200"] ?? 0) + (flood.statuses["202"] ?? 0);
  return {
    startupMs: Math.round(startupMs),
    rssIdleMiB: round(idle),
    rssAfterLoadMiB: round(loaded),
    signedPush: signed,
    forgedFlood: {
      rejectedPerSecond: Math.round(flood.rps - accepted / SECONDS),
      accepted,
      statuses: Object.keys(flood.statuses),
      probeP99ms: round(percentile(probe, 99), 2),
    },
    cpuPerPushMs: round(cpuPerPushMs),
    pushToLiveMs: {
      p50: round(percentile(live, 50)),
      p90: round(percentile(live, 90)),
      n: live.length,
    },
  };
}

export async function compare() {
  const agent = await measure(agentSystem());
  const baseline = await measure(webhookSystem());
  return { agent, baseline };
}
