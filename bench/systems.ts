/**
 * The two systems the benchmarks compare, each on its own local bare origin holding this repository (the
 * config repository's manifests, landing page, transforms): deploy-agent `serve` (the built bin, with the
 * systemd unit's environment) running the shipped config/lxc139.yaml as the unit runs it (read from git,
 * polling, drift, the `check: html` parse, `nginx -t` and `nginx -s reload`, the log file), and the old
 * pipeline (Debian's `webhook` 2.8.0 running bench/baseline/deploy-landing.sh: fetch, hard reset, diff,
 * copy, `nginx -s reload`). nginx and systemctl are stand-ins on PATH that exit 0, for both. Both deploy
 * the landing page to a target under their own root, so push-to-live means the same for both.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PROJECT, unitEnvironment, unitNodeFlags } from "../test/helpers/agent.js";
import { type Files, type Fixture, git, makeFixture } from "../test/helpers/git.js";
import { giteaFixture, giteaHeaders, realPushBody } from "../test/helpers/gitea.js";
import { childrenOf } from "../test/helpers/proc.js";
import { QUICK, until } from "./lib.js";

export const SECRET = "bench-webhook-secret-0123456789";

export interface System {
  name: string;
  url: string;
  /** The liveness probe: /healthz, or webhook's root. */
  probe: string;
  fx: Fixture;
  /** The repository file a push changes, and where it goes live. */
  source: string;
  target: string;
  start(): Promise<{ child: ChildProcess; startupMs: number }>;
  /** Resolves once the system is idle after its start: the agent's start-up reconcile and drift check done. */
  settled(): Promise<void>;
  /** Resolves once nothing of the last push runs any more (the agent's run finished; the old script exited). */
  idle(): Promise<void>;
}

/**
 * How long a settled system is left alone before its idle RSS is read: V8's memory reducer returns the
 * start-up's garbage some 8 to 20 s after the last activity (LXC 139's agent: 64.5 MiB 5 s after its start,
 * 60 MiB from 20 s on, then flat for the minute watched), so an earlier reading measures the start-up, not
 * the idle daemon. BENCH_QUICK=1 reads after 3 s.
 */
export const SETTLE_MS = QUICK ? 3000 : 25_000;

let nextPort = 19_000 + Math.floor(Math.random() * 400) * 4;
export const freshPort = () => nextPort++;

/** A signed push to another branch, as Gitea sends it (5.9 KB): verified, parsed, answered 202, ignored. */
export function ignoredPush(secret = SECRET) {
  const body = giteaFixture("push-other-branch.json");
  return { body, headers: giteaHeaders(body, secret) };
}

/** This repository's tracked files: what the config repository holds. */
export function repositoryFiles(): Files {
  const files: Files = {};
  for (const f of execFileSync("git", ["ls-files", "-z"], { cwd: PROJECT, encoding: "utf8" }).split("\0")) {
    if (f) files[f] = readFileSync(path.join(PROJECT, f));
  }
  return files;
}

/** A directory of stand-ins for systemctl and nginx that exit 0, to put first on PATH. */
export function shims(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "bench-shims-"));
  for (const tool of ["systemctl", "nginx"]) {
    writeFileSync(path.join(dir, tool), "#!/bin/sh\nexit 0\n");
    chmodSync(path.join(dir, tool), 0o755);
  }
  return dir;
}

const SHIMS = shims();
process.on("exit", () => rmSync(SHIMS, { recursive: true, force: true }));
/**
 * The environment both systems run in: what systemd gives a system service (systemd.exec(5): a clean
 * environment with only PATH and LANG, plus the unit's Environment= lines, which the agent's starters add),
 * with the stand-ins first on PATH. Not the bench's own: a shell's NODE_EXTRA_CA_CERTS (this project's
 * machine sets one) made every node process start 40 ms later, the daemon and its transform checks alike.
 */
export const serviceEnv = (): NodeJS.ProcessEnv => ({
  PATH: `${SHIMS}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  LANG: process.env.LANG ?? "C.UTF-8",
});

export interface SystemOptions {
  /** Instead of this repository: these files, with LXC 139's manifest and landing page (the cost curve). */
  files?: Files;
  history?: number;
  /** Loopback address to listen on. */
  host?: string;
}

const LANDING = "landing/index.html";
const LANDING_TARGET = "var/www/matrix-landing/index.html";

function landingFixture(o: SystemOptions): { fx: Fixture; root: string } {
  const own = (f: string) => readFileSync(path.join(PROJECT, f));
  const files = o.files
    ? { "config/lxc139.yaml": own("config/lxc139.yaml"), [LANDING]: own(LANDING), ...o.files }
    : repositoryFiles();
  const fx = makeFixture(files, { history: o.history });
  const root = path.join(fx.dir, "root");
  for (const d of ["var/www/matrix-landing", "var/log", "var/lib", "etc/deploy-agent"])
    mkdirSync(path.join(root, d), { recursive: true });
  return { fx, root };
}

/** Starts a child and waits for the first answer to a signed push: the start-up time. */
export async function started(url: string, run: () => ChildProcess) {
  const { body, headers } = ignoredPush();
  const t = performance.now();
  const child = run();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${url}: exited with ${child.exitCode} at start`);
    const res = await fetch(url, { method: "POST", headers, body: new Uint8Array(body) }).catch(() => null);
    if (res && res.status < 500) return { child, startupMs: performance.now() - t };
    await sleep(2);
  }
}

