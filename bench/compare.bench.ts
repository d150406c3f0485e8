/**
 * One host, deploy-agent against the old pipeline, side by side (bench/systems.ts): start-up and idle RSS
 * (each started alone), then with both running: signed pushes at 32 connections (Gitea's real 5.9 KB push
 * body to another branch: verified, parsed, ignored), a forged-signature flood with the liveness probe's
 * latency during it, and push-to-live. The load of this shared machine drifts within a run, so the two
 * systems take turns: the HTTP load in slices of a few seconds, push-to-live one push each.
 */
import type { ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { sign } from "../src/server/verify.js";
import { percentile, round, rssMiB, treeCpuMs, type WrkResult, wrk } from "./lib.js";
import { agentSystem, ignoredPush, pushesToLive, type System, stop, webhookSystem } from "./systems.js";

const PUSHES = 30;
/** Each system gets SLICES × SLICE_SECONDS of each load, in turns. */
const SLICES = 5;
const SLICE_SECONDS = 2;

/** Slices of one system's load as one result: requests/s and statuses over all, p50 and p99 the median slice's. */
function merged(slices: WrkResult[]): WrkResult {
  const statuses: Record<string, number> = {};
  for (const s of slices)
    for (const [k, v] of Object.entries(s.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  return {
    rps: Math.round(slices.reduce((sum, s) => sum + s.rps, 0) / slices.length),
    p50ms: percentile(
      slices.map((s) => s.p50ms),
      50,
    ),
    p99ms: percentile(
      slices.map((s) => s.p99ms),
      50,
    ),
    statuses,
    errors: slices.reduce((sum, s) => sum + s.errors, 0),
  };
}

/** Runs `load` against each system in turns; `during` runs beside each slice (the liveness probe). */
async function inTurns(
  systems: readonly System[],
  load: (sys: System) => Promise<WrkResult>,
  during: (sys: System, done: () => boolean) => Promise<void> = async () => {},
): Promise<WrkResult[]> {
  const slices: WrkResult[][] = systems.map(() => []);
  for (let i = 0; i < SLICES; i++) {
    for (const [k, sys] of systems.entries()) {
      let finished = false;
      const beside = during(sys, () => finished);
      slices[k]?.push(await load(sys));
      finished = true;
      await beside;
    }
  }
  return slices.map(merged);
}

export async function compare() {
  const systems: System[] = [agentSystem(), webhookSystem()];
  const started: { child: ChildProcess; startupMs: number; rssIdleMiB: number }[] = [];
  for (const sys of systems) {
    const { child, startupMs } = await sys.start();
    await sleep(2000);
    started.push({ child, startupMs, rssIdleMiB: rssMiB(child.pid ?? 0) });
  }
  const { body, headers } = ignoredPush();
  const signed = await inTurns(systems, (sys) =>
    wrk(sys.url, { body, headers, connections: 32, seconds: SLICE_SECONDS }),
  );
  const forged = { ...headers, "x-gitea-signature": sign("not-the-secret", body) };
  const probes: number[][] = systems.map(() => []);
  const flood = await inTurns(
    systems,
    (sys) => wrk(sys.url, { body, headers: forged, connections: 32, seconds: SLICE_SECONDS }),
    async (sys, done) => {
      const mine = probes[systems.indexOf(sys)];
      while (!done()) {
        const t = performance.now();
        await fetch(sys.probe).then((r) => r.arrayBuffer());
        mine?.push(performance.now() - t);
        await sleep(10);
      }
    },
  );
  const loaded = started.map((s) => rssMiB(s.child.pid ?? 0));
  // CPU per push from each one's own process tree.
  const pids = started.map((s) => s.child.pid ?? 0);
  const cpuBefore = pids.map(treeCpuMs);
  const live = await pushesToLive(systems, PUSHES);
  const cpuPerPushMs = pids.map((pid, k) => (treeCpuMs(pid) - (cpuBefore[k] ?? 0)) / PUSHES);
  for (const s of started) await stop(s.child);
  for (const sys of systems) sys.fx.cleanup();
  const [agent, baseline] = started.map((s, k) => {
    const f = flood[k] as WrkResult;
    const accepted = (f.statuses["200"] ?? 0) + (f.statuses["202"] ?? 0);
    return {
      startupMs: Math.round(s.startupMs),
      rssIdleMiB: round(s.rssIdleMiB),
      rssAfterLoadMiB: round(loaded[k] ?? 0),
      signedPush: signed[k] as WrkResult,
      forgedFlood: {
        rejectedPerSecond: Math.round(f.rps - accepted / (SLICES * SLICE_SECONDS)),
        accepted,
        statuses: Object.keys(f.statuses),
        probeP99ms: round(percentile(probes[k] ?? [], 99), 2),
      },
      cpuPerPushMs: round(cpuPerPushMs[k] ?? 0),
      pushToLiveMs: {
        p50: round(percentile(live[k] ?? [], 50)),
        p90: round(percentile(live[k] ?? [], 90)),
        n: live[k]?.length ?? 0,
      },
    };
  });
  if (!agent || !baseline) throw new Error("compare: a system is missing");
  return { agent, baseline };
}
