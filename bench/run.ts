/**
 * `npm run bench`: every benchmark, side by side with the old pipeline where there is one, printed as
 * Markdown and written to bench/results/bench.json; docs/performance.md's section between the `bench:begin`
 * and `bench:end` markers is replaced with the same text, and README.md's between `bench-summary:begin`
 * and `bench-summary:end` with the table of targets, so both are always this output. BENCH_QUICK=1 runs
 * fewer pushes, slices and starts (a check that it runs end to end; its figures are not for the record).
 * Needs Debian's webhook and wrk packages, and curl and jq for the old hookshot script.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PROJECT } from "../test/helpers/agent.js";
import { abuse } from "./abuse.bench.js";
import { compare, spread } from "./compare.bench.js";
import { costCurve } from "./curve.bench.js";
import { dependencyCosts } from "./deps.bench.js";
import { fleet } from "./fleet.bench.js";
import { lxc151Starts } from "./hosts.bench.js";
import { machine, percentile, QUICK, writeResults } from "./lib.js";
import { manyTransforms, matrixCalls } from "./matrix.bench.js";
import { planScale } from "./plan.bench.js";
import { SETTLE_MS } from "./systems.js";

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
const lxc151 = await lxc151Starts();
const fleetResult = await fleet();
const calls = await matrixCalls();
const curve = await costCurve();
const deps = dependencyCosts();
const planned = await planScale();
const many = await manyTransforms();
const hostile = abuse();

const ratio = (x: number, y: number) => (y ? x / y : Number.NaN);
const r2 = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : "n/a");
/** A figure measured several times: the median, and the range beside it. */
const ranged = (s: { median: number; min: number; max: number }, unit: string) =>
  `${s.median} ${unit} (${s.min}–${s.max})`;
const s151 = { startupMs: spread(lxc151.startupMs), rssIdleMiB: spread(lxc151.rssIdleMiB, 1) };
const cpuReq = { a: a.signedPush.cpuPerRequestUs, b: b.signedPush.cpuPerRequestUs };

/** The targets of the performance issue, each with what it is measured against: one row per figure. */
const summary: [string, string, string, number | null, string, boolean][] = [
  [
    "push-to-live p50, LXC 139 (in turns)",
    `${a.pushToLiveMs.p50} ms`,
    `${b.pushToLiveMs.p50} ms`,
    ratio(a.pushToLiveMs.p50, b.pushToLiveMs.p50),
    "≤ 0.75×",
    ratio(a.pushToLiveMs.p50, b.pushToLiveMs.p50) <= 0.75,
  ],
  [
    "push-to-live p90, LXC 139 (in turns)",
    `${a.pushToLiveMs.p90} ms`,
    `${b.pushToLiveMs.p90} ms`,
    ratio(a.pushToLiveMs.p90, b.pushToLiveMs.p90),
    "≤ 0.75×",
    ratio(a.pushToLiveMs.p90, b.pushToLiveMs.p90) <= 0.75,
  ],
  [
    "idle RSS, LXC 139",
    ranged(a.rssIdleMiB, "MiB"),
    ranged(b.rssIdleMiB, "MiB"),
    null,
    "≤ 64 MiB",
    a.rssIdleMiB.median <= 64,
  ],
  [
    "idle RSS, LXC 151 (QuickJS step run)",
    ranged(s151.rssIdleMiB, "MiB"),
    "",
    null,
    "≤ 64 MiB",
    s151.rssIdleMiB.median <= 64,
  ],
  [
    "start-up to the first answer, LXC 139",
    ranged(a.startupMs, "ms"),
    ranged(b.startupMs, "ms"),
    null,
    "≤ 300 ms",
    a.startupMs.median <= 300,
  ],
  [
    "start-up to the first answer, LXC 151",
    ranged(s151.startupMs, "ms"),
    "",
    null,
    "≤ 300 ms",
    s151.startupMs.median <= 300,
  ],
  [
    "CPU per signed request (5.9 KB, 32 connections)",
    `${cpuReq.a} µs`,
    `${cpuReq.b} µs`,
    ratio(cpuReq.a, cpuReq.b),
    "≤ 1.0×",
    ratio(cpuReq.a, cpuReq.b) <= 1,
  ],
  [
    "p99 under that load",
    `${a.signedPush.p99ms} ms`,
    `${b.signedPush.p99ms} ms`,
    ratio(a.signedPush.p99ms, b.signedPush.p99ms),
    "≤ 0.6×",
    ratio(a.signedPush.p99ms, b.signedPush.p99ms) <= 0.6,
  ],
  [
    "the fleet, all four live, p50 (in turns)",
    `${fleetResult.agents.allLiveMs.p50} ms`,
    `${fleetResult.baseline.allLiveMs.p50} ms`,
    ratio(fleetResult.agents.allLiveMs.p50, fleetResult.baseline.allLiveMs.p50),
    "≤ 0.5×",
    ratio(fleetResult.agents.allLiveMs.p50, fleetResult.baseline.allLiveMs.p50) <= 0.5,
  ],
];

