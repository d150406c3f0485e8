import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PROJECT } from "../test/helpers/agent.js";

/** Small shared pieces of the benchmarks. */

export { rssMiB } from "../test/helpers/proc.js";

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

export const round = (n: number, digits = 1) => Number(n.toFixed(digits));

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
