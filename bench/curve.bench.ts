/**
 * The cost curve: push-to-live of one changed file (the landing page, deploy-agent `serve` with the
 * shipped config/lxc139.yaml as in compare.bench.ts) in repositories of 100, 1,000 and 10,000 files, and with histories of 10, 1,000 and
 * 10,000 commits. What a push costs must follow what it changed, not the repository.
 */
import type { Files } from "../test/helpers/git.js";
import { percentile, QUICK, round } from "./lib.js";
import { agentSystem, pushToLive, stop } from "./systems.js";

const PUSHES = QUICK ? 5 : 15;

function manyFiles(n: number): Files {
  const files: Files = {};
  // 100 files per directory, as a real tree nests them.
  for (let i = 0; i < n - 1; i++) files[`data/d${Math.floor(i / 100)}/f${i}.txt`] = `file ${i}\n`;
  return files;
}

async function point(files: number, commits: number) {
  const sys = agentSystem({ files: manyFiles(files), history: commits - 1 });
  const { child } = await sys.start();
  // Its start-up reconcile and drift check done, so that the first push does not queue behind them.
  await sys.settled();
  const live = await pushToLive(sys, PUSHES);
  await stop(child);
  sys.fx.cleanup();
  return { files, commits, p50ms: round(percentile(live, 50)), p90ms: round(percentile(live, 90)) };
}

export async function costCurve() {
  const byFiles = [];
  for (const n of [100, 1_000, 10_000]) byFiles.push(await point(n, 10));
  const byHistory = [];
  for (const n of [10, 1_000, 10_000]) byHistory.push(await point(100, n));
  const ratio = (xs: { p50ms: number }[]) => round((xs.at(-1)?.p50ms ?? 0) / (xs[0]?.p50ms || 1), 2);
  return { byFiles, byHistory, filesRatio: ratio(byFiles), historyRatio: ratio(byHistory) };
}
