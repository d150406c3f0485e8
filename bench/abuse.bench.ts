import { spawnSync } from "node:child_process";
import path from "node:path";
import { PROJECT } from "../test/helpers/agent.js";

/**
 * Hostile traffic and heavy work against the real `serve` process, with the unit's environment: the abuse
 * suite's measuring cases, run through node's test runner; each prints one `# abuse:` line with its figures
 * (peak RSS under 1,500 slow bodies, RSS after 40,000 replays, /healthz latency during a 20,000-line
 * rewrite). The suite also asserts each bound, so a figure past its bound fails the benchmark.
 */
export function abuse(): { figures: string[]; passed: boolean } {
  const res = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "--test",
      "--test-name-pattern=1,500|40,000|20,000",
      path.join(PROJECT, "test/abuse.test.ts"),
    ],
    { cwd: PROJECT, encoding: "utf8", timeout: 10 * 60_000 },
  );
  const figures = [...res.stdout.matchAll(/^# (?:\\# )?abuse: (.*)$/gm)].map((m) => m[1] ?? "");
  return { figures, passed: res.status === 0 };
}
