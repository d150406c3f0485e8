/**
 * `npm run bench`: every benchmark, side by side with the old pipeline where there is one, printed as
 * Markdown and written to bench/results/bench.json; the README's performance section (between the
 * `bench:begin` and `bench:end` markers) is replaced with the same text, so it is always this output.
 * Needs Debian's webhook and wrk packages, and curl and jq for the old hookshot script.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PROJECT } from "../test/helpers/agent.js";
import { abuse } from "./abuse.bench.js";
import { compare } from "./compare.bench.js";
import { costCurve } from "./curve.bench.js";
import { dependencyCosts } from "./deps.bench.js";
import { fleet } from "./fleet.bench.js";
import { machine, writeResults } from "./lib.js";
import { manyTransforms, matrixCalls } from "./matrix.bench.js";
import { planScale } from "./plan.bench.js";

for (const tool of ["webhook", "wrk", "curl", "jq"]) {
  if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0)
    throw new Error(`the benchmark needs ${tool}: apt-get install webhook wrk curl jq`);
}

const x = (a: number, b: number) => (b ? (a / b).toFixed(2) : "n/a");
const n = (v: number) => v.toLocaleString("en-US");
const verdict = (ok: boolean) => (ok ? "met" : "**not met**");

/** A Markdown table with aligned columns. */
function md(header: string[], rows: (string | number)[][]): string {
  const all = [header, ...rows].map((r) => r.map(String));
  const w = header.map((_, i) => Math.max(3, ...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i] ?? 0)).join(" | ")} |`;
  return [
    line(all[0] ?? []),
    `| ${w.map((k) => "-".repeat(k)).join(" | ")} |`,
    ...all.slice(1).map(line),
  ].join("\n");
}

const started = Date.now();
const { agent: a, baseline: b } = await compare();
const fleetResult = await fleet();
const calls = await matrixCalls();
const curve = await costCurve();
const deps = dependencyCosts();
const planned = await planScale();
const many = await manyTransforms();
const hostile = abuse();

const p2l = { p50: a.pushToLiveMs.p50 / b.pushToLiveMs.p50, p90: a.pushToLiveMs.p90 / b.pushToLiveMs.p90 };
const prelude = { agent: calls.agent.preludeChanged, old: calls.baseline.preludeChanged };
const out: string[] = [];
out.push(
  `Measured by \`npm run bench\` on ${machine()}. Each table compares systems measured in the same run; ` +
    "absolute times drift from run to run on a shared machine, the ratios are the result.",
);
out.push(
  "",
  "**One host** (LXC 139's landing page; deploy-agent `serve` from the bin, with the unit's environment, against Debian's `webhook` 2.8.0 running `bench/baseline/deploy-landing.sh`; local bare origin; load from `wrk`, one thread, 32 connections; both systems running and taking turns, so that both meet the same moments of the machine: the HTTP load in 5 slices of 2 s each (requests/s over all, p99 the median slice's), push-to-live one push each; bodies are Gitea's real pushes from `test/fixtures/gitea/`):",
  "",
  md(
    ["figure", "deploy-agent", "webhook + bash", "ratio", "target", ""],
    [
      [
        "push-to-live p50 (signed POST until the page holds the commit, 30 pushes)",
        `${a.pushToLiveMs.p50} ms`,
        `${b.pushToLiveMs.p50} ms`,
        p2l.p50.toFixed(2),
        "≤ 0.6",
        verdict(p2l.p50 <= 0.6),
      ],
      [
        "push-to-live p90",
        `${a.pushToLiveMs.p90} ms`,
        `${b.pushToLiveMs.p90} ms`,
        p2l.p90.toFixed(2),
        "≤ 0.7",
        verdict(p2l.p90 <= 0.7),
      ],
      [
        "CPU per push (the process and its git and bash children)",
        `${a.cpuPerPushMs} ms`,
        `${b.cpuPerPushMs} ms`,
        x(a.cpuPerPushMs, b.cpuPerPushMs),
        "",
        "",
      ],
      [
        "signed push to another branch (5.9 KB): requests/s",
        n(a.signedPush.rps),
        n(b.signedPush.rps),
        x(a.signedPush.rps, b.signedPush.rps),
        "≥ 1.2",
        verdict(a.signedPush.rps >= 1.2 * b.signedPush.rps),
      ],
      [
        "same: p99 latency",
        `${a.signedPush.p99ms} ms`,
        `${b.signedPush.p99ms} ms`,
        x(a.signedPush.p99ms, b.signedPush.p99ms),
        "≤ 10 ms",
        verdict(a.signedPush.p99ms <= 10),
      ],
      [
        "forged-signature flood: rejected/s (accepted)",
        `${n(a.forgedFlood.rejectedPerSecond)} (${a.forgedFlood.accepted})`,
        `${n(b.forgedFlood.rejectedPerSecond)} (${b.forgedFlood.accepted})`,
        x(a.forgedFlood.rejectedPerSecond, b.forgedFlood.rejectedPerSecond),
        "none accepted",
        verdict(a.forgedFlood.accepted === 0),
      ],
      [
        "liveness probe p99 during the flood (`/healthz`; webhook: `/`)",
        `${a.forgedFlood.probeP99ms} ms`,
        `${b.forgedFlood.probeP99ms} ms`,
        x(a.forgedFlood.probeP99ms, b.forgedFlood.probeP99ms),
        "≤ 2",
        verdict(a.forgedFlood.probeP99ms <= 2 * b.forgedFlood.probeP99ms),
      ],
      [
        "RSS idle",
        `${a.rssIdleMiB} MiB`,
        `${b.rssIdleMiB} MiB`,
        x(a.rssIdleMiB, b.rssIdleMiB),
        "≤ 64 MiB",
        verdict(a.rssIdleMiB <= 64),
      ],
      [
        "RSS after the load",
        `${a.rssAfterLoadMiB} MiB`,
        `${b.rssAfterLoadMiB} MiB`,
        x(a.rssAfterLoadMiB, b.rssAfterLoadMiB),
        "",
        "",
      ],
      [
        "start-up to the first answer",
        `${a.startupMs} ms`,
        `${b.startupMs} ms`,
        x(a.startupMs, b.startupMs),
        "≤ 300 ms",
        verdict(a.startupMs <= 300),
      ],
    ],
  ),
);
const fa = fleetResult.agents;
const fb = fleetResult.baseline;
out.push(
  "",
  "**The fleet**: four agents on the real manifests (`config/lxc151.yaml`, `lxc106`, `lxc139`, `lxc110`, read from git as on the hosts), each on its own loopback address with its own clone, root and state; one push changing a file of every host (a hookshot transform, Cinny's config, the landing page, Draupnir's config) fanned out to all four at once, as Gitea does; 15 pushes. The legacy fleet is four `webhook` listeners, LXC 151's running the old `hookshot/deploy.sh`. systemctl and nginx are stand-ins that exit 0.",
  "",
  md(
    ["figure", "deploy-agent ×4", "webhook + bash ×4", "target", ""],
    [
      [
        "all four live: p50 / p90",
        `${fa.allLiveMs.p50} / ${fa.allLiveMs.p90} ms`,
        `${fb.allLiveMs.p50} / ${fb.allLiveMs.p90} ms`,
        `p50 ≤ one legacy host's p50 (${b.pushToLiveMs.p50} ms)`,
        verdict(fa.allLiveMs.p50 <= b.pushToLiveMs.p50),
      ],
      ...["lxc151", "lxc106", "lxc139", "lxc110"].map((h) => [
        `${h} live, p50`,
        `${fa.perHostP50Ms[h]} ms`,
        `${fb.perHostP50Ms[h]} ms`,
        "",
        "",
      ]),
    ],
  ),
);
out.push(
  "",
  "**Hookshot** (Matrix test homeserver; the agent as a `run` in this process, transforms checked over their sample payloads; the old script: one `jq` + `curl` PUT per transform):",
  "",
  md(
    ["push", "deploy-agent: requests / writes / wall time", "old `hookshot/deploy.sh`", "target", ""],
    [
      [
        `prelude changed (all ${prelude.agent.transforms} transforms)`,
        `${prelude.agent.requests} / ${prelude.agent.writes} / ${prelude.agent.ms} ms (GET, PUT, read-back each)`,
        `${prelude.old.requests} / ${prelude.old.writes} / ${prelude.old.ms} ms`,
        "wall time ≤ the old script's",
        verdict(prelude.agent.ms <= prelude.old.ms),
      ],
      [
        "one transform changed",
        `${calls.agent.oneTransformChanged.requests} / ${calls.agent.oneTransformChanged.writes} / ${calls.agent.oneTransformChanged.ms} ms`,
        `${calls.baseline.oneTransformChanged.requests} / ${calls.baseline.oneTransformChanged.writes} / ${calls.baseline.oneTransformChanged.ms} ms${calls.baselineDroppedHookshotKeys ? " (each whole-content PUT dropped hookshot's `hookId`)" : ""}`,
        "",
        "",
      ],
      [
        "nothing relevant changed",
        `${calls.agent.unrelatedPush.requests} / ${calls.agent.unrelatedPush.writes}`,
        "0 / 0",
        "",
        "",
      ],
    ],
  ),
);
const row = (p: { files: number; commits: number; p50ms: number; p90ms: number }) => [
  n(p.files),
  n(p.commits),
  `${p.p50ms} ms`,
  `${p.p90ms} ms`,
];
out.push(
  "",
  "**Cost curve** (push-to-live of the landing page, 15 pushes each; the largest against the smallest, target ≤ 1.5):",
  "",
  md(["files", "commits", "p50", "p90"], [...curve.byFiles.map(row), ...curve.byHistory.slice(1).map(row)]),
  "",
  `10,000 files against 100: ${curve.filesRatio} (${verdict(curve.filesRatio <= 1.5)}); 10,000 commits against 10: ${curve.historyRatio} (${verdict(curve.historyRatio <= 1.5)}).`,
);
out.push(
  "",
  `**What each dependency costs at idle** (a Node process with the unit's environment that imports only it, less Node alone: ${deps.nodeAloneMiB} MiB; shared parts count for each; the daemon loads them from one bundle):`,
  "",
  md(
    ["dependency", "RSS", "import", "loaded"],
    deps.rows.map((d) => [
      d.name,
      `${d.rssMiB} MiB`,
      `${d.importMs} ms`,
      ["execa", "pino-pretty", "quickjs-emscripten", "acorn", "acorn-walk", "diff"].includes(d.name)
        ? "on first use"
        : "at start",
    ]),
  ),
);
out.push(
  "",
  "**Scale and hostile traffic**:",
  "",
  md(
    ["figure", "measured", "bound"],
    [
      [
        `plan for a push touching ${n(planned.files)} files (LXC 151's manifest)`,
        `p50 ${planned.p50ms} ms, max ${planned.maxMs} ms`,
        "< 100 ms",
      ],
      [
        `${many.transforms} changed transforms, first ${many.rateLimited} requests rate-limited (retry_after_ms ${many.retryAfterMs})`,
        `${n(many.totalMs)} ms, ${many.writes} writes, ${n(many.requests)} requests, retried after ≥ ${many.shortestRetryAfterMs} ms, ≤ ${many.maxInFlight} in flight`,
        `retry ≥ ${many.retryAfterMs} ms, concurrency ≤ 4`,
      ],
      ...hostile.figures.map((f) => [f, "", hostile.passed ? "held (test/abuse.test.ts)" : "**exceeded**"]),
    ],
  ),
);
const text = out.join("\n");
console.log(text);
const file = writeResults("bench", {
  at: new Date().toISOString(),
  machine: machine(),
  durationS: Math.round((Date.now() - started) / 1000),
  compare: { agent: a, baseline: b },
  fleet: fleetResult,
  matrixCalls: calls,
  costCurve: curve,
  dependencies: deps,
  plan: planned,
  manyTransforms: many,
  abuse: hostile,
});
const readme = path.join(PROJECT, "README.md");
const begin = "<!-- bench:begin (npm run bench writes this section) -->";
const end = "<!-- bench:end -->";
const current = readFileSync(readme, "utf8");
const from = current.indexOf(begin);
const to = current.indexOf(end);
if (from < 0 || to < from) throw new Error(`README.md has no ${begin} … ${end} section`);
writeFileSync(readme, `${current.slice(0, from + begin.length)}\n${text}\n${current.slice(to)}`);
console.log(`\nresults: ${file}; README.md's performance section rewritten`);
