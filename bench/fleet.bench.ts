/**
 * The fleet: four agents running the real host manifests (config/lxc151.yaml, lxc106, lxc139, lxc110, read
 * from git as on the hosts) on their own loopback addresses, each with its own clone, root and state, and
 * a sender that fans one push out to all four at once, as Gitea does. The push changes a file of every
 * host: a hookshot transform (live: in the Matrix test homeserver's room state), Cinny's config, the
 * landing page and Draupnir's config (live: the file under the host's root). Beside it four legacy
 * listeners (webhook 2.8.0 + bash) on their own origin; LXC 151's runs the old hookshot/deploy.sh, LXC 139's
 * reloads nginx and LXC 110's restarts Draupnir after the copy. Both fleets run at once and take turns, one
 * push each, every member idle before the next. systemctl and nginx are stand-ins on PATH that exit 0;
 * Draupnir's health URL answers 200.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PROJECT } from "../test/helpers/agent.js";
import { type Files, git, makeFixture } from "../test/helpers/git.js";
import { giteaHeaders, realPushBody } from "../test/helpers/gitea.js";
import type { startMatrixServer } from "../test/helpers/matrix-server.js";
import {
  HOOK_TYPE,
  HOOKSHOT_ROOM,
  hookshotHomeserver,
  percentile,
  QUICK,
  round,
  treeCpuMs,
  until,
} from "./lib.js";
import {
  agentIdle,
  agentSettled,
  childless,
  current,
  freshPort,
  legacyCopy,
  legacyHook,
  repositoryFiles,
  SECRET,
  serveBin,
  serviceEnv,
  stop,
} from "./systems.js";

const ROOM = HOOKSHOT_ROOM;
const TOKEN = "syt_fleet_bench_token";
const TYPE = HOOK_TYPE;
const PUSHES = QUICK ? 5 : 15;
const HOSTS = { lxc151: "127.0.0.151", lxc106: "127.0.0.106", lxc139: "127.0.0.139", lxc110: "127.0.0.110" };
type Host = keyof typeof HOSTS;

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

export async function fleet(): Promise<{ agents: FleetResult; baseline: FleetResult }> {
  // One test homeserver each, so that neither fleet's writes meet the other's.
  const servers = await Promise.all([hookshotHomeserver(TOKEN), hookshotHomeserver(TOKEN)]);
  const health = createServer((_req, res) => res.end("ok"));
  await new Promise<void>((r) => health.listen(8081, "127.0.0.1", r));
  const fleets: Fleet[] = [];
  try {
    fleets.push(await startFleet(servers[0] as MatrixServer, agentFor));
    fleets.push(await startFleet(servers[1] as MatrixServer, legacyFor));
    const [agents, baseline] = await pushInTurns(fleets);
    return { agents: agents as FleetResult, baseline: baseline as FleetResult };
  } finally {
    for (const f of fleets) {
      for (const m of f.members) await stop(m.child);
      f.fx.cleanup();
    }
    health.close();
    for (const hs of servers) await hs.close();
  }
}

type MatrixServer = Awaited<ReturnType<typeof startMatrixServer>>;

interface Member {
  host: Host;
  url: string;
  live(marker: string): boolean;
  /** Resolves once nothing of the last push runs any more on this member. */
  idle(): Promise<void>;
  child: ChildProcess;
}

interface Fleet {
  fx: ReturnType<typeof makeFixture>;
  members: Member[];
}

export interface FleetResult {
  allLiveMs: { p50: number; p90: number };
  perHostP50Ms: Record<string, number>;
  /**
   * CPU time per push of each member's process tree (the listener, its git, shell, curl and check
   * children), from the push until the member is idle again; and their sum, the fleet's.
   */
  cpuPerPushMs: Record<string, number>;
  n: number;
}

/** One member of a fleet to start: the shared origin, its host, its root and its port. */
interface Seat {
  fx: ReturnType<typeof makeFixture>;
  host: Host;
  root: string;
  port: number;
}
type Starter = (seat: Seat, hsUrl: string) => Promise<Omit<Member, "host">>;

function fileLive(file: string) {
  return (marker: string) => current(file)?.includes(marker) ?? false;
}

function matrixLive(hs: Awaited<ReturnType<typeof startMatrixServer>>) {
  return (marker: string) =>
    String(hs.state.get(`${TYPE}/grafana`)?.transformationFunction ?? "").includes(marker);
}

