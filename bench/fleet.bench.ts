/**
 * The fleet: four agents running the real host manifests (config/lxc151.yaml, lxc106, lxc139, lxc110, read
 * from git as on the hosts) on their own loopback addresses, each with its own clone, root and state, and
 * a sender that fans one push out to all four at once, as Gitea does. The push changes a file of every
 * host: a hookshot transform (live: in the Matrix test homeserver's room state), Cinny's config, the
 * landing page and Draupnir's config (live: the file under the host's root). Then the same with four
 * legacy listeners (webhook 2.8.0 + bash) side by side; LXC 151's runs the old hookshot/deploy.sh.
 * systemctl and nginx are stand-ins on PATH that exit 0; Draupnir's health URL answers 200.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PROJECT, unitEnvironment } from "../test/helpers/agent.js";
import { type Files, git, makeFixture } from "../test/helpers/git.js";
import { giteaHeaders, realPushBody } from "../test/helpers/gitea.js";
import { startMatrixServer } from "../test/helpers/matrix-server.js";
import { percentile, round, until } from "./lib.js";
import { current, freshPort, legacyHook, SECRET, stop } from "./systems.js";

const ROOM = "!GttT4QYd1wlGlkHU3qTmq_P3gbyYKKeSSN6R7TPcJHg";
const TOKEN = "syt_fleet_bench_token";
const TYPE = "uk.half-shot.matrix-hookshot.generic.hook";
const PUSHES = 15;
const HOSTS = { lxc151: "127.0.0.151", lxc106: "127.0.0.106", lxc139: "127.0.0.139", lxc110: "127.0.0.110" };
type Host = keyof typeof HOSTS;

/** This repository's tracked files: what the config repository holds. */
function repositoryFiles(): Files {
  const files: Files = {};
  for (const f of execFileSync("git", ["ls-files", "-z"], { cwd: PROJECT, encoding: "utf8" }).split("\0")) {
    if (f) files[f] = readFileSync(path.join(PROJECT, f));
  }
  return files;
}

/** The push: one change per host, with a marker that tells when each is live. */
function change(i: number): { files: Files; marker: string } {
  const marker = `bench-push-${i}-${Date.now()}`;
  const read = (f: string) => readFileSync(path.join(PROJECT, f), "utf8");
  const cinny = JSON.parse(read("cinny/config.json")) as { featuredCommunities: { servers: string[] } };
  cinny.featuredCommunities.servers.push(`${marker}.example`);
  return {
    marker,
    files: {
      "hookshot/grafana.js": `${read("hookshot/grafana.js")}\n// ${marker}\n`,
      "cinny/config.json": `${JSON.stringify(cinny, null, 2)}\n`,
      "landing/index.html": `${read("landing/index.html")}<!-- ${marker} -->\n`,
      "draupnir/production.yaml": `${read("draupnir/production.yaml")}\n# ${marker}\n`,
    },
  };
}

function shims(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "bench-shims-"));
  for (const tool of ["systemctl", "nginx"]) {
    writeFileSync(path.join(dir, tool), "#!/bin/sh\nexit 0\n");
    chmodSync(path.join(dir, tool), 0o755);
  }
  return dir;
}

export async function fleet(): Promise<{ agents: FleetResult; baseline: FleetResult }> {
  const hs = await startMatrixServer({
    roomId: ROOM,
    users: { [TOKEN]: { userId: "@jared:matrix.lotusguild.org", powerLevel: 100 } },
  });
  for (const f of readFileSync(path.join(PROJECT, "config/lxc151.yaml"), "utf8").matchAll(
    /^ {6}([\w-]+)\.js: ~$/gm,
  ))
    hs.state.set(`${TYPE}/${f[1]}`, { name: f[1], hookId: `hook-${f[1]}` });
  const health = createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => health.listen(8081, "127.0.0.1", r));
  const shimDir = shims();
  const env = { ...process.env, PATH: `${shimDir}:${process.env.PATH}` };
  try {
    return {
      agents: await run("agents", hs, (m) => agentFor(m, hs.url, env)),
      baseline: await run("baseline", hs, (m) => legacyFor(m, hs.url, env)),
    };
  } finally {
    health.close();
    await hs.close();
    rmSync(shimDir, { recursive: true, force: true });
  }
}

