import { execFile, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { PROJECT, unitEnvironment } from "../test/helpers/agent.js";
import { type MatrixTestServer, startMatrixServer } from "../test/helpers/matrix-server.js";
import { childrenOf } from "../test/helpers/proc.js";

/** Small shared pieces of the benchmarks. */

/** `BENCH_QUICK=1`: fewer pushes, slices and starts, for a check that the bench runs (not for figures). */
export const QUICK = process.env.BENCH_QUICK === "1";

export { rssMiB } from "../test/helpers/proc.js";

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

export const round = (n: number, digits = 1) => Number(n.toFixed(digits));

/** Polls `probe` every `everyMs` (1 ms) until it holds; throws naming `what` after `ms`. */
export async function until(
  what: string,
  probe: () => boolean | Promise<boolean>,
  ms: number,
  everyMs = 1,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function writeResults(name: string, results: unknown): string {
  const dir = path.join(PROJECT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  return file;
}

/** Prints rows as an aligned table. */
export function table(header: string[], rows: (string | number)[][]): void {
  const all = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  for (const [k, r] of all.entries()) {
    console.log(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  "));
    if (k === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

/** What every table was measured on: the machine, Node, git and the daemon's flags (the unit's environment). */
export function machine(): string {
  const cpu = os.cpus();
  const git = spawnSync("git", ["--version"], { encoding: "utf8" }).stdout.trim();
  const env = Object.entries(unitEnvironment())
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
  return `${cpu.length} × ${cpu[0]?.model ?? "cpu"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}; Node ${process.version}; ${git}; both systems in a system service's environment (PATH and LANG only, as systemd gives one), the daemon with the unit's lines (systemd/deploy-agent@.service): ${env}`;
}

export interface WrkResult {
  requests: number;
  rps: number;
  p50ms: number;
  p99ms: number;
  /** Answers per status code. */
  statuses: Record<string, number>;
  errors: number;
}

/**
 * `wrk` (C, one thread) as the load generator: on this 2-core box a Node load generator takes a whole core
 * and becomes the bottleneck it is measuring. A Lua script posts one body with fixed headers and counts
 * the statuses.
 */
export async function wrk(
  url: string,
  opts: { body: Buffer; headers: Record<string, string>; connections: number; seconds: number },
): Promise<WrkResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "bench-wrk-"));
  const bodyFile = path.join(dir, "body");
  writeFileSync(bodyFile, opts.body);
  const headers = Object.entries(opts.headers)
    .map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`)
    .join("\n");
  const script = path.join(dir, "post.lua");
  // response() counts in the worker thread's Lua state; done() runs in the main one and reads it there.
  writeFileSync(
    script,
    `wrk.method = "POST"
local f = io.open(${JSON.stringify(bodyFile)}, "rb"); wrk.body = f:read("*a"); f:close()
${headers}
statuses = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency)
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99)))
  local e = summary.errors
  io.write(string.format("ERRORS %d\\n", e.connect + e.read + e.write + e.timeout))
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do io.write(string.format("STATUS %d %d\\n", s, n)) end
  end
end
`,
  );
  // Asynchronously: the server under load may live in this process.
  const out = await promisify(execFile)(
    "wrk",
    ["-t1", `-c${opts.connections}`, `-d${opts.seconds}s`, "--timeout", "5s", "-s", script, url],
    { encoding: "utf8" },
  ).catch((err: Error) => {
    throw new Error(`wrk failed (apt-get install wrk): ${err.message}`);
  });
  rmSync(dir, { recursive: true, force: true });
  const [, requests = 0, durationUs = 1, p50 = 0, p99 = 0] =
    /RESULT (\d+) (\d+) (\d+) (\d+)/.exec(out.stdout)?.map(Number) ?? [];
  const statuses: Record<string, number> = {};
  for (const m of out.stdout.matchAll(/STATUS (\d+) (\d+)/g)) statuses[m[1] ?? ""] = Number(m[2]);
  return {
    requests,
    rps: Math.round(requests / (durationUs / 1e6)),
    p50ms: round(p50 / 1000, 2),
    p99ms: round(p99 / 1000, 2),
    statuses,
    errors: Number(/ERRORS (\d+)/.exec(out.stdout)?.[1] ?? 0),
  };
}

const TICK_MS = 1000 / Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim() || 100);

/**
 * CPU time (user + system, ms) of a process and everything below it: its own, its reaped children's
 * (cutime, cstime) and that of the descendants still running (a long-lived `git cat-file`), from /proc.
 */
export function treeCpuMs(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // Fields 14-17 of stat(5): utime stime cutime cstime; the slice starts at field 3.
      total += [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0) * TICK_MS;
      for (const kid of childrenOf(p)) visit(kid);
    } catch {
      // exited meanwhile: its time is in its parent's cutime
    }
  };
  visit(pid);
  return total;
}

/** LXC 151's room and hookshot's state event type, as the shipped manifest names them. */
export const HOOKSHOT_ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
export const HOOK_TYPE = "uk.half-shot.matrix-hookshot.generic.hook";

/** A Matrix test homeserver whose room holds the connections of LXC 151's transforms (by file name). */
export async function hookshotHomeserver(token: string): Promise<MatrixTestServer> {
  const hs = await startMatrixServer({
    roomId: HOOKSHOT_ROOM,
    users: { [token]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
  });
  for (const f of readFileSync(path.join(PROJECT, "config/lxc151.yaml"), "utf8").matchAll(
    /^ {6}([\w-]+)\.js: ~$/gm,
  ))
    hs.state.set(`${HOOK_TYPE}/${f[1]}`, { name: f[1], hookId: `hook-${f[1]}` });
  return hs;
}