async function agentFor({ fx, host, root, port }: Seat, hsUrl: string): Promise<Omit<Member, "host">> {
  const clone = host === "lxc151" ? fx.clone : path.join(fx.dir, `clone-${host}`);
  if (clone !== fx.clone) git(fx.dir, "clone", "--quiet", fx.origin, clone);
  for (const d of [
    "etc/deploy-agent",
    "var/log",
    "run",
    "etc/systemd/system",
    "var/www/html",
    "opt/cinny-dev",
    // LXC 106's second step keeps the old build script at /usr/local/bin/cinny-dev-update.sh.
    "usr/local/bin",
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
  const child = serveBin(args, root);
  const base = `http://${HOSTS[host]}:${port}`;
  // Up, and done with its start-up reconcile (every step applied once) and drift check.
  await agentSettled(base, fx.origin, `fleet: ${host}`);
  const target: Record<Host, string> = {
    lxc151: "",
    lxc106: "var/www/html/config.json",
    lxc139: "var/www/matrix-landing/index.html",
    lxc110: "opt/draupnir/config/production.yaml",
  };
  return {
    url: `${base}/hooks/deploy`,
    child,
    live: fileLive(path.join(root, target[host])),
    idle: () => agentIdle(base, `fleet: ${host}`),
  };
}

async function legacyFor({ fx, host, root, port }: Seat, hsUrl: string): Promise<Omit<Member, "host">> {
  const clone = path.join(fx.dir, `legacy-${host}`);
  git(fx.dir, "clone", "--quiet", fx.origin, clone);
  // The repository file, where it goes, and what the old script did after the copy.
  const file: Record<Host, [string, string, string]> = {
    lxc151: ["", "", ""],
    lxc106: ["cinny/config.json", "var/www/html/config.json", ""],
    lxc139: ["landing/index.html", "var/www/matrix-landing/index.html", "nginx -s reload"],
    lxc110: ["draupnir/production.yaml", "opt/draupnir/config/production.yaml", "systemctl restart draupnir"],
  };
  const [source, target, after] = file[host];
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
      : legacyCopy(clone, path.join(root, target), source, after);
  const hooks = path.join(root, "hooks.json");
  writeFileSync(hooks, JSON.stringify([legacyHook(clone, command)]));
  const child = spawn("webhook", ["-hooks", hooks, "-ip", HOSTS[host], "-port", String(port)], {
    stdio: ["ignore", "ignore", "ignore"],
    env: serviceEnv(),
  });
  const url = `http://${HOSTS[host]}:${port}/hooks/deploy`;
  await until(
    `fleet: webhook for ${host} to listen`,
    async () => (await fetch(url).catch(() => null)) !== null,
    120_000,
  );
  return {
    url,
    child,
    live: fileLive(path.join(root, target)),
    idle: () => childless(child.pid ?? 0, `fleet: webhook for ${host}`),
  };
}

/** Four members on one origin of this repository, each on its own address, root and clone. */
async function startFleet(hs: MatrixServer, start: Starter): Promise<Fleet> {
  const fleet: Fleet = { fx: makeFixture(repositoryFiles()), members: [] };
  for (const host of Object.keys(HOSTS) as Host[]) {
    const root = path.join(fleet.fx.dir, `root-${host}`);
    mkdirSync(root, { recursive: true });
    const m = await start({ fx: fleet.fx, host, root, port: freshPort() }, hs.url);
    fleet.members.push({ host, ...m, live: host === "lxc151" ? matrixLive(hs) : m.live });
  }
  return fleet;
}

/**
 * One push to all four members at once, as Gitea fans it out: ms until each is live, and until all are;
 * each member's CPU time for it added to `cpu`.
 */
async function fanOut(
  fleet: Fleet,
  i: number,
  perHost: Record<string, number[]>,
  cpu: Record<string, number>,
): Promise<number> {
  const cpuBefore = fleet.members.map((m) => treeCpuMs(m.child.pid ?? 0));
  const { files, marker } = change(i);
  const rev = fleet.fx.push(files, `bench ${i}`);
  // Gitea's push, listing the files this push changed (as Gitea lists each commit's).
  const push = JSON.parse(realPushBody({ after: rev }).toString("utf8")) as { commits: object[] };
  push.commits = [{ ...push.commits[0], added: [], removed: [], modified: Object.keys(files) }];
  const body = Buffer.from(JSON.stringify(push, null, 2));
  const t = performance.now();
  const answers = await Promise.all(
    fleet.members.map((m) =>
      fetch(m.url, { method: "POST", headers: giteaHeaders(body, SECRET), body: new Uint8Array(body) }),
    ),
  );
  const bad = answers.find((r) => r.status !== 202);
  if (bad) throw new Error(`fleet: a delivery answered ${bad.status}`);
  await Promise.all(
    fleet.members.map(async (m) => {
      await until(`fleet: ${m.host} push ${i} live`, () => m.live(marker), 60_000);
      perHost[m.host] = [...(perHost[m.host] ?? []), performance.now() - t];
    }),
  );
  const ms = performance.now() - t;
  await Promise.all(fleet.members.map((m) => m.idle()));
  for (const [k, m] of fleet.members.entries())
    cpu[m.host] = (cpu[m.host] ?? 0) + treeCpuMs(m.child.pid ?? 0) - (cpuBefore[k] ?? 0);
  return ms;
}

/** The fleets take turns, one push each, so that both meet the same moments of this shared machine. */
async function pushInTurns(fleets: Fleet[]): Promise<FleetResult[]> {
  const all: number[][] = fleets.map(() => []);
  const perHost: Record<string, number[]>[] = fleets.map(() => ({}));
  const cpu: Record<string, number>[] = fleets.map(() => ({}));
  for (let i = 1; i <= PUSHES; i++) {
    for (const [k, f] of fleets.entries()) {
      all[k]?.push(await fanOut(f, i, perHost[k] ?? {}, cpu[k] ?? {}));
      await sleep(100);
    }
  }
  return fleets.map((_, k) => ({
    allLiveMs: { p50: round(percentile(all[k] ?? [], 50)), p90: round(percentile(all[k] ?? [], 90)) },
    perHostP50Ms: Object.fromEntries(
      Object.entries(perHost[k] ?? {}).map(([h, xs]) => [h, round(percentile(xs, 50))]),
    ),
    cpuPerPushMs: Object.fromEntries(Object.entries(cpu[k] ?? {}).map(([h, ms]) => [h, round(ms / PUSHES)])),
    n: all[k]?.length ?? 0,
  }));
}
