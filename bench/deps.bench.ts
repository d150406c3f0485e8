/**
 * What each runtime dependency costs at idle: the RSS of a Node process (the unit's environment) that only
 * imports it, less that of one that imports nothing. Loaded one at a time, so shared parts (Node's own
 * http, streams, crypto) count for each that pulls them in; the daemon's own figure is the bench's
 * "RSS idle". Import time is the same process's time to load it.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { PROJECT, unitEnvironment } from "../test/helpers/agent.js";
import { round } from "./lib.js";
import { serviceEnv } from "./systems.js";

function idle(specifier: string | null): { rssMiB: number; importMs: number } {
  const code = `const t = performance.now();
${specifier ? `await import(${JSON.stringify(specifier)});` : ""}
const ms = performance.now() - t;
await new Promise((r) => setTimeout(r, 300));
console.log(JSON.stringify({ rss: process.memoryUsage.rss(), ms }));`;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", code], {
    cwd: PROJECT,
    env: { ...serviceEnv(), ...unitEnvironment() },
    encoding: "utf8",
  });
  const { rss, ms } = JSON.parse(out) as { rss: number; ms: number };
  return { rssMiB: rss / 2 ** 20, importMs: ms };
}

export function dependencyCosts() {
  const pkg = JSON.parse(readFileSync(path.join(PROJECT, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  const bare = idle(null);
  const rows = Object.keys(pkg.dependencies).map((name) => {
    const m = idle(name);
    return { name, rssMiB: round(m.rssMiB - bare.rssMiB), importMs: round(m.importMs) };
  });
  return { nodeAloneMiB: round(bare.rssMiB), rows: rows.sort((a, b) => b.rssMiB - a.rssMiB) };
}