interface Member {
  host: Host;
  url: string;
  live(marker: string): boolean;
  child: ChildProcess;
}

export interface FleetResult {
  allLiveMs: { p50: number; p90: number };
  perHostP50Ms: Record<string, number>;
  n: number;
}

/** One member of a fleet to start: the shared origin, its host, its root and its port. */
interface Seat {
  fx: ReturnType<typeof makeFixture>;
  host: Host;
  root: string;
  port: number;
}
type Starter = (seat: Seat) => Promise<Omit<Member, "host">>;

function fileLive(file: string) {
  return (marker: string) => current(file)?.includes(marker) ?? false;
}

function matrixLive(hs: Awaited<ReturnType<typeof startMatrixServer>>) {
  return (marker: string) =>
    String(hs.state.get(`${TYPE}/grafana`)?.transformationFunction ?? "").includes(marker);
}

async function agentFor(
  { fx, host, root, port }: Seat,
  hsUrl: string,
  env: NodeJS.ProcessEnv,
): Promise<Omit<Member, "host">> {
  const clone = host === "lxc151" ? fx.clone : path.join(fx.dir, `clone-${host}`);
  if (clone !== fx.clone) git(fx.dir, "clone", "--quiet", fx.origin, clone);
  for (const d of [
    "etc/deploy-agent",
    "var/log",
    "run",
    "etc/systemd/system",
    "var/www/html",
    "opt/cinny-dev",
  ])
    mkdirSync(path.join(root, d), { recursive: true });
  mkdirSync(path.join(root, "var/www/matrix-landing"), { recursive: true });
  mkdirSync(path.join(root, "opt/draupnir/config"), { recursive: true });
  writeFileSync(path.join(root, "etc/deploy-agent/webhook-secret"), SECRET, { mode: 0o600 });
  writeFileSync(
    path.join(root, "etc/matrix-deploy.env"),
    `MATRIX_SERVER=${hsUrl}\nMATRIX_ROOM=${ROOM}\nMATRIX_TOKEN=${TOKEN}\nWEBHOOK_SECRET=${SECRET}\n`,
    { mode: 0o600 },
  );
  writeFileSync(
    path.join(root, "opt/draupnir/config/production.yaml"),
    "accessToken: syt_live_draupnir_token\n",
  );
  const args = [
    "serve",
    "--config",
    path.join(clone, `config/${host}.yaml`),
    "--repo",
    clone,
    "--root",
    root,
    "--state-dir",
    path.join(root, "var/lib/deploy-agent"),
    "--listen",
    `${HOSTS[host]}:${port}`,
  ];
  const child = spawn(path.join(PROJECT, "dist/src/bin.js"), args, {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...env, ...unitEnvironment() },
  });
  const base = `http://${HOSTS[host]}:${port}`;
  const rev = git(fx.origin, "rev-parse", "main");
  // Up, and done with its start-up reconcile (every step applied once).
  await until(
    `fleet: ${host} to apply ${rev.slice(0, 12)} at start`,
    async () => {
      const s = await fetch(`${base}/status`)
        .then((r) => r.json() as Promise<{ deployedRevision: string | null; queue: { running: boolean } }>)
        .catch(() => null);
      return s?.deployedRevision === rev && !s.queue.running;
    },
    120_000,
  );
  const target: Record<Host, string> = {
    lxc151: "",
    lxc106: "var/www/html/config.json",
    lxc139: "var/www/matrix-landing/index.html",
    lxc110: "opt/draupnir/config/production.yaml",
  };
  return { url: `${base}/hooks/deploy`, child, live: fileLive(path.join(root, target[host])) };
}

