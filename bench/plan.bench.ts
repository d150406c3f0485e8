/** Planner cost for a push touching 10,000 files, with the real LXC 151 manifest. */
import path from "node:path";
import { loadManifest } from "../src/manifest/load.js";
import { plan } from "../src/plan/plan.js";
import { emptyState } from "../src/state/state.js";
import { PROJECT } from "../test/helpers/agent.js";
import { percentile, round } from "./lib.js";

export async function planScale(files = 10_000, runs = 30) {
  const { manifest } = await loadManifest(path.join(PROJECT, "config/lxc151.yaml"), {
    envFile: path.join(PROJECT, "config/demo.env"),
    processEnv: {},
  });
  const tree = Array.from({ length: files }, (_, i) =>
    i % 10 === 0 ? `hookshot/t${i}.js` : `docs/section-${i % 97}/page-${i}.md`,
  );
  const from = "a".repeat(40);
  const state = emptyState("lxc151");
  for (const s of manifest.steps) state.steps[s.name] = { lastAppliedRevision: from, history: [] };
  const changes = new Map([[from, tree]]);
  const times: number[] = [];
  let actions = 0;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const out = plan({
      steps: manifest.steps,
      revision: "b".repeat(40),
      tree,
      state,
      changes,
      options: { all: false, only: [] },
    });
    times.push(performance.now() - t);
    actions = out.filter((a) => a.run).length;
  }
  return {
    files,
    runs,
    p50ms: round(percentile(times, 50), 2),
    maxMs: round(Math.max(...times), 2),
    stepsToRun: actions,
  };
}