interface ServeStatus {
  deployedRevision: string | null;
  runner: { running: unknown; waiting: unknown[] };
  drift: unknown;
  lastRun: { revision: string; result: string } | null;
}

/**
 * The agent's /status is asked every 20 ms while its run finishes: each answer costs the agent CPU (the
 * old pipeline's idle is read from /proc, which costs webhook nothing); asked every millisecond it added
 * 18 ms to the agent's CPU per push (275 against 257 ms, 15 pushes) and competed with the run it waits for.
 */
const STATUS_POLL_MS = 20;

/**
 * Waits until `serve` at base runs and waits for nothing: the run after the page went live has finished.
 * A run that failed ends the bench: a step failing at every push (a target directory the bench's root
 * lacks) would be measured as work the old pipeline never does.
 */
export async function agentIdle(base: string, what: string): Promise<void> {
  let last: ServeStatus | null = null;
  await until(
    `${what}: idle`,
    async () => {
      last = (await fetch(`${base}/status`)
        .then((r) => r.json())
        .catch(() => null)) as ServeStatus | null;
      return !!last && !last.runner.running && !last.runner.waiting.length;
    },
    60_000,
    STATUS_POLL_MS,
  );
  const run = (last as ServeStatus | null)?.lastRun;
  if (run?.result !== "succeeded" && run?.result !== "noop")
    throw new Error(`${what}: its last run did not succeed: ${JSON.stringify(run)}`);
}

/** Waits until a process has no child processes: webhook's command and its git children have exited. */
export async function childless(pid: number, what: string): Promise<void> {
  await until(`${what}: its command to exit`, () => childrenOf(pid).length === 0, 60_000);
}

/** Waits until `serve` at base has deployed the origin's main and run its start-up drift check, and is idle. */
export async function agentSettled(base: string, origin: string, what: string): Promise<void> {
  const rev = git(origin, "rev-parse", "main");
  await until(
    `${what}: start-up reconcile of ${rev.slice(0, 12)} and drift check`,
    async () => {
      const s = (await fetch(`${base}/status`)
        .then((r) => r.json())
        .catch(() => null)) as ServeStatus | null;
      return !!s && s.deployedRevision === rev && !s.runner.running && !s.runner.waiting.length && !!s.drift;
    },
    120_000,
    STATUS_POLL_MS,
  );
}

/**
 * `serve` of the built bin with the unit's environment and its ExecStart's node flags, info logging as the
 * unit has it, to /dev/null, and the cache directory systemd gives the unit (CacheDirectory=, 0700, as
 * $CACHE_DIRECTORY) under the host's root: the first start writes V8's code cache there, later ones use it.
 * BENCH_NODE_FLAGS (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`) adds node flags, to profile the daemon as
 * the bench drives it.
 */
export function serveBin(args: string[], root: string): ChildProcess {
  const bin = path.join(PROJECT, "dist/src/bin.js");
  const flags = [...unitNodeFlags(), ...(process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? [])];
  const cache = path.join(root, "var/cache/deploy-agent");
  mkdirSync(cache, { recursive: true, mode: 0o700 });
  return spawn(process.execPath, [...flags, bin, ...args], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...serviceEnv(), ...unitEnvironment(), CACHE_DIRECTORY: cache },
  });
}

export function agentSystem(o: SystemOptions = {}): System {
  const { fx, root } = landingFixture(o);
  const port = freshPort();
  const host = o.host ?? "127.0.0.1";
  writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), SECRET, { mode: 0o600 });
  // The shipped manifest from the clone, as the unit names it; only the listen address is the bench's.
  const args = [
    "serve",
    "--config",
    path.join(fx.clone, "config/lxc139.yaml"),
    "--repo",
    fx.clone,
    "--root",
    root,
    "--state-dir",
    path.join(root, "var/lib/deploy-agent"),
    "--listen",
    `${host}:${port}`,
  ];
  const base = `http://${host}:${port}`;
  const url = `${base}/hooks/deploy`;
  return {
    name: "deploy-agent",
    url,
    probe: `${base}/healthz`,
    fx,
    source: LANDING,
    target: path.join(root, LANDING_TARGET),
    start: () => started(url, () => serveBin(args, root)),
    settled: () => agentSettled(base, fx.origin, "deploy-agent"),
    idle: () => agentIdle(base, "deploy-agent"),
  };
}

