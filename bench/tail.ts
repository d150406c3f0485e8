/**
 * Where push-to-live's time goes, push by push: LXC 139 as in compare.bench.ts (both systems, in turns,
 * each idle before the next push), with each agent push split by the daemon's own log lines (the shipped
 * log file, millisecond timestamps): the POST until the delivery is logged (HTTP, HMAC, parse), until the
 * step logs its changed file (lock, fetch, verify, the revision's manifest, plan), until the page is live
 * (html check, write, rename), and what the run does after the page is live (nginx -t and reload, the
 * state write, the work tree reset, the history record, the next push's fetch and lock prepared).
 * `node --import tsx bench/tail.ts` (TAIL_PUSHES, default 30); with
 * BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=DIR" the daemon also writes a CPU profile on exit.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PROJECT } from "../test/helpers/agent.js";
import { giteaHeaders, realPushBody } from "../test/helpers/gitea.js";
import { percentile, until } from "./lib.js";
import { agentSystem, current, SECRET, stop, webhookSystem } from "./systems.js";

const PUSHES = Number(process.env.TAIL_PUSHES ?? 30);
const PAGE = readFileSync(path.join(PROJECT, "landing/index.html"), "utf8");

const systems = [agentSystem(), webhookSystem()];
const children = [];
for (const sys of systems) {
  children.push((await sys.start()).child);
  await sys.settled();
}
const pushes: { sys: number; sent: number; live: number }[] = [];
for (let i = 1; i <= PUSHES; i++) {
  for (const [k, sys] of systems.entries()) {
    const content = `${PAGE}<!-- bench push ${i} ${Date.now()} -->\n`;
    const body = realPushBody({ after: sys.fx.push({ [sys.source]: content }) });
    const t = performance.now();
    const sent = Date.now();
    await fetch(sys.url, { method: "POST", headers: giteaHeaders(body, SECRET), body: new Uint8Array(body) });
    await until("live", () => current(sys.target) === content, 30_000);
    pushes.push({ sys: k, sent, live: sent + (performance.now() - t) });
    await sys.idle();
    await sleep(50);
  }
}
for (const child of children) await stop(child);

interface Line {
  time: string;
  msg: string;
  outcome?: string;
}
const [agent, old] = systems;
if (!agent || !old) throw new Error("tail: a system is missing");
const lines = readFileSync(path.join(agent.fx.dir, "root/var/log/matrix-deploy.log"), "utf8")
  .trim()
  .split("\n")
  .map((l) => JSON.parse(l) as Line);
const at = (msg: (l: Line) => boolean) =>
  lines
    .filter(msg)
    .slice(-PUSHES)
    .map((l) => Date.parse(l.time));
const delivered = at((l) => l.msg === "delivery" && l.outcome === "accepted");
const changed = at((l) => l.msg.startsWith("changed: "));
const finished = at((l) => l.msg === "run finished");
const mine = pushes.filter((p) => p.sys === 0);
const theirs = pushes.filter((p) => p.sys === 1).map((p) => p.live - p.sent);
const rows = mine.map((p, i) => ({
  total: Math.round(p.live - p.sent),
  http: (delivered[i] ?? 0) - p.sent,
  toPlan: (changed[i] ?? 0) - (delivered[i] ?? 0),
  toLive: Math.round(p.live - (changed[i] ?? 0)),
  afterLive: Math.round((finished[i] ?? 0) - p.live),
  webhook: Math.round(theirs[i] ?? 0),
}));
console.log("push  total  http  lock+fetch+plan  step-to-live  after-live  | webhook total (ms)");
for (const [i, r] of rows.entries())
  console.log(
    [i + 1, r.total, r.http, r.toPlan, r.toLive, r.afterLive, `| ${r.webhook}`].map(String).join("\t"),
  );
const p = (xs: number[], q: number) => Math.round(percentile(xs, q));
for (const q of [50, 90])
  console.log(
    `p${q}: total ${p(
      rows.map((r) => r.total),
      q,
    )}, lock+fetch+plan ${p(
      rows.map((r) => r.toPlan),
      q,
    )}, step-to-live ${p(
      rows.map((r) => r.toLive),
      q,
    )}, after-live ${p(
      rows.map((r) => r.afterLive),
      q,
    )}; webhook ${p(theirs, q)}`,
  );
for (const sys of systems) sys.fx.cleanup();
