/**
 * `npm run bench`: every benchmark, a table per part, and bench/results/bench.json.
 * Needs Debian's webhook package for the baseline (apt-get install webhook) and curl and jq for the old
 * hookshot script.
 */
import { abuse } from "./abuse.bench.js";
import { compare } from "./compare.bench.js";
import { table, writeResults } from "./lib.js";
import { manyTransforms, matrixCalls } from "./matrix.bench.js";
import { planScale } from "./plan.bench.js";

const ratio = (a: number, b: number) => (b ? (a / b).toFixed(2) : "n/a");

const { agent: a, baseline: b } = await compare();
console.log(
  "\n1-4. deploy-agent serve vs webhook 2.8.0 + bash (LXC 139 landing page, loopback, local bare origin)\n",
);
table(
  ["figure", "deploy-agent", "baseline", "agent/baseline"],
  [
    [
      "push-to-live p50 (ms)",
      a.pushToLiveMs.p50,
      b.pushToLiveMs.p50,
      ratio(a.pushToLiveMs.p50, b.pushToLiveMs.p50),
    ],
    [
      "push-to-live p90 (ms)",
      a.pushToLiveMs.p90,
      b.pushToLiveMs.p90,
      ratio(a.pushToLiveMs.p90, b.pushToLiveMs.p90),
    ],
    [
      "signed push, 32 conn: req/s",
      a.signedAck.rps,
      b.signedAck.rps,
      ratio(a.signedAck.rps, b.signedAck.rps),
    ],
    [
      "signed push, 32 conn: p99 (ms)",
      a.signedAck.p99ms,
      b.signedAck.p99ms,
      ratio(a.signedAck.p99ms, b.signedAck.p99ms),
    ],
    [
      "signed push at 500 req/s: p99 (ms)",
      a.signedAckAt500rps.p99ms,
      b.signedAckAt500rps.p99ms,
      ratio(a.signedAckAt500rps.p99ms, b.signedAckAt500rps.p99ms),
    ],
    [
      "forged flood: rejected/s",
      a.forgedFlood.rejectedPerSecond,
      b.forgedFlood.rejectedPerSecond,
      ratio(a.forgedFlood.rejectedPerSecond, b.forgedFlood.rejectedPerSecond),
    ],
    ["forged flood: accepted", a.forgedFlood.accepted, b.forgedFlood.accepted, ""],
    [
      "liveness probe p99 in flood (ms)",
      a.forgedFlood.probeP99ms,
      b.forgedFlood.probeP99ms,
      ratio(a.forgedFlood.probeP99ms, b.forgedFlood.probeP99ms),
    ],
    ["RSS idle (MiB)", a.rssIdleMiB, b.rssIdleMiB, ratio(a.rssIdleMiB, b.rssIdleMiB)],
    [
      "RSS after load (MiB)",
      a.rssAfterLoadMiB,
      b.rssAfterLoadMiB,
      ratio(a.rssAfterLoadMiB, b.rssAfterLoadMiB),
    ],
    ["start-up to first answer (ms)", a.startupMs, b.startupMs, ratio(a.startupMs, b.startupMs)],
  ],
);

const calls = await matrixCalls();
console.log("\n5. Matrix API calls per push (test homeserver)\n");
table(
  ["push", "deploy-agent requests / writes", "old deploy.sh requests / writes"],
  [
    [
      "one transform changed",
      `${calls.agent.oneTransformChanged.requests} / ${calls.agent.oneTransformChanged.writes}`,
      `${calls.baseline.oneTransformChanged.requests} / ${calls.baseline.oneTransformChanged.writes}`,
    ],
    [
      "nothing relevant changed",
      `${calls.agent.unrelatedPush.requests} / ${calls.agent.unrelatedPush.writes}`,
      `${calls.baseline.unrelatedPush.requests} / ${calls.baseline.unrelatedPush.writes}`,
    ],
  ],
);
if (calls.baselineDroppedHookshotKeys)
  console.log("(the old script's whole-content PUT dropped hookshot's own keys, e.g. hookId)");

const planned = await planScale();
const many = await manyTransforms();
console.log("\n6. Scale\n");
table(
  ["figure", "value", "target"],
  [
    [
      `plan a push touching ${planned.files} files: p50 / max (ms)`,
      `${planned.p50ms} / ${planned.maxMs}`,
      "< 100 ms",
    ],
    [`${many.transforms} changed transforms: total (ms)`, many.totalMs, ""],
    ["  writes / requests", `${many.writes} / ${many.requests}`, `${many.transforms} writes`],
    ["  most requests in flight", many.maxInFlight, "<= concurrency (4)"],
    [
      `  429s, shortest wait before retrying one (ms)`,
      `${many.rateLimited}, ${many.shortestRetryAfterMs}`,
      `>= retry_after_ms (${many.retryAfterMs})`,
    ],
  ],
);
const hostile = abuse();
console.log("\n7. Hostile traffic and heavy work (the daemon with the unit's NODE_OPTIONS)\n");
for (const f of hostile.figures) console.log(`- ${f}`);
if (!hostile.passed) console.log("  a bound was exceeded: see npm test -- test/abuse.test.ts");
const file = writeResults("bench", {
  at: new Date().toISOString(),
  compare: { agent: a, baseline: b },
  matrixCalls: calls,
  plan: planned,
  manyTransforms: many,
  abuse: hostile,
});
console.log(`\nresults: ${file}`);