const out: string[] = [];
out.push(
  `Measured by \`npm run bench\`${QUICK ? " (BENCH_QUICK=1: fewer pushes, slices and starts; not for figures)" : ""} on ${machine()}. ` +
    "Each table compares systems measured in the same run, in turns; absolute times drift from run to run on a shared machine, the ratios are the result. " +
    "Every agent runs a host's **shipped manifest** from a clone of this repository (`config/<host>.yaml`, read from git as on the hosts) as the unit runs it: the fallback poll (300 s) and the drift check (at start and every 600 s) on, the manifest's log file, limits and checks as shipped; the shipped manifests configure no `notify:` targets, so none are sent. " +
    "Only the listen address is the bench's (`--listen` on loopback), and systemctl and nginx are stand-ins on PATH that exit 0, for both systems.",
);
out.push(
  "",
  `**One host** (LXC 139's landing page: \`config/lxc139.yaml\` — \`check: html\`, then \`nginx -t\` and \`nginx -s reload\` — against Debian's \`webhook\` 2.8.0 running \`bench/baseline/deploy-landing.sh\`: fetch, hard reset, diff, copy, \`nginx -s reload\`; both deploy from their own bare origin of this whole repository; load from \`wrk\`, one thread, 32 connections; both running and taking turns: the HTTP load in slices of 2 s each, push-to-live one push each, each system idle again — the agent's run finished, the old script exited — before the next push; start-up and idle RSS over cold starts in turns, the agent's first on an empty state (it writes V8's code cache into the unit's cache directory, 10 s after its start), the later ones restarts (which use it); idle RSS read ${SETTLE_MS / 1000} s after the start-up reconcile and drift check (V8 returns the start-up's garbage 8–20 s after the last activity); bodies are Gitea's real pushes from \`test/fixtures/gitea/\`):`,
  "",
  md(
    ["figure", "deploy-agent", "webhook + bash", "ratio", "target", ""],
    [
      [
        `push-to-live p50 (signed POST until the page holds the commit, ${a.pushToLiveMs.n} pushes each)`,
        `${a.pushToLiveMs.p50} ms`,
        `${b.pushToLiveMs.p50} ms`,
        r2(summary[0]?.[3] ?? Number.NaN),
        "≤ 0.75",
        verdict(summary[0]?.[5] ?? false),
      ],
      [
        "push-to-live p90 (max)",
        `${a.pushToLiveMs.p90} ms (${a.pushToLiveMs.max})`,
        `${b.pushToLiveMs.p90} ms (${b.pushToLiveMs.max})`,
        r2(summary[1]?.[3] ?? Number.NaN),
        "≤ 0.75",
        verdict(summary[1]?.[5] ?? false),
      ],
      [
        "CPU per push (the process and its git, bash and nginx children)",
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
        "",
        "",
      ],
      [
        "same: CPU per request (process tree; each slice's in turn)",
        `${cpuReq.a} µs (${a.signedPush.cpuUsBySlice.join(", ")})`,
        `${cpuReq.b} µs (${b.signedPush.cpuUsBySlice.join(", ")})`,
        r2(summary[6]?.[3] ?? Number.NaN),
        "≤ 1.0",
        verdict(summary[6]?.[5] ?? false),
      ],
      [
        "same: p99 latency (the median slice's; each slice's in turn)",
        `${a.signedPush.p99ms} ms (${a.signedPush.p99BySlice.join(", ")})`,
        `${b.signedPush.p99ms} ms (${b.signedPush.p99BySlice.join(", ")})`,
        r2(summary[7]?.[3] ?? Number.NaN),
        "≤ 0.6",
        verdict(summary[7]?.[5] ?? false),
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
        `RSS idle, median (range) of ${a.startupMs.n} starts`,
        ranged(a.rssIdleMiB, "MiB"),
        ranged(b.rssIdleMiB, "MiB"),
        x(a.rssIdleMiB.median, b.rssIdleMiB.median),
        "≤ 64 MiB",
        verdict(a.rssIdleMiB.median <= 64),
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
        "start-up to the first answer, median (range)",
        ranged(a.startupMs, "ms"),
        ranged(b.startupMs, "ms"),
        x(a.startupMs.median, b.startupMs.median),
        "≤ 300 ms",
        verdict(a.startupMs.median <= 300),
      ],
      [
        "the first of them, without V8's code cache (as after an install or upgrade)",
        `${a.firstStartMs} ms`,
        `${b.firstStartMs} ms`,
        x(a.firstStartMs, b.firstStartMs),
        "",
        "",
      ],
    ],
  ),
);
out.push(
  "",
  `**LXC 151 as shipped** (\`config/lxc151.yaml\` with its env file, the Matrix test homeserver as hookshot's; ${lxc151.startupMs.length} cold starts, each on an empty state (the first writes V8's code cache, the later ones use it), so the start-up reconcile compile-checks every transform in QuickJS and writes them, installs the LiveKit unit and raises its restart flag; then the drift check; idle RSS read ${SETTLE_MS / 1000} s after):`,
  "",
  md(
    ["figure", "deploy-agent", "target", ""],
    [
      [
        "start-up to the first answer, median (range)",
        ranged(s151.startupMs, "ms"),
        "≤ 300 ms",
        verdict(s151.startupMs.median <= 300),
      ],
      [
        "the first of them, without V8's code cache (as after an install or upgrade)",
        `${Math.round(lxc151.startupMs[0] ?? 0)} ms`,
        "",
        "",
      ],
      [
        "RSS idle, median (range)",
        ranged(s151.rssIdleMiB, "MiB"),
        "≤ 64 MiB",
        verdict(s151.rssIdleMiB.median <= 64),
      ],
    ],
  ),
);
const fa = fleetResult.agents;
const fb = fleetResult.baseline;
const FLEET_HOSTS = ["lxc151", "lxc106", "lxc139", "lxc110"];
const cpuSum = (f: typeof fa) => Math.round(Object.values(f.cpuPerPushMs).reduce((s, ms) => s + ms, 0));
out.push(
  "",
  `**The fleet**: four agents on the shipped manifests (\`config/lxc151.yaml\`, \`lxc106\`, \`lxc139\`, \`lxc110\`), each on its own loopback address with its own clone, root and state; one push changing a file of every host (a hookshot transform, Cinny's config, the landing page, Draupnir's config) fanned out to all four at once, as Gitea does. The legacy fleet is four \`webhook\` listeners on their own origin: LXC 151's runs the old \`hookshot/deploy.sh\`, LXC 139's reloads nginx and LXC 110's restarts Draupnir after the copy. Both fleets run at once and take turns, one push each (${fa.n} each), every member idle before the next. CPU per push is each member's process tree (the listener and every process under it) from the push until it is idle again; the agents' includes the \`/status\` requests the bench polls to see them idle, which cost the old listeners nothing (their idle is read from \`/proc\`). Two cores serve all four at once, so the fleet's wall time follows the four trees' CPU time added up.`,
  "",
  md(
    ["figure", "deploy-agent ×4", "webhook + bash ×4", "ratio", "target", ""],
    [
      [
        "all four live: p50 / p90",
        `${fa.allLiveMs.p50} / ${fa.allLiveMs.p90} ms`,
        `${fb.allLiveMs.p50} / ${fb.allLiveMs.p90} ms`,
        `${x(fa.allLiveMs.p50, fb.allLiveMs.p50)} / ${x(fa.allLiveMs.p90, fb.allLiveMs.p90)}`,
        "p50 ≤ 0.5",
        verdict(summary[8]?.[5] ?? false),
      ],
      ...FLEET_HOSTS.map((h) => [
        `${h} live, p50`,
        `${fa.perHostP50Ms[h]} ms`,
        `${fb.perHostP50Ms[h]} ms`,
        x(fa.perHostP50Ms[h] ?? 0, fb.perHostP50Ms[h] ?? 0),
        "",
        "",
      ]),
      [
        "CPU per push, the four process trees together",
        `${cpuSum(fa)} ms`,
        `${cpuSum(fb)} ms`,
        x(cpuSum(fa), cpuSum(fb)),
        "",
        "",
      ],
      ...FLEET_HOSTS.map((h) => [
        `CPU per push, ${h}`,
        `${fa.cpuPerPushMs[h]} ms`,
        `${fb.cpuPerPushMs[h]} ms`,
        x(fa.cpuPerPushMs[h] ?? 0, fb.cpuPerPushMs[h] ?? 0),
        "",
        "",
      ]),
    ],
  ),
);
const pa = calls.agent.preludeChanged;
const pb = calls.baseline.preludeChanged;
out.push(
  "",
  `**Hookshot** (LXC 151 from a push, both systems cold, a process each, in turns, on one origin of this repository: \`deploy-agent run\` with \`config/lxc151.yaml\` — fetch, transforms checked over their sample payloads in QuickJS, GET, PUT and read-back — against \`bench/baseline/deploy-hookshot.sh\` — fetch, hard reset, diff, one \`jq\` + \`curl\` PUT per transform; the Matrix test homeserver; prelude changed ${pa.allMs.length} times, the wall time the median, all runs in brackets):`,
  "",
  md(
    [
      "push",
      "deploy-agent: requests / writes / wall time",
      "old deploy: requests / writes / wall time",
      "target",
      "",
    ],
    [
      [
        `prelude changed (all ${pa.transforms} transforms)`,
        `${pa.requests} / ${pa.writes} / ${percentile(pa.allMs, 50)} ms (${pa.allMs.join(", ")})`,
        `${pb.requests} / ${pb.writes} / ${percentile(pb.allMs, 50)} ms (${pb.allMs.join(", ")})`,
        "wall time ≤ the old deploy's",
        verdict(percentile(pa.allMs, 50) <= percentile(pb.allMs, 50)),
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
        `${calls.agent.unrelatedPush.requests} / ${calls.agent.unrelatedPush.writes} / ${calls.agent.unrelatedPush.ms} ms`,
        `${calls.baseline.unrelatedPush.requests} / ${calls.baseline.unrelatedPush.writes} / ${calls.baseline.unrelatedPush.ms} ms`,
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
  "**Cost curve** (push-to-live of the landing page, `config/lxc139.yaml`, one system alone; the largest against the smallest, target ≤ 1.5):",
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
      [
        "pino-pretty",
        "quickjs-emscripten-core",
        "@jitl/quickjs-wasmfile-release-sync",
        "acorn",
        "acorn-walk",
        "diff",
      ].includes(d.name)
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
const summaryText = md(
  ["figure", "deploy-agent", "webhook + bash", "ratio", "target", "met"],
  summary.map(([figure, agent, old, k, target, ok]) => [
    figure,
    agent,
    old || "—",
    k === null ? "" : r2(k),
    target,
    ok ? "yes" : "**no**",
  ]),
);
/** Replaces what stands between a begin marker (`<!-- name:begin`, any note, `-->`) and `<!-- name:end -->`. */
function writeBetween(file: string, name: string, text: string): void {
  const current = readFileSync(file, "utf8");
  const open = current.indexOf(`<!-- ${name}:begin`);
  const from = open < 0 ? -1 : current.indexOf("-->", open) + 3;
  const to = current.indexOf(`<!-- ${name}:end -->`);
  if (open < 0 || to < from)
    throw new Error(`${file} has no <!-- ${name}:begin --> … <!-- ${name}:end --> section`);
  writeFileSync(file, `${current.slice(0, from)}\n${text}\n${current.slice(to)}`);
}
writeBetween(path.join(PROJECT, "docs/performance.md"), "bench", text);
writeBetween(
  path.join(PROJECT, "README.md"),
  "bench-summary",
  `${summaryText}\n\nThe full tables and what dominates each figure: [docs/performance.md](docs/performance.md) (measured by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}${QUICK ? ", a quick run" : ""}).`,
);
console.log(
  `\n${summaryText}\n\nresults: ${file}; docs/performance.md and README.md's summary rewritten in ${Math.round((Date.now() - started) / 1000)} s`,
);
