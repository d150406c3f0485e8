import { text } from "node:stream/consumers";
import type { TransformJob, TransformVerdict } from "./checks.js";
import { loadSandbox, runTransform, transformProblem } from "./transform.js";

/**
 * The child process that checks hookshot transforms (started by checks.ts): reads the jobs as JSON on stdin,
 * writes the verdicts as JSON on stdout and exits, so QuickJS's memory leaves with it.
 */
async function verdict(job: TransformJob): Promise<TransformVerdict> {
  const problem = await transformProblem(job.src);
  if (problem) return { problem, runs: [] };
  const runs: TransformVerdict["runs"] = [];
  for (const payload of job.payloads) {
    try {
      runs.push({ output: await runTransform(job.src, JSON.parse(payload)) });
    } catch (err) {
      runs.push({ error: (err as Error).message });
    }
  }
  return { problem: null, runs };
}

async function main(): Promise<void> {
  // QuickJS and acorn load while the batch is on its way (the daemon may start this child ahead of it).
  const loaded = loadSandbox();
  const jobs = JSON.parse(await text(process.stdin)) as TransformJob[];
  await loaded;
  const verdicts: TransformVerdict[] = [];
  for (const job of jobs) verdicts.push(await verdict(job));
  process.stdout.write(JSON.stringify(verdicts));
}

// No top-level await: the bundle is CommonJS. A failure ends the child with its stack on stderr and exit 1,
// whatever --unhandled-rejections the unit's NODE_OPTIONS (passed on to this child) say: with =warn or =none
// an unhandled rejection would end it with exit 0 and nothing on stdout.
main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
