/**
 * One host, deploy-agent against the old pipeline, side by side (bench/systems.ts): start-up, RSS idle and
 * after load, signed pushes at 32 connections (Gitea's real 5.9 KB push body to another branch: verified,
 * parsed, ignored), a forged-signature flood with the liveness probe's latency during it, each system alone;
 * then push-to-live with both running and the pushes alternating between them.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { sign } from "../src/server/verify.js";
import { percentile, round, rssMiB, treeCpuMs, wrk } from "./lib.js";
import { agentSystem, ignoredPush, pushesToLive, type System, stop, webhookSystem } from "./systems.js";

const PUSHES = 30;
const SECONDS = 10;

/** One system alone on the machine (the other idles): its start-up, memory and HTTP figures. */
async function measureAlone(sys: System) {
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
  const accepted = (flood.statuses["200"] ?? 0) + (flood.statuses["202"] ?? 0);
  return {
    child,
    figures: {
      startupMs: Math.round(startupMs),
      rssIdleMiB: round(idle),
      rssAfterLoadMiB: round(rssMiB(pid)),
      signedPush: signed,
      forgedFlood: {
        rejectedPerSecond: Math.round(flood.rps - accepted / SECONDS),
        accepted,
        statuses: Object.keys(flood.statuses),
        probeP99ms: round(percentile(probe, 99), 2),
      },
    },
  };
}

export async function compare() {
  const systems: System[] = [agentSystem(), webhookSystem()];
  const alone = [];
  for (const sys of systems) alone.push(await measureAlone(sys));
  // Push-to-live with the pushes alternating between the two (pushesToLive), CPU per push from each
  // one's own process tree.
  const pids = alone.map((a) => a.child.pid ?? 0);
  const cpuBefore = pids.map(treeCpuMs);
  const live = await pushesToLive(systems, PUSHES);
  const cpuPerPushMs = pids.map((pid, k) => (treeCpuMs(pid) - (cpuBefore[k] ?? 0)) / PUSHES);
  for (const a of alone) await stop(a.child);
  for (const sys of systems) sys.fx.cleanup();
  const [agent, baseline] = alone.map((a, k) => ({
    ...a.figures,
    cpuPerPushMs: round(cpuPerPushMs[k] ?? 0),
    pushToLiveMs: {
      p50: round(percentile(live[k] ?? [], 50)),
      p90: round(percentile(live[k] ?? [], 90)),
      n: live[k]?.length ?? 0,
    },
  }));
  if (!agent || !baseline) throw new Error("compare: a system is missing");
  return { agent, baseline };
}
