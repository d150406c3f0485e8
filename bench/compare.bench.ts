/**
 * One host, deploy-agent against the old pipeline, side by side (bench/systems.ts): start-up and idle RSS
 * (each started alone, cold, several times in turns), then with both running: signed pushes at 32 connections (Gitea's real 5.9 KB push
 * body to another branch: verified, parsed, ignored), a forged-signature flood with the liveness probe's
 * latency during it, and push-to-live. The load of this shared machine drifts within a run, so the two
 * systems take turns: the HTTP load in slices of a few seconds, push-to-live one push each.
 */
import type { ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { sign } from "../src/server/verify.js";
import { percentile, QUICK, round, rssMiB, treeCpuMs, type WrkResult, wrk } from "./lib.js";
import {
  agentSystem,
  ignoredPush,
  pushesToLive,
  SETTLE_MS,
  type System,
  stop,
  webhookSystem,
} from "./systems.js";

const PUSHES = QUICK ? 8 : 30;
/** Each system gets SLICES × SLICE_SECONDS of each load, in turns. */
const SLICES = QUICK ? 2 : 5;
const SLICE_SECONDS = 2;
/** Cold starts of each system, in turns. */
const STARTS = QUICK ? 2 : 5;

/** One system's slices together; each slice's p99 kept, in order, to show the warm-up and the machine's drift. */
interface Merged extends WrkResult {
  p99BySlice: number[];
}

/** CPU of a system's process tree over its slices of one load: in all, and per request in each slice. */
interface SliceCpu {
  ms: number;
  requests: number;
  usBySlice: number[];
}

/** Slices of one system's load as one result: requests/s and statuses over all, p50 and p99 the median slice's. */
function merged(slices: WrkResult[]): Merged {
  const statuses: Record<string, number> = {};
  for (const s of slices)
    for (const [k, v] of Object.entries(s.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  return {
    requests: slices.reduce((sum, s) => sum + s.requests, 0),
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
    p99BySlice: slices.map((s) => s.p99ms),
  };
}

/** Runs `load` against each system in turns; `during` runs beside each slice (the liveness probe). */
async function inTurns(
  systems: readonly System[],
  load: (sys: System) => Promise<WrkResult>,
  during: (sys: System, done: () => boolean) => Promise<void> = async () => {},
): Promise<Merged[]> {
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

interface Started {
  child: ChildProcess;
  startupMs: number[];
  rssIdleMiB: number[];
}

/**
 * Each system started STARTS times, alone and cold (a new process), in turns: start-up to the first answer,
 * then idle RSS once it is settled (the agent's start-up reconcile and drift check done) and SETTLE_MS more. The
 * first start of the agent deploys the page (an empty state) and writes V8's code cache; the later ones find
 * both, as a restart of the unit does. The last start of each stays up for the rest.
 */
async function startInTurns(systems: readonly System[]): Promise<Started[]> {
  const out: Started[] = systems.map(() => ({ child: undefined as never, startupMs: [], rssIdleMiB: [] }));
  for (let i = 0; i < STARTS; i++) {
    for (const [k, sys] of systems.entries()) {
      const { child, startupMs } = await sys.start();
      await sys.settled();
      await sleep(SETTLE_MS);
      const o = out[k] as Started;
      o.startupMs.push(startupMs);
      o.rssIdleMiB.push(rssMiB(child.pid ?? 0));
      if (i < STARTS - 1) await stop(child);
      else o.child = child;
    }
  }
  return out;
}

export const spread = (xs: readonly number[], digits = 0) => ({
  median: round(percentile(xs, 50), digits),
  min: round(Math.min(...xs), digits),
  max: round(Math.max(...xs), digits),
  n: xs.length,
});

export async function compare() {
  const systems: System[] = [agentSystem(), webhookSystem()];
  const started = await startInTurns(systems);
  const pids = started.map((s) => s.child.pid ?? 0);
  const { body, headers } = ignoredPush();
  // CPU of each one's process tree over its own slices, per request answered.
  const signedCpu: SliceCpu[] = systems.map(() => ({ ms: 0, requests: 0, usBySlice: [] }));
  const signed = await inTurns(systems, async (sys) => {
    const k = systems.indexOf(sys);
    const before = treeCpuMs(pids[k] ?? 0);
    const r = await wrk(sys.url, { body, headers, connections: 32, seconds: SLICE_SECONDS });
    const c = signedCpu[k] as SliceCpu;
    const ms = treeCpuMs(pids[k] ?? 0) - before;
    c.ms += ms;
    c.requests += r.requests;
    c.usBySlice.push(round((ms * 1000) / Math.max(1, r.requests)));
    return r;
  });
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
  const cpuBefore = pids.map(treeCpuMs);
  const live = await pushesToLive(systems, PUSHES);
  const cpuPerPushMs = pids.map((pid, k) => (treeCpuMs(pid) - (cpuBefore[k] ?? 0)) / PUSHES);
  for (const s of started) await stop(s.child);
  for (const sys of systems) sys.fx.cleanup();
  const [agent, baseline] = started.map((s, k) => {
    const f = flood[k] as WrkResult;
    const accepted = (f.statuses["200"] ?? 0) + (f.statuses["202"] ?? 0);
    const cpu = signedCpu[k] as SliceCpu;
    return {
      startupMs: spread(s.startupMs),
      /** The agent's first start has no code cache yet (it writes it): as after an install or an upgrade. */
      firstStartMs: round(s.startupMs[0] ?? 0),
      rssIdleMiB: spread(s.rssIdleMiB, 1),
      rssAfterLoadMiB: round(loaded[k] ?? 0),
      signedPush: {
        ...(signed[k] as Merged),
        cpuPerRequestUs: round((cpu.ms * 1000) / cpu.requests),
        cpuUsBySlice: cpu.usBySlice,
      },
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
        max: round(Math.max(...(live[k] ?? [])), 1),
        n: live[k]?.length ?? 0,
        all: (live[k] ?? []).map((ms) => round(ms)),
      },
    };
  });
  if (!agent || !baseline) throw new Error("compare: a system is missing");
  return { agent, baseline };
}