/**
 * The old listener's hook as the hosts had it: HMAC-SHA256 over the body in X-Gitea-Signature, a push to
 * main that is not a deletion, answered 202 while the command runs.
 */
export function legacyHook(cwd: string, command: Record<string, unknown>) {
  const match = (type: string, value: string, from: string, name: string) => ({
    match: { type, value, parameter: { source: from, name } },
  });
  return {
    id: "deploy",
    ...command,
    "command-working-directory": cwd,
    "response-message": "deploy triggered",
    "success-http-response-code": 202,
    "http-methods": ["POST"],
    "trigger-rule": {
      and: [
        {
          match: {
            type: "payload-hmac-sha256",
            secret: SECRET,
            parameter: { source: "header", name: "X-Gitea-Signature" },
          },
        },
        match("value", "push", "header", "X-Gitea-Event"),
        match("value", "refs/heads/main", "payload", "ref"),
        { not: match("value", "0".repeat(40), "payload", "after") },
      ],
    },
  };
}

/** The old per-host copy script's arguments: clone, target, repository file, and the command run after a copy. */
export function legacyCopy(clone: string, target: string, source: string, after: string) {
  return {
    "execute-command": path.join(PROJECT, "bench/baseline/deploy-landing.sh"),
    "pass-arguments-to-command": [clone, target, source, after].map((name) => ({ source: "string", name })),
  };
}

export function webhookSystem(o: SystemOptions = {}): System {
  const { fx, root } = landingFixture(o);
  const port = freshPort();
  const host = o.host ?? "127.0.0.1";
  const target = path.join(root, LANDING_TARGET);
  const hooks = path.join(fx.dir, "hooks.json");
  writeFileSync(
    hooks,
    JSON.stringify([legacyHook(fx.dir, legacyCopy(fx.clone, target, LANDING, "nginx -s reload"))]),
  );
  const url = `http://${host}:${port}/hooks/deploy`;
  let pid = 0;
  return {
    name: "webhook 2.8.0 + bash",
    url,
    probe: `http://${host}:${port}/`,
    fx,
    source: LANDING,
    target,
    start: async () => {
      const s = await started(url, () =>
        spawn("webhook", ["-hooks", hooks, "-ip", host, "-port", String(port)], {
          stdio: ["ignore", "ignore", "ignore"],
          env: serviceEnv(),
        }),
      );
      pid = s.child.pid ?? 0;
      return s;
    },
    settled: async () => {},
    idle: () => childless(pid, "webhook"),
  };
}

export function current(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
}

/**
 * Push-to-live: a commit pushed to the origin, then the timer runs from the signed POST (Gitea's real push
 * body) until the target holds the commit's content. Each push waits until the system is idle again (what
 * it does after the page is live, the agent's reload, reset and records, finished: pushes by hand are
 * minutes apart, and work left over from one system's push must not slow the other's turn) and then 50 ms. With several systems the pushes alternate between them (one
 * each, in turn), so that each sees the same moments of this shared machine: its load drifts within a
 * run, and a ratio of two series measured a minute apart measured the drift too.
 */
const PAGE = readFileSync(path.join(PROJECT, LANDING), "utf8");

export async function pushesToLive(systems: readonly System[], pushes: number): Promise<number[][]> {
  const times: number[][] = systems.map(() => []);
  for (let i = 1; i <= pushes; i++) {
    for (const [k, sys] of systems.entries()) {
      const content = `${PAGE}<!-- bench push ${i} ${Date.now()} -->\n`;
      const rev = sys.fx.push({ [sys.source]: content });
      const body = realPushBody({ after: rev });
      const t = performance.now();
      const res = await fetch(sys.url, {
        method: "POST",
        headers: giteaHeaders(body, SECRET),
        body: new Uint8Array(body),
      });
      if (res.status !== 202) throw new Error(`${sys.name}: push ${i} answered ${res.status}`);
      await until(`${sys.name}: push ${i} live`, () => current(sys.target) === content, 30_000);
      times[k]?.push(performance.now() - t);
      await sys.idle();
      await sleep(50);
    }
  }
  return times;
}

export async function pushToLive(sys: System, pushes: number): Promise<number[]> {
  return (await pushesToLive([sys], pushes))[0] ?? [];
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill("SIGTERM");
  await new Promise((r) => child.on("exit", r));
}
