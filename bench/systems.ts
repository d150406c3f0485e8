/**
 * The two systems the benchmarks compare, each on its own local bare origin: deploy-agent `serve` (the
 * built bin, with the systemd unit's environment) and the old pipeline (Debian's `webhook` 2.8.0 running
 * bench/baseline/deploy-landing.sh: fetch, hard reset, diff, copy). Both deploy one file of the repository
 * to a target under their own root, so push-to-live means the same for both.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PROJECT, serveArgs, unitEnvironment, writeManifest } from "../test/helpers/agent.js";
import { type Files, type Fixture, makeFixture } from "../test/helpers/git.js";
import { giteaFixture, giteaHeaders, realPushBody } from "../test/helpers/gitea.js";
import { until } from "./lib.js";

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
}

let nextPort = 19_000 + Math.floor(Math.random() * 400) * 4;
export const freshPort = () => nextPort++;

/** A signed push to another branch, as Gitea sends it (5.9 KB): verified, parsed, answered 202, ignored. */
export function ignoredPush(secret = SECRET) {
  const body = giteaFixture("push-other-branch.json");
  return { body, headers: giteaHeaders(body, secret) };
}

export interface SystemOptions {
  files?: Files;
  history?: number;
  /** Loopback address to listen on (the fleet puts each host on its own). */
  host?: string;
  source?: string;
}

function landingFixture(o: SystemOptions): { fx: Fixture; source: string; root: string } {
  const source = o.source ?? "landing/index.html";
  const fx = makeFixture({ [source]: "<p>0</p>\n", ...o.files }, { history: o.history });
  const root = path.join(fx.dir, "root");
  mkdirSync(path.join(root, "var/www/matrix-landing"), { recursive: true });
  return { fx, source, root };
}

/** Starts a child and waits for the first answer to a signed push: the start-up time. */
async function started(url: string, run: () => ChildProcess) {
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

export function agentSystem(o: SystemOptions = {}): System {
  const { fx, source, root } = landingFixture(o);
  const port = freshPort();
  const host = o.host ?? "127.0.0.1";
  mkdirSync(path.join(root, "etc/deploy-agent"), { recursive: true });
  writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), SECRET, { mode: 0o600 });
  const manifest = writeManifest(fx.dir, {
    host: "lxc139",
    webhook: { pollIntervalSeconds: 0 },
    drift: { intervalSeconds: 0 },
    steps: [{ name: "landing-page", kind: "file", source, targets: ["/var/www/matrix-landing/index.html"] }],
  });
  const args = [
    ...serveArgs(manifest, fx.clone, root, `${host}:${port}`),
    "--state-dir",
    path.join(fx.dir, "state"),
  ];
  const url = `http://${host}:${port}/hooks/deploy`;
  return {
    name: "deploy-agent",
    url,
    probe: `http://${host}:${port}/healthz`,
    fx,
    source,
    target: path.join(root, "var/www/matrix-landing/index.html"),
    start: () =>
      started(url, () =>
        // The bin npm links, with the unit's environment; info logging as the unit has it, to /dev/null.
        spawn(path.join(PROJECT, "dist/src/bin.js"), args, {
          stdio: ["ignore", "ignore", "inherit"],
          env: { ...process.env, ...unitEnvironment() },
        }),
      ),
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

export function webhookSystem(o: SystemOptions = {}): System {
  const { fx, source, root } = landingFixture(o);
  const port = freshPort();
  const host = o.host ?? "127.0.0.1";
  const target = path.join(root, "var/www/matrix-landing/index.html");
  const hooks = path.join(fx.dir, "hooks.json");
  writeFileSync(
    hooks,
    JSON.stringify([
      legacyHook(fx.dir, {
        "execute-command": path.join(PROJECT, "bench/baseline/deploy-landing.sh"),
        "pass-arguments-to-command": [
          { source: "string", name: fx.clone },
          { source: "string", name: target },
          { source: "string", name: source },
        ],
      }),
    ]),
  );
  const url = `http://${host}:${port}/hooks/deploy`;
  return {
    name: "webhook 2.8.0 + bash",
    url,
    probe: `http://${host}:${port}/`,
    fx,
    source,
    target,
    start: () =>
      started(url, () =>
        spawn("webhook", ["-hooks", hooks, "-ip", host, "-port", String(port)], {
          stdio: ["ignore", "ignore", "ignore"],
        }),
      ),
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
 * body) until the target holds the commit's content. Each push waits for the previous one to be live and
 * then 50 ms, as pushes by hand are spaced. With several systems the pushes alternate between them (one
 * each, in turn), so that each sees the same moments of this shared machine: its load drifts within a
 * run, and a ratio of two series measured a minute apart measured the drift too.
 */
export async function pushesToLive(systems: readonly System[], pushes: number): Promise<number[][]> {
  const times: number[][] = systems.map(() => []);
  for (let i = 1; i <= pushes; i++) {
    for (const [k, sys] of systems.entries()) {
      const content = `<p>${i} ${Date.now()}</p>\n`;
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