async function legacyFor(
  { fx, host, root, port }: Seat,
  hsUrl: string,
  env: NodeJS.ProcessEnv,
): Promise<Omit<Member, "host">> {
  const clone = path.join(fx.dir, `legacy-${host}`);
  git(fx.dir, "clone", "--quiet", fx.origin, clone);
  const file: Record<Host, [string, string]> = {
    lxc151: ["", ""],
    lxc106: ["cinny/config.json", "var/www/html/config.json"],
    lxc139: ["landing/index.html", "var/www/matrix-landing/index.html"],
    lxc110: ["draupnir/production.yaml", "opt/draupnir/config/production.yaml"],
  };
  const [source, target] = file[host];
  mkdirSync(path.dirname(path.join(root, target || "x")), { recursive: true });
  const command =
    host === "lxc151"
      ? {
          "execute-command": path.join(PROJECT, "bench/baseline/deploy-hookshot.sh"),
          "pass-arguments-to-command": [{ source: "string", name: clone }],
          "pass-environment-to-command": [
            { source: "string", envname: "MATRIX_SERVER", name: hsUrl },
            { source: "string", envname: "MATRIX_ROOM", name: ROOM },
            { source: "string", envname: "MATRIX_TOKEN", name: TOKEN },
          ],
        }
      : {
          "execute-command": path.join(PROJECT, "bench/baseline/deploy-landing.sh"),
          "pass-arguments-to-command": [
            { source: "string", name: clone },
            { source: "string", name: path.join(root, target) },
            { source: "string", name: source },
          ],
        };
  const hooks = path.join(root, "hooks.json");
  writeFileSync(hooks, JSON.stringify([legacyHook(clone, command)]));
  const child = spawn("webhook", ["-hooks", hooks, "-ip", HOSTS[host], "-port", String(port)], {
    stdio: ["ignore", "ignore", "ignore"],
    env,
  });
  const url = `http://${HOSTS[host]}:${port}/hooks/deploy`;
  await until(
    `fleet: webhook for ${host} to listen`,
    async () => (await fetch(url).catch(() => null)) !== null,
    120_000,
  );
  return { url, child, live: fileLive(path.join(root, target)) };
}

async function run(
  what: string,
  hs: Awaited<ReturnType<typeof startMatrixServer>>,
  start: Starter,
): Promise<FleetResult> {
  const fx = makeFixture(repositoryFiles());
  const members: Member[] = [];
  try {
    for (const host of Object.keys(HOSTS) as Host[]) {
      const root = path.join(fx.dir, `root-${host}`);
      mkdirSync(root, { recursive: true });
      const m = await start({ fx, host, root, port: freshPort() });
      members.push({ host, ...m, live: host === "lxc151" ? matrixLive(hs) : m.live });
    }
    const all: number[] = [];
    const perHost: Record<string, number[]> = {};
    for (let i = 1; i <= PUSHES; i++) {
      const { files, marker } = change(i);
      const rev = fx.push(files, `bench ${i}`);
      const body = realPushBody({ after: rev });
      const t = performance.now();
      // Gitea's fan-out: one delivery per host, at once.
      const answers = await Promise.all(
        members.map((m) =>
          fetch(m.url, { method: "POST", headers: giteaHeaders(body, SECRET), body: new Uint8Array(body) }),
        ),
      );
      const bad = answers.find((r) => r.status !== 202);
      if (bad) throw new Error(`fleet ${what}: a delivery answered ${bad.status}`);
      await Promise.all(
        members.map(async (m) => {
          await until(`fleet: ${what} ${m.host} push ${i} live`, () => m.live(marker), 60_000);
          perHost[m.host] = [...(perHost[m.host] ?? []), performance.now() - t];
        }),
      );
      all.push(performance.now() - t);
      await sleep(100);
    }
    return {
      allLiveMs: { p50: round(percentile(all, 50)), p90: round(percentile(all, 90)) },
      perHostP50Ms: Object.fromEntries(
        Object.entries(perHost).map(([h, xs]) => [h, round(percentile(xs, 50))]),
      ),
      n: all.length,
    };
  } finally {
    for (const m of members) await stop(m.child);
    fx.cleanup();
  }
}
