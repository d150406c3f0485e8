/**
 * LXC 151 as shipped: `serve` (the bin, the unit's environment) with config/lxc151.yaml read from a clone of
 * this repository, its env file, the Matrix test homeserver as hookshot's homeserver, and systemctl a
 * stand-in. Each start is cold (a new process) on an empty state directory, so the start-up reconcile
 * applies every step, the hookshot transforms compile-checked in QuickJS among them, and the start-up drift
 * check runs: start-up to the first answer, then idle RSS once that is done and the process has been
 * left alone for a while.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { makeFixture } from "../test/helpers/git.js";
import { HOOKSHOT_ROOM, hookshotHomeserver, QUICK, rssMiB } from "./lib.js";
import {
  agentSettled,
  freshPort,
  repositoryFiles,
  SECRET,
  SETTLE_MS,
  serveBin,
  started,
  stop,
} from "./systems.js";

const ROOM = HOOKSHOT_ROOM;
const TOKEN = "syt_hosts_bench_token";
const STARTS = QUICK ? 2 : 5;

export async function lxc151Starts() {
  const hs = await hookshotHomeserver(TOKEN);
  const fx = makeFixture(repositoryFiles());
  const root = path.join(fx.dir, "root");
  for (const d of ["etc/systemd/system", "run", "var/log", "var/lib"])
    mkdirSync(path.join(root, d), { recursive: true });
  writeFileSync(
    path.join(root, "etc/matrix-deploy.env"),
    `MATRIX_SERVER=${hs.url}\nMATRIX_ROOM=${ROOM}\nMATRIX_TOKEN=${TOKEN}\nWEBHOOK_SECRET=${SECRET}\n`,
    { mode: 0o600 },
  );
  const stateDir = path.join(root, "var/lib/deploy-agent");
  const startupMs: number[] = [];
  const rssIdleMiB: number[] = [];
  try {
    for (let i = 0; i < STARTS; i++) {
      rmSync(stateDir, { recursive: true, force: true });
      const port = freshPort();
      const base = `http://127.0.0.1:${port}`;
      const args = ["serve", "--config", path.join(fx.clone, "config/lxc151.yaml"), "--repo", fx.clone];
      args.push("--root", root, "--state-dir", stateDir, "--listen", `127.0.0.1:${port}`);
      const s = await started(`${base}/hooks/deploy`, () => serveBin(args, root));
      await agentSettled(base, fx.origin, "lxc151");
      await sleep(SETTLE_MS);
      startupMs.push(s.startupMs);
      rssIdleMiB.push(rssMiB(s.child.pid ?? 0));
      await stop(s.child);
    }
  } finally {
    await hs.close();
    fx.cleanup();
  }
  return { startupMs, rssIdleMiB };
}
